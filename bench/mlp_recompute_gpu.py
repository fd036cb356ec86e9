"""What recomputing ``fc1`` costs in one Qwen2.5-0.5B MLP, against the FLOPs it adds.

The low-memory setting (``model.mlp_recompute``) measured 0.13 s a step more than the same
micro batch without it, where the recomputed ``fc1`` is ~27 TFLOP a step (~0.05 s). This
times one MLP's forward + backward at the step's shapes, LoRA's case (frozen weights,
gradient for the input only), in three forms, each in the same process:

- ``upstream``: ``fc2(swiglu(fc1(x)))`` with megatron's fused SwiGLU autograd function
  (what runs without ``mlp_recompute``: it saves ``fc1``'s output);
- ``recompute``: :func:`trainer.megatron.mlp_recompute.mlp_recompute_fc1` (saves ``x`` only);
- ``fc1_alone``: one ``fc1`` forward, the work the recomputation should add.

It prints milliseconds per call (eager and replayed in a CUDA graph), the bytes each keeps
for backward, the extra per training step (x 24 layers x micro batches a step), and the
top kernels of each form::

    PYTHONPATH=/tmp/site:$PWD python3 bench/mlp_recompute_gpu.py --micro 4 --out results/mlp_rc.json
    python bench/mlp_recompute_gpu.py --tokens 256 --iters 2      # CPU smoke run (no timings worth reading)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HIDDEN, FFN, LAYERS, SEQ, GLOBAL_BATCH = 896, 4864, 24, 2048, 32


def upstream_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """What megatron's MLP runs for Qwen2 on our lean linears (``bias_swiglu_impl``)."""
    if x.is_cuda:
        from megatron.core.fusions.fused_bias_swiglu import bias_swiglu_impl

        return F.linear(bias_swiglu_impl(F.linear(x, w1), None), w2)
    gate, up = torch.chunk(F.linear(x, w1), 2, -1)
    return F.linear(F.silu(gate) * up, w2)


def fc1_alone(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.linear(x, w1)


def forms() -> dict:
    from trainer.megatron.mlp_recompute import mlp_recompute_fc1

    return {"upstream": upstream_mlp, "recompute": mlp_recompute_fc1, "fc1_alone": fc1_alone}


def step_fn(form, x, w1, w2, g):
    def run():
        out = form(x, w1, w2)
        if out.requires_grad:
            (gx,) = torch.autograd.grad(out, x, g)
            return gx
        return out
    return run


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, iters: int, dev: torch.device) -> float:
    for _ in range(3):
        fn()
    sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(dev)
    return (time.perf_counter() - t) * 1e3 / iters


def graphed_ms(fn, iters: int, dev: torch.device) -> float | None:
    """The same call captured once in a CUDA graph and replayed (megatron's local graphs)."""
    if dev.type != "cuda":
        return None
    from flex_options import _graphed

    return time_ms(_graphed(fn).replay, iters, dev)


def saved_bytes(form, x, w1, w2) -> int:
    """Bytes of the tensors autograd keeps for backward (weights excluded: they live anyway)."""
    total, weights = [0], {w1.data_ptr(), w2.data_ptr()}

    def pack(t):
        if t.data_ptr() not in weights:
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        form(x, w1, w2)
    return total[0]


def top_kernels(fn, dev: torch.device, n: int = 8) -> list[str]:
    if dev.type != "cuda":
        return []
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(dev)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        sync(dev)
    rows = sorted((e for e in prof.key_averages() if e.device_time_total > 0),
                  key=lambda e: -e.device_time_total)[:n]
    return [f"{e.device_time_total / 5 / 1e3:7.3f} ms  x{e.count // 5}  {e.key[:90]}" for e in rows]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--micro", type=int, default=4, help="micro batch (sequences of 2048 tokens)")
    ap.add_argument("--tokens", type=int, default=None, help="tokens per call instead of micro x 2048")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tokens = args.tokens or args.micro * SEQ
    torch.manual_seed(0)
    x = torch.randn(tokens, 1, HIDDEN, device=dev, dtype=dtype, requires_grad=True)
    w1 = torch.randn(2 * FFN, HIDDEN, device=dev, dtype=dtype) * HIDDEN ** -0.5
    w2 = torch.randn(HIDDEN, FFN, device=dev, dtype=dtype) * FFN ** -0.5
    g = torch.randn(tokens, 1, HIDDEN, device=dev, dtype=dtype)
    calls_per_step = LAYERS * GLOBAL_BATCH * SEQ // tokens
    res = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "tokens": tokens,
           "calls_per_step": calls_per_step, "forms": {}}
    ref = None
    for name, form in forms().items():
        fn = step_fn(form, x, w1, w2, g)
        out = fn()
        if name != "fc1_alone":
            ref = out if ref is None else ref
            err = (out.float() - ref.float()).abs().max().item() / max(ref.float().abs().max().item(), 1e-12)
        else:
            err = None
        row = {"eager_ms": time_ms(fn, args.iters, dev), "graph_ms": graphed_ms(fn, args.iters, dev),
               "saved_MB": saved_bytes(form, x, w1, w2) / 1e6 if name != "fc1_alone" else 0.0,
               "rel_err_vs_upstream": err, "kernels": top_kernels(fn, dev)}
        res["forms"][name] = row
        print(f"{name:10s} eager {row['eager_ms']:.3f} ms  graph {row['graph_ms'] or float('nan'):.3f} ms  "
              f"saved {row['saved_MB']:.1f} MB", flush=True)
        for k in row["kernels"]:
            print("    ", k)
    f = res["forms"]
    for mode in ("eager_ms", "graph_ms"):
        if f["upstream"][mode] is None:
            continue
        extra = f["recompute"][mode] - f["upstream"][mode]
        res[f"extra_s_per_step_{mode[:-3]}"] = extra * calls_per_step / 1e3
        res[f"fc1_s_per_step_{mode[:-3]}"] = f["fc1_alone"][mode] * calls_per_step / 1e3
        print(f"{mode[:-3]}: recompute adds {extra:.3f} ms a call = {extra * calls_per_step / 1e3:.3f} s a step "
              f"({calls_per_step} calls); fc1 alone {f['fc1_alone'][mode]:.3f} ms = "
              f"{f['fc1_alone'][mode] * calls_per_step / 1e3:.3f} s a step")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
