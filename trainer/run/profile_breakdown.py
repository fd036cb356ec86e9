"""GPU kernel time of profiled steps by category: where a step's time goes, in one table.

``logging.profile_steps`` (``trainer.run.callbacks.Profile``) writes torch.profiler's
operator tables; those name hundreds of kernels. :func:`breakdown` sums kernel time per
step into the categories the speed work is planned in (docs/benchmarks.md): matrix
products, attention, the loss, normalisation, SwiGLU, rotary embedding, the fused LoRA
kernels, the optimizer, other element-wise work, copies, and the host time spent
waiting in synchronisations. :func:`category` decides from the kernel name alone
(cuBLAS/CUTLASS names, flash/cuDNN attention names, Inductor's ``triton_*_fused_<ops>``
names, our Triton kernels); it is a heuristic, and the ``other`` row says how much it
could not place.

>>> category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64")
'matmul'
>>> category("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3")
'attention'
>>> category("triton_red_fused__to_copy_exp_gather_logsumexp_sub_0")
'loss'
>>> category("_down_kernel")
'lora (fused)'
"""

from __future__ import annotations

# (category, any of these substrings in the lower-cased kernel name), first match wins
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lora (fused)", ("_down_kernel", "_up_kernel")),
    ("attention", ("flash", "fmha", "sdpa", "attention", "attn")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "gemv", "wgmma", "splitk")),
    ("loss", ("logsumexp", "log_softmax", "nll_loss", "cross_entropy")),
    ("norm", ("rms_norm", "rsqrt", "layer_norm", "_norm_")),
    ("swiglu", ("silu", "sigmoid", "swiglu")),
    ("rope", ("rotary", "_cos_", "_sin_", "cat_mul_neg")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "_amp_", "l2norm", "norm_kernel")),
    ("copies", ("memcpy", "memset", "copy_kernel", "catarraybatched", "cat_", "direct_copy")),
    ("dropout", ("bernoulli", "dropout", "philox", "fused_dropout")),
    ("elementwise", ("elementwise", "vectorized", "triton_", "reduce", "unrolled", "index", "scatter",
                     "gather", "fill", "add", "mul")),
)
SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def category(kernel_name: str) -> str:
    """The category of one GPU kernel, from its name."""
    name = kernel_name.lower()
    for label, needles in RULES:
        if any(needle in name for needle in needles):
            return label
    return "other"


def breakdown(kernels: list[tuple[str, float]], steps: int, sync_us: float = 0.0) -> list[tuple[str, float]]:
    """``[(category, seconds per step)]`` from ``(kernel name, microseconds)`` pairs, largest first,
    then ``host sync`` (host time waiting in synchronisations) and ``GPU total``.

    >>> breakdown([("ampere_bf16_gemm", 3000.0), ("flash_fwd", 1000.0), ("vectorized_elementwise", 500.0)], 2)
    [('matmul', 0.0015), ('attention', 0.0005), ('elementwise', 0.00025), ('host sync', 0.0), ('GPU total', 0.00225)]
    """
    totals: dict[str, float] = {}
    for name, us in kernels:
        label = category(name)
        totals[label] = totals.get(label, 0.0) + us
    rows = sorted(((k, v / 1e6 / steps) for k, v in totals.items()), key=lambda kv: -kv[1])
    gpu = sum(totals.values()) / 1e6 / steps
    return rows + [("host sync", sync_us / 1e6 / steps), ("GPU total", gpu)]


def format_breakdown(rows: list[tuple[str, float]]) -> list[str]:
    """Lines of a small table (category, ms per step, share of GPU time)."""
    total = dict(rows).get("GPU total") or 1.0
    lines = ["kernel time by category (per step):", f"{'category':<14}{'ms/step':>9}{'share':>7}"]
    for label, sec in rows:
        share = "" if label in ("host sync", "GPU total") else f"{sec / total:>7.0%}"
        lines.append(f"{label:<14}{sec * 1e3:>9.1f}{share}")
    return lines


def from_profiler(prof, steps: int) -> list[str]:
    """:func:`format_breakdown` of a finished ``torch.profiler.profile``."""
    import torch

    kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA]
    sync_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in SYNC_OPS)
    return format_breakdown(breakdown(kernels, steps, sync_us))
