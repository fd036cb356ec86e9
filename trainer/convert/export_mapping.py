"""megatron-core (NeMo) Qwen2 weights -> Hugging Face Qwen2 weights, and LoRA merging.

Pure torch: no NeMo import. The reverse of what ``trainer.convert.importer`` does, written
out here because NeMo 2.7.3's exporter maps the layer norms from TE-fused names and
fails without TransformerEngine.

Layouts (megatron-core, tensor parallel 1):

- ``self_attention.linear_qkv.weight`` is ``[ng * (h/ng + 2) * d, hidden]``: for each
  of the ``ng`` key/value groups, its ``h/ng`` query heads, then one key head, then
  one value head (each ``d`` rows). The bias has the same row layout.
- ``mlp.linear_fc1.weight`` is ``[2 * ffn, hidden]``: gate rows, then up rows.
- Layer norms: local layers call them ``input_layernorm`` / ``pre_mlp_layernorm``;
  TE-fused layers ``self_attention.linear_qkv.layer_norm_weight`` /
  ``mlp.linear_fc1.layer_norm_weight``. Both are accepted.

A LoRA adapter on a linear layer adds ``(alpha / rank) * B @ A`` to its weight,
with ``A = adapter.linear_in.weight`` (``[rank, in]``) and
``B = adapter.linear_out.weight`` (``[out, rank]``); the wrapped layer's own weight
is then called ``<layer>.to_wrap.weight``.

>>> import torch
>>> q, k, v = split_qkv(torch.arange(8.).reshape(8, 1), heads=2, groups=1, head_dim=2)
>>> q.flatten().tolist(), k.flatten().tolist(), v.flatten().tolist()
([0.0, 1.0, 2.0, 3.0], [4.0, 5.0], [6.0, 7.0])
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


class ExportMappingError(ValueError):
    """The NeMo state dict does not have the shape or names this mapping expects."""


@dataclass(frozen=True)
class Qwen2Shape:
    """What the mapping needs to know about the architecture."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    ffn_hidden_size: int
    tie_embeddings: bool


def split_qkv(t: torch.Tensor, heads: int, groups: int, head_dim: int):
    """Fused, group-interleaved ``linear_qkv`` weight (2-D) or bias (1-D) -> q, k, v."""
    per_group = heads // groups
    grouped = t.reshape(groups, per_group + 2, head_dim, *t.shape[1:])
    q = grouped[:, :per_group].reshape(heads * head_dim, *t.shape[1:])
    k = grouped[:, per_group].reshape(groups * head_dim, *t.shape[1:])
    v = grouped[:, per_group + 1].reshape(groups * head_dim, *t.shape[1:])
    return q.contiguous(), k.contiguous(), v.contiguous()


def merge_lora(state: dict[str, torch.Tensor], scale: float) -> tuple[dict[str, torch.Tensor], dict]:
    """Fold every ``<layer>.adapter.linear_{in,out}.weight`` pair into ``<layer>.weight``.

    Returns the merged state dict (fp32 arithmetic) and the adapters found, as
    ``{layer: (A, B)}`` for writing them out on their own.
    """
    adapters: dict[str, list] = {}
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"(.+)\.adapter\.linear_(in|out)\.weight", key)
        if m:
            adapters.setdefault(m.group(1), [None, None])[0 if m.group(2) == "in" else 1] = value
        elif ".adapter." in key:
            raise ExportMappingError(f"unsupported adapter parameter {key} (only LoRA linear_in/linear_out)")
        else:
            merged[key.replace(".to_wrap.", ".")] = value
    for layer, (a, b) in adapters.items():
        if a is None or b is None or f"{layer}.weight" not in merged:
            raise ExportMappingError(f"incomplete LoRA adapter at {layer}")
        w = merged[f"{layer}.weight"]
        merged[f"{layer}.weight"] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
    return merged, {layer: tuple(ab) for layer, ab in adapters.items()}


_NORM_ALIASES = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
}


