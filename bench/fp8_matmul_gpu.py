"""What fp8 matrix products would save in a training step, before building them into the trainer.

The LoRA step's kernels are ~47% matrix products at ~690 TFLOP/s in bf16 (docs/benchmarks.md);
Hopper's fp8 tensor cores double the peak. What reaches the step is the products' time saved
minus the casts that feed them (an amax reduction and a scaled cast per activation and
gradient, a transposed copy for the weight-gradient product). This measures both at the
step's own shapes (Qwen2.5-0.5B layer, micro batch 8 x seq 2048 = 16,384 token rows) with
``torch._scaled_mm`` (per-tensor scales, e4m3 activations/weights, e5m2 gradients), and sums
them per step (24 layers x 4 micro batches) for three uses: LoRA's frozen MLP (forward and
input gradient of fc1/fc2), LoRA's every frozen base linear, and full-parameter training
(all three products of every linear).

    python3 bench/fp8_matmul_gpu.py --out results/fp8_matmul.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
FP8_MAX = {E4M3: 448.0, E5M2: 57344.0}
# linear name -> (in features K, out features N) of one Qwen2.5-0.5B layer
LINEARS = {"qkv": (896, 1152), "proj": (896, 896), "fc1": (896, 9728), "fc2": (4864, 896)}
CALLS_PER_STEP = 24 * 4  # layers x micro batches (global batch 32 at micro batch 8)


def timed(fn, reps: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` back-to-back launches, after a warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def graph_timed(fn, reps: int, calls: int = 10) -> float:
    """Milliseconds of GPU time per ``fn`` call, replayed in a CUDA graph (no launch overhead)."""
    from flex_options import _graphed  # the capture the other GPU benchmarks use

    def many():
        for _ in range(calls):
            fn()

    return timed(_graphed(many).replay, reps) / calls


def swiglu(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=-1)
    return torch.nn.functional.silu(a) * b


def quantize_eager(t: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    amax = t.abs().amax().float().clamp(min=1e-12)
    scale = FP8_MAX[dtype] / amax
    return (t.float() * scale).clamp(-FP8_MAX[dtype], FP8_MAX[dtype]).to(dtype), scale.reciprocal()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    M = args.tokens
    qz_e4 = torch.compile(lambda t: quantize_eager(t, E4M3), dynamic=False)
    qz_e5 = torch.compile(lambda t: quantize_eager(t, E5M2), dynamic=False)
    qz_e5_t = torch.compile(lambda t: tuple(v.t().contiguous() if v.dim() == 2 else v
                                            for v in quantize_eager(t, E5M2)), dynamic=False)
    sw_bf16 = torch.compile(swiglu, dynamic=False)
    sw_fp8 = torch.compile(lambda t: quantize_eager(swiglu(t), E4M3), dynamic=False)
    fc1_out = torch.randn(M, 2 * 4864, device=dev, dtype=torch.bfloat16)
    rows = {}
    for name, (K, N) in LINEARS.items():
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) * K ** -0.5
        g = torch.randn(M, N, device=dev, dtype=torch.bfloat16) * 1e-3
        flop = 2 * M * K * N
        r = {"K": K, "N": N}
        r["bf16_fwd"] = graph_timed(lambda: x @ w.t(), args.reps)
        r["bf16_dgrad"] = graph_timed(lambda: g @ w, args.reps)
        r["bf16_wgrad"] = graph_timed(lambda: g.t() @ x, args.reps)
        x8, sx = quantize_eager(x, E4M3)
        w8, sw = quantize_eager(w, E4M3)
        g8, sg = quantize_eager(g, E5M2)
        w8t = w8.t().contiguous()          # [K, N]: .t() is the column-major [N, K] dgrad wants
        g8t = g8.t().contiguous()          # [N, M] row-major
        x8t = x8.t().contiguous()          # [K, M]: .t() is the column-major [M, K] wgrad wants
        mm = torch._scaled_mm
        r["fp8_fwd"] = graph_timed(lambda: mm(x8, w8.t(), sx, sw, out_dtype=torch.bfloat16), args.reps)
        try:
            r["fp8_dgrad"] = graph_timed(lambda: mm(g8, w8t.t(), sg, sw, out_dtype=torch.bfloat16), args.reps)
            r["fp8_wgrad"] = graph_timed(lambda: mm(g8t, x8t.t(), sg, sx, out_dtype=torch.float32), args.reps)
        except RuntimeError as exc:  # e5m2 x e4m3 not supported here
            r["fp8_error"] = str(exc)[:300]
        # row-wise scales (one per token row and per output feature), forward only
        x8r_scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0
        x8r = (x.float() / x8r_scale).to(E4M3)
        w8r_scale = w.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0
        w8r = (w.float() / w8r_scale).to(E4M3)
        try:
            r["fp8_rowwise_fwd"] = graph_timed(lambda: mm(x8r, w8r.t(), x8r_scale, w8r_scale.t(),
                                                    out_dtype=torch.bfloat16), args.reps)
        except RuntimeError as exc:
            r["fp8_rowwise_error"] = str(exc)[:300]
        # the casts: an activation (e4m3), a gradient (e5m2), the gradient transposed for wgrad
        r["cast_x_eager"] = graph_timed(lambda: quantize_eager(x, E4M3), args.reps)
        r["cast_x_compiled"] = graph_timed(lambda: qz_e4(x), args.reps)
        r["cast_g_compiled"] = graph_timed(lambda: qz_e5(g), args.reps)
        r["cast_g_t_compiled"] = graph_timed(lambda: qz_e5_t(g), args.reps)
        r["transpose_x8"] = graph_timed(lambda: x8.t().contiguous(), args.reps)
        r["cast_w_compiled"] = graph_timed(lambda: qz_e4(w), args.reps)
        if name == "fc1":  # the MLP's SwiGLU alone, and with fc2's input cast fused into it
            r["swiglu_bf16"] = graph_timed(lambda: sw_bf16(fc1_out), args.reps)
            r["swiglu_to_fp8_fused"] = graph_timed(lambda: sw_fp8(fc1_out), args.reps)
        ref = (x @ w.t()).float()
        r["fwd_rel_err"] = float(((mm(x8, w8.t(), sx, sw, out_dtype=torch.bfloat16).float() - ref).norm()
                                  / ref.norm()).item())
        for k in ("fwd", "dgrad", "wgrad"):
            if f"fp8_{k}" in r:
                r[f"tflops_bf16_{k}"] = flop / r[f"bf16_{k}"] / 1e9
                r[f"tflops_fp8_{k}"] = flop / r[f"fp8_{k}"] / 1e9
        rows[name] = r
        print(name, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)

    def per_step(names, products, casts) -> dict:
        bf = sum(rows[n][f"bf16_{p}"] for n in names for p in products)
        f8 = sum(rows[n][f"fp8_{p}"] for n in names for p in products)
        cast = sum(rows[n][c] for n in names for c in casts)
        return {"bf16_ms": bf * CALLS_PER_STEP, "fp8_ms": f8 * CALLS_PER_STEP, "casts_ms": cast * CALLS_PER_STEP,
                "saved_ms": (bf - f8 - cast) * CALLS_PER_STEP}

    summary = {
        # frozen MLP: forward (cast x, weight) and input gradient (cast g; weight transposed)
        "lora_mlp": per_step(("fc1", "fc2"), ("fwd", "dgrad"), ("cast_x_compiled", "cast_g_compiled", "cast_w_compiled")),
        "lora_all_base": per_step(tuple(LINEARS), ("fwd", "dgrad"),
                                  ("cast_x_compiled", "cast_g_compiled", "cast_w_compiled")),
        "full": per_step(tuple(LINEARS), ("fwd", "dgrad", "wgrad"),
                         ("cast_x_compiled", "cast_g_t_compiled", "transpose_x8", "cast_w_compiled")),
    }
    fused = rows["fc1"]["swiglu_to_fp8_fused"] - rows["fc1"]["swiglu_bf16"]
    print(f"SwiGLU with fc2's input cast fused: +{fused * CALLS_PER_STEP:.1f} ms a step over SwiGLU alone "
          f"(the separate cast: {rows['fc2']['cast_x_compiled'] * CALLS_PER_STEP:.1f} ms)", flush=True)
    for k, v in summary.items():
        print(f"per step ({k}): bf16 {v['bf16_ms']:.1f} ms, fp8 {v['fp8_ms']:.1f} ms, casts {v['casts_ms']:.1f} ms, "
              f"saved {v['saved_ms']:.1f} ms", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "per_step": summary, "device": torch.cuda.get_device_name(),
                                              "torch": torch.__version__, "time": time.time()}, indent=1))


if __name__ == "__main__":
    main()
