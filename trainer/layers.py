"""Layer pieces for megatron-core without TransformerEngine (no NeMo import here).

megatron-core's local ``DotProductAttention`` materialises the s x s scores (10.6 GiB
at micro batch 4, seq 2048). :class:`SDPACoreAttention` calls torch's
``scaled_dot_product_attention`` (flash / cuDNN kernels) instead; :func:`sdpa_layer_spec`
is megatron-core's local layer spec with it.
"""

from __future__ import annotations

import torch
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType


class SDPACoreAttention(DotProductAttention):
    """Core attention through ``torch.nn.functional.scaled_dot_product_attention``.

    Takes megatron's layout (query ``[sq, b, np, hn]``, key/value ``[sk, b, ng, hn]``)
    and returns ``[sq, b, np * hn]`` like ``DotProductAttention``. Causal masking is
    done by the kernel (``is_causal``); an explicit mask is used only for non-causal
    mask types (megatron masks are True where attention is forbidden).
    """

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPACoreAttention: packed sequences and attention bias are not supported")
        mask_type = attn_mask_type or self.attn_mask_type
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        causal = mask_type == AttnMaskType.causal
        mask = None if causal or attention_mask is None else ~attention_mask
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.config.attention_dropout if self.training else 0.0, scale=self.softmax_scale,
        )
        sq, b = out.shape[2], out.shape[0]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)


def sdpa_layer_spec(config):
    """megatron-core's local (no TE) GPT layer spec with :class:`SDPACoreAttention`."""
    spec = get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts, moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm, normalization=config.normalization,
    )
    spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    return spec


def local_layer_spec(config):
    """megatron-core's local (no TE) GPT layer spec, unchanged."""
    return get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts, moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm, normalization=config.normalization,
    )
