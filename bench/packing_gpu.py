"""Document-masked packed training against today's causal SDPA, on one NVIDIA GPU (H200, H100).

    python3 bench/packing_gpu.py --out results/h200_packing --stage prepare,kernels
    python3 bench/packing_gpu.py --out results/h200_packing --stage train --variants causal,packed
    python3 bench/packing_gpu.py --out results/h200_packing --stage train --variants packed-eager,causal-eager
    python3 bench/packing_gpu.py --out results/h200_packing --stage eval --variants causal,packed
    python3 bench/packing_gpu.py --out results/h200_packing --stage table

Each call stays under 10 minutes on one H200 (a trainer run is ~50 s of imports, ~30 s
of first-step compilation and 100 steps of ~0.5 s); ``--stage all`` runs everything in
one call. Results accumulate in ``OUT/summary.json``; every call prints the table so far.

* ``prepare``: packs the unpacked shards ``SHARDS_train`` / ``SHARDS_valid`` for seq
  2048 with :func:`jpcorpus.repack.repack_shard` (same tokens, same documents, same
  split: nothing is tokenized again) into ``WORK/packed_train`` / ``_valid``.
* ``kernels``: one layer's attention of Qwen2.5-0.5B (micro batch 4, 14 query heads,
  2 key/value heads, head dim 64, seq 2048, bf16), forward + backward: causal SDPA as
  the trainer calls it today, against the document-masked flex kernel on the document
  layout of real packed samples, its block mask built from the ids each call
  (``flex_documents``) or rebuilt each call from the tables built once per micro batch,
  as the layers now do (``flex_documents_prebuilt``), and the same flex kernel causal;
  each compared with a float32 dense-mask reference. ``block_mask_ms`` and
  ``block_mask_from_tables_ms`` time the two ways of getting the mask alone.
* ``train``: ``trainer run`` (shipped LoRA config: micro batch 4, CUDA graphs, fused
  loss) for ``--steps`` steps from the same random base (imported once, then shared),
  one process per variant (``VARIANTS``). ``causal`` is today's training; ``packed``
  the packed shards (document masking on by itself, CUDA graphs kept; ``packed-torch`` the
  same with torch's flex kernel options instead of the tuned ones); the ``-eager``
  variants turn CUDA graphs off (the fallback if capture fails with flex).
* ``eval``: exports each variant's last checkpoint (``trainer export``) and scores the
  same held-out documents, ``SHARDS_valid``, one document at a time (``trainer eval``,
  windows of 2048): the loss both models are judged by, whatever their training layout.

The table: median s/step after 5 steps and its ratio to ``causal`` (goal <= 1.10),
real (non-padding) tokens per second, peak GPU memory, the in-run validation loss (on
each run's own layout), the held-out loss per token (the same for all) and its
difference to ``causal``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import trainer_speed  # noqa: E402  (the trainer run driver of bench/trainer_speed.py)

# variant -> (packed shards?, extra config overrides)
VARIANTS = {
    "causal": (False, []),
    "packed": (True, []),
    "packed-torch": (True, ["model.flex_kernel_options=torch"]),  # flex with torch's kernel options
    "packed-eager": (True, ["model.cuda_graphs=false"]),
    "causal-eager": (False, ["model.cuda_graphs=false"]),
    "masked": (False, ["data.document_masking=true"]),  # ordinary shards, attention confined at EOD
}
SEQ = 2048


def prepare(args, summary: dict) -> None:
    from jpcorpus.repack import repack_shard

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        t0 = time.perf_counter()
        stats = repack_shard(f"{args.shards}_{split}", work / f"packed_{split}", SEQ, args.pack_buffer)
        summary.setdefault("packing", {})[split] = stats.as_dict() | {"seconds": round(time.perf_counter() - t0, 1)}
        print(f"packed {split}: {stats.documents:,} documents, {stats.samples:,} samples, "
              f"fill {stats.fill_rate:.2%}, {stats.cut_documents:,} cut into {stats.pieces:,} pieces", flush=True)


def _document_ids_of_packed(prefix: str, count: int, seq: int, device: str):
    """Document ids (padding its own document) of ``count`` typical packed samples, cut to ``seq``.

    Typical: holding the median number of documents of the shard's samples.
    """
    import numpy as np
    import torch

    from jpcorpus.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    per_sample = np.diff(np.asarray(ds.doc_indices))
    typical = np.flatnonzero(per_sample == int(np.median(per_sample)))
    rows = []
    for i in typical[np.arange(count) % len(typical)].tolist():
        first, last = int(ds.doc_indices[i]), int(ds.doc_indices[i + 1])
        sizes = [int(ds.lengths[j]) for j in range(first, last)] + [SEQ + 1]  # padding: a document of its own
        ids = torch.repeat_interleave(torch.arange(len(sizes), dtype=torch.int32), torch.tensor(sizes))
        rows.append(ids[:seq])
    return torch.stack(rows).to(device)


def _time(fn, repeats: int = 20, warmup: int = 5) -> float:
    """Median milliseconds of ``fn`` (synchronised on CUDA)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def attention_call(kind: str, q, k, v, ids, grad, options="tuned", backward: bool = True):
    """One layer's attention as the GPU benchmarks time it, on ``[b, heads, s, hn]`` tensors; returns
    out, dq, dk, dv (the gradients None without ``backward``).

    ``sdpa``: causal SDPA with the key/value heads repeated, as ``SDPACoreAttention`` runs unpacked
    shards; ``dense``: the float32 reference, SDPA with the per-document mask of ``ids``; ``flex``:
    ``document_attention`` on ``ids`` (plain or with tables) with kernel ``options``.
    """
    import torch.nn.functional as F

    from trainer.megatron import flex_attention as fa

    groups, scale = q.shape[1] // k.shape[1], q.shape[-1] ** -0.5
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    if kind == "sdpa":
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1),
                                             is_causal=True, scale=scale)
    elif kind == "dense":
        q, k, v = (t.float().detach().requires_grad_() for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1),
                                             attn_mask=fa.dense_document_mask(ids[:, :q.shape[2]]), scale=scale)
    else:
        out = fa.document_attention(q, k, v, ids, scale, groups, options)
    if backward:
        out.backward(grad.to(out.dtype))
    return out, q.grad, k.grad, v.grad


