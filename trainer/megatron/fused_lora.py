"""NeMo's LoRA with each adapted linear run as one fused function (``peft.fused_adapters``).

:class:`FusedLoRA` is :class:`~trainer.megatron.fast_lora.LeanLoRA` whose ``LoRALinear``
modules, where that is exact, call :func:`trainer.megatron.lora_kernels.lora_linear`:
base linear, dropout, ``A``, ``B``, scale and the addition in one autograd function with
two Triton kernels and the mask regenerated in backward (see that module for what it
saves and why). Same parameters, names, initialisation and checkpoints as NeMo's LoRA:
the modules are NeMo's own, only their forward changes.

Where it applies: one tensor-parallel rank (the lean adapter conditions of
:func:`~trainer.megatron.fast_lora.can_use_lean_forward`), the wrapped layer one of our
lean linears on its ``F.linear`` path, a frozen base weight, an identity activation and
dropout before the adapter (NeMo's LoRA defaults). Anything else, and validation
(``eval()``: no dropout, still fused), keeps a path that computes the same; a module
whose base weight is trainable falls back to NeMo's forward at call time.

Upstream (nemo-toolkit 2.7.3): replaces ``nemo.collections.llm.peft.lora.LoRALinear.forward`` per
module (``base_linear_forward`` + ``ParallelLinearAdapter``), on top of :mod:`trainer.megatron.fast_lora`.
Guard: ``tests/test_trainer_fused_lora.py``.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from nemo.collections.llm.peft.lora import LoRALinear
from nemo.collections.llm.peft.utils import ParallelLinearAdapter

from trainer.megatron.fast_lora import LeanLoRA, can_use_lean_forward
from trainer.megatron.layers import LeanColumnParallelLinear, LeanRowParallelLinear, _lean_ok
from trainer.megatron.lora_kernels import lora_linear


def _base_is_lean(base) -> bool:
    if isinstance(base, LeanColumnParallelLinear):
        return _lean_ok(base, base.output_size_per_partition == base.output_size)
    if isinstance(base, LeanRowParallelLinear):
        return _lean_ok(base, base.input_size_per_partition == base.input_size)
    return False


def can_fuse(module) -> bool:
    """``module`` is a NeMo ``LoRALinear`` whose forward :func:`fused_forward` computes exactly."""
    adapter = getattr(module, "adapter", None)
    return (isinstance(module, LoRALinear) and isinstance(adapter, ParallelLinearAdapter)
            and can_use_lean_forward(adapter) and isinstance(adapter.activation, torch.nn.Identity)
            and (adapter.dropout is None or (adapter.dropout_position == "pre"
                                             and isinstance(adapter.dropout, torch.nn.Dropout)))
            and _base_is_lean(module.to_wrap))


def fused_forward(self: LoRALinear, x, *args, **kwargs):
    """``LoRALinear.forward`` through :func:`lora_linear`: ``(output, bias)`` like upstream's."""
    base, adapter = self.to_wrap, self.adapter
    if args or kwargs or base.weight.requires_grad:
        return LoRALinear.forward(self, x, *args, **kwargs)
    p = adapter.dropout.p if adapter.dropout is not None and adapter.training else 0.0
    # Column-parallel (qkv) adds its bias inside unless skip_bias_add; row-parallel (proj) too.
    inner_bias = None if base.skip_bias_add else base.bias
    out = lora_linear(x, base.weight, inner_bias, adapter.linear_in.weight, adapter.linear_out.weight,
                      adapter.alpha / adapter.dim, p)
    return out, (base.bias if base.skip_bias_add else None)


@dataclass
class FusedLoRA(LeanLoRA):
    """``llm.peft.LoRA`` whose adapted linears run :func:`fused_forward` where it is exact."""

    def transform(self, m, name=None, prefix=None):
        out = super().transform(m, name=name, prefix=prefix)
        if can_fuse(out):
            out.forward = types.MethodType(fused_forward, out)
        return out
