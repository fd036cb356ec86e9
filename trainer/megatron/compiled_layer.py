"""Each transformer layer's training forward through ``torch.compile`` (``model.compile_layers``).

What is left between the matrix products of a LoRA step after the other plug-ins is
element-wise work that torch runs as separate kernels: the two RMSNorms with the
residual additions around them, the bias-dropout-adds, the reshapes and copies around
the core attention. Inductor fuses such chains into one kernel per chain (one read and
one write of the hidden state instead of several). Matrix products stay cuBLAS calls and
our own autograd functions (the fused loss, the fused LoRA linears) run as they are:
Dynamo splits the graph around what it cannot trace.

With megatron's local CUDA graphs (``model.cuda_graphs``) the compiled forward and its
AOT-compiled backward are what the graphs capture: the first training step runs eagerly
(megatron records the layer order then), which is also when Dynamo compiles; capture
and replay then run compiled kernels without guards or Python. Without graphs the
compiled layer still launches fewer kernels per layer. Validation (no autograd) runs the
eager forward, like :class:`~trainer.megatron.layers.TrainGraphsTransformerLayer`.

All 24 layers share one compiled graph (Dynamo treats the layer's parameters as inputs);
each new micro-batch shape compiles once more. :data:`BACKEND` is ``inductor``; tests set
``aot_eager`` to check the traced graphs without paying for code generation on a CPU.

Upstream (torch 2.11 ``torch.compile``; megatron-core 0.15.3 ``transformer.transformer_layer.TransformerLayer.forward``,
``transformer.cuda_graphs._CudaGraphRunner.create_fwd_graph`` calling ``base_module.forward``).
Guard: ``tests/test_trainer_fast_spec.py``.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.transformer_layer import TransformerLayer

from trainer.megatron.layers import TrainGraphsTransformerLayer

BACKEND = "inductor"
_compiled = {}


def compiled_forward():
    """``TransformerLayer.forward`` compiled once per backend (shared by every layer)."""
    if BACKEND not in _compiled:
        import torch._dynamo

        # micro-batch sizes and the 24 layers must not exhaust Dynamo's default of 8 entries
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _compiled[BACKEND] = torch.compile(TransformerLayer.forward, backend=BACKEND, dynamic=False)
    return _compiled[BACKEND]


class CompiledTransformerLayer(TrainGraphsTransformerLayer):
    """A transformer layer whose training forward (autograd on) is :func:`compiled_forward`."""

    def forward(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            return compiled_forward()(self, *args, **kwargs)
        return super().forward(*args, **kwargs)
