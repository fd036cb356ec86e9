"""The distributed optimizer and data parallelism of ``trainer run`` on NVIDIA GPUs (H200, H100).

One GPU (about 4 minutes; proves the distributed optimizer saves and resumes there)::

    python3 bench/trainer_parallel.py --out results/par1 --gpus 1                  # LoRA
    python3 bench/trainer_parallel.py --out results/par1 --gpus 1 --modes lora,full # both at once, ~5 min

    ``parallel.distributed_optimizer=true``: train 40 steps with a checkpoint every 20, SIGKILL
    at step 30, run the same command again. PASS when the second run resumed from the step-20
    checkpoint, steps 21-30 repeat their learning rates and losses (|diff| <= --loss-tol), and
    every checkpoint's Adam step count (the param groups of ``weights/common.pt``) equals its
    global step (upstream's shared step tensor would count once per parameter).

Several GPUs of one machine (2, 4 or 8; each stage fits in 10 minutes)::

    python3 bench/trainer_parallel.py --out results/par8 --gpus 8 --stage scaling
    python3 bench/trainer_parallel.py --out results/par8 --gpus 8 --stage resume
    python3 bench/trainer_parallel.py --out results/par8 --gpus 8 --stage memory
    python3 bench/trainer_parallel.py --out results/par8 --gpus 8 --stage tp       # uses 2 of the GPUs

    scaling: 1 GPU and N GPUs at the same micro batch per GPU: strong (global batch 32, the
      loss curve of N GPUs against one from the same random base, LoRA dropout 0 so only the
      reduction order differs) and weak (global batch 32 x N: tokens/s and efficiency =
      tokens/s_N / (N x tokens/s_1)).
    resume: N GPUs, SIGKILL at step 30, resume on N to step 41 (killed again), resume on
      N / 2 GPUs (1 when N = 2) to step 60: losses against the uninterrupted N-GPU run of
      the scaling stage, Adam step counts against global steps.
    memory: full-parameter on N GPUs with and without the distributed optimizer: peak memory
      per GPU (rank 0's ``max_memory_allocated``) and s/step.
    tp: tensor parallel 2 on 2 GPUs to step 20 (checkpoints at 10 and 20, killed after 21), then
      the same run_dir resumed on 2 GPUs without tensor parallelism to step 30.

Every run is a ``trainer run`` process (torchrun for N > 1) on the Qwen2.5-0.5B shape from
random weights, seq 2048, LoRA r16 on qkv+proj unless said; logs, metrics and ``summary.json``
go to ``--out``; the last line printed is ``PASS ...`` or ``FAIL ...``. ``--print-commands``
lists the ``trainer run`` commands of the stage and exits (no GPU needed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer_speed import last_step, trainer_run  # noqa: E402

MODES = {"lora": [], "full": ["peft=none"]}
BASE = ["configs/qwen25_05b_ja_lora.yaml", "model.base=null", "model.from_scratch=true",
        "schedule.early_stopping.patience=null", "schedule.val_batches=4", "optim.warmup_steps=10",
        "checkpoint.save_top_k=1"]  # a full-parameter checkpoint with its optimizer state is ~7 GB


def command(args, run_dir: str, *extra: str, gpus: int, steps: int, val_every: int) -> list[str]:
    """``trainer run`` with the bench's shards and run settings; later overrides win."""
    return [sys.executable, "-m", "trainer.cli", "run", *BASE, f"data.train=[{args.shards}_train]",
            f"data.valid=[{args.shards}_valid]", f"run_dir={run_dir}", f"schedule.max_steps={steps}",
            f"schedule.val_every={val_every}", f"schedule.micro_batch_size={args.micro}", f"parallel.devices={gpus}",
            *extra]


def metric_rows(metrics: Path) -> list[dict]:
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []


def repeated_steps(rows: list[dict]) -> dict[int, tuple[dict, dict]]:
    """Training steps logged twice (before a kill and after the resume): step -> (first, last).

    >>> rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.9}, {"step": 2, "loss": 1.9004}, {"step": 2, "val_loss": 3}]
    >>> {k: (a["loss"], b["loss"]) for k, (a, b) in repeated_steps(rows).items()}
    {2: (1.9, 1.9004)}
    """
    seen: dict[int, list[dict]] = {}
    for row in rows:
        if row.get("loss") is not None:
            seen.setdefault(row["step"], []).append(row)
    return {s: (r[0], r[-1]) for s, r in seen.items() if len(r) > 1}


