"""One LoRA linear as one autograd function: base matmul, dropout, both adapter matmuls,
scale and addition, with the dropout mask regenerated instead of stored.

NeMo's LoRA linear runs ``base(x) + scale * B(A(dropout(x)))`` as separate kernels: the
dropout (a random mask, a multiply, a saved boolean mask), two rank-16 matmuls, the
scale multiply and the addition, and in backward the mask multiply and one more addition
of the input gradients. On one H100 these element-wise passes over ``[tokens, 896]`` and
``[tokens, 1152]`` tensors took ~0.06 s of a 0.44 s LoRA step. Here, per LoRA linear:

* forward: ``out = x @ W^T + b`` (cuBLAS), then :func:`dropout_down` (one Triton kernel
  reading ``x`` once: Philox mask in registers, ``h = (x * mask) @ A^T / (1 - p)``), then
  ``out += scale * h @ B^T`` in place (cuBLAS with beta = 1);
* backward: ``grad_x = g @ W``, ``gh = scale * g @ B``, ``grad_B = scale * g^T @ h`` (cuBLAS), then
  :func:`dropout_up` (one Triton kernel: the same mask from the same seed, ``grad_x += mask *
  (gh @ A) / (1 - p)`` in place and ``grad_A = gh^T @ (x * mask) / (1 - p)``).

Saved for backward: ``x`` (as today: NeMo saves ``dropout(x)``), ``h`` and an 8-byte seed,
no mask. The seed is drawn on the device from the default CUDA generator
(``torch.randint``), never read by the host, so inside megatron's CUDA graphs every
replay draws a new seed: the dropout stays a real dropout (``tests/test_trainer_lora_kernels.py``
and :func:`self_check` check a fresh mask per replay on the GPU, the keep rate and that
backward uses forward's mask). Elsewhere (CPU: tests, tools) :func:`reference_lora_linear`
computes the same thing with torch ops and a torch generator seeded the same way.

Upstream: Triton 3.6 (``tl.rand`` Philox, ``tl.dot``), torch 2.11's ``torch.autograd.Function``; the
weights are megatron-core 0.15.3's linears and NeMo's adapters, chosen by :mod:`trainer.megatron.fused_lora`.
Guard: ``tests/test_trainer_lora_kernels.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # the CPU machines have no Triton; the GPU image has 3.6
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = None

BLOCK_M, BLOCK_K = 64, 128


def down_block_m(n: int) -> int:
    """Rows per program of the forward kernel: enough programs for 132 SMs at small micro batches."""
    return 64 if n >= 16384 else 32 if n >= 8192 else 16


def up_row_blocks(n: int) -> int:
    """Row blocks per program of the backward kernel (fewer partial grad_A rows when there are many)."""
    return 4 if n >= 4 * BLOCK_M * 40 else 1

if triton is not None:

    @triton.jit
    def _keep(seed, rows, cols, n_cols, p):
        """Philox uniform per (row, col) of the input; keep where it is >= p."""
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        return tl.rand(seed, offsets) >= p

    @triton.jit
    def _down_kernel(x_ptr, a_ptr, h_ptr, seed_ptr, n_rows, n_cols, p, inv_keep,
                     R: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, DROPOUT: tl.constexpr):
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        ranks = tl.arange(0, R)
        acc = tl.zeros((BM, R), dtype=tl.float32)
        seed = tl.load(seed_ptr) if DROPOUT else 0
        for k in range(0, n_cols, BK):
            cols = k + tl.arange(0, BK)
            inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
            x = tl.load(x_ptr + rows[:, None] * n_cols + cols[None, :], mask=inside, other=0.0)
            if DROPOUT:
                x = tl.where(_keep(seed, rows, cols, n_cols, p), x, tl.zeros_like(x))
            a = tl.load(a_ptr + ranks[:, None] * n_cols + cols[None, :], mask=cols[None, :] < n_cols, other=0.0)
            acc += tl.dot(x, tl.trans(a))
        if DROPOUT:
            acc = acc * inv_keep
        tl.store(h_ptr + rows[:, None] * R + ranks[None, :], acc.to(h_ptr.dtype.element_ty),
                 mask=rows[:, None] < n_rows)

    @triton.jit
    def _up_kernel(gh_ptr, a_ptr, x_ptr, gx_ptr, ga_ptr, seed_ptr, n_rows, n_cols, p, inv_keep,
                   R: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, ROW_BLOCKS: tl.constexpr,
                   DROPOUT: tl.constexpr, WANT_GX: tl.constexpr):
        pid_m, pid_k = tl.program_id(0), tl.program_id(1)
        cols = pid_k * BK + tl.arange(0, BK)
        ranks = tl.arange(0, R)
        a = tl.load(a_ptr + ranks[:, None] * n_cols + cols[None, :], mask=cols[None, :] < n_cols, other=0.0)
        # grad_A^T [BK, R] = x^T @ gh: a dot with M = BK rows. The [R, BK] form (M = R = 16) made
        # Triton 3.6's Hopper lowering fail (ConvertTritonGPUToLLVM, PassManager::run failed).
        ga_t = tl.zeros((BK, R), dtype=tl.float32)
        seed = tl.load(seed_ptr) if DROPOUT else 0
        for block in range(ROW_BLOCKS):
            rows = (pid_m * ROW_BLOCKS + block) * BM + tl.arange(0, BM)
            inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
            gh = tl.load(gh_ptr + rows[:, None] * R + ranks[None, :], mask=rows[:, None] < n_rows, other=0.0)
            x = tl.load(x_ptr + rows[:, None] * n_cols + cols[None, :], mask=inside, other=0.0)
            if DROPOUT:
                keep = _keep(seed, rows, cols, n_cols, p)
                x = tl.where(keep, x, tl.zeros_like(x))
            ga_t += tl.dot(tl.trans(x), gh)
            if WANT_GX:
                t = tl.dot(gh, a)
                if DROPOUT:
                    t = tl.where(keep, t * inv_keep, 0.0)
                where = gx_ptr + rows[:, None] * n_cols + cols[None, :]
                gx = tl.load(where, mask=inside, other=0.0).to(tl.float32)
                tl.store(where, (gx + t).to(gx_ptr.dtype.element_ty), mask=inside)
        if DROPOUT:
            ga_t = ga_t * inv_keep
        tl.store(ga_ptr + pid_m * R * n_cols + ranks[None, :] * n_cols + cols[:, None], ga_t,
                 mask=cols[:, None] < n_cols)

    @triton.jit
    def _mask_kernel(out_ptr, seed_ptr, n_rows, n_cols, p, BM: tl.constexpr, BK: tl.constexpr):
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        cols = tl.program_id(1) * BK + tl.arange(0, BK)
        keep = _keep(tl.load(seed_ptr), rows, cols, n_cols, p)
        inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        tl.store(out_ptr + rows[:, None] * n_cols + cols[None, :], keep.to(tl.int8), mask=inside)


def triton_ok(x: torch.Tensor) -> bool:
    """The Triton path applies: Triton present and the tensor on CUDA (or the interpreter asked for)."""
    import os

    return triton is not None and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def new_seed(device) -> torch.Tensor:
    """A fresh Philox seed drawn on ``device`` (a captured op inside CUDA graphs, no host read)."""
    return torch.randint(0, 2**31 - 1, (1,), device=device, dtype=torch.int64)


def dropout_down(x: torch.Tensor, a: torch.Tensor, seed: torch.Tensor | None, p: float) -> torch.Tensor:
    """``(x * keep) @ a^T / (1 - p)`` for ``x`` ``[n, k]``, ``a`` ``[r, k]``; Triton kernel."""
    n, k = x.shape
    r = a.shape[0]
    h = torch.empty((n, r), device=x.device, dtype=x.dtype)
    dropout = p > 0
    bm = down_block_m(n)
    _down_kernel[(triton.cdiv(n, bm),)](
        x, a, h, seed if dropout else x, n, k, float(p), 1.0 / (1.0 - p), R=r, BM=bm, BK=BLOCK_K, DROPOUT=dropout)
    return h


def dropout_up(gh: torch.Tensor, a: torch.Tensor, x: torch.Tensor, seed: torch.Tensor | None, p: float,
               grad_x: torch.Tensor | None) -> torch.Tensor:
    """``grad_A = gh^T @ (x * keep) / (1 - p)`` (returned, float32) and, when ``grad_x`` is
    given, ``grad_x += (gh @ a) * keep / (1 - p)`` in place; Triton kernel."""
    n, k = x.shape
    r = a.shape[0]
    row_blocks = up_row_blocks(n)
    grid = (triton.cdiv(n, BLOCK_M * row_blocks), triton.cdiv(k, BLOCK_K))
    partial = torch.empty((grid[0], r, k), device=x.device, dtype=torch.float32)
    dropout = p > 0
    _up_kernel[grid](
        gh, a, x, grad_x if grad_x is not None else x, partial, seed if dropout else x, n, k, float(p),
        1.0 / (1.0 - p), R=r, BM=BLOCK_M, BK=BLOCK_K, ROW_BLOCKS=row_blocks, DROPOUT=dropout,
        WANT_GX=grad_x is not None)
    return partial.sum(0)


def keep_mask(seed: torch.Tensor, n: int, k: int, p: float) -> torch.Tensor:
    """The ``[n, k]`` keep mask (bool) the kernels use for ``seed`` (tests and :func:`self_check`)."""
    out = torch.empty((n, k), device=seed.device, dtype=torch.int8)
    _mask_kernel[(triton.cdiv(n, BLOCK_M), triton.cdiv(k, BLOCK_K))](out, seed, n, k, float(p), BM=BLOCK_M,
                                                                       BK=BLOCK_K)
    return out.bool()


def torch_keep_mask(seed: torch.Tensor, shape, p: float, device) -> torch.Tensor:
    """The reference path's mask: a torch generator seeded with ``seed`` (read on the host)."""
    gen = torch.Generator(device=device).manual_seed(int(seed.item()))
    return torch.rand(shape, generator=gen, device=device) >= p


