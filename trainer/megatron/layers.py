"""Layer pieces for megatron-core without TransformerEngine (no NeMo import here).

* megatron-core's local ``DotProductAttention`` materialises the s x s scores (10.6 GiB
  at micro batch 4, seq 2048). :class:`SDPACoreAttention` calls torch's
  ``scaled_dot_product_attention`` (flash / cuDNN kernels) instead.
* megatron's ``ColumnParallelLinear``/``RowParallelLinear`` route every matrix product
  through tensor-parallel region functions and a custom autograd function with a
  Python backward, identity work on one tensor-parallel rank that costs host time
  (the LoRA step on one H100 was bound by the host). :class:`LeanColumnParallelLinear`
  and :class:`LeanRowParallelLinear` call ``F.linear`` there (same parameters, same
  state dict) and fall back to upstream's forward otherwise; with ``model.wgrad_fusion``
  a training weight's gradient goes straight into ``main_grad``
  (:mod:`trainer.megatron.wgrad_fusion`).
* Without TransformerEngine megatron applies the rotary embedding with ~10 separate
  element-wise kernels per tensor (slices, cos, sin, multiplies, a concatenation for
  the half rotation, another to re-join): ~60 ms of a 0.48 s LoRA step on one H100 at
  micro batch 8. :class:`RopeInCoreSelfAttention` hands the embedding to
  :class:`SDPACoreAttention`, which applies megatron's own function
  (``_apply_rotary_pos_emb_bshd``) through ``torch.compile`` on CUDA: the same
  arithmetic in one kernel forward and one backward.

* megatron-core's local CUDA graphs (``model.cuda_graphs``, ``trainer/megatron/cuda_graphs.py``)
  also graph passes without autograd, and NeMo's preflight validation runs before the
  first training step: the layers then recorded forward-only graphs, which the
  training step replayed and whose backward failed on one H100 ("Tried replaying bwd
  cudagraph before calling 'create_bwd_cudagraph'"). :class:`TrainGraphsTransformerLayer`
  graphs only passes with autograd on; validation and generation run eagerly.

:func:`sdpa_layer_spec` is megatron-core's local layer spec with all of these.
``tests/test_trainer_layers.py`` checks outputs and gradients against the unmodified
local spec and fails if the upstream signatures these rely on change.

Upstream (megatron-core 0.15.3): replaces ``transformer.dot_product_attention.DotProductAttention``
(core attention), ``tensor_parallel.layers.ColumnParallelLinear``/``RowParallelLinear``.forward on one
rank, ``transformer.attention.SelfAttention``'s rotary step and ``transformer.transformer_layer.TransformerLayer``'s
graph capture, inside ``models.gpt.gpt_layer_specs.get_gpt_layer_local_spec``.
Guard: ``tests/test_trainer_layers.py``.
"""

from __future__ import annotations

import inspect

import torch
from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd
from megatron.core.models.common.embeddings.yarn_rotary_pos_embedding import (
    _yarn_get_concentration_factor_from_config,
)
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.attention import SelfAttention
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_layer import TransformerLayer

from trainer.megatron import wgrad_fusion

# SelfAttention.forward parameters (megatron-core 0.15.3) that decide whether the hand-off is safe.
SELF_ATTENTION_PARAMS = ("hidden_states", "attention_mask", "inference_context", "rotary_pos_emb",
                         "packed_seq_params", "inference_params")
_SELF_ATTENTION_SIGNATURE = inspect.signature(SelfAttention.forward)
_compiled_rope = None


