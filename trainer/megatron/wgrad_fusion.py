"""Weight gradients written straight into megatron's float32 ``main_grad`` (``model.wgrad_fusion``).

In a full-parameter step every linear layer's weight gradient is formed by the matmul in
bf16, handed to autograd, and added to the parameter's float32 ``main_grad`` by
megatron's DDP hook (``param.main_grad.add_(param.grad.data)``): a mixed-dtype,
non-vectorised element-wise kernel per weight and micro batch, ~29 ms of a 0.556 s step
on one NVIDIA H200 (Qwen2.5-0.5B shape, micro batch 8), plus a bf16 write and read of
every gradient. megatron's own remedy (``gradient_accumulation_fusion``) needs apex's
``fused_weight_gradient_mlp_cuda``; cuBLAS does the same through torch
(``torch.addmm(..., out_dtype=float32, out=main_grad)``,
:func:`trainer.megatron.fused_loss.accumulate_product`): the product is accumulated in
float32 into the buffer, ``param.grad_added_to_main_grad`` is set (DDP's hook then adds
nothing) and autograd gets an uninitialised placeholder so that the hook still fires,
exactly as megatron's ``LinearWithGradAccumulationAndAsyncCommunication`` does.

Under megatron's local CUDA graphs the Python of the backward runs only at capture; the
graph runner restores the flags after each replay and returns placeholders when its
``fuse_wgrad_accumulation`` is on. That flag is read from ``config.gradient_accumulation_fusion``,
which must stay False (upstream's linears raise without apex, and NeMo's checkpoint context
would carry it): :func:`install` sets the runner's flag instead, for layers whose config
has ``jp_wgrad_fusion``.

Only weights that train and have a ``main_grad`` (megatron DDP) take this path; frozen
weights (LoRA), plain modules and ``torch.compile``'d layers keep ``F.linear``.

Measured on one H200 (docs/benchmarks.md): the element-wise kernels of a step fell by 26 ms
but the step did not shorten (the GPU idled instead), so the option is off by default.

Upstream (megatron-core 0.15.3): ``distributed.DistributedDataParallel``'s backward hook and
``zero_grad_buffer`` (``grad_added_to_main_grad``), ``transformer.cuda_graphs._CudaGraphRunner``
(``fuse_wgrad_accumulation``). Guard: ``tests/test_trainer_wgrad_fusion.py``.
"""

from __future__ import annotations

import functools

import torch

from trainer.megatron.fused_loss import accumulate_product

CONFIG_ATTR = "jp_wgrad_fusion"
_WRAPPED = "_trainer_wgrad_fusion"


def wanted(layer, weight: torch.Tensor) -> bool:
    """Whether ``layer``'s product with ``weight`` should accumulate into ``main_grad``."""
    return (getattr(layer.config, CONFIG_ATTR, False) and weight.requires_grad and torch.is_grad_enabled()
            and hasattr(weight, "main_grad") and not torch.compiler.is_compiling())


class _LinearIntoMainGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_out.matmul(weight) if ctx.needs_input_grad[0] else None
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        accumulate_product(weight.main_grad, g2.t(), x.reshape(-1, x.shape[-1]))
        weight.grad_added_to_main_grad = True
        placeholder = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        grad_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, placeholder, grad_b


def linear(layer, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; the weight's gradient into ``main_grad`` when :func:`wanted`."""
    if wanted(layer, weight):
        return _LinearIntoMainGrad.apply(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def install() -> None:
    """Turn on megatron's graph runner's ``fuse_wgrad_accumulation`` for ``jp_wgrad_fusion`` layers."""
    from megatron.core.transformer import cuda_graphs

    runner = cuda_graphs._CudaGraphRunner
    original = runner.__init__
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def __init__(self, base_module, *args, **kwargs):
        original(self, base_module, *args, **kwargs)
        if getattr(getattr(base_module, "config", None), CONFIG_ATTR, False):
            self.fuse_wgrad_accumulation = True

    setattr(__init__, _WRAPPED, True)
    runner.__init__ = __init__
