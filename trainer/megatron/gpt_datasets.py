"""megatron-core's ``GPTDataset`` for our shards: end-of-document tokens kept, packed samples whole.

Upstream (megatron-core 0.15.3, ``megatron/core/datasets/gpt_dataset.py``):

* ``GPTDataset`` pads with the tokenizer's ``pad`` id and then, for every sample,
  masks the loss wherever the *label* equals that id and replaces the id by 0 in
  tokens and labels. Qwen2.5's tokenizer (through NeMo's ``AutoTokenizer``) has
  ``pad == eod == 151643``: every end-of-document token in the input became token 0
  (``!``) and the model was never trained to predict the end of a document.
  Later megatron-core releases fall back to the internal pad ``-1`` when the pad id
  collides with another special token; :class:`EodSafeGPTDataset` does the same.
* ``GPTDataset`` treats the shard as one stream of sequences and cuts a sample every
  ``seq_length`` tokens, so it cannot serve ``jpcorpus binarize --pack`` shards, whose
  samples are megatron *documents* (groups of sequences) of at most
  ``seq_length + 1`` tokens. :class:`PackedGPTDataset` yields one sample per
  document, padded to ``seq_length + 1`` with the loss masked on the padding, and
  keeps everything else of ``GPTDataset`` (``__getitem__``, the masks and position
  ids, NeMo's ``PreTrainingDataModule`` and ``BlendedDataset`` around it) as it is.

Guard: ``tests/test_trainer_packed_data.py`` fails if upstream's ``GPTDataset``
stops reading the pad id from the tokenizer, stops replacing it, or changes the
methods overridden here.
"""

from __future__ import annotations

import numpy
from megatron.core.datasets.gpt_dataset import GPTDataset

INTERNAL_PAD = -1  # upstream's _PAD_TOKEN_ID: never a token id, masked and replaced by 0


class EodSafeGPTDataset(GPTDataset):
    """``GPTDataset`` that never mistakes the end-of-document token for padding."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._pad_token_id == getattr(self.config.tokenizer, "eod", None):
            self._pad_token_id = INTERNAL_PAD


class PackedGPTDataset(EodSafeGPTDataset):
    """One sample per megatron document of a ``binarize --pack`` shard, padded to ``seq_length + 1``.

    The samples of an epoch are the shard's documents in a seeded random order
    (``config.random_seed``, as upstream's shuffle); more samples than documents
    repeat them in new orders. The order is cheap to rebuild, so it is not cached.
    """

    @staticmethod
    def numel_low_level_dataset(low_level_dataset) -> int:
        return low_level_dataset.document_indices.shape[0] - 1

    def _build_document_sample_shuffle_indices(self):
        count = len(self.indices)
        if count == 0:
            raise ValueError(f"{self.dataset_path}: a packed shard without samples")
        epochs = 1 if self.num_samples is None else max(1, -(-self.num_samples // count))
        rng = numpy.random.RandomState(self.config.random_seed)
        order = numpy.concatenate([rng.permutation(self.indices) for _ in range(epochs)]).astype(numpy.int64)
        return order, None, None

    def __len__(self) -> int:
        return len(self.document_index)

    def _query_document_sample_shuffle_indices(self, idx: int):
        doc = int(self.document_index[idx])
        first, last = (int(x) for x in self.dataset.document_indices[doc: doc + 2])
        text = numpy.concatenate([self.dataset.get(s) for s in range(first, last)]).astype(numpy.int64)
        room = self.config.sequence_length + self.config.add_extra_token_to_sequence
        if len(text) > room:
            raise ValueError(f"{self.dataset_path}: packed sample {doc} has {len(text)} tokens, more than "
                             f"seq_length + 1 = {room}: the shard was packed for a longer data.seq_length")
        padded = numpy.full(room, self._pad_token_id, dtype=numpy.int64)
        padded[: len(text)] = text
        return padded, numpy.array([doc], dtype=numpy.int64)