def apply_rope(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """megatron's unfused bshd rotary embedding; one compiled kernel on CUDA."""
    global _compiled_rope
    if not t.is_cuda:
        return _apply_rotary_pos_emb_bshd(t, freqs)
    if _compiled_rope is None:
        _compiled_rope = torch.compile(_apply_rotary_pos_emb_bshd, dynamic=False)
    return _compiled_rope(t, freqs)


def _lean_ok(layer, tp_whole: bool) -> bool:
    """One tensor-parallel rank and none of the features that need upstream's path."""
    c = layer.config
    return (tp_whole and not layer.sequence_parallel and not getattr(layer, "explicit_expert_comm", False)
            and not layer.gradient_accumulation_fusion and not c.defer_embedding_wgrad_compute
            and c._cpu_offloading_context is None)


class LeanColumnParallelLinear(ColumnParallelLinear):
    """``ColumnParallelLinear`` computing ``F.linear`` directly on one tensor-parallel rank."""

    def forward(self, input_, weight=None, runtime_gather_output=None):
        if weight is not None or not _lean_ok(self, self.output_size_per_partition == self.output_size):
            return super().forward(input_, weight=weight, runtime_gather_output=runtime_gather_output)
        out = wgrad_fusion.linear(self, input_, self.weight, None if self.skip_bias_add else self.bias)
        return out, (self.bias if self.skip_bias_add else None)


class LeanRowParallelLinear(RowParallelLinear):
    """``RowParallelLinear`` computing ``F.linear`` directly on one tensor-parallel rank."""

    def forward(self, input_):
        if not _lean_ok(self, self.input_size_per_partition == self.input_size):
            return super().forward(input_)
        out = wgrad_fusion.linear(self, input_, self.weight)
        if self.skip_bias_add:
            return out, self.bias
        return (out + self.bias if self.bias is not None else out), None


class RopeInCoreSelfAttention(SelfAttention):
    """SelfAttention that lets :class:`SDPACoreAttention` apply the rotary embedding.

    Only for plain training/validation batches (no packed sequences, no inference
    context, no recomputed core attention, no yarn/interleaved/MLA rotary variants);
    anything else runs upstream's code path unchanged.
    """

    def _can_hand_off(self, args: dict) -> bool:
        c = self.config
        return (args.get("rotary_pos_emb") is not None and args.get("packed_seq_params") is None
                and args.get("inference_context") is None and args.get("inference_params") is None
                and isinstance(self.core_attention, SDPACoreAttention) and not self.checkpoint_core_attention
                and not c.apply_rope_fusion and not c.rotary_interleaved and not c.multi_latent_attention
                and not c.flash_decode and _yarn_get_concentration_factor_from_config(c) == 1.0)

    def forward(self, *args, **kwargs):
        bound = _SELF_ATTENTION_SIGNATURE.bind(self, *args, **kwargs)
        if not self._can_hand_off(bound.arguments):
            return super().forward(*args, **kwargs)
        rope = bound.arguments.pop("rotary_pos_emb")
        bound.arguments.pop("self")
        self.core_attention.pending_rope = rope if isinstance(rope, tuple) else (rope, rope)
        try:
            return super().forward(**bound.arguments)
        finally:
            self.core_attention.pending_rope = None


class SDPACoreAttention(DotProductAttention):
    """Core attention through ``torch.nn.functional.scaled_dot_product_attention``.

    Takes megatron's layout (query ``[sq, b, np, hn]``, key/value ``[sk, b, ng, hn]``)
    and returns ``[sq, b, np * hn]`` like ``DotProductAttention``. Causal masking is
    done by the kernel (``is_causal``); an explicit mask is used only for non-causal
    mask types (megatron masks are True where attention is forbidden). A rotary
    embedding handed over by :class:`RopeInCoreSelfAttention` (``pending_rope``) is
    applied to query and key first.
    """

    pending_rope: tuple | None = None

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPACoreAttention: packed sequences and attention bias are not supported")
        mask_type = attn_mask_type or self.attn_mask_type
        query, key = self.take_pending_rope(query, key)
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        causal = mask_type == AttnMaskType.causal
        mask = None if causal or attention_mask is None else ~attention_mask
        out = self.attend(q, k, v, mask, causal, groups)
        sq, b = out.shape[2], out.shape[0]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)

    def attend(self, q, k, v, mask, causal: bool, groups: int):
        """``[b, heads, s, hn]`` attention; key and value carry ``heads / groups`` heads
        (expanded here; ``trainer.megatron.sdpa_backend`` overrides this)."""
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.config.attention_dropout if self.training else 0.0, scale=self.softmax_scale,
        )

    def take_pending_rope(self, query, key):
        """Apply (once) the rotary embedding :class:`RopeInCoreSelfAttention` handed over."""
        if self.pending_rope is None:
            return query, key
        q_freqs, k_freqs = self.pending_rope
        self.pending_rope = None
        if q_freqs is not None:
            query = apply_rope(query, q_freqs)
        if k_freqs is not None:
            key = apply_rope(key, k_freqs)
        return query, key


class TrainGraphsTransformerLayer(TransformerLayer):
    """TransformerLayer whose CUDA graphs (when the config asks for local ones) cover
    training passes only; passes without autograd run eagerly."""

    def _should_call_local_cudagraph(self, *args, **kwargs):
        return torch.is_grad_enabled() and super()._should_call_local_cudagraph(*args, **kwargs)


def sdpa_layer_spec(config):
    """megatron-core's local (no TE) GPT layer spec with :class:`SDPACoreAttention`,
    :class:`RopeInCoreSelfAttention`, the lean linear layers and
    :class:`TrainGraphsTransformerLayer`."""
    spec = local_layer_spec(config)
    spec.module = TrainGraphsTransformerLayer
    attention, mlp = spec.submodules.self_attention, spec.submodules.mlp
    attention.module = RopeInCoreSelfAttention
    attention.submodules.core_attention = SDPACoreAttention
    attention.submodules.linear_qkv = LeanColumnParallelLinear
    attention.submodules.linear_proj = LeanRowParallelLinear
    mlp.submodules.linear_fc1 = LeanColumnParallelLinear
    mlp.submodules.linear_fc2 = LeanRowParallelLinear
    return spec


def local_layer_spec(config):
    """megatron-core's local (no TE) GPT layer spec, unchanged."""
    return get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts, moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm, normalization=config.normalization,
    )
