"""GPU benchmark of ``trainer run`` on one NVIDIA GPU (H100, H200): resume demonstration and speed table.

    python3 bench/trainer_speed.py --out results/h100 --stage all --steps 120 --val-every 40 --kill-after 90
    PYTHONPATH=/tmp/site:$PWD python3 bench/trainer_speed.py --out results/speed --stage speed \
        --variants graphs-mb8-c2048,fast-mb8-c2048 --profile-variant fast-mb8-c2048 [--peer-rows ...]

``--stage speed`` (the benchmark of record, ``bench/speed_stage.py``): the peers (HF +
PEFT, Liger-Kernel, Unsloth with and without its offloading, Liger and Unsloth
full-parameter; ``bench/peer_rows.py``, their own ``--peer-site``) and our ``VARIANTS``
(all in one NeMo process, ``bench/speed_driver.py``) in one call, taking turns on the GPU;
one table of s/step (median of steps 6-16), tokens/s, MFU, peak memory and loss, the
ratio to the fastest peer, and the kernel-category breakdown of ``--profile-variant``.

``--stage all`` (or ``baseline`` / ``train``):

1. Hugging Face transformers + PEFT LoRA baseline of the same shape (Qwen2.5-0.5B,
   random init, bf16, SDPA, seq 2048, GBS 32) at each ``--baseline-micro``.
2. ``trainer run`` (NeMo 2, from_scratch, LoRA r16 on qkv+proj) for ``--steps``
   steps with validation and checkpoints every ``--val-every``; SIGKILLed once the
   metrics file passes ``--kill-after``.
3. The same command again: it must resume from the last checkpoint, continuing
   step count and learning-rate schedule, and finish. Then a copy of the checkpoints
   is damaged on purpose and ``prepare_resume`` must quarantine it.

``--stage speed-processes``: the older speed table, the HF baseline and each variant in
its own process (NeMo spends ~50 s importing in each); logs, metrics, profiles and
``summary.json`` go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's trainer package


def lr_at(step: int, steps: int, warmup: int, lr: float = 3e-4, min_lr: float = 3e-5) -> float:
    """Linear warmup, then cosine to ``min_lr`` at ``steps`` (the trainer's schedule)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def hf_baseline(shards: str, steps: int, micro: int, gbs: int, seq: int, warmup: int, full: bool = False) -> dict:
    """Hugging Face transformers + PEFT LoRA (or full-parameter) on the same shards and schedule."""
    import numpy as np
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config).to("cuda", torch.bfloat16)
    if not full:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = np.memmap(shards + "_train.bin", dtype=np.int32, mode="r")
    accum, times, losses, pos = gbs // micro, [], [], 0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, warmup)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        total = torch.zeros((), device="cuda")
        for _ in range(accum):
            chunk = np.asarray(tokens[pos:pos + micro * seq]).reshape(micro, seq)
            pos = (pos + micro * seq) % (len(tokens) - micro * seq)
            ids = torch.from_numpy(chunk.astype(np.int64)).cuda()
            loss = model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(total))
    timed = sorted(times[3:])
    s_per_step = timed[len(timed) // 2]  # median, like the trainer rows
    return {"s_per_step": round(s_per_step, 4), "tokens_per_s": round(gbs * seq / s_per_step),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "trainable": sum(p.numel() for p in params), "losses": [round(x, 4) for x in losses],
            "steps_timed": len(timed), "micro_batch": micro, "full": full}


def last_step(metrics: Path) -> int:
    if not metrics.is_file():
        return -1
    steps = [json.loads(line).get("step", -1) for line in metrics.read_text().splitlines() if line.strip()]
    return max(steps, default=-1)


def trainer_run(cmd: list[str], log: Path, metrics: Path, timeout: float, kill_after: int | None) -> dict:
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        killed = False
        while proc.poll() is None:
            time.sleep(2)
            if kill_after is not None and last_step(metrics) >= kill_after:
                os.killpg(proc.pid, signal.SIGKILL)  # an interruption, not a clean stop
                killed = True
            if time.time() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    return {"returncode": proc.returncode, "killed": killed, "seconds": round(time.time() - t0, 1),
            "last_step": last_step(metrics)}


def step_tflop(peft: bool, seq: int = 2048, gbs: int = 32, layers: int = 24, hidden: int = 896,
               ffn: int = 4864, kv: int = 128, vocab: int = 151936, lora_rank: int = 16) -> float:
    """Model FLOPs of one step (NeMo's convention): 229 full-parameter, ~165 with LoRA.

    Weight matrices cost 2 FLOPs per parameter and token forward; backward doubles that
    for the input gradient and again for the weight gradient (skipped for frozen
    weights under LoRA). Attention scores/values (4*s*h per token and layer) have no
    weights: always 3x forward.
    """
    linear = layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * ffn) + hidden * vocab
    attn = 4 * seq * hidden * layers / 2  # per token: QK^T and AV, 2 FLOPs per MAC -> 2*s*h each
    lora = layers * lora_rank * (hidden + (hidden + 2 * kv) + hidden + hidden)
    per_token = (2 * linear * 3 + 2 * attn * 3) if not peft else (2 * linear * 2 + 2 * attn * 3 + 2 * lora * 3)
    return per_token * seq * gbs / 1e12