def last_rows(rows: list[dict]) -> dict[int, dict]:
    """The last training row of every step (what the run that finished logged)."""
    return {r["step"]: r for r in rows if r.get("loss") is not None}


def optimizer_steps(common: dict) -> list[float]:
    """Every ``step`` of every optimizer param group in a checkpoint's common state.

    >>> optimizer_steps({"optimizer": [{"optimizer": {"param_groups": [{"step": 20.0}, {"step": 20.0, "lr": 1}]}}]})
    [20.0, 20.0]
    """
    found: list[float] = []

    def walk(node):
        if isinstance(node, dict):
            groups = node.get("param_groups")
            if isinstance(groups, list):
                found.extend(float(g["step"]) for g in groups if isinstance(g, dict) and g.get("step") is not None)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(common)
    return found


def checkpoint_steps(ckpt_dir: Path) -> dict[str, dict]:
    """Each checkpoint -> its global step and the Adam step counts its optimizer state holds."""
    import torch

    out = {}
    for path in sorted(ckpt_dir.glob("*")):
        common = path / "weights" / "common.pt"
        if not common.is_file():
            continue
        state = torch.load(common, map_location="cpu", weights_only=False)
        out[path.name] = {"global_step": state.get("global_step"), "adam_steps": sorted(set(optimizer_steps(state)))}
    return out


def steps_ok(ckpts: dict[str, dict]) -> bool:
    """Every checkpoint's Adam step equals its global step (and there is at least one)."""
    return bool(ckpts) and all(c["adam_steps"] == [float(c["global_step"])] for c in ckpts.values())


def compare(rows: dict[int, dict], reference: dict[int, dict], steps) -> dict:
    """Largest loss and relative learning-rate differences over ``steps`` present in both."""
    common = [s for s in steps if s in rows and s in reference]
    loss = max((abs(rows[s]["loss"] - reference[s]["loss"]) for s in common), default=None)
    lr = max((abs(rows[s]["lr"] - reference[s]["lr"]) / max(abs(reference[s]["lr"]), 1e-12) for s in common
              if rows[s].get("lr") is not None and reference[s].get("lr") is not None), default=None)
    return {"steps": len(common), "max_loss_diff": loss, "max_lr_rel_diff": lr}


def share_base(run_dir: str, shared: Path | None) -> None:
    """Start ``run_dir`` from the random base another run imported (same weights, no re-import)."""
    if shared is not None and not (Path(run_dir) / "base").exists():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "base").symlink_to(shared)


def base_of(run_dir: str) -> Path | None:
    base = Path(run_dir) / "base"
    return base.resolve() if (base / "nemo" / "weights").is_dir() else None


def run(args, name: str, cmd: list[str], kill_after: int | None = None, timeout: float = 540) -> dict:
    run_dir = next(a.split("=", 1)[1] for a in cmd if a.startswith("run_dir="))
    res = trainer_run(cmd, Path(args.out) / f"{name}.log", Path(run_dir) / "metrics.jsonl", timeout, kill_after)
    res["command"] = " ".join(cmd[1:])
    print(f"{name}: {res}", flush=True)
    return res