def kernels(args, summary: dict) -> None:
    import torch

    from trainer.megatron import flex_attention as fa

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only checks this script (seq 256, float32)
    seq, dtype = (SEQ, torch.bfloat16) if device == "cuda" else (256, torch.float32)
    b, hq, hkv, d = 4, 14, 2, 64
    doc = _document_ids_of_packed(str(Path(args.work) / "packed_train"), b, seq, device)
    one_doc = torch.zeros_like(doc)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(b, h, seq, d, device=device, dtype=dtype, generator=g) for h in (hq, hkv, hkv))
    grad = torch.randn(b, hq, seq, d, device=device, dtype=dtype, generator=g)

    def run(kind, q, k, v, ids):
        return attention_call(kind, q, k, v, ids, grad)

    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "shape": [b, hq, hkv, seq, d],
              "documents_per_sample": [int(r.max()) + 1 for r in doc]}
    wide = fa.document_mask_tables(doc)  # ids and block tables, as document_forward_step builds them
    for name, ids in (("flex_documents", doc), ("flex_documents_prebuilt", wide), ("flex_causal", one_doc)):
        ours, ref = run("flex", q, k, v, ids), run("dense", q, k, v, ids[:, :seq])
        result[f"{name}_max_error"] = [round(float((a.float() - r).detach().abs().max()), 5) for a, r in zip(ours, ref)]
        result[f"{name}_ms"] = round(_time(lambda: run("flex", q, k, v, ids)), 3)
    result["sdpa_causal_ms"] = round(_time(lambda: run("sdpa", q, k, v, doc)), 3)
    result["block_mask_ms"] = round(_time(lambda: fa.document_block_mask(doc)), 3)
    result["block_mask_from_tables_ms"] = round(_time(lambda: fa.block_mask_from_tables(wide, seq)), 3)
    causal_ref = run("dense", q, k, v, one_doc)
    result["sdpa_causal_max_error"] = [round(float((a.float() - r).detach().abs().max()), 5)
                                       for a, r in zip(run("sdpa", q, k, v, one_doc), causal_ref)]
    summary["kernels"] = result
    print("kernels (fwd+bwd ms, errors of out/dq/dk/dv vs float32 dense):", json.dumps(result), flush=True)


def _prefix(args, packed: bool) -> str:
    return str(Path(args.work) / "packed") if packed else args.shards


