"""Where binarized documents go: one writer per split, rolling over to new shards.

A split (``train``, ``valid`` or the whole output) is written through one
:class:`~jpcorpus.indexed_dataset.IndexedDatasetWriter` at a time; with
``max_bytes`` set, a shard is closed before its ``.bin`` would exceed that size
(a single document larger than the limit gets a shard of its own) and the next
one is named ``PREFIX_00001`` and so on. A document may be several sequences
(a packed sample, ``doc_sequences``); shards only ever end between documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jpcorpus.indexed_dataset import IndexedDatasetWriter, bin_path, idx_path


class SplitWriter:
    """The writer(s) of one split, rolling to a new shard when one is full."""

    def __init__(self, prefix: str, dtype: np.dtype, max_bytes: int | None):
        self.prefix, self.dtype, self.max_bytes = prefix, dtype, max_bytes
        self.finished: list[tuple[str, int, int, str]] = []  # prefix, docs, tokens, sha
        self.current: IndexedDatasetWriter | None = None

    @property
    def documents(self) -> int:
        done = sum(docs for _, docs, _, _ in self.finished)
        return done + (self.current.documents if self.current is not None else 0)

    def _shard_prefix(self) -> str:
        if self.max_bytes is None:
            return self.prefix
        return f"{self.prefix}_{len(self.finished):05d}"

    def add(self, tokens: np.ndarray, lengths: np.ndarray, doc_sequences: np.ndarray | None = None) -> None:
        """Append sequences; ``doc_sequences`` groups them into documents (default: one each)."""
        if self.current is None:
            self.current = IndexedDatasetWriter(self._shard_prefix(), self.dtype)
        if self.max_bytes is None:
            self.current.add_documents(tokens, lengths, doc_sequences)
            return
        groups = np.ones(len(lengths), np.int64) if doc_sequences is None else np.asarray(doc_sequences, np.int64)
        seq_ends = np.cumsum(groups)  # sequence index where each document ends
        ends = np.cumsum(lengths, dtype=np.int64)[seq_ends - 1] if len(groups) else seq_ends  # its token end
        start_doc, start_seq, start_tok = 0, 0, 0
        while start_doc < len(groups):
            room = (self.max_bytes - self.current.bin_bytes) // self.dtype.itemsize
            fits = int(np.searchsorted(ends - start_tok, room, side="right"))
            stop = max(fits, start_doc + (1 if self.current.documents == 0 else 0))
            if stop > start_doc:
                stop_seq, stop_tok = int(seq_ends[stop - 1]), int(ends[stop - 1])
                self.current.add_documents(tokens[start_tok:stop_tok], lengths[start_seq:stop_seq],
                                           None if doc_sequences is None else groups[start_doc:stop])
                start_doc, start_seq, start_tok = stop, stop_seq, stop_tok
            if start_doc < len(groups):
                self._roll()

    def _roll(self) -> None:
        writer = self.current
        sha = writer.finalize()
        self.finished.append((str(writer.prefix), writer.documents, writer.tokens, sha))
        self.current = IndexedDatasetWriter(self._shard_prefix(), self.dtype)

    def close(self) -> None:
        if self.current is None:  # no document at all: still write an (empty) pair
            self.current = IndexedDatasetWriter(self._shard_prefix(), self.dtype)
        writer, self.current = self.current, None
        sha = writer.finalize()
        self.finished.append((str(writer.prefix), writer.documents, writer.tokens, sha))

    def abort(self) -> None:
        """Remove what this writer wrote: the open shard's partial files and the shards it already rolled
        over (binarize merges while later partitions are tokenized, so a bad record there can come after
        full shards; without their sidecars they would still look like output)."""
        if self.current is not None:
            self.current.abort()
            self.current = None
        for prefix, *_ in self.finished:
            for path in (bin_path(prefix), idx_path(prefix)):
                Path(path).unlink(missing_ok=True)
        self.finished.clear()
