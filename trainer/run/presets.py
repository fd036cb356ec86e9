"""Model presets: zero-argument functions with the numbers written out.

A preset is the architecture only; the weights come from ``model.base`` (or from
random initialisation with ``model.from_scratch: true``). ``num_parameters`` and
``lora_parameters`` are computed from the numbers here and checked against a real
megatron-core model in the tests.

>>> qwen25_05b().num_parameters()
494032768
>>> qwen25_05b().lora_parameters(rank=16, targets=("linear_qkv", "linear_proj"))
1474560
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ModelPreset:
    """A Qwen2-family decoder: RMSNorm, SwiGLU MLP, rotary positions, GQA."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    """Key/value heads (grouped-query attention)."""
    ffn_hidden_size: int
    vocab_size: int
    """Rows of the embedding table: the tokenizer's vocabulary padded up."""
    add_qkv_bias: bool = True
    tie_embeddings: bool = True
    """Output layer shares the input embedding (as the Hugging Face checkpoint does)."""
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def _linear_shapes(self) -> dict[str, tuple[int, int]]:
        kv = self.num_query_groups * self.head_dim
        return {
            "linear_qkv": (self.hidden_size, self.hidden_size + 2 * kv),
            "linear_proj": (self.hidden_size, self.hidden_size),
            "linear_fc1": (self.hidden_size, 2 * self.ffn_hidden_size),
            "linear_fc2": (self.ffn_hidden_size, self.hidden_size),
        }

    def num_parameters(self) -> int:
        """All parameters (tied embeddings counted once)."""
        shapes = self._linear_shapes()
        per_layer = sum(i * o for i, o in shapes.values()) + 2 * self.hidden_size
        if self.add_qkv_bias:
            per_layer += shapes["linear_qkv"][1]
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + self.hidden_size + embeddings

    def lora_parameters(self, rank: int, targets: tuple[str, ...]) -> int:
        """Trainable parameters of LoRA A (in x rank) and B (rank x out) on ``targets``."""
        shapes = self._linear_shapes()
        return self.num_layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)


def qwen25_05b() -> ModelPreset:
    """Qwen2.5-0.5B: 494,032,768 parameters with tied embeddings.

    NeMo's ``Qwen25Config500M`` unties them (~630M); we do not.
    """
    return ModelPreset(
        name="qwen2.5-0.5b",
        num_layers=24,
        hidden_size=896,
        num_attention_heads=14,
        num_query_groups=2,
        ffn_hidden_size=4864,
        vocab_size=151936,
        add_qkv_bias=True,
        tie_embeddings=True,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    )


def tiny() -> ModelPreset:
    """Two small layers over the full Qwen vocabulary, for CPU tests (~9.8M parameters)."""
    return ModelPreset(
        name="tiny",
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,
        ffn_hidden_size=128,
        vocab_size=151936,
        add_qkv_bias=True,
        tie_embeddings=True,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
    )


PRESETS: dict[str, Callable[[], ModelPreset]] = {"qwen2.5-0.5b": qwen25_05b, "tiny": tiny}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ValueError(f"model.preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
