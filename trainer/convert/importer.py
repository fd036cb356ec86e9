"""Hugging Face Qwen2 checkpoint -> NeMo checkpoint, refused unless the losses agree.

The import goes through :class:`trainer.nemo_patches.Qwen2LocalImporter` (upstream's
importer with the layer-norm and embedding-tying fixes). Between converting the
weights and saving, the Hugging Face model and the converted NeMo model score the
same fixed batch in float32; if the losses differ by more than ``tolerance``
(1e-3) nothing is saved and :class:`ImportParityError` says by how much.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from trainer.cpu_shims import megatron_on_cpu


class ImportParityError(RuntimeError):
    """The imported NeMo model does not compute what the Hugging Face model computes."""


def fixed_batch(vocab_size: int, batch: int = 2, seq: int = 64, seed: int = 0) -> torch.Tensor:
    """Deterministic token ids for the parity check."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq), generator=gen)


def _next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    logits = logits[:, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))


def _mcore_module(model):
    module = model
    while hasattr(module, "module") and not hasattr(module, "decoder"):
        module = module.module
    return module


@torch.no_grad()
def parity_losses(hf_model, nemo_model, ids: torch.Tensor) -> tuple[float, float]:
    """Next-token loss of the HF and the NeMo model on ``ids``, both in float32."""
    mcore = _mcore_module(nemo_model)
    hf_dtype, nemo_dtype = next(hf_model.parameters()).dtype, next(mcore.parameters()).dtype
    hf_model.float().eval()
    mcore.float().eval()
    try:
        hf_loss = _next_token_loss(hf_model(input_ids=ids).logits, ids)
        seq = ids.shape[1]
        position_ids = torch.arange(seq).unsqueeze(0).expand_as(ids)
        mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)[None, None]
        with megatron_on_cpu():
            nemo_loss = _next_token_loss(mcore(ids, position_ids, mask), ids)
    finally:
        hf_model.to(hf_dtype)
        mcore.to(nemo_dtype)
    return hf_loss, nemo_loss


def check_parity(hf_model, nemo_model, tolerance: float = 1e-3) -> tuple[float, float]:
    ids = fixed_batch(int(hf_model.config.vocab_size))
    hf_loss, nemo_loss = parity_losses(hf_model, nemo_model, ids)
    if not (math.isfinite(nemo_loss) and abs(hf_loss - nemo_loss) <= tolerance):
        raise ImportParityError(
            f"import parity failed: Hugging Face loss {hf_loss:.6f}, NeMo loss {nemo_loss:.6f} "
            f"(|diff| {abs(hf_loss - nemo_loss):.2e} > {tolerance:g}) on a fixed batch of {tuple(ids.shape)}; "
            "weights were mapped wrongly (layer norms? tied embeddings?): not saving the checkpoint"
        )
    return hf_loss, nemo_loss


def import_hf(hf_dir: str | Path, output_path: str | Path, *, attention: str = "sdpa",
              tolerance: float = 1e-3, overwrite: bool = False) -> Path:
    """Import a local HF Qwen2 directory into a NeMo checkpoint at ``output_path``."""
    from nemo.collections import llm
    from nemo.collections.llm.gpt.model.qwen2 import Qwen2Config500M

    from trainer import nemo_patches

    nemo_patches.Qwen2LocalImporter.layer_spec = staticmethod(
        nemo_patches.sdpa_layer_spec if attention == "sdpa" else nemo_patches.local_layer_spec
    )
    nemo_patches.Qwen2LocalImporter.parity_tolerance = tolerance
    return Path(llm.import_ckpt(
        model=nemo_patches.JaQwen2Model(Qwen2Config500M()), source=f"hf://{Path(hf_dir).resolve()}",
        output_path=Path(output_path), overwrite=overwrite,
    ))
