"""Load a Hugging Face checkpoint directory for evaluation, deterministically.

A model directory is what ``save_pretrained`` writes (``config.json``, weights,
tokenizer files): the base Qwen2.5-0.5B or an exported adapted model. Loading is
offline only: a directory that is not complete fails here, not half-way through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LoadedModel:
    path: str
    model: Any
    """A ``transformers`` causal LM in eval mode."""
    tokenizer: Any
    """The checkpoint's own Hugging Face tokenizer."""
    device: str
    dtype: str

    @property
    def context_token_id(self) -> int:
        """The token put before a document so that its first token is scored.

        Qwen2.5 has no BOS token; its end-of-text token is what precedes a
        document in packed pretraining sequences, so we use it.
        """
        tok = self.tokenizer
        for value in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
            if value is not None:
                return int(value)
        raise ValueError(f"{self.path}: the tokenizer has no bos, eos or pad token to start a document with")


def pick_device(device: str = "auto") -> str:
    """``auto`` picks the first CUDA GPU when one is visible, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on a GPU that supports it, float32 elsewhere (CPU bf16 is slow)."""
    import torch

    if dtype != "auto":
        return dtype
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def set_determinism(seed: int = 0) -> None:
    """Seed every generator and ask torch for deterministic kernels where it has them."""
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def load_model(path: str | os.PathLike, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load ``path`` (a Hugging Face checkpoint directory) offline, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    from jpcorpus.tokenizer.regex_alarm import regex_alarm_checked

    with regex_alarm_checked(path):  # transformers 4.57 warns about Qwen's correct regex: checked there
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True)
    model.to(device).eval()
    return LoadedModel(str(path), model, tokenizer, device, dtype)
