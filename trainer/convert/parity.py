"""Does a converted model compute what its source computes? The same fixed batch, both losses.

Used between converting and saving by the importer (Hugging Face -> NeMo) and by the
export (NeMo -> Hugging Face): both models score the same deterministic token ids in
float32 and the losses must agree within a tolerance (1e-3), else nothing is saved.
"""

from __future__ import annotations

import math

import torch

from jpcorpus.errors import DataProblem
from trainer.megatron.cpu_shims import megatron_on_cpu
from trainer.megatron.unwrap import mcore_module


class ImportParityError(DataProblem, RuntimeError):
    """The imported NeMo model does not compute what the Hugging Face model computes."""


def fixed_batch(vocab_size: int, batch: int = 2, seq: int = 64, seed: int = 0) -> torch.Tensor:
    """Deterministic token ids for the parity check."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq), generator=gen)


def _next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    logits = logits[:, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))


@torch.no_grad()
def parity_losses(hf_model, nemo_model, ids: torch.Tensor) -> tuple[float, float]:
    """Next-token loss of the HF and the NeMo model on ``ids``, both in float32."""
    mcore = mcore_module(nemo_model)
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
            "weights were mapped wrongly (layer norms? tied embeddings?): not saving the checkpoint "
            "(see docs/troubleshooting.md#import-parity)"
        )
    return hf_loss, nemo_loss


