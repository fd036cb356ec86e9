"""Several ``trainer run`` variants in ONE process: NeMo's ~50 s import and the first step's
compilation are paid once, not once per variant (``bench/trainer_speed.py --stage speed``).

    PYTHONPATH=/tmp/site:$PWD python3 bench/speed_driver.py --variants graphs-mb8-c2048,fast-mb8-c2048 \\
        --out results/speed --shards out/gpu_shards/aozora

Each variant is ``trainer.run.launch.run`` on the shipped config plus the overrides of
``VARIANTS`` in ``bench/trainer_speed.py``, from the same random base checkpoint (made
once, on the CPU, before this process takes its turn on the GPU), ``--steps`` steps with
one validation at the end. Between variants: megatron's CUDA graphs deleted, memory freed,
the peak-memory counter reset (``peak_gib`` is the variant's own: the peak minus what was
still allocated when it started). One JSON line per variant goes to ``OUT/rows.jsonl``
as soon as it ends; a variant that fails is a row with its error, and if CUDA itself is
broken afterwards the process exits 3 so the orchestrator starts a fresh one for the rest.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gpu_turns import wait_turn  # noqa: E402
from rows_file import append_row  # noqa: E402
from trainer_speed import CONFIG, metrics_summary, run_overrides, variant_overrides  # noqa: E402


def cleanup() -> float:
    """Free what a finished variant left on the GPU; return GiB still allocated."""
    import torch

    try:
        from megatron.core.transformer.cuda_graphs import delete_cuda_graphs

        delete_cuda_graphs()
    except ImportError:
        pass
    # NeMo sets megatron's global micro-batch calculator once per process and asserts the same
    # micro batch afterwards: a variant with another micro batch failed with a bare AssertionError.
    from megatron.core.num_microbatches_calculator import destroy_num_microbatches_calculator

    destroy_num_microbatches_calculator()
    gc.collect()
    if not torch.cuda.is_available():  # (a CPU machine: the run itself will say what is wrong)
        return 0.0
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated() / 2**30


def leftover_tensors(top: int = 6) -> list[dict]:
    """The largest CUDA tensors still alive between variants, and what holds them (type names of their
    referrers): the driver kept ~1.4 GB a LoRA variant, ~5 GB a full-parameter one, and this says whose."""
    import torch

    tensors = []
    for obj in gc.get_objects():
        try:
            if issubclass(type(obj), torch.Tensor) and obj.is_cuda:
                tensors.append(obj)
        except Exception:  # noqa: BLE001  (objects that fail isinstance checks)
            continue
    tensors.sort(key=lambda t: -t.untyped_storage().nbytes())
    out = []
    for t in tensors[:top]:
        holders = sorted({type(r).__name__ for r in gc.get_referrers(t) if r is not tensors})[:6]
        out.append({"shape": list(t.shape), "dtype": str(t.dtype), "mb": round(t.untyped_storage().nbytes() / 2**20, 1),
                    "held_by": holders})
    out.append({"count": len(tensors), "gib": round(sum(t.untyped_storage().nbytes() for t in tensors) / 2**30, 2)})
    return out


def cuda_alive() -> bool:
    import torch

    try:
        torch.zeros(1, device="cuda").add_(1)
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001  (a CUDA error, or no CUDA at all)
        return False


def median_without_observed(step_times: list[float], steps: int, skip: int = 5) -> float | None:
    """Median step time of steps ``skip+1``..``steps`` without the two that were profiled or traced
    (batches ``steps-6`` and ``steps-5``, i.e. lines ``steps-5`` and ``steps-4`` of metrics.jsonl).

    >>> median_without_observed([9.0] * 5 + [0.4] * 5 + [0.9, 0.9] + [0.5] * 4, 16)  # with the two: 0.5
    0.4
    """
    import statistics

    kept = [t for i, t in enumerate(step_times) if i >= skip and i not in (steps - 6, steps - 5)]
    return round(statistics.median(kept), 4) if kept else None


def run_variant(name: str, args, shared: dict) -> dict:
    import torch

    from trainer.megatron import sdpa_backend
    from trainer.run.config import load_config
    from trainer.run.launch import run

    run_dir = Path(args.run_root) / name
    if run_dir.exists():  # an earlier call's checkpoints would be resumed: 16 steps of nothing
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    for link in ("base", "index_cache"):  # same random weights; the dataset index is built once
        if shared.get(link) and not (run_dir / link).exists():
            (run_dir / link).symlink_to(shared[link])
    extra = variant_overrides(name)
    observed = False  # two late steps profiled or traced, hence slower
    for key, names in (("profile_steps", args.profile_variant), ("sync_trace_steps", args.sync_trace_variant)):
        if name in (names or "").split(","):
            extra.append(f"logging.{key}=[{args.steps - 6},{args.steps - 4}]")
            observed = True
    overrides = run_overrides(args.shards, str(run_dir), args.steps, args.steps, extra)
    cfg = load_config(CONFIG, overrides)
    sdpa_backend.USED.clear()
    left = cleanup()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    row = {"row": name, "kind": "ours", "full": cfg.peft.method == "none", "micro_batch": cfg.schedule.micro_batch_size,
           "overrides": extra, "start_gib": round(left, 2)}
    if left > 1.0:
        row["leftover"] = leftover_tensors()
    try:
        run(cfg, dry_run=False, echo=lambda line: print(line, flush=True))
    except BaseException as exc:  # noqa: BLE001  (a failed variant is a row, not the end of the call)
        row.update(error=f"{type(exc).__name__}: {exc}"[:500], traceback=traceback.format_exc()[-3000:])
    row["wall_s"] = round(time.time() - t0, 1)
    row["attention_paths"] = dict(sdpa_backend.USED)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        summary = metrics_summary(metrics)
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        train = [r for r in rows if r.get("step_time_s") is not None]
        row.update(s_per_step=summary["median_s_per_step"], loss_last=summary["last_loss"],
                   val_loss=summary["val_loss"], losses=[round(r["loss"], 4) for r in train if r.get("loss")],
                   step_times=[r["step_time_s"] for r in train],
                   first_step_s=train[0]["step_time_s"] if train else None)
        if summary["peak_gib"] is not None:
            row["peak_gib"] = round(summary["peak_gib"] - left, 2)
        if row.get("s_per_step"):
            row["tokens_per_s"] = round(65536 / row["s_per_step"])
        if observed:
            row["s_per_step_unobserved"] = median_without_observed(row["step_times"], args.steps)
    for report in [*run_dir.glob("profile_steps*.txt"), *run_dir.glob("sync_trace_steps*.txt")]:
        (Path(args.out) / f"{name}_{report.name}").write_text(report.read_text())
    for trace in run_dir.glob("profile_steps*.json.gz"):  # the timeline, for Perfetto
        (Path(args.out) / f"{name}_{trace.name}").write_bytes(trace.read_bytes())
    if "index_cache" not in shared and (run_dir / "index_cache").is_dir():
        shared["index_cache"] = str((run_dir / "index_cache").resolve())
    # ~6 GB a full-parameter variant: seven of them filled a 64 GiB disk and failed the eighth
    import shutil

    shutil.rmtree(run_dir / "run" / "v0" / "checkpoints", ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shards", default="out/gpu_shards/aozora")
    ap.add_argument("--run-root", default="/tmp/trainer_speed_runs")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--profile-variant", default=None)
    ap.add_argument("--sync-trace-variant", default=None)
    ap.add_argument("--turn-dir", default=None)
    ap.add_argument("--name", default="nemo")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [v for v in args.variants.split(",") if v]
    t0 = time.time()
    import torch

    from trainer.megatron import cuda_graphs
    from trainer.run.config import load_config
    from trainer.run.launch import prepare_base
    from trainer.run.presets import get_preset
    from trainer.run.recipe import model_tokenizer
    from nemo.collections import llm  # noqa: F401  (the ~50 s import, before the GPU turn)

    timings = {"import_s": round(time.time() - t0, 1)}
    # megatron keeps the first RNG tracker it is given: make it graph-safe for every variant
    cuda_graphs.install_graph_safe_rng()
    base_dir = Path(args.run_root) / "_base"
    cfg = load_config(CONFIG, run_overrides(args.shards, str(base_dir), args.steps, args.steps, []))
    t1 = time.time()
    tok = model_tokenizer(cfg.model.tokenizer)
    prepare_base(cfg, tok, get_preset(cfg.model.preset))  # random HF model + import, on the CPU
    shared = {"base": str((base_dir / "base").resolve())}
    timings["base_s"] = round(time.time() - t1, 1)
    timings["waited_s"] = round(wait_turn(args.turn_dir, args.name), 1) if args.turn_dir else 0.0
    if any("peft.fused_adapters=true" in variant_overrides(n) for n in names):
        from trainer.megatron import lora_kernels

        try:
            check = lora_kernels.self_check()
        except Exception as exc:  # noqa: BLE001
            check = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        append_row(out / "rows.jsonl", {"row": "_lora_kernel_check", "kind": "check", **check})
        print("lora kernel check:", check, flush=True)
    for i, name in enumerate(names):
        (out / f"{args.name}.progress").write_text(json.dumps({"variant": name, "since": time.time()}))
        row = run_variant(name, args, shared)
        row.update(timings if i == 0 else {}, process=args.name, position=i)
        append_row(out / "rows.jsonl", row)
        print("ROW", json.dumps({k: row.get(k) for k in ("row", "s_per_step", "s_per_step_unobserved", "peak_gib",
                                                         "loss_last", "wall_s", "error")}), flush=True)
        if "error" in row and not cuda_alive():
            sys.exit(3)
    (out / f"{args.name}.progress").unlink(missing_ok=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    sys.stdout.flush()
    os._exit(0)  # skip NeMo's and multi-storage-client's exit-time handlers


if __name__ == "__main__":
    main()