PEAK_TFLOPS = 790.0  # bf16 dense matrix products measured on one H100 80GB (8192^3)


def run_baseline(args, micro: int, steps: int, full: bool = False) -> dict | None:
    name = f"hf_{'full' if full else 'lora'}_mb{micro}"
    cmd = [sys.executable, __file__, "--out", args.out, "--shards", args.shards, "--micro", str(micro),
           "--stage", "_hf", "--speed-steps", str(steps)] + (["--full"] if full else [])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None
    (Path(args.out) / f"{name}.log").write_text(res.stdout + res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else None


CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "qwen25_05b_ja_lora.yaml")
GRAPHS8 = ["schedule.micro_batch_size=8", "model.loss_chunk_tokens=2048", "model.cuda_graphs=true"]
FAST = ["model.sdpa_backend=cudnn", "peft.fused_adapters=true"]

# Trainer configurations compared by --stage speed (config overrides on top of the LoRA config).
# Predictions for each are in docs/benchmarks.md ("Trainer speed against the peers").
FULL_MB8 = ["peft.method=none", "schedule.micro_batch_size=8", "model.sdpa_backend=cudnn",
            "model.loss_chunk_tokens=2048"]
FULL_MB16 = ["peft.method=none", "schedule.micro_batch_size=16", "model.sdpa_backend=cudnn",
             "model.loss_chunk_tokens=2048"]
