"""NeMo's LoRA with a lighter adapter forward on one tensor-parallel rank.

NeMo's ``ParallelLinearAdapter`` runs each LoRA branch through megatron-core's
tensor-parallel layers: a column-parallel ``linear_in`` and a row-parallel
``linear_out``, each a custom autograd function with its own Python backward, plus
the copy/gather/reduce region functions around them. With one tensor-parallel rank
and no sequence parallelism all of that is identity work, but it costs host time:
on one H100 the LoRA step was bound by the host, not the GPU (at micro batch 8 the
GPU was busy 0.48 s of a 0.61 s step).

:class:`LeanLoRA` is ``llm.peft.LoRA`` whose adapters, where that holds, compute the
same thing with ``torch.nn.functional.linear`` on the same parameters: dropout,
``x @ A^T``, ``@ B^T``, times ``alpha / dim``. Parameter names, shapes, initialisation
and checkpoints are unchanged (the adapters are NeMo's own modules); anything else
(tensor or sequence parallelism, experts, activation offloading) keeps NeMo's forward.
``tests/test_trainer_fast_lora.py`` compares both on a real megatron-core model.

Upstream (nemo-toolkit 2.7.3): subclasses ``nemo.collections.llm.peft.lora.LoRA`` and replaces
``nemo.collections.llm.peft.utils.ParallelLinearAdapter.forward`` per adapter, on one rank.
Guard: ``tests/test_trainer_fast_lora.py``.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch.nn.functional as F
from megatron.core import parallel_state
from nemo.collections.llm.peft.lora import LoRA, LoRALinear
from nemo.collections.llm.peft.utils import ParallelLinearAdapter


def lean_adapter_forward(self: ParallelLinearAdapter, x):
    """``ParallelLinearAdapter.forward`` for one tensor-parallel rank, no sequence parallelism."""
    if self.dropout is not None and self.dropout_position == "pre":
        x = self.dropout(x)
    x = F.linear(x, self.linear_in.weight, self.linear_in.bias)
    x = self.activation(x)
    x = F.linear(x, self.linear_out.weight, self.linear_out.bias)
    if self.dropout is not None and self.dropout_position == "post":
        x = self.dropout(x)
    return x * (self.alpha / self.dim)


def can_use_lean_forward(adapter: ParallelLinearAdapter) -> bool:
    config = adapter.config
    return (parallel_state.get_tensor_model_parallel_world_size() == 1 and not adapter.is_expert
            and not getattr(config, "sequence_parallel", False)
            and not (config.cpu_offloading and config.cpu_offloading_activations)
            and getattr(adapter.linear_in, "bias", None) is None and getattr(adapter.linear_out, "bias", None) is None)


@dataclass
class LeanLoRA(LoRA):
    """``llm.peft.LoRA`` whose adapters use :func:`lean_adapter_forward` where it is exact."""

    def transform(self, m, name=None, prefix=None):
        out = super().transform(m, name=name, prefix=prefix)
        if isinstance(out, LoRALinear) and isinstance(out.adapter, ParallelLinearAdapter) \
                and can_use_lean_forward(out.adapter):
            out.adapter.forward = types.MethodType(lean_adapter_forward, out.adapter)
        return out
