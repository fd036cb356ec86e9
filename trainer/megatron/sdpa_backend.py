"""Core attention with a chosen SDPA kernel and grouped-query attention without copies
(``model.sdpa_backend``).

:class:`~trainer.megatron.layers.SDPACoreAttention` expands Qwen2.5's 2 key/value heads
to the 14 query heads with ``repeat_interleave`` before ``scaled_dot_product_attention``:
two ``[b, 14, s, 64]`` copies per layer and micro batch (29 MB each at micro batch 8),
kept for the backward pass, plus the backward's reduction over the copies (about 1.2 GiB
of activations and ~5 ms per step at micro batch 8 on one H100). torch's flash and cuDNN
kernels take the grouped heads directly (``enable_gqa=True``), the same arithmetic.

Which kernel torch picks depends on its version and the card: torch 2.9-2.11 put cuDNN
first on sm90 when cuDNN >= 9.9, older ones flash first. ``model.sdpa_backend`` names
it (``cudnn``, ``flash``, ``efficient``, ``math``) so one benchmark call can compare
them; ``auto`` keeps torch's choice with the grouped heads; ``default`` is
:class:`SDPACoreAttention` unchanged. A named kernel that cannot run these inputs falls
back to torch's choice once, with a warning, and :data:`USED` records what ran
(printed by ``bench/trainer_speed.py``) so a silent fallback cannot pass for a result.

Upstream (torch 2.11 ``torch.nn.attention.sdpa_kernel``/``SDPBackend``, ``scaled_dot_product_attention(enable_gqa=)``;
megatron-core 0.15.3 ``transformer.dot_product_attention.DotProductAttention`` through :class:`SDPACoreAttention`).
Guard: ``tests/test_trainer_fast_spec.py``.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainer.megatron.layers import SDPACoreAttention

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
CHOICES = ("default", "auto", *BACKENDS)
CONFIG_ATTR = "jp_sdpa_backend"  # set on the TransformerConfig by trainer.megatron.fast_spec
USED: dict[str, int] = {}  # "cudnn+gqa" / "auto+gqa" / "cudnn->auto (fallback)" -> calls
_FALLEN_BACK: set[str] = set()


def supports_enable_gqa() -> bool:
    """torch >= 2.5 takes ``enable_gqa``; older ones need the expanded heads."""
    try:
        return "enable_gqa" in inspect.signature(torch.nn.functional.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a signature: ask the docstring
        return "enable_gqa" in (torch.nn.functional.scaled_dot_product_attention.__doc__ or "")


@torch.compiler.disable  # a compiled layer (trainer.megatron.compiled_layer) calls this as it is
def _forced(backend: str, q, k, v, kwargs: dict):
    with sdpa_kernel([BACKENDS[backend]]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)


def _expand(k, v, groups: int):
    return k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)


class BackendSDPACoreAttention(SDPACoreAttention):
    """:class:`SDPACoreAttention` on the kernel named by ``config.jp_sdpa_backend``, with
    the key/value heads passed grouped (no expanded copies)."""

    def attend(self, q, k, v, mask, causal: bool, groups: int):
        backend = getattr(self.config, CONFIG_ATTR, "auto")
        dropout = self.config.attention_dropout if self.training else 0.0
        gqa = groups > 1 and supports_enable_gqa()
        if groups > 1 and not gqa:
            k, v = _expand(k, v, groups)
        kwargs = dict(attn_mask=mask, is_causal=causal, dropout_p=dropout, scale=self.softmax_scale)
        if gqa:
            kwargs["enable_gqa"] = True
        tag = f"{backend}{'+gqa' if gqa else ''}"
        if backend in BACKENDS and backend not in _FALLEN_BACK and q.is_cuda:
            try:
                out = _forced(backend, q, k, v, kwargs)
                USED[tag] = USED.get(tag, 0) + 1
                return out
            except RuntimeError as exc:  # "No available kernel": shapes, dtype, mask or build
                _FALLEN_BACK.add(backend)
                warnings.warn(f"model.sdpa_backend={backend}: torch cannot run it here ({exc}); "
                              "using torch's own choice", stacklevel=2)
        if backend in _FALLEN_BACK:
            tag = f"{backend}->auto (fallback){'+gqa' if gqa else ''}"
        elif backend in BACKENDS:
            tag = f"{backend} (off CUDA: auto){'+gqa' if gqa else ''}"
        USED[tag] = USED.get(tag, 0) + 1
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