VARIANTS = {
    "ref-mb4": ["model.fused_loss=false", "model.fusions=false", "schedule.micro_batch_size=4"],
    "fused-mb4": ["schedule.micro_batch_size=4"],
    "fused-mb8": ["schedule.micro_batch_size=8"],
    "fused-mb8-c2048": ["schedule.micro_batch_size=8", "model.loss_chunk_tokens=2048"],
    "fused-mb8-rcmlp": ["schedule.micro_batch_size=8", "model.recompute=[mlp]", "model.cuda_graphs=false"],
    "fused-mb16-rcmlp": ["schedule.micro_batch_size=16", "model.recompute=[mlp]", "model.loss_chunk_tokens=2048", "model.cuda_graphs=false"],
    "upstream-lora-mb8": ["schedule.micro_batch_size=8", "model.fused_loss=false", "peft.lean_adapters=false"],
    "graphs-mb4": ["schedule.micro_batch_size=4", "model.cuda_graphs=true"],
    "graphs-mb8": ["schedule.micro_batch_size=8", "model.cuda_graphs=true"],
    "graphs-mb8-c2048": ["schedule.micro_batch_size=8", "model.loss_chunk_tokens=2048", "model.cuda_graphs=true"],
    "full-mb4": ["peft.method=none", "schedule.micro_batch_size=4"],
    "full-mb8-rcmlp": ["peft.method=none", "schedule.micro_batch_size=8", "model.recompute=[mlp]", "model.cuda_graphs=false"],
    "full-mb4-graphs": ["peft.method=none", "schedule.micro_batch_size=4", "model.cuda_graphs=true"],
    # issue 18: one plug-in at a time on top of today's best (graphs-mb8-c2048), then together
    "auto-mb8-c2048": GRAPHS8 + ["model.sdpa_backend=auto"],
    "cudnn-mb8-c2048": GRAPHS8 + ["model.sdpa_backend=cudnn"],
    "flash-mb8-c2048": GRAPHS8 + ["model.sdpa_backend=flash"],
    "fusedlora-mb8-c2048": GRAPHS8 + ["peft.fused_adapters=true"],
    "fast-mb8-c2048": GRAPHS8 + FAST,
    "fast-compiled-mb8-c2048": GRAPHS8 + FAST + ["model.compile_layers=true"],
    "fast-compiled-eager-mb8-c2048": GRAPHS8[:2] + FAST + ["model.compile_layers=true", "model.cuda_graphs=false"],
    "fast-mb16-c2048-mlprc": ["schedule.micro_batch_size=16", "model.loss_chunk_tokens=2048",
                              "model.mlp_recompute=true"] + FAST,
    # low memory (<= 4 GiB): fc1 recompute inside the graphs, small loss chunks
    "lowmem-mb2-c1024": ["schedule.micro_batch_size=2", "model.loss_chunk_tokens=1024", "model.mlp_recompute=true"]
                        + FAST,
    "lowmem-cudnn-mb2-c1024": ["schedule.micro_batch_size=2", "model.loss_chunk_tokens=1024",
                               "model.mlp_recompute=true", "model.sdpa_backend=cudnn"],  # without the Triton adapters
    "lowmem-mb4-c1024": ["schedule.micro_batch_size=4", "model.loss_chunk_tokens=1024", "model.mlp_recompute=true"]
                        + FAST,
    "lowmem-mb4-c512": ["schedule.micro_batch_size=4", "model.loss_chunk_tokens=512", "model.mlp_recompute=true"]
                       + FAST,
    # the same micro batches without mlp_recompute: what the recomputation costs at each
    "fast-mb4-c1024": ["schedule.micro_batch_size=4", "model.loss_chunk_tokens=1024"] + FAST,
    "fast-mb2-c1024": ["schedule.micro_batch_size=2", "model.loss_chunk_tokens=1024"] + FAST,
    # full-parameter
    "full-fast-mb4": ["peft.method=none", "schedule.micro_batch_size=4", "model.sdpa_backend=cudnn"],
    "full-fast-mb8": FULL_MB8,
    "full-fast-mb8-fadam": FULL_MB8 + ["optim.fused_adam=true"],
    "full-fast-mb8-mlprc": FULL_MB8 + ["model.mlp_recompute=true"],
    "full-fast-mb8-wgrad": FULL_MB8 + ["model.wgrad_fusion=true"],
    "full-fast-mb8-wgrad-fadam": FULL_MB8 + ["model.wgrad_fusion=true", "optim.fused_adam=true"],
    "full-fast-mb16-wgrad": FULL_MB16 + ["model.wgrad_fusion=true"],
    "full-fast-mb4-wgrad": ["peft.method=none", "schedule.micro_batch_size=4", "model.sdpa_backend=cudnn",
                            "model.wgrad_fusion=true"],
    # optim.foreach_scale: megatron's clipping and main-to-model copy as foreach kernels
    "fast-mb8-c2048-fe": GRAPHS8 + FAST + ["optim.foreach_scale=true"],
    "full-fast-mb8-fe": FULL_MB8 + ["optim.foreach_scale=true"],
    "full-fast-mb8-wgrad-fadam-fe": FULL_MB8 + ["model.wgrad_fusion=true", "optim.fused_adam=true",
                                                "optim.foreach_scale=true"],
    "full-fast-mb16-wgrad-fe": FULL_MB16 + ["model.wgrad_fusion=true", "optim.foreach_scale=true"],
    "full-fast-mb16-wgrad-fadam-fe": FULL_MB16 + ["model.wgrad_fusion=true", "optim.fused_adam=true",
                                                 "optim.foreach_scale=true"],
    "fast-mb8-c2048-sf": GRAPHS8 + FAST + ["optim.sync_free_step=true"],
    "fast-mb8-c2048-log10": GRAPHS8 + FAST + ["logging.every_n_steps=10"],
    "fast-mb8-c2048-sf-log10": GRAPHS8 + FAST + ["optim.sync_free_step=true", "logging.every_n_steps=10"],
    "full-fast-mb8-wgrad-fadam-fe-sf": FULL_MB8 + ["model.wgrad_fusion=true", "optim.fused_adam=true",
                                                   "optim.foreach_scale=true", "optim.sync_free_step=true"],
}


