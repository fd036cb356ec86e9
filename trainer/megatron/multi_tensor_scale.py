"""megatron's tensor-list scale and copy as torch ``foreach`` kernels (``optim.foreach_scale``).

Two Python loops over every trained tensor run in each optimizer step of a bf16 run on
megatron-core without apex or TransformerEngine: the gradient clipping
(``clip_grad_by_total_norm_fp32``, whenever the norm is above the threshold) through the
fallback ``megatron.core.utils.local_multi_tensor_scale``, ``dst.copy_(src * scale)``, two
kernels per tensor; and the copy of the float32 main parameters back into the bf16 model
(``_copy_main_params_to_model_params``), which for bf16 is ``that.copy_(this)`` per tensor
(``_multi_tensor_copy_this_to_that`` without an overflow buffer). Both come right after a host-device
synchronisation (the gradient norm's ``.item()``), so the GPU has nothing queued and waits
for each launch: under the profiler, on one NVIDIA H200, the two loops took ~19 ms of a 0.57 s
full-parameter step (Qwen2.5-0.5B shape, ~170 tensors). Without the profiler this plug-in
changed the step by nothing measurable (docs/benchmarks.md: the profiler inflates host-bound
stretches), so ``optim.foreach_scale`` is off by default.

:func:`scale` does the same with ``torch._foreach_mul_`` (in place, clipping) or
``torch._foreach_copy_`` (a copy, the scale 1.0 megatron uses for it), with a
``_foreach_mul`` first for a copy with another scale: a few multi-tensor launches from C++.
Values are the same to the bit (a float32 multiply by the same scalar, then the same rounding
to the destination dtype). Like the fallback it replaces, it ignores the overflow flag.
:func:`copy_this_to_that` is the bf16 copy as one ``_foreach_copy_``. :func:`install` swaps
:func:`scale` in for the fallback in both modules that pick it at import (with apex or
TransformerEngine present it leaves their kernel) and the copy in for upstream's loop.

Upstream (megatron-core 0.15.3): replaces ``optimizer.clip_grads.multi_tensor_scale_impl``,
``optimizer.optimizer.multi_tensor_scale_impl`` (the fallback ``megatron.core.utils.local_multi_tensor_scale``)
and ``optimizer.optimizer._multi_tensor_copy_this_to_that``.
Guard: ``tests/test_trainer_multi_tensor_scale.py``.
"""

from __future__ import annotations

import torch


def scale(chunk_size, noop_flag, tensor_lists, scale):
    """Drop-in for ``local_multi_tensor_scale``: ``dst = src * scale`` for each pair of the two lists.

    >>> src = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    >>> dst = [torch.zeros(2, dtype=torch.bfloat16), torch.zeros(1, dtype=torch.bfloat16)]
    >>> scale(2048, None, [src, dst], 0.5)
    >>> dst
    [tensor([0.5000, 1.0000], dtype=torch.bfloat16), tensor([1.5000], dtype=torch.bfloat16)]
    """
    src, dst = list(tensor_lists[0]), list(tensor_lists[1])
    if len(src) != len(dst):
        raise ValueError(f"multi_tensor_scale: {len(src)} sources for {len(dst)} destinations")
    if not src:
        return
    in_place = all(s is d for s, d in zip(src, dst))
    if in_place:
        if scale != 1.0:
            torch._foreach_mul_(dst, scale)
        return
    torch._foreach_copy_(dst, src if scale == 1.0 else torch._foreach_mul(src, scale))


def copy_this_to_that(this, that, overflow_buf=None):
    """Drop-in for megatron's ``_multi_tensor_copy_this_to_that``: ``that[i].copy_(this[i])``."""
    if overflow_buf is not None:  # upstream's multi-tensor path (non-bf16): the scale kernel with 1.0
        from megatron.core.optimizer import optimizer

        overflow_buf.fill_(0)
        optimizer.multi_tensor_applier(optimizer.multi_tensor_scale_impl, overflow_buf, [this, that], 1.0)
        return
    scale(None, None, [this, that], 1.0)


_UPSTREAM: dict = {}


def install() -> bool:
    """Use :func:`scale` and :func:`copy_this_to_that` in megatron-core's optimizer (see above)."""
    from megatron.core.optimizer import clip_grads, optimizer
    from megatron.core.utils import local_multi_tensor_scale

    if not _UPSTREAM:
        _UPSTREAM.update({(clip_grads, "multi_tensor_scale_impl"): clip_grads.multi_tensor_scale_impl,
                          (optimizer, "multi_tensor_scale_impl"): optimizer.multi_tensor_scale_impl,
                          (optimizer, "_multi_tensor_copy_this_to_that"): optimizer._multi_tensor_copy_this_to_that})
    ok = True
    for module in (clip_grads, optimizer):
        if getattr(module, "multi_tensor_scale_impl", None) is local_multi_tensor_scale:
            module.multi_tensor_scale_impl = scale
        ok = ok and module.multi_tensor_scale_impl is not local_multi_tensor_scale
    optimizer._multi_tensor_copy_this_to_that = copy_this_to_that
    return ok


def uninstall() -> None:
    """Put back what :func:`install` replaced (runs of one process that differ in ``optim.foreach_scale``)."""
    for (module, name), original in _UPSTREAM.items():
        setattr(module, name, original)
    _UPSTREAM.clear()
