"""Attention confined to each document: document ids from position ids, passed to every layer.

Upstream (nemo-toolkit 2.7.3, ``nemo/collections/llm/gpt/model/base.py``):
``gpt_forward_step`` passes the batch's ``attention_mask`` to the model and, when
the batch has none, asserts that TransformerEngine is installed. Megatron's way to
confine attention to documents, ``reset_attention_mask``, puts a dense ``[s, s]``
mask in that slot. :func:`document_forward_step` (the model config's
``forward_step_fn`` when ``data.document_masking`` is on) puts the document ids
there instead, derived on the GPU from the position ids, which ``GPTDataset`` restarts
at 0 after every end-of-document token (``reset_position_ids``) and at every packed
document of a ``binarize --pack`` shard. With the ids go the flex ``BlockMask``'s tables,
built here once per micro batch (outside the layers' CUDA graphs) rather than in each of
the 24 layers: one ``int32 [b, s + extra]`` tensor,
:func:`trainer.megatron.flex_attention.document_mask_tables` (its module doc says why
the tables travel in the mask rather than in a cache).
:class:`trainer.megatron.flex_attention.FlexCoreAttention` reads them. A batch that
carries a dense mask (megatron's local attention, the reference path) passes it
through unchanged.

>>> import torch
>>> document_ids(torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1]])).tolist()
[[0, 0, 0, 1, 1, 2, 3, 3]]

Guard: ``tests/test_trainer_flex_attention.py`` fails if upstream's
``gpt_forward_step`` or ``GPTModel.forward`` stop taking these arguments.
"""

from __future__ import annotations

import torch

FORWARD_ARGS = ("input_ids", "position_ids", "attention_mask", "labels")


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """``int32 [b, s]``: 0 for the first document of each row, +1 at every position id 0."""
    return torch.cumsum(position_ids == 0, dim=1, dtype=torch.int32) - 1


def document_forward_step(model, batch: dict) -> torch.Tensor:
    """``gpt_forward_step`` with document ids in the attention-mask slot (see the module doc)."""
    if batch.get("cu_seqlens") is not None:
        raise ValueError("document masking: the batch is in TransformerEngine's packed (THD) format, "
                         "which needs TransformerEngine; use binarize --pack shards instead")
    mask = batch.get("attention_mask")
    if mask is None:
        from trainer.megatron.flex_attention import document_mask_tables

        mask = document_mask_tables(document_ids(batch["position_ids"]))
    return model(input_ids=batch["tokens"], position_ids=batch["position_ids"], attention_mask=mask,
                 labels=batch["labels"])