def variant_overrides(name: str) -> list[str]:
    """A variant's overrides; ``NAME@K`` runs ``NAME`` again in the same call (for A/B/A/B orders)."""
    base, _, repeat = name.partition("@")
    if base not in VARIANTS or (repeat and not repeat.isdigit()):
        raise KeyError(f"unknown variant {name!r}: use one of {', '.join(sorted(VARIANTS))}, optionally with @K")
    return list(VARIANTS[base])


SPEED_VARIANTS = ("graphs-mb8-c2048,cudnn-mb8-c2048,fusedlora-mb8-c2048,fast-mb8-c2048,lowmem-mb2-c1024,"
                  "full-mb4-graphs,full-fast-mb4,fast-compiled-mb8-c2048")


def run_overrides(shards: str, run_dir: str, steps: int, val_every: int, extra: list[str], micro: int = 4) -> list[str]:
    """The config overrides every benchmark run shares (random base, these shards), then ``extra``."""
    return ["model.base=null", "model.from_scratch=true", f"data.train=[{shards}_train]",
            f"data.valid=[{shards}_valid]", f"run_dir={run_dir}", f"schedule.max_steps={steps}",
            f"schedule.val_every={val_every}", "schedule.val_batches=4", f"optim.warmup_steps={min(20, steps // 4)}",
            f"schedule.micro_batch_size={micro}", "schedule.early_stopping.patience=null", *extra]


def trainer_command(args, run_dir: str, steps: int, val_every: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", "run", "configs/qwen25_05b_ja_lora.yaml",
            *run_overrides(args.shards, run_dir, steps, val_every, extra, args.micro)]