def speed_of(rows: list[dict], skip: int = 5) -> dict:
    """Median s/step after ``skip`` steps, tokens/s of it, peak memory, from one run's rows."""
    train = [r for r in rows if r.get("step_time_s") is not None]
    times = sorted(r["step_time_s"] for r in train[skip:])
    median = times[len(times) // 2] if times else None
    tokens = train[-1]["tokens_per_s"] * train[-1]["step_time_s"] if train else None
    return {"s_per_step": median, "tokens_per_s": round(tokens / median) if median else None,
            "peak_gib": max((r.get("gpu_mem_gb") or 0 for r in train), default=None), "steps": len(train)}


# ---- stages -----------------------------------------------------------------------

def resume_stage(args, mode: str, gpus: int, summary: dict) -> bool:
    """Train, SIGKILL, resume on ``gpus`` GPUs with the distributed optimizer; PASS/FAIL for one mode."""
    run_dir = f"{args.run_dir}_resume_{mode}_{gpus}gpu"
    cmd = command(args, run_dir, "parallel.distributed_optimizer=true", *MODES[mode], *args.overrides,
                  gpus=gpus, steps=40, val_every=20)
    first = run(args, f"resume_{mode}_run1", cmd, kill_after=30)
    second = run(args, f"resume_{mode}_run2", cmd)
    rows = metric_rows(Path(run_dir) / "metrics.jsonl")
    repeated = repeated_steps(rows)
    diffs = {s: round(b["loss"] - a["loss"], 5) for s, (a, b) in sorted(repeated.items())}
    lr_same = all(math.isclose(a["lr"], b["lr"], rel_tol=1e-6) for a, b in repeated.values()
                  if a.get("lr") is not None and b.get("lr") is not None)
    ckpts = checkpoint_steps(Path(run_dir) / "run" / "v0" / "checkpoints")
    checks = {"killed": first["killed"], "finished": second["returncode"] == 0,
              "resumed_after_step_20": min(repeated, default=0) == 21,  # the step-20 checkpoint, not the start
              "reached_40": last_step(Path(run_dir) / "metrics.jsonl") >= 40,
              "steps_21_30_repeated": set(range(21, 31)) <= set(repeated),
              "losses_equal": bool(diffs) and max(abs(d) for d in diffs.values()) <= args.loss_tol,
              "lrs_equal": lr_same, "adam_step_equals_global_step": steps_ok(ckpts)}
    summary[f"resume_{mode}"] = {"runs": [first, second], "loss_diffs": diffs, "checkpoints": ckpts,
                                 "checks": checks, "speed": speed_of(rows)}
    failed = [k for k, ok in checks.items() if not ok]
    print(f"{mode}: {'ok' if not failed else 'failed: ' + ', '.join(failed)}; repeated-step loss diffs {diffs}; "
          f"checkpoints {ckpts}", flush=True)
    return not failed


def scaling_stage(args, summary: dict) -> bool:
    n, steps = args.gpus, args.steps
    runs = {"1gpu": (1, 32), f"{n}gpu": (n, 32), f"{n}gpu_weak": (n, 32 * n)}
    shared = None
    for name, (gpus, gbs) in runs.items():
        run_dir = f"{args.run_dir}_{name}"
        share_base(run_dir, shared)
        cmd = command(args, run_dir, f"schedule.global_batch_size={gbs}", "peft.dropout=0.0", *args.overrides,
                      gpus=gpus, steps=steps, val_every=steps)
        res = run(args, name, cmd)
        shared = shared or base_of(run_dir)
        rows = metric_rows(Path(run_dir) / "metrics.jsonl")
        summary[name] = {"run": res, "gpus": gpus, "global_batch": gbs, **speed_of(rows),
                         "losses": {r["step"]: round(r["loss"], 5) for r in rows if r.get("loss") is not None}}
    one, strong, weak = (summary[k] for k in runs)
    ok = all(summary[k]["run"]["returncode"] == 0 for k in runs)
    if ok and one["tokens_per_s"]:
        summary["scaling"] = {
            "weak_efficiency": round(weak["tokens_per_s"] / (n * one["tokens_per_s"]), 3),
            "strong_speedup": round(strong["tokens_per_s"] / one["tokens_per_s"], 3),
            "loss_vs_1gpu": compare(last_rows(metric_rows(Path(f"{args.run_dir}_{n}gpu") / "metrics.jsonl")),
                                    last_rows(metric_rows(Path(f"{args.run_dir}_1gpu") / "metrics.jsonl")),
                                    range(1, steps + 1))}
        print("scaling:", summary["scaling"], flush=True)
        ok = summary["scaling"]["loss_vs_1gpu"]["max_loss_diff"] is not None \
            and summary["scaling"]["loss_vs_1gpu"]["max_loss_diff"] <= args.curve_tol
    return ok


def multi_resume_stage(args, summary: dict) -> bool:
    """N GPUs killed at 30, resumed on N (killed at 41), resumed on a different count to 60."""
    n, other = args.gpus, max(args.gpus // 2, 1)
    run_dir = f"{args.run_dir}_resume_{n}gpu"
    share_base(run_dir, base_of(f"{args.run_dir}_1gpu"))
    extra = ["schedule.global_batch_size=32", "peft.dropout=0.0", *args.overrides]
    on = {g: command(args, run_dir, *extra, gpus=g, steps=args.steps, val_every=20) for g in (n, other)}
    res = [run(args, "resume_run1", on[n], kill_after=30), run(args, "resume_run2", on[n], kill_after=41),
           run(args, f"resume_run3_{other}gpu", on[other])]
    rows = last_rows(metric_rows(Path(run_dir) / "metrics.jsonl"))
    reference = last_rows(metric_rows(Path(f"{args.run_dir}_{n}gpu") / "metrics.jsonl"))
    ckpts = checkpoint_steps(Path(run_dir) / "run" / "v0" / "checkpoints")
    checks = {"killed_twice": res[0]["killed"] and res[1]["killed"], "finished": res[2]["returncode"] == 0,
              "reached_end": max(rows, default=0) >= args.steps, "adam_step_equals_global_step": steps_ok(ckpts)}
    cmp_n, cmp_other = compare(rows, reference, range(21, 41)), compare(rows, reference, range(41, args.steps + 1))
    if reference:
        checks["same_losses_on_N"] = cmp_n["max_loss_diff"] is not None and cmp_n["max_loss_diff"] <= args.curve_tol
        checks["same_losses_on_other"] = cmp_other["max_loss_diff"] is not None \
            and cmp_other["max_loss_diff"] <= args.curve_tol
    summary["multi_resume"] = {"runs": res, "resumed_on": [n, n, other], "vs_uninterrupted_N": [cmp_n, cmp_other],
                               "checkpoints": ckpts, "checks": checks}
    failed = [k for k, ok in checks.items() if not ok]
    print("multi-GPU resume:", summary["multi_resume"], flush=True)
    return not failed


def memory_stage(args, summary: dict) -> bool:
    shared = base_of(f"{args.run_dir}_1gpu")
    ok = True
    for dist in (True, False):
        name = f"full_{args.gpus}gpu_{'distopt' if dist else 'plain'}"
        run_dir = f"{args.run_dir}_{name}"
        share_base(run_dir, shared)
        cmd = command(args, run_dir, "peft=none", f"parallel.distributed_optimizer={str(dist).lower()}",
                      *args.overrides, gpus=args.gpus, steps=20, val_every=20)
        res = run(args, name, cmd)
        shared = shared or base_of(run_dir)
        summary[name] = {"run": res, **speed_of(metric_rows(Path(run_dir) / "metrics.jsonl"))}
        ok = ok and res["returncode"] == 0
    return ok


def tp_commands(args) -> list[list[str]]:
    """Tensor parallel 2 on 2 GPUs to step 20, then the same run on 2 GPUs without it to 30."""
    run_dir, extra = f"{args.run_dir}_tp2", ["schedule.global_batch_size=32", *args.overrides]
    return [command(args, run_dir, *extra, "parallel.tensor_parallel=2", gpus=2, steps=30, val_every=10),
            command(args, run_dir, *extra, "parallel.tensor_parallel=1", gpus=2, steps=30, val_every=10)]


def tp_stage(args, summary: dict) -> bool:
    run_dir = f"{args.run_dir}_tp2"
    share_base(run_dir, base_of(f"{args.run_dir}_1gpu"))
    split, whole = tp_commands(args)
    res = [run(args, "tp2_run1", split, kill_after=21), run(args, "tp2_run2_tp1", whole)]
    rows = last_rows(metric_rows(Path(run_dir) / "metrics.jsonl"))
    ckpts = checkpoint_steps(Path(run_dir) / "run" / "v0" / "checkpoints")
    checks = {"tp2_trained_and_saved": res[0]["last_step"] >= 20 and any("step=19" in k for k in ckpts),
              "resumed_without_tp_to_30": res[1]["returncode"] == 0 and max(rows, default=0) >= 30,
              "adam_step_equals_global_step": steps_ok(ckpts)}
    summary["tp2"] = {"runs": res, "checkpoints": ckpts, "checks": checks,
                      "losses": {s: round(r["loss"], 4) for s, r in sorted(rows.items())}}
    print("tensor parallel 2:", summary["tp2"], flush=True)
    return all(checks.values())


def plan_commands(args) -> list[list[str]]:
    """The ``trainer run`` commands a stage starts (``--print-commands``)."""
    n = args.gpus
    if args.stage == "single":
        return [command(args, f"{args.run_dir}_resume_{m}_1gpu", "parallel.distributed_optimizer=true", *MODES[m],
                        *args.overrides, gpus=1, steps=40, val_every=20) for m in args.modes.split(",")]
    if args.stage == "scaling":
        return [command(args, f"{args.run_dir}_{name}", f"schedule.global_batch_size={gbs}", "peft.dropout=0.0",
                        *args.overrides, gpus=gpus, steps=args.steps, val_every=args.steps)
                for name, (gpus, gbs) in (("1gpu", (1, 32)), (f"{n}gpu", (n, 32)), (f"{n}gpu_weak", (n, 32 * n)))]
    if args.stage == "resume":
        extra = ["schedule.global_batch_size=32", "peft.dropout=0.0", *args.overrides]
        run_dir = f"{args.run_dir}_resume_{n}gpu"
        return [command(args, run_dir, *extra, gpus=g, steps=args.steps, val_every=20) for g in (n, n, max(n // 2, 1))]
    if args.stage == "memory":
        return [command(args, f"{args.run_dir}_full_{n}gpu_{tag}", "peft=none", f"parallel.distributed_optimizer={val}",
                        *args.overrides, gpus=n, steps=20, val_every=20)
                for tag, val in (("distopt", "true"), ("plain", "false"))]
    if args.stage == "tp":
        return tp_commands(args)
    return [c for stage in ("scaling", "resume", "memory", "tp")
            for c in plan_commands(argparse.Namespace(**{**vars(args), "stage": stage}))]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for logs, metrics and summary.json")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs of this machine to use (1: the resume proof)")
    ap.add_argument("--stage", default=None, choices=["single", "scaling", "resume", "memory", "tp", "all"],
                    help="default: single with --gpus 1, all otherwise (all may exceed 10 minutes)")
    ap.add_argument("--modes", default="lora", help="--gpus 1: lora, full or lora,full (run at the same time)")
    ap.add_argument("--shards", default="out/gpu_shards/aozora", help="PREFIX of PREFIX_train / PREFIX_valid")
    ap.add_argument("--run-dir", default="/tmp/trainer_parallel", help="prefix of every run's run_dir")
    ap.add_argument("--micro", type=int, default=4, help="micro batch per GPU")
    ap.add_argument("--steps", type=int, default=60, help="steps of the scaling and multi-GPU resume runs")
    ap.add_argument("--loss-tol", type=float, default=2e-3, help="repeated steps after a resume: max |loss diff|")
    ap.add_argument("--curve-tol", type=float, default=2e-2, help="N GPUs against 1, or against N: max |loss diff|")
    ap.add_argument("--print-commands", action="store_true", help="print the trainer commands and exit")
    ap.add_argument("overrides", nargs="*", help="extra trainer config overrides (key=value)")
    args = ap.parse_args(argv)
    if args.gpus < 1 or args.micro < 1:
        ap.error("--gpus and --micro must be >= 1")
    args.stage = args.stage or ("single" if args.gpus == 1 else "all")
    if args.stage != "single" and args.gpus == 1:
        ap.error(f"--stage {args.stage} needs --gpus 2 or more")
    if args.stage == "single" and args.gpus != 1:
        ap.error("--stage single is the one-GPU proof: use --gpus 1")
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        ap.error(f"--modes: {unknown} not in {sorted(MODES)}")
    if 32 % (args.micro * args.gpus) and args.stage in ("scaling", "resume", "all"):
        ap.error(f"--micro {args.micro} x --gpus {args.gpus} must divide the global batch 32")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.print_commands:
        for cmd in plan_commands(args):
            print(" ".join(cmd[1:]))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary["argv"] = sys.argv
    results = {}
    if args.stage == "single":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(args.modes.split(","))) as pool:  # one GPU, processes side by side
            futures = {m: pool.submit(resume_stage, args, m, 1, summary) for m in args.modes.split(",")}
        results = {f"resume_{m}": f.result() for m, f in futures.items()}
    for stage, fn in (("scaling", scaling_stage), ("resume", multi_resume_stage), ("memory", memory_stage),
                      ("tp", tp_stage)):
        if args.stage in (stage, "all"):
            results[stage] = fn(args, summary)
            summary_path.write_text(json.dumps(summary, indent=2))
    summary["results"] = results
    summary_path.write_text(json.dumps(summary, indent=2))
    verdict = "PASS" if results and all(results.values()) else "FAIL"
    print(f"{verdict} {args.stage} on {args.gpus} GPU(s): " + ", ".join(f"{k} {'ok' if v else 'FAILED'}"
                                                                       for k, v in results.items()), flush=True)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
