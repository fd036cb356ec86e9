"""GPU benchmark and resume demonstration of ``trainer run`` on one H100.

    python3 bench/trainer_h100.py --out results/h100 --shards out/gpu_shards/aozora

1. Hugging Face transformers + PEFT LoRA baseline of the same shape (Qwen2.5-0.5B,
   random init, bf16, SDPA, seq 2048, micro batch 4, GBS 32), timed steps.
2. ``trainer run`` (NeMo 2, from_scratch, LoRA r16 on qkv+proj) for ``--steps``
   steps with validation and checkpoints every ``--val-every``; SIGKILLed once the
   metrics file passes ``--kill-after``.
3. The same command again: it must resume from the last checkpoint, continuing
   step count and learning-rate schedule, and finish.

Each stage runs in its own process (NeMo spends ~50 s importing); logs, the
metrics file and a summary JSON go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def hf_baseline(shards: str, steps: int, micro: int, gbs: int, seq: int) -> dict:
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config).to("cuda", torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.1)
    tokens = np.memmap(shards + "_train.bin", dtype=np.int32, mode="r")
    accum, times, losses, pos = gbs // micro, [], [], 0
    for step in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(accum):
            chunk = np.asarray(tokens[pos:pos + micro * seq]).reshape(micro, seq)
            pos = (pos + micro * seq) % (len(tokens) - micro * seq)
            ids = torch.from_numpy(chunk.astype(np.int64)).cuda()
            loss = model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss) * accum)
    timed = times[3:]
    s_per_step = sum(timed) / len(timed)
    return {"s_per_step": round(s_per_step, 4), "tokens_per_s": round(gbs * seq / s_per_step),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "trainable": trainable,
            "losses": [round(x, 4) for x in losses], "steps_timed": len(timed), "micro_batch": micro}


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shards", default="out/gpu_shards/aozora")
    ap.add_argument("--run-dir", default="/tmp/trainer_h100_run")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--val-every", type=int, default=40)
    ap.add_argument("--kill-after", type=int, default=90)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--stage", default="all", help="all | baseline | train")
    ap.add_argument("--no-resume", action="store_true", help="one run only, no kill and resume")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"argv": sys.argv}
    if args.stage in ("all", "baseline"):
        res = subprocess.run([sys.executable, __file__, "--out", args.out, "--shards", args.shards,
                              "--micro", str(args.micro), "--stage", "_hf"], capture_output=True, text=True,
                             timeout=240)
        (out / "hf_baseline.log").write_text(res.stdout + res.stderr)
        summary["hf_baseline"] = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else None
        print("hf baseline:", summary["hf_baseline"], flush=True)
    if args.stage == "_hf":
        print(json.dumps(hf_baseline(args.shards, 11, args.micro, 32, 2048)))
        return
    if args.stage in ("all", "train"):
        metrics = Path(args.run_dir) / "metrics.jsonl"
        cmd = [sys.executable, "-m", "trainer.cli", "run", "configs/qwen25_05b_ja_lora.yaml",
               "model.base=null", "model.from_scratch=true", f"data.train=[{args.shards}_train]",
               f"data.valid=[{args.shards}_valid]", f"run_dir={args.run_dir}", f"schedule.max_steps={args.steps}",
               f"schedule.val_every={args.val_every}", "schedule.val_batches=4", f"optim.warmup_steps={min(20, args.steps // 4)}",
               f"schedule.micro_batch_size={args.micro}", "schedule.early_stopping.patience=null"]
        summary["command"] = " ".join(cmd[1:])
        summary["run1"] = trainer_run(cmd, out / "run1.log", metrics, 280,
                                      None if args.no_resume else args.kill_after)
        print("run1:", summary["run1"], flush=True)
        if not args.no_resume:
            summary["run2"] = trainer_run(cmd, out / "run2.log", metrics, 200, None)
            print("run2:", summary["run2"], flush=True)
        if metrics.is_file():
            (out / "metrics.jsonl").write_text(metrics.read_text())
        ckpts = sorted(p.name for p in (Path(args.run_dir) / "run" / "v0" / "checkpoints").glob("*"))
        summary["checkpoints"] = ckpts
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