def speed(args, out: Path, summary: dict) -> None:
    """The peers and our variants in one call (``bench/speed_stage.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed_stage import run_speed_stage

    run_speed_stage(args, out, summary)


def speed_processes(args, out: Path, summary: dict) -> None:
    """Baseline and trainer variants, each ``--speed-steps`` steps from random weights, one table."""
    steps = args.speed_steps
    for micro in (int(m) for m in args.baseline_micro.split(",") if m):
        summary[f"hf_lora_mb{micro}"] = run_baseline(args, micro, steps)
        print(f"hf lora mb {micro}:", summary[f"hf_lora_mb{micro}"], flush=True)
    shared_base = None  # the random base checkpoint, imported once (same seed, same weights)
    for name in (v for v in args.variants.split(",") if v):
        run_dir = f"{args.run_dir}_{name}"
        if shared_base is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            if not (Path(run_dir) / "base").exists():
                (Path(run_dir) / "base").symlink_to(shared_base)
        extra = variant_overrides(name) + list(args.overrides)
        if name in (args.profile_variant or "").split(","):
            extra.append(f"logging.profile_steps=[{steps - 6},{steps - 4}]")
        cmd = trainer_command(args, run_dir, steps, steps, extra)
        res = trainer_run(cmd, out / f"{name}.log", Path(run_dir) / "metrics.jsonl", args.variant_timeout, None)
        metrics = Path(run_dir) / "metrics.jsonl"
        row = {"run": res, "overrides": extra}
        if metrics.is_file():
            row.update(metrics_summary(metrics))
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            row["losses"] = [round(r["loss"], 4) for r in rows if r.get("loss") is not None]
        for prof in Path(run_dir).glob("profile_steps*.txt"):
            (out / f"{name}_{prof.name}").write_text(prof.read_text())
        summary[name] = row
        (out / "summary.json").write_text(json.dumps(summary, indent=2))  # kept if a later run overruns
        ckpt_dir = Path(run_dir) / "run" / "v0" / "checkpoints"
        if "quarantine_check" not in summary and any(ckpt_dir.glob("*")):
            try:
                summary["quarantine_check"] = check_quarantine_on(ckpt_dir, Path(run_dir + "_qcheck"))
            except Exception as exc:  # report, do not lose the rest of the summary
                summary["quarantine_check"] = f"failed: {exc!r}"
            print("quarantine check:", summary["quarantine_check"], flush=True)
        if shared_base is None and (Path(run_dir) / "base" / "nemo" / "weights").is_dir():
            shared_base = (Path(run_dir) / "base").resolve()
        print(name, {k: row.get(k) for k in ("median_s_per_step", "peak_gib", "last_loss")}, res, flush=True)
    if args.baseline_full:
        summary["hf_full_mb4"] = run_baseline(args, 4, steps, full=True)
        print("hf full mb 4:", summary["hf_full_mb4"], flush=True)


def metrics_summary(metrics: Path, skip: int = 5) -> dict:
    """Median step time (after ``skip`` warm-up steps of each process), peak memory, losses."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("step_time_s") is not None]
    times = sorted(r["step_time_s"] for r in train[skip:])
    median = times[len(times) // 2] if times else None
    return {"median_s_per_step": median, "peak_gib": max((r.get("gpu_mem_gb") or 0 for r in train), default=None),
            "val_loss": [(r["step"], round(r["val_loss"], 4)) for r in rows if "val_loss" in r],
            "last_loss": train[-1]["loss"] if train else None}


def check_quarantine_on(ckpt_dir: Path, work: Path) -> dict:
    """Copy the run's checkpoints, truncate the newest one's largest weights file, ask prepare_resume."""
    import shutil

    from trainer.run.checkpoints import find_resumable, prepare_resume

    copy = work / "checkpoints"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ckpt_dir, copy, symlinks=True)
    newest, _ = find_resumable(copy)
    victim = max((p for p in (newest / "weights").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    said: list[str] = []
    chosen, explicit = prepare_resume(copy, work / "quarantine", echo=said.append)
    return {"truncated": str(victim.relative_to(copy)), "said": said,
            "chosen": chosen.name if chosen else None, "explicit_resume_path": bool(explicit),
            "quarantined": sorted(p.name for p in (work / "quarantine").glob("*"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shards", default="out/gpu_shards/aozora")
    ap.add_argument("--run-dir", default="/tmp/trainer_h100_run")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--val-every", type=int, default=40)
    ap.add_argument("--kill-after", type=int, default=90)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--baseline-micro", default="4,8", help="micro batch sizes of the baseline, comma-separated")
    ap.add_argument("--profile", default=None, help="START,END: profile these steps of the (resumed) run")
    ap.add_argument("--stage", default="all", help="all | baseline | train | speed | speed-processes | report")
    ap.add_argument("--no-resume", action="store_true", help="one run only, no kill and resume")
    ap.add_argument("--variants", default=SPEED_VARIANTS,
                    help=f"--stage speed: comma-separated names of {sorted(VARIANTS)}; NAME@2 runs NAME again")
    ap.add_argument("--peer-rows", default=None, help="--stage speed: bench/peer_rows.py rows "
                    "(default: HF, Liger, Unsloth LoRA and full); '' for none")
    ap.add_argument("--peer-site", default="/tmp/peers", help="--stage speed: where the peer wheels are installed")
    ap.add_argument("--nemo-site", default="/tmp/site", help="--stage speed: where NeMo's wheels are installed")
    ap.add_argument("--peer-base", default="/tmp/speed_peer_base", help="--stage speed: the peers' random model")
    ap.add_argument("--peers-json", action="append", help="--stage speed: also show the peer rows of this "
                    "rows.jsonl (an earlier call); --stage report: every row of these files")
    ap.add_argument("--budget-s", type=int, default=560, help="--stage speed: stop everything after this long")
    ap.add_argument("--speed-steps", type=int, default=16, help="steps per speed row (median of 6..N)")
    ap.add_argument("--variant-timeout", type=int, default=200, help="seconds one variant may take")
    ap.add_argument("--profile-variant", default=None, help="--stage speed: profile two late steps of these (comma-separated)")
    ap.add_argument("--sync-trace-variant", default=None,
                    help="--stage speed: list the host-device syncs of two late steps of these (comma-separated)")
    ap.add_argument("--baseline-full", action="store_true", help="--stage speed: also HF full-parameter, mb 4")
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra trainer config overrides (key=value)")
    args = ap.parse_args()
    try:  # a misspelt variant fails here, not after minutes of GPU time
        for name in (v for v in args.variants.split(",") if v):
            variant_overrides(name)
    except KeyError as exc:
        ap.error(exc.args[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"argv": sys.argv, "lora_step_tflop": round(step_tflop(True), 1),
                     "full_step_tflop": round(step_tflop(False), 1)}
    if args.stage == "_hf":
        steps = args.speed_steps
        print(json.dumps(hf_baseline(args.shards, steps, args.micro, 32, 2048, min(20, steps // 4), args.full)))
        return
    if args.stage == "speed":
        if args.peer_rows is None:
            from speed_stage import PEER_ROWS

            args.peer_rows = PEER_ROWS
        speed(args, out, summary)
        return
    if args.stage == "report":  # the table of rows measured by earlier calls (--peers-json FILE ...), no GPU
        from rows_file import read_rows
        from speed_stage import print_report

        rows = [r for path in args.peers_json or [] for r in read_rows(Path(path))]
        summary["verdict"] = print_report(rows, out, args.profile_variant, {})
        (out / "summary.json").write_text(json.dumps(dict(summary, rows=rows), indent=1))
        return
    if args.stage == "speed-processes":
        speed_processes(args, out, summary)
    if args.stage in ("all", "baseline"):
        for micro in (int(m) for m in args.baseline_micro.split(",") if m):
            summary[f"hf_lora_mb{micro}"] = run_baseline(args, micro, 8)
            print(f"hf baseline mb {micro}:", summary[f"hf_lora_mb{micro}"], flush=True)
    if args.stage in ("all", "train"):
        metrics = Path(args.run_dir) / "metrics.jsonl"
        cmd = trainer_command(args, args.run_dir, args.steps, args.val_every, list(args.overrides))
        summary["command"] = " ".join(cmd[1:])
        summary["run1"] = trainer_run(cmd, out / "run1.log", metrics, 420,
                                      None if args.no_resume else args.kill_after)
        print("run1:", summary["run1"], flush=True)
        if not args.no_resume:
            extra = [f"logging.profile_steps=[{args.profile}]"] if args.profile else []
            summary["run2"] = trainer_run(cmd + extra, out / "run2.log", metrics, 300, None)
            print("run2:", summary["run2"], flush=True)
        if metrics.is_file():
            (out / "metrics.jsonl").write_text(metrics.read_text())
            summary["metrics"] = metrics_summary(metrics)
        ckpt_dir = Path(args.run_dir) / "run" / "v0" / "checkpoints"
        summary["checkpoints"] = sorted(p.name for p in ckpt_dir.glob("*"))
        for prof in Path(args.run_dir).glob("profile_steps*.txt"):
            (out / prof.name).write_text(prof.read_text())
        if summary["checkpoints"]:
            try:
                summary["quarantine_check"] = check_quarantine_on(ckpt_dir, Path(args.run_dir + "_qcheck"))
            except Exception as exc:  # report, do not lose the rest of the summary
                summary["quarantine_check"] = f"failed: {exc!r}"
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(summary, args)


def print_table(summary: dict, args) -> None:
    """step time, tokens/s, MFU, peak memory and loss of every row measured in this run."""
    rows = []
    for key, value in summary.items():
        if key.startswith("hf_") and value:
            kind = "full" if value.get("full") else "LoRA"
            rows.append((f"HF+PEFT {kind} mb {value['micro_batch']}" if kind == "LoRA" else
                         f"HF full mb {value['micro_batch']}", value["s_per_step"], value["peak_gib"],
                         value["losses"][-1], kind == "full"))
        elif key.partition("@")[0] in VARIANTS and value.get("median_s_per_step"):
            rows.append((f"trainer {key}", value["median_s_per_step"], value["peak_gib"], value.get("last_loss"),
                         key.startswith("full")))
    m = summary.get("metrics")
    if m and m["median_s_per_step"]:
        rows.append((f"trainer run LoRA mb {args.micro}", m["median_s_per_step"], m["peak_gib"], m["last_loss"], False))
    print(f"\n{'run':<28}{'s/step':>8}{'tokens/s':>10}{'MFU':>7}{'peak GiB':>10}{'loss':>9}")
    for name, sec, peak, loss, full in rows:
        mfu = step_tflop(not full) / sec / PEAK_TFLOPS
        loss_text = f"{loss:9.4f}" if loss is not None else f"{'-':>9}"
        print(f"{name:<28}{sec:>8.3f}{65536 / sec:>10,.0f}{mfu:>7.1%}{peak:>10.1f}{loss_text}")


if __name__ == "__main__":
    main()