def to_hf(state: dict[str, torch.Tensor], shape: Qwen2Shape) -> dict[str, torch.Tensor]:
    """megatron-core GPTModel state dict (no adapters) -> HF ``Qwen2ForCausalLM`` state dict.

    Every source tensor must be used and every HF tensor produced, else
    :class:`ExportMappingError` names what is missing or left over.
    """
    src = {k: v for k, v in state.items() if not k.endswith("_extra_state")}
    for te_name, local in _NORM_ALIASES.items():
        for key in [k for k in src if k.endswith(te_name)]:
            src[key[: -len(te_name)] + local] = src.pop(key)
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in src:
            raise ExportMappingError(f"NeMo state dict has no {key}")
        used.add(key)
        return src[key]

    s = shape
    out = {"model.embed_tokens.weight": take("embedding.word_embeddings.weight"),
           "model.norm.weight": take("decoder.final_layernorm.weight")}
    if not s.tie_embeddings:
        out["lm_head.weight"] = take("output_layer.weight")
    for i in range(s.num_layers):
        n, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        out[h + "input_layernorm.weight"] = take(n + "input_layernorm.weight")
        out[h + "post_attention_layernorm.weight"] = take(n + "pre_mlp_layernorm.weight")
        heads = (s.num_attention_heads, s.num_query_groups, s.head_dim)
        for suffix in ("weight", "bias"):
            q, k, v = split_qkv(take(n + f"self_attention.linear_qkv.{suffix}"), *heads)
            out.update({h + f"self_attn.q_proj.{suffix}": q, h + f"self_attn.k_proj.{suffix}": k,
                        h + f"self_attn.v_proj.{suffix}": v})
        out[h + "self_attn.o_proj.weight"] = take(n + "self_attention.linear_proj.weight")
        gate, up = take(n + "mlp.linear_fc1.weight").chunk(2, dim=0)
        out[h + "mlp.gate_proj.weight"], out[h + "mlp.up_proj.weight"] = gate.contiguous(), up.contiguous()
        out[h + "mlp.down_proj.weight"] = take(n + "mlp.linear_fc2.weight")
    if s.tie_embeddings:
        src.pop("output_layer.weight", None)  # present only if megatron kept a tied copy
    left = sorted(set(src) - used)
    if left:
        raise ExportMappingError(f"NeMo tensors not mapped to Hugging Face names: {left[:8]}")
    return out


_PEFT_TARGETS = {
    "self_attention.linear_qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attention.linear_proj": ("self_attn.o_proj",),
    "mlp.linear_fc1": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.linear_fc2": ("mlp.down_proj",),
}


def adapters_to_peft(adapters: dict, shape: Qwen2Shape) -> tuple[dict[str, torch.Tensor], list[str]]:
    """LoRA ``{nemo layer: (A, B)}`` -> PEFT ``adapter_model.safetensors`` tensors and target names.

    A fused layer's adapter becomes one adapter per HF projection: the same A,
    B split by rows like the weight (q/k/v de-interleaved, gate/up halves), which
    gives exactly the same update ``scale * B_part @ A`` per projection.
    """
    out, targets = {}, set()
    for layer, (a, b) in adapters.items():
        m = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", layer)
        if not m or m.group(2) not in _PEFT_TARGETS:
            raise ExportMappingError(f"no PEFT name for a LoRA adapter on {layer}")
        names = _PEFT_TARGETS[m.group(2)]
        if m.group(2) == "self_attention.linear_qkv":
            parts = split_qkv(b, shape.num_attention_heads, shape.num_query_groups, shape.head_dim)
        else:
            parts = b.chunk(len(names), dim=0)
        for name, b_part in zip(names, parts):
            prefix = f"base_model.model.model.layers.{m.group(1)}.{name}"
            out[f"{prefix}.lora_A.weight"] = a.clone()  # one copy per projection (safetensors)
            out[f"{prefix}.lora_B.weight"] = b_part.contiguous()
            targets.add(name.split(".")[-1])
    return out, sorted(targets)
