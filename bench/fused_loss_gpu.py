"""The full-parameter backward of the fused output layer + loss, before and after, in one process.

When the output weight is trained (full-parameter runs: the tied embedding),
``trainer.megatron.fused_loss`` recomputes each chunk's logits in backward. It used to
scale ``softmax - onehot`` by the upstream gradient in separate float32 passes and to add
each chunk's bf16 weight-gradient product, upcast, into a float32 buffer; now the scale
is inside the fused kernel and cuBLAS accumulates the product into float32 itself. This
times one micro batch's forward + backward at the step's shapes (Qwen2.5's 151,936-token
vocabulary, hidden 896) for both forms, checks both against a float32 reference, and
prints the ratio and the per-step difference (x micro batches a step)::

    PYTHONPATH=/tmp/site:$PWD python3 bench/fused_loss_gpu.py --tokens 16384 --chunk 2048 --out results/fused_loss.json
    python bench/fused_loss_gpu.py --tokens 64 --vocab 500 --chunk 16 --iters 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from trainer.megatron import fused_loss

HIDDEN, VOCAB, SEQ, GLOBAL_BATCH = 896, 151936, 2048, 32


class _Before(fused_loss._LinearCrossEntropy):
    """The same forward; the backward as it was (float32 scaling passes, bf16 products upcast and added)."""

    @staticmethod
    def backward(ctx, grad_loss):
        x, weight, labels = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, x.shape[0], ctx.chunk):
            end = min(start + ctx.chunk, x.shape[0])
            _, dlogits = fused_loss.ce_chunk(x[start:end] @ weight.t(), labels[start:end], True)
            dlogits = (dlogits.float() * grad_loss[start:end].unsqueeze(1)).to(x.dtype)
            grad_x[start:end] = dlogits @ weight
            grad_w += (dlogits.t() @ x[start:end]).float()
        return grad_x, grad_w.to(weight.dtype), None, None


def forms(chunk: int) -> dict:
    return {"before": lambda x, w, y: _Before.apply(x, w, y, chunk),
            "after": lambda x, w, y: fused_loss._LinearCrossEntropy.apply(x, w, y, chunk)}


def run_once(form, x, w, y, g):
    x.grad, w.grad = None, None
    (form(x, w, y) * g).sum().backward()
    return x.grad, w.grad


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384, help="tokens in one micro batch (8 x 2048)")
    ap.add_argument("--vocab", type=int, default=VOCAB)
    ap.add_argument("--chunk", type=int, default=2048, help="model.loss_chunk_tokens")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    gen = torch.Generator(device=dev).manual_seed(0)
    x = (torch.randn(args.tokens, HIDDEN, device=dev, generator=gen) * 0.5).to(dtype).requires_grad_()
    w = (torch.randn(args.vocab, HIDDEN, device=dev, generator=gen) * 0.02).to(dtype).requires_grad_()
    y = torch.randint(0, args.vocab, (args.tokens,), device=dev, generator=gen)
    g = (torch.rand(args.tokens, device=dev, generator=gen) > 0.05).float() / args.tokens  # a loss mask / count

    xr, wr = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    ref = torch.nn.functional.cross_entropy(xr @ wr.t(), y, reduction="none")
    (ref * g).sum().backward()
    result = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "tokens": args.tokens,
              "chunk": args.chunk, "vocab": args.vocab, "forms": {}}
    for name, form in forms(args.chunk).items():
        gx, gw = run_once(form, x, w, y, g)
        row = {"rel_err_grad_x": rel(gx, xr.grad), "rel_err_grad_w": rel(gw, wr.grad)}
        for _ in range(2):
            run_once(form, x, w, y, g)
        if dev == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            run_once(form, x, w, y, g)
        if dev == "cuda":
            torch.cuda.synchronize()
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["ms_per_call"] = (time.perf_counter() - t0) / args.iters * 1e3
        result["forms"][name] = row
        print(f"{name:7s} {row['ms_per_call']:8.2f} ms/call  rel err grad_x {row['rel_err_grad_x']:.2e} "
              f"grad_w {row['rel_err_grad_w']:.2e}", flush=True)
    calls = GLOBAL_BATCH * SEQ // args.tokens
    b, a = result["forms"]["before"]["ms_per_call"], result["forms"]["after"]["ms_per_call"]
    result.update(ratio_before_over_after=b / a, saved_ms_per_step=(b - a) * calls,
                  fp32_out_matmul=fused_loss.fp32_out_addmm)
    print(f"before/after {b / a:.2f}x; {calls} calls a step: {(b - a) * calls:.1f} ms a step saved; "
          f"float32-output addmm used: {result['fp32_out_matmul']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
