"""The peer rows of ``bench/trainer_speed.py --stage speed``: what users run instead of the trainer.

    PYTHONPATH=/tmp/peers python3 bench/peer_rows.py --rows liger-lora-mb16,liger-full-mb8 \\
        --shards out/gpu_shards/aozora --base /tmp/speed_peer_base --tokenizer-dir DIR --out results/speed

Rows (``FRAMEWORK-KIND-mbN[-offload]``): ``hf`` (transformers + PEFT, SDPA), ``liger``
(the same with ``apply_liger_kernel_to_qwen2()`` before the model is built), ``unsloth``
(``FastLanguageModel`` loaded from a random Qwen2 saved with ``save_pretrained``,
``use_gradient_checkpointing=False``, or ``"unsloth"`` with ``-offload``: its activation
offloading to host memory); ``lora`` (r16 / alpha 32 / dropout 0.1 on q,k,v,o) or ``full``.
Same workload as the trainer rows: Qwen2.5-0.5B shape, bf16, seq 2048, global batch 32,
AdamW (0.9, 0.95, wd 0.1), lr 3e-4 with warmup and cosine, clip 1.0, the same Aozora
tokens in order; median s/step of steps 6-16, peak ``max_memory_allocated``, loss at the
last step. Every peer row starts from the same random model (seed 0), saved once.

One JSON line per row is appended to ``OUT/rows.jsonl``. Each process runs one framework
(Liger patches transformers for the whole process; Unsloth wants to be imported first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from gpu_turns import wait_turn
from rows_file import append_row

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SEQ, GBS = 2048, 32


def parse_row(row: str) -> dict:
    """``liger-lora-mb16`` -> framework, full, micro batch, offload.

    >>> parse_row("unsloth-lora-mb8-offload")
    {'row': 'unsloth-lora-mb8-offload', 'framework': 'unsloth', 'full': False, 'micro_batch': 8, 'offload': True}
    """
    parts = row.split("-")
    if len(parts) not in (3, 4) or parts[0] not in ("hf", "liger", "unsloth") or parts[1] not in ("lora", "full") \
            or not parts[2].startswith("mb") or (len(parts) == 4 and parts[3] != "offload"):
        raise ValueError(f"{row}: expected FRAMEWORK-lora|full-mbN[-offload], FRAMEWORK one of hf, liger, unsloth")
    return {"row": row, "framework": parts[0], "full": parts[1] == "full", "micro_batch": int(parts[2][2:]),
            "offload": len(parts) == 4}


def lr_at(step: int, steps: int, warmup: int, lr: float = 3e-4, min_lr: float = 3e-5) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def ensure_base(base: Path, tokenizer_dir: str | None) -> Path:
    """The random Qwen2.5-0.5B-shaped model every peer row loads (seed 0, tied embeddings)."""
    if (base / "config.json").is_file():
        return base
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         bos_token_id=151643, eos_token_id=151643)
    tmp = base.with_name(base.name + f".tmp-{os.getpid()}")
    Qwen2ForCausalLM(config).to("cuda", torch.bfloat16).save_pretrained(tmp)
    if tokenizer_dir:  # Unsloth loads the tokenizer from the model directory
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and not (tmp / f.name).exists():
                shutil.copy(f, tmp / f.name)
    tmp.rename(base)
    return base


def build(spec: dict, base: Path):
    """(model, trainable parameters) for one row, on the GPU in bf16."""
    import torch

    if spec["framework"] == "unsloth":
        import inspect

        from unsloth import FastLanguageModel

        gc = "unsloth" if spec["offload"] else False
        wanted = dict(model_name=str(base), max_seq_length=SEQ, dtype=torch.bfloat16, load_in_4bit=False,
                      load_in_8bit=False, full_finetuning=spec["full"], use_gradient_checkpointing=gc,
                      local_files_only=True)
        accepted = inspect.signature(FastLanguageModel.from_pretrained).parameters
        kwargs = wanted if any(p.kind == p.VAR_KEYWORD for p in accepted.values()) else \
            {k: v for k, v in wanted.items() if k in accepted}
        model, _ = FastLanguageModel.from_pretrained(**kwargs)
        if not spec["full"]:
            model = FastLanguageModel.get_peft_model(model, r=16, target_modules=LORA_TARGETS, lora_alpha=32,
                                                     lora_dropout=0.1, bias="none", use_gradient_checkpointing=gc,
                                                     random_state=0)
        model.train()
    else:
        if spec["framework"] == "liger":
            from liger_kernel.transformers import apply_liger_kernel_to_qwen2

            apply_liger_kernel_to_qwen2()  # before the model exists: it swaps transformers' Qwen2 classes
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16, attn_implementation="sdpa",
                                                     local_files_only=True).to("cuda")
        if not spec["full"]:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1,
                                                     target_modules=LORA_TARGETS))
        model.train()
    return model, [p for p in model.parameters() if p.requires_grad]


def train_row(spec: dict, base: Path, shards: str, steps: int) -> dict:
    import numpy as np
    import torch

    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, params = build(spec, base)
    setup_s = time.perf_counter() - t0
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = np.memmap(shards + "_train.bin", dtype=np.int32, mode="r")
    micro = spec["micro_batch"]
    accum, times, losses, pos, warmup = GBS // micro, [], [], 0, min(20, steps // 4)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, warmup)
        torch.cuda.synchronize()
        t = time.perf_counter()
        total = torch.zeros((), device="cuda")
        for _ in range(accum):
            chunk = np.asarray(tokens[pos:pos + micro * SEQ]).reshape(micro, SEQ)
            pos = (pos + micro * SEQ) % (len(tokens) - micro * SEQ)
            ids = torch.from_numpy(chunk.astype(np.int64)).cuda()
            loss = model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        losses.append(float(total))
    timed = sorted(times[5:])  # steps 6..N, as the trainer rows
    s_per_step = timed[len(timed) // 2]
    row = dict(spec, kind="peer", s_per_step=round(s_per_step, 4), tokens_per_s=round(GBS * SEQ / s_per_step),
               peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2), loss_last=round(losses[-1], 4),
               losses=[round(x, 4) for x in losses], step_times=[round(x, 4) for x in times],
               setup_s=round(setup_s, 1), first_step_s=round(times[0], 2), trainable=sum(p.numel() for p in params))
    del model, params, opt
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", required=True, help="comma-separated row names, one framework")
    ap.add_argument("--shards", default="out/gpu_shards/aozora")
    ap.add_argument("--base", default="/tmp/speed_peer_base", help="random HF model directory (made if absent)")
    ap.add_argument("--tokenizer-dir", default=None, help="HF tokenizer files copied into --base")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--turn-dir", default=None, help="take a turn on the GPU (bench/gpu_turns.py)")
    ap.add_argument("--name", default=None, help="this worker's name for --turn-dir")
    args = ap.parse_args()
    os.environ.update(OFFLINE_ENV)
    specs = [parse_row(r) for r in args.rows.split(",") if r]
    t_start = time.time()
    if specs[0]["framework"] == "unsloth":
        import unsloth  # noqa: F401  (before transformers, as Unsloth asks)
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import_s = time.time() - t_start
    waited = wait_turn(args.turn_dir, args.name) if args.turn_dir else 0.0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        try:
            base = ensure_base(Path(args.base), args.tokenizer_dir)
            row = train_row(spec, base, args.shards, args.steps)
        except Exception as exc:  # one row's failure is a row of the table, not the end of the others
            row = dict(spec, kind="peer", error=f"{type(exc).__name__}: {exc}"[:500],
                       traceback=traceback.format_exc()[-3000:])
        row.update(import_s=round(import_s, 1), waited_s=round(waited, 1))
        append_row(out / "rows.jsonl", row)
        print("ROW", json.dumps({k: row.get(k) for k in ("row", "s_per_step", "peak_gib", "loss_last", "error")}),
              flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