class _LoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scale, p):
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        use_triton = triton_ok(x2)
        seed = new_seed(x2.device) if p > 0 else None
        if use_triton:
            h = dropout_down(x2, a, seed, p)
        else:
            xd = x2 * torch_keep_mask(seed, x2.shape, p, x2.device) / (1 - p) if p > 0 else x2
            h = F.linear(xd, a)
        out = F.linear(x2, weight, bias)
        out.addmm_(h, b.t(), alpha=scale)
        ctx.save_for_backward(x2, weight, a, b, h, seed)
        ctx.scale, ctx.p, ctx.use_triton, ctx.has_bias, ctx.lead = scale, p, use_triton, bias is not None, lead
        return out.view(*lead, out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x2, weight, a, b, h, seed = ctx.saved_tensors
        scale, p = ctx.scale, ctx.p
        g = grad_out.reshape(-1, grad_out.shape[-1])
        need_x, need_w, need_bias, need_a, need_b = ctx.needs_input_grad[:5]
        if need_w:
            raise RuntimeError("fused LoRA linear: the base weight must be frozen (trainer.megatron.fused_lora)")
        grad_x = g @ weight if need_x else None
        gh = (g @ b) * scale
        grad_b = (g.t() @ h) * scale if need_b else None
        if ctx.use_triton:
            grad_a = dropout_up(gh, a, x2, seed, p, grad_x)
        else:
            keep = torch_keep_mask(seed, x2.shape, p, x2.device) if p > 0 else None
            xd = x2 * keep / (1 - p) if keep is not None else x2
            grad_a = gh.t().float() @ xd.float()
            if grad_x is not None:
                t = gh @ a
                grad_x = grad_x + (t * keep / (1 - p) if keep is not None else t)
        grad_bias = g.sum(0) if need_bias and ctx.has_bias else None
        grad_x = grad_x.view(*ctx.lead, grad_x.shape[-1]) if grad_x is not None else None
        return grad_x, None, grad_bias, grad_a.to(a.dtype) if need_a else None, grad_b, None, None


@torch.compiler.disable  # inside a compiled layer: Dynamo calls it as it is (Triton kernels, device seed)
def lora_linear(x, weight, bias, a, b, scale: float, p: float) -> torch.Tensor:
    """``x @ weight^T + bias + scale * dropout_p(x) @ a^T @ b^T`` with ``weight`` (and ``bias``) frozen.

    ``x`` ``[..., k]``, ``weight`` ``[o, k]``, ``a`` ``[r, k]``, ``b`` ``[o, r]``; ``p = 0`` means no dropout.

    >>> x, w, a, b = torch.randn(2, 3, 8), torch.randn(5, 8), torch.randn(4, 8), torch.randn(5, 4)
    >>> ref = x @ w.t() + 2.0 * (x @ a.t()) @ b.t()
    >>> bool(torch.allclose(lora_linear(x, w, None, a, b, 2.0, 0.0), ref, atol=1e-5))
    True
    """
    return _LoRALinear.apply(x, weight, bias, a, b, float(scale), float(p))


def reference_lora_linear(x, weight, bias, a, b, scale: float, keep: torch.Tensor | None, p: float):
    """Plain autograd ops with an explicit keep mask: what :func:`lora_linear` must equal."""
    xd = x * keep.view(x.shape) / (1 - p) if keep is not None else x
    return F.linear(x, weight, bias) + scale * F.linear(F.linear(xd, a), b)


def self_check(device="cuda", n: int = 4096, k: int = 896, o: int = 1152, r: int = 16, p: float = 0.1) -> dict:
    """On the GPU: the Triton path against :func:`reference_lora_linear` with the kernels' own
    mask (output and every gradient), the keep rate, and a new mask on every CUDA-graph replay."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, k, device=device, generator=gen, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(o, k, device=device, generator=gen, dtype=torch.bfloat16) / k ** 0.5
    a = (torch.randn(r, k, device=device, generator=gen, dtype=torch.bfloat16) / k ** 0.5).requires_grad_()
    b = (torch.randn(o, r, device=device, generator=gen, dtype=torch.bfloat16) / r ** 0.5).requires_grad_()
    g = torch.randn(n, o, device=device, generator=gen, dtype=torch.bfloat16)
    state = torch.cuda.get_rng_state()
    out = lora_linear(x, w, None, a, b, 2.0, p)
    torch.cuda.set_rng_state(state)
    keep = keep_mask(new_seed(device), n, k, p)  # the seed lora_linear drew
    grads = torch.autograd.grad(out, (x, a, b), g)
    ref = reference_lora_linear(x.float(), w.float(), None, a.float(), b.float(), 2.0, keep, p)
    ref_grads = torch.autograd.grad(ref, (x, a, b), g.float())
    errors = {"out": ((out.float() - ref).abs().max() / ref.abs().max()).item()}
    for name, got, want in zip(("x", "a", "b"), grads, ref_grads):
        errors[f"grad_{name}"] = ((got.float() - want).abs().max() / want.abs().max()).item()
    graph, static_x = torch.cuda.CUDAGraph(), x.detach().clone()
    side = torch.cuda.Stream()  # warm up on a side stream first, as torch.cuda.graph asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        lora_linear(static_x, w, None, a.detach(), b.detach(), 2.0, p)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        static_out = lora_linear(static_x, w, None, a.detach(), b.detach(), 2.0, p)
    outs = []
    for _ in range(2):
        graph.replay()
        outs.append(static_out.clone())
    return {"max_rel_error": errors, "keep_rate": keep.float().mean().item(),
            "replays_differ": not torch.equal(outs[0], outs[1])}