def train(args, summary: dict) -> None:
    shared = Path(args.work) / "base"
    for name in args.variants.split(","):
        packed, extra = VARIANTS[name]
        run_dir = Path(args.work) / f"run_{name}"
        if (shared / "nemo" / "weights").is_dir() and not (run_dir / "base").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "base").symlink_to(shared.resolve())
        ns = argparse.Namespace(shards=_prefix(args, packed), micro=4)
        cmd = trainer_speed.trainer_command(ns, str(run_dir), args.steps, args.steps, extra + list(args.overrides))
        res = trainer_speed.trainer_run(cmd, Path(args.out) / f"{name}.log", run_dir / "metrics.jsonl",
                                        args.variant_timeout, None)
        row = {"run": res, "overrides": extra, "packed": packed}
        if (run_dir / "metrics.jsonl").is_file():
            row.update(trainer_speed.metrics_summary(run_dir / "metrics.jsonl"))
        if not shared.exists() and (run_dir / "base" / "nemo" / "weights").is_dir():
            shared.symlink_to((run_dir / "base").resolve())
        summary.setdefault("train", {})[name] = row
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
        print(name, {k: row.get(k) for k in ("median_s_per_step", "peak_gib", "val_loss")}, res, flush=True)


def evaluate(args, summary: dict) -> None:
    for name in args.variants.split(","):
        ckpts = sorted((Path(args.work) / f"run_{name}" / "run" / "v0" / "checkpoints").glob("*-last"))
        if not ckpts:
            print(f"{name}: no checkpoint to evaluate", flush=True)
            continue
        export = Path(args.work) / f"export_{name}"
        log = open(Path(args.out) / f"eval_{name}.log", "w")
        if not export.exists():
            subprocess.run([sys.executable, "-m", "trainer.cli", "export", str(ckpts[-1]), "-o", str(export)],
                           stdout=log, stderr=subprocess.STDOUT, check=False)
        out = Path(args.out) / f"eval_{name}.json"
        subprocess.run([sys.executable, "-m", "trainer.cli", "eval", str(export), "--text", f"valid={args.shards}_valid",
                        "--max-length", str(SEQ), "--json", str(out), "--no-progress"],
                       stdout=log, stderr=subprocess.STDOUT, check=False)
        if out.is_file():
            text = json.loads(out.read_text())["models"]["model"]["text"]["valid"]
            summary.setdefault("eval", {})[name] = {"heldout_loss": round(text["nll"] / text["tokens"], 4),
                                                    "tokens": text["tokens"], "documents": text["documents"],
                                                    "checkpoint": ckpts[-1].name}
        print(name, summary.get("eval", {}).get(name, "eval failed: see the log"), flush=True)
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))


def table(summary: dict) -> None:
    rows, train_rows = [], summary.get("train", {})
    base = (train_rows.get("causal") or {}).get("median_s_per_step")
    base_eval = (summary.get("eval", {}).get("causal") or {}).get("heldout_loss")
    fill = (summary.get("packing", {}).get("train") or {}).get("fill_rate", 1.0)
    print(f"\n{'variant':<14}{'s/step':>8}{'x causal':>9}{'real tok/s':>11}{'peak GiB':>9}"
          f"{'val (own)':>10}{'held-out':>9}{'diff':>8}")
    for name, row in train_rows.items():
        sec = row.get("median_s_per_step")
        if not sec:
            print(f"{name:<14}  failed: {row.get('run')}")
            continue
        real = 32 * SEQ * (fill if row.get("packed") else 1.0) / sec
        val = row["val_loss"][-1][1] if row.get("val_loss") else float("nan")
        held = (summary.get("eval", {}).get(name) or {}).get("heldout_loss")
        ratio = f"{sec / base:9.3f}" if base else f"{'-':>9}"
        diff = f"{held - base_eval:+8.4f}" if held is not None and base_eval is not None else f"{'-':>8}"
        rows.append(name)
        print(f"{name:<14}{sec:>8.3f}{ratio}{real:>11,.0f}{row.get('peak_gib') or 0:>9.1f}{val:>10.4f}"
              f"{held if held is not None else float('nan'):>9.4f}{diff}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shards", default="out/gpu_shards/aozora", help="unpacked PREFIX of PREFIX_train/_valid")
    ap.add_argument("--work", default="out/bench_packing", help="packed shards, run dirs, exports")
    ap.add_argument("--stage", default="all", help="comma-separated: prepare, kernels, train, eval, table; or all")
    ap.add_argument("--variants", default="causal,packed", help=f"of {sorted(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--pack-buffer", type=int, default=10_000)
    ap.add_argument("--variant-timeout", type=int, default=400)
    ap.add_argument("overrides", nargs="*", help="extra trainer config overrides (key=value), every variant")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.setdefault("calls", []).append(sys.argv)
    stages = ["prepare", "kernels", "train", "eval"] if args.stage == "all" else args.stage.split(",")
    for stage in stages:
        {"prepare": prepare, "kernels": kernels, "train": train, "eval": evaluate,
         "table": lambda a, s: None}[stage](args, summary)
        path.write_text(json.dumps(summary, indent=2))
    table(summary)


if __name__ == "__main__":
    main()
