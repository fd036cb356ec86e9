"""The MLP that keeps only its input for backward and recomputes ``fc1`` there
(``model.mlp_recompute``), inside megatron's CUDA graphs.

The SwiGLU MLP of a Qwen2.5-0.5B layer saves its ``fc1`` output for backward:
``[tokens, 9728]`` bf16, 11 times the size of the layer's hidden state and about half of
all activation memory (mb 8: ~320 MB a layer, ~7.6 GB of the step's 15.5 GiB).
megatron's selective recompute of ``mlp`` avoids that but re-runs ``fc1``, the activation
and ``fc2`` and cannot run inside megatron's local CUDA graphs (its checkpoint saves and
restores the RNG state, which graph capture forbids), so it cost the graphs' speed too.

:class:`RecomputeFc1MLP` runs ``fc2(swiglu(fc1(x)))`` as one autograd function that saves
``x`` only; backward recomputes ``fc1(x)`` (2/3 of the MLP's forward FLOPs; ``fc2``'s
output is never needed again), then the SwiGLU gradient, then both input gradients, and
the weight gradients when the weights train (full-parameter runs). Nothing in it is
random, so replaying it in a CUDA graph is exact. On the GPU the activation and its
gradient are megatron's own compiled ``swiglu``/``swiglu_back``.

Where it applies: gated SiLU without biases (Qwen2's MLP), one tensor-parallel rank with
both linears on our lean ``F.linear`` path and not wrapped by LoRA; anything else runs
upstream's ``MLP.forward``.

Upstream (megatron-core 0.15.3): subclasses ``transformer.mlp.MLP`` (its ``forward``), uses
``fusions.fused_bias_swiglu.swiglu``/``swiglu_back``.
Guard: ``tests/test_trainer_fast_spec.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.mlp import MLP

from trainer.megatron.layers import LeanColumnParallelLinear, LeanRowParallelLinear, _lean_ok


def _swiglu(y: torch.Tensor) -> torch.Tensor:
    if y.is_cuda:
        from megatron.core.fusions.fused_bias_swiglu import swiglu

        return swiglu(y)
    gate, up = torch.chunk(y, 2, -1)
    return F.silu(gate) * up


def _swiglu_back(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.is_cuda:
        from megatron.core.fusions.fused_bias_swiglu import swiglu_back

        return swiglu_back(g, y)
    gate, up = torch.chunk(y, 2, -1)
    sig = torch.sigmoid(gate)
    return torch.cat((g * sig * (1 + gate * (1 - sig)) * up, g * gate * sig), -1)


class _RecomputeFc1(torch.autograd.Function):
    """Works on ``[tokens, hidden]`` views, as megatron's ``bias_swiglu_impl`` does: its
    compiled ``swiglu``/``swiglu_back`` ran ~3x slower on the ``[seq, batch, 2 x ffn]``
    tensors on one H200 (0.16 against 0.05 ms a call, ``bench/mlp_recompute_gpu.py``)."""

    @staticmethod
    def forward(ctx, x, w1, w2):
        flat_x = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(flat_x, w1, w2)
        ctx.x_shape = x.shape
        out = F.linear(_swiglu(F.linear(flat_x, w1)), w2)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, g):
        flat_x, w1, w2 = ctx.saved_tensors
        need_x, need_w1, need_w2 = ctx.needs_input_grad
        flat_g = g.reshape(-1, g.shape[-1])
        y = F.linear(flat_x, w1)  # the recomputation: fc1 again, no fc2
        gy = _swiglu_back(flat_g @ w2, y)
        grad_w2 = flat_g.t() @ _swiglu(y) if need_w2 else None
        grad_w1 = gy.t() @ flat_x if need_w1 else None
        grad_x = (gy @ w1).view(ctx.x_shape) if need_x else None
        return grad_x, grad_w1, grad_w2


def mlp_recompute_fc1(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``fc2(swiglu(fc1(x)))`` with only ``x`` saved for backward.

    >>> x, w1, w2 = torch.randn(3, 2, 4), torch.randn(6, 4), torch.randn(4, 3)
    >>> gate, up = torch.chunk(x @ w1.t(), 2, -1)
    >>> bool(torch.allclose(mlp_recompute_fc1(x, w1, w2), (F.silu(gate) * up) @ w2.t(), atol=1e-5))
    True
    """
    return _RecomputeFc1.apply(x, w1, w2)


class RecomputeFc1MLP(MLP):
    """megatron's MLP whose plain SwiGLU case runs :func:`mlp_recompute_fc1`."""

    def _can_recompute(self, per_token_scale) -> bool:
        c, fc1, fc2 = self.config, self.linear_fc1, self.linear_fc2
        return (per_token_scale is None and c.gated_linear_unit and self.activation_func is F.silu
                and not c.use_te_activation_func and c.activation_func_clamp_value is None
                and not c.glu_linear_offset and not c.add_bias_linear and c.fp8 is None
                and type(fc1) is LeanColumnParallelLinear and type(fc2) is LeanRowParallelLinear
                and fc1.bias is None and fc2.bias is None
                and _lean_ok(fc1, fc1.output_size_per_partition == fc1.output_size)
                and _lean_ok(fc2, fc2.input_size_per_partition == fc2.input_size))

    def forward(self, hidden_states, per_token_scale=None):
        if not self._can_recompute(per_token_scale):
            return super().forward(hidden_states, per_token_scale)
        return mlp_recompute_fc1(hidden_states, self.linear_fc1.weight, self.linear_fc2.weight), None
