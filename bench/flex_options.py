"""Kernel options of the document-masked flex attention, for the trainer's shape, on one GPU.

    python3 bench/packing_gpu.py --out results/h200_packing --stage prepare     # the packed shards
    python3 bench/flex_options.py --out results/flex_options --packed out/bench_packing/packed_train

One layer's attention of Qwen2.5-0.5B as the trainer runs it (micro batch 4, 14 query heads,
2 key/value heads, head dim 64, seq 2048, bf16), forward and forward + backward, for each
candidate ``kernel_options`` of ``flex_attention`` (torch's ``FlexKernelOptions``: block sizes,
stages and warps of the forward kernel, ``bwd_``-prefixed ones of the backward kernels, and
flags), on two document layouts: real packed samples of ``--packed`` (the book corpus: mostly
one work a sample) and short documents (150-700 tokens, news-like, many blocks skipped).
Causal SDPA as the trainer calls it on unpacked shards is the baseline row.

Phase 1 times torch's choice, each forward candidate (torch's backward), each backward
candidate (torch's forward) and each flag; phase 2 the best forward with each of the two
best backwards, with and without the flags that helped, against torch's choice and SDPA again. Every candidate is checked
against a float32 dense-mask reference (out / dq / dk / dv errors); one with more than 1.25x
the error of torch's choice is not eligible. Timing replays each candidate's forward (and
forward + backward) as a CUDA graph, as the trainer's layers run, in interleaved rounds. A candidate that kills its process (Triton
can fault on some block sizes) is recorded as failed and the sweep goes on in a fresh
process. The best options go into ``trainer.megatron.flex_attention.TUNED_KERNEL_OPTIONS``
by hand, with this run in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

B, HQ, HKV, D, SEQ = 4, 14, 2, 64, 2048


def _fwd(m, n, stages, warps):
    return {"fwd_BLOCK_M": m, "fwd_BLOCK_N": n, "fwd_num_stages": stages, "fwd_num_warps": warps}


def _bwd(m1, n1, m2, n2, stages, warps):
    return {"bwd_BLOCK_M1": m1, "bwd_BLOCK_N1": n1, "bwd_BLOCK_M2": m2, "bwd_BLOCK_N2": n2,
            "bwd_num_stages": stages, "bwd_num_warps": warps}


# Phase 1. torch 2.11-2.13 choose on sm90, bf16, head dim 64: forward (128, 128, 3 stages, 4 warps),
# backward (64, 128, 128, 64, 3 stages, 8 warps); the kernels need BLOCK_N1 % BLOCK_M1 == 0 and
# BLOCK_M2 % BLOCK_N2 == 0, and block sizes dividing the mask's 128.
FORWARD = {
    "f128x64s3w4": _fwd(128, 64, 3, 4), "f128x64s3w8": _fwd(128, 64, 3, 8), "f128x128s2w8": _fwd(128, 128, 2, 8),
    "f128x128s3w8": _fwd(128, 128, 3, 8), "f64x128s3w4": _fwd(64, 128, 3, 4), "f64x64s3w4": _fwd(64, 64, 3, 4),
    "f128x64s4w4": _fwd(128, 64, 4, 4), "f128x128s4w8": _fwd(128, 128, 4, 8), "f64x64s4w4": _fwd(64, 64, 4, 4),
    "f128x32s3w4": _fwd(128, 32, 3, 4), "f64x128s4w4": _fwd(64, 128, 4, 4), "f128x64s5w4": _fwd(128, 64, 5, 4),
}
BACKWARD = {
    "b64x64s3w4": _bwd(64, 64, 64, 64, 3, 4), "b32x128s3w4": _bwd(32, 128, 128, 32, 3, 4),
    "b64x128s2w8": _bwd(64, 128, 128, 64, 2, 8), "b64x128s3w4": _bwd(64, 128, 128, 64, 3, 4),
    "b32x64s3w4": _bwd(32, 64, 64, 32, 3, 4), "b64x64s4w4": _bwd(64, 64, 64, 64, 4, 4),
    "b64x128s4w8": _bwd(64, 128, 128, 64, 4, 8), "b32x128s4w8": _bwd(32, 128, 128, 32, 4, 8),
    "b64x64s2w4": _bwd(64, 64, 64, 64, 2, 4), "b32x64s4w4": _bwd(32, 64, 64, 32, 4, 4),
    "b64x64s3w8": _bwd(64, 64, 64, 64, 3, 8), "b32x128s3w8": _bwd(32, 128, 128, 32, 3, 8),
}
# Flags that hold for block-diagonal causal masks: every query sees at least itself (rows safe).
FLAGS = {"rows_safe": {"ROWS_GUARANTEED_SAFE": True}, "tma": {"USE_TMA": True},
         "prescale": {"PRESCALE_QK": True}, "dq_in_dk_loop": {"WRITE_DQ": False}}


def layouts(packed: str | None, device: str):
    """Document ids ``[B, SEQ]`` of real packed samples (or short documents only, without shards)."""
    import torch

    out = {}
    if packed:
        from packing_gpu import _document_ids_of_packed

        out["books"] = _document_ids_of_packed(packed, B, SEQ, device)
    sizes = [150, 400, 700, 250, 520, 300, 180, 610]
    rows = []
    for r in range(B):
        ids, doc = [], 0
        while len(ids) < SEQ:
            ids += [doc] * sizes[(r + doc) % len(sizes)]
            doc += 1
        rows.append(torch.tensor(ids[:SEQ], dtype=torch.int32))
    out["short"] = torch.stack(rows).to(device)
    return out


def _graphed(fn):
    """``fn`` captured as a CUDA graph (after warm-up on a side stream): the trainer replays its
    layers' forward and backward this way, so launch overhead is not what is timed."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def _replay_ms(replay, n: int = 20) -> float:
    """Milliseconds per call of ``replay`` (a graph's), by CUDA events around ``n`` calls."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    replay()
    start.record()
    for _ in range(n):
        replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / n


def measure(names: list[str], candidates: dict, packed: str | None, rows_path: Path, rounds: int) -> None:
    """Worker: compile and capture each candidate on every layout, then time all of them in
    ``rounds`` interleaved rounds (the median is reported); one JSON line each at the end.
    ``rows_path.with_suffix('.progress')`` names each candidate once it has compiled, so the
    driver can tell which one a dead worker was on."""
    import statistics

    import torch

    from packing_gpu import attention_call
    from trainer.megatron import flex_attention as fa

    global SEQ
    device, dtype = "cuda", torch.bfloat16
    cpu_check = bool(os.environ.get("FLEX_OPTIONS_CPU_CHECK"))
    if cpu_check:  # the driver's logic only: float32, seq 256, dense on the CPU, wall-clock timing
        device, dtype, SEQ = "cpu", torch.float32, 256
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, h, SEQ, D, device=device, dtype=dtype, generator=g) for h in (HQ, HKV, HKV))
    grad = torch.randn(B, HQ, SEQ, D, device=device, dtype=dtype, generator=g)
    docs = layouts(packed, device)
    tables = {name: fa.document_mask_tables(ids) for name, ids in docs.items()}

    def run(kind, wide, options, backward=True):
        return attention_call(kind, q, k, v, wide, grad, options, backward)

    refs = {name: [t.detach() for t in run("dense", wide, None)] for name, wide in tables.items()}
    causal_ref = [t.detach() for t in run("dense", torch.zeros_like(next(iter(tables.values()))), None)]
    rows, timers = {}, {}
    progress = rows_path.with_suffix(".progress")
    for name in names:
        options = candidates[name]
        row = rows[name] = {"name": name, "options": options}
        kind = "sdpa" if name.endswith("sdpa") else "flex"
        t0 = time.perf_counter()
        try:
            torch._dynamo.reset()  # a fresh compile with these options (and no cache-size limit reached)
            fa._compiled_flex = None
            for lay, wide in tables.items():
                got = run(kind, wide, options)
                ref = refs[lay] if kind == "flex" else causal_ref
                row[f"{lay}_error"] = [round(float((a.detach().float() - r).abs().max()), 5) for a, r in zip(got, ref)]
                for what, backward in (("fwd_ms", False), ("ms", True)):
                    fn = (lambda w=wide, b=backward: run(kind, w, options, backward=b))
                    timers[(name, f"{lay}_{what}")] = fn if cpu_check else _graphed(fn).replay
        except Exception as exc:  # noqa: BLE001 - a candidate that does not compile or run is a row, not the end
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        row["compile_s"] = round(time.perf_counter() - t0, 1)
        with open(progress, "a") as fh:
            fh.write(name + "\n")
    samples: dict = {}
    for _ in range(rounds):
        for key, replay in timers.items():
            if cpu_check:
                t0 = time.perf_counter()
                replay()
                samples.setdefault(key, []).append((time.perf_counter() - t0) * 1e3)
            else:
                samples.setdefault(key, []).append(_replay_ms(replay))
    for (name, field), values in samples.items():
        rows[name][field] = round(statistics.median(values), 4)
        rows[name][field + "_spread"] = round(max(values) - min(values), 4)
    with open(rows_path, "a") as fh:
        for row in rows.values():
            fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def sweep(names: list[str], candidates: dict, args, rows_path: Path, deadline: float) -> dict[str, dict]:
    """Run ``names`` in worker processes until each has a row (a dead worker's candidate: failed)."""
    done: dict[str, dict] = {}
    progress = rows_path.with_suffix(".progress")

    def load():
        if rows_path.is_file():
            for line in rows_path.read_text().splitlines():
                row = json.loads(line)
                if row["name"] in names:
                    done[row["name"]] = row

    load()
    while (todo := [n for n in names if n not in done]) and time.time() < deadline:
        spec = Path(args.out) / "todo.json"
        spec.write_text(json.dumps({n: candidates[n] for n in todo}))
        progress.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", str(spec), "--rows", str(rows_path),
                               "--packed", args.packed or "", "--rounds", str(args.rounds)],
                              timeout=max(10, deadline - time.time()), check=False)
        load()
        if proc.returncode != 0 and (todo := [n for n in names if n not in done]):
            compiled = progress.read_text().split() if progress.is_file() else []
            dead = next((n for n in todo if n not in compiled), todo[0])
            row = {"name": dead, "options": candidates[dead], "error": f"worker exited {proc.returncode}"}
            with open(rows_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            done[dead] = row
    return done


def _ms(row, lay="books"):
    return row.get(f"{lay}_ms") if "error" not in row else None


def eligible(row, base) -> bool:
    if "error" in row or base is None or "error" in base:
        return False
    return all(e <= 1.25 * max(b, 1e-3) for lay in ("books", "short") if f"{lay}_error" in row
               for e, b in zip(row[f"{lay}_error"], base[f"{lay}_error"]))


def best(rows: dict, names, base, lay):
    ok = [(rows[n][f"{lay}_ms"], n) for n in names if n in rows and eligible(rows[n], base)]
    return min(ok)[1] if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/flex_options")
    ap.add_argument("--packed", default="out/bench_packing/packed_train", help="packed PREFIX ('' for short only)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for both phases")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median reported)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        todo = json.loads(Path(args.worker).read_text())
        measure(list(todo), todo, args.packed or None, Path(args.rows), args.rounds)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path, deadline = out / "rows.jsonl", time.time() + args.budget
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    lay = "books" if args.packed else "short"
    cands = {"sdpa": {}, "torch": {}, **FORWARD, **BACKWARD, **FLAGS}
    rows = sweep(list(cands), cands, args, rows_path, deadline - 120)
    base = rows.get("torch")
    fwd = best({n: {**r, f"{lay}_ms": r.get(f"{lay}_fwd_ms")} for n, r in rows.items()}, FORWARD, base, lay)
    ranked = sorted((rows[n][f"{lay}_ms"], n) for n in BACKWARD if n in rows and eligible(rows[n], base))
    flags = [n for n in FLAGS if n in rows and eligible(rows[n], base) and _ms(rows[n], lay) < 0.98 * _ms(base, lay)]
    final = {"final_torch": {}, "final_sdpa": {}}
    for _, bwd in ranked[:2]:  # the best forward with each of the two best backwards, with and without the flags
        options = {**(FORWARD.get(fwd) or {}), **BACKWARD[bwd]}
        final[f"final_{fwd}_{bwd}"] = options
        if flags:
            final[f"final_{fwd}_{bwd}_flags"] = {**options, **{k: v for n in flags for k, v in FLAGS[n].items()}}
    cands.update(final)
    rows.update(sweep(list(final), cands, args, rows_path, deadline))
    winner = best(rows, [n for n in final if n not in ("final_torch", "final_sdpa")], rows.get("final_torch"), lay)
    combined = final.get(winner, {})
    summary = {"chosen": {"candidate": winner, "forward": fwd, "flags": flags, "options": combined}, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{'candidate':<20}{'books fwd':>10}{'books f+b':>10}{'short f+b':>10}  errors (books out/dq/dk/dv)")
    for n, r in rows.items():
        if "error" in r:
            print(f"{n:<20}  failed: {r['error']}")
            continue
        print(f"{n:<20}{r.get('books_fwd_ms', float('nan')):>10.3f}{r.get('books_ms', float('nan')):>10.3f}"
              f"{r.get('short_ms', float('nan')):>10.3f}  {r.get('books_error', r.get('short_error'))}")
    print("chosen:", json.dumps(summary["chosen"]))


if __name__ == "__main__":
    main()
