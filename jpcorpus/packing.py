"""Sequence packing for ``jpcorpus binarize --pack SEQ_LENGTH``: whole documents into samples.

megatron-core's ``GPTDataset`` concatenates documents and cuts every ``seq_length``
tokens, so most samples start mid-document and attend across unrelated documents.
Best-fit packing (Ding et al. 2024, "Fewer Truncations Improve Language Modeling")
keeps each document whole inside one sample at concatenation's efficiency.

What is written (standard megatron ``.bin/.idx``, read unchanged by megatron-core's
``IndexedDataset``): every original document, or piece of one, is a *sequence*;
every packed sample is a megatron *document* (its ``document_indices`` entry says
where its sequences start) of at most ``seq_length + 1`` tokens, the extra token
being the label of the last position. The trainer pads each sample to that length.

The algorithm, per split (train and valid are packed separately, after the split
by document hash, so the split is the same as without ``--pack``):

* a document longer than a sample is cut into sample-sized pieces from its start;
  each full piece is a sample of its own at once, the remainder (which ends with
  the end-of-document token) is packed like a short document. Cut documents and
  pieces are counted and reported, nothing is dropped;
* short documents and remainders collect in a buffer of ``buffer_documents``;
  when it is full it is packed by best-fit decreasing (longest first, each into
  the open sample with the least room that still fits it, ties to the sample
  opened first) and every sample made is written.

The result depends only on the input order and the two numbers, never on
``--workers`` (documents reach the packer in input order) or on batch sizes.
Memory is the buffer: at most ``buffer_documents x (seq_length + 1)`` tokens,
flat in the input size. Measured on the team's corpora at ``seq_length`` 2048
(``bench/packing.py``, docs/benchmarks.md): 99.0% fill on Japanese Wikinews and
99.99% on Aozora books with the default buffer of 10,000 documents.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np

ALGORITHM = "best-fit-decreasing"
DEFAULT_BUFFER = 10_000


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices (longest first within a bin), in the order the bins were opened.

    Open bins are kept by remaining room (a sorted list of the distinct rooms and a
    queue of bins for each), so an item finds its bin in O(log capacity).

    >>> best_fit_decreasing([5, 3, 4, 2, 6], 8)
    [[4, 3], [0, 1], [2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rooms: list[int] = []  # sorted distinct rooms of open bins
    by_room: dict[int, deque] = {}
    bins: list[list[int]] = []
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"item {i} of {size} tokens exceeds the bin capacity {capacity}")
        j = bisect.bisect_left(rooms, size)
        if j < len(rooms):
            room = rooms[j]
            b = by_room[room].popleft()
            if not by_room[room]:
                del by_room[room]
                rooms.pop(j)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        left = room - size
        if left:
            if left not in by_room:
                by_room[left] = deque()
                bisect.insort(rooms, left)
            by_room[left].append(b)
    return bins


@dataclass
class PackStats:
    """Counts of one split's packing, reported at the end and kept in the sidecar."""

    sample_tokens: int
    documents: int = 0  # input documents
    tokens: int = 0
    samples: int = 0
    cut_documents: int = 0  # documents longer than a sample
    pieces: int = 0  # pieces those were cut into (their remainders included)
    peak_buffer_tokens: int = 0

    @property
    def fill_rate(self) -> float:
        """Tokens over the room of the samples made (``samples x (seq_length + 1)``)."""
        return self.tokens / (self.samples * self.sample_tokens) if self.samples else 0.0

    def as_dict(self) -> dict:
        return {"input_documents": self.documents, "tokens": self.tokens, "samples": self.samples,
                "fill_rate": round(self.fill_rate, 6), "cut_documents": self.cut_documents,
                "pieces": self.pieces, "peak_buffer_tokens": self.peak_buffer_tokens}


class Packer:
    """Documents in, in input order; packed samples (lists of token arrays) out."""

    def __init__(self, seq_length: int, buffer_documents: int = DEFAULT_BUFFER):
        if seq_length < 1:
            raise ValueError(f"--pack must be a positive sequence length, got {seq_length}")
        if buffer_documents < 1:
            raise ValueError(f"--pack-buffer must be at least 1 document, got {buffer_documents}")
        self.seq_length, self.buffer_documents = seq_length, buffer_documents
        self.capacity = seq_length + 1
        self.stats = PackStats(self.capacity)
        self._buffer: list[np.ndarray] = []
        self._buffered_tokens = 0

    def add(self, doc: np.ndarray) -> list[list[np.ndarray]]:
        """Take one document; return the samples that are complete now."""
        s = self.stats
        s.documents += 1
        s.tokens += len(doc)
        full, rest = divmod(len(doc), self.capacity)
        if full and (full > 1 or rest):
            s.cut_documents += 1
            s.pieces += full + (rest > 0)
        out = [[doc[k * self.capacity:(k + 1) * self.capacity]] for k in range(full)]
        if rest:
            self._buffer.append(np.array(doc[full * self.capacity:]))  # a copy: never pin a whole batch
            self._buffered_tokens += rest
            s.peak_buffer_tokens = max(s.peak_buffer_tokens, self._buffered_tokens)
            if len(self._buffer) >= self.buffer_documents:
                out += self.flush()
        s.samples += full
        return out

    def flush(self) -> list[list[np.ndarray]]:
        """Pack whatever is buffered (called when the buffer is full and at the end)."""
        items, self._buffer, self._buffered_tokens = self._buffer, [], 0
        bins = best_fit_decreasing([len(item) for item in items], self.capacity)
        self.stats.samples += len(bins)
        return [[items[i] for i in members] for members in bins]


class PackingWriter:
    """A :class:`~jpcorpus.split_writer.SplitWriter` seen through a :class:`Packer`.

    ``binarize`` hands it tokenized batches exactly as it hands them to a
    ``SplitWriter`` (``add(tokens, lengths)``, ``close()``, ``abort()``); it
    writes packed samples, each sample one megatron document.
    ``documents`` counts the input documents (as binarize's checks expect).
    """

    def __init__(self, inner, seq_length: int, buffer_documents: int = DEFAULT_BUFFER):
        self.inner = inner
        self.packer = Packer(seq_length, buffer_documents)

    @property
    def documents(self) -> int:
        return self.packer.stats.documents

    @property
    def finished(self):
        return self.inner.finished

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        samples: list[list[np.ndarray]] = []
        start = 0
        for n in lengths.tolist():
            samples += self.packer.add(tokens[start:start + n])
            start += n
        self._write(samples)

    def close(self) -> None:
        self._write(self.packer.flush())
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    def _write(self, samples: list[list[np.ndarray]]) -> None:
        if not samples:
            return
        parts = [seq for sample in samples for seq in sample]
        self.inner.add(np.concatenate(parts), np.array([len(p) for p in parts], np.int32),
                       np.array([len(sample) for sample in samples], np.int64))

    def sidecar_fields(self, prefix: str) -> dict:
        """What the sidecar of one shard records about the packing."""
        from jpcorpus.indexed_dataset import idx_path, read_header

        return {
            "sequences": read_header(idx_path(prefix)).sequences,
            "packing": {
                "seq_length": self.packer.seq_length,
                "sample_tokens": self.packer.capacity,
                "algorithm": ALGORITHM,
                "buffer_documents": self.packer.buffer_documents,
                "split": self.packer.stats.as_dict(),  # the whole split, all its shards
            },
        }

    def summary(self, name: str | None) -> str:
        s, p = self.packer.stats, self.packer
        return (f"  packed {name or 'all'}: {s.documents:,} documents into {s.samples:,} samples of at most "
                f"{p.capacity:,} tokens, fill rate {100 * s.fill_rate:.2f}% ({ALGORITHM}, buffer "
                f"{p.buffer_documents:,} documents); {s.cut_documents:,} documents longer than a sample "
                f"were cut into {s.pieces:,} pieces")


@dataclass
class PackedShardStats:
    """Sample statistics read back from a packed shard's index (``inspect-idx``)."""

    samples: int = 0
    tokens: int = 0
    over_length: int = 0
    first_over: int | None = None
    sequences_per_sample: dict = field(default_factory=dict)
    sample_length: dict = field(default_factory=dict)


def packed_shard_stats(ds, sample_tokens: int, chunk: int = 1 << 20) -> PackedShardStats:
    """Per-sample token counts from the index alone, in bounded chunks.

    ``ds`` is a :class:`jpcorpus.indexed_dataset.IndexedDataset`; a sample is a
    megatron document, its length the sum of its sequences' lengths.
    """
    out = PackedShardStats()
    doc_idx = np.asarray(ds.doc_indices)
    lo_len, hi_len, lo_seq, hi_seq, total_seq = None, 0, None, 0, 0
    for a in range(0, max(len(doc_idx) - 1, 0), chunk):
        bounds = doc_idx[a: a + chunk + 1].astype(np.int64)
        lengths = np.asarray(ds.lengths[bounds[0]: bounds[-1]], dtype=np.int64)
        csum = np.concatenate([[0], np.cumsum(lengths)])
        sizes = csum[bounds[1:] - bounds[0]] - csum[bounds[:-1] - bounds[0]]
        counts = np.diff(bounds)
        over = np.flatnonzero(sizes > sample_tokens)
        if over.size and out.first_over is None:
            out.first_over = a + int(over[0])
        out.over_length += int(over.size)
        out.samples += len(sizes)
        out.tokens += int(sizes.sum())
        total_seq += int(counts.sum())
        lo_len = int(sizes.min()) if lo_len is None else min(lo_len, int(sizes.min()))
        hi_len = max(hi_len, int(sizes.max()))
        lo_seq = int(counts.min()) if lo_seq is None else min(lo_seq, int(counts.min()))
        hi_seq = max(hi_seq, int(counts.max()))
    if out.samples:
        out.sample_length = {"min": lo_len, "mean": round(out.tokens / out.samples, 1), "max": hi_len}
        out.sequences_per_sample = {"min": lo_seq, "mean": round(total_seq / out.samples, 2), "max": hi_seq}
    return out


def packing_summary(ds, sidecar: dict | None) -> dict | None:
    """What ``inspect-idx`` shows about a packed shard (None when it is not packed)."""
    packing = (sidecar or {}).get("packing")
    if not isinstance(packing, dict) or not isinstance(packing.get("sample_tokens"), int):
        return None
    stats = packed_shard_stats(ds, int(packing["sample_tokens"]))
    fill = stats.tokens / (stats.samples * int(packing["sample_tokens"])) if stats.samples else 0.0
    return {"seq_length": packing.get("seq_length"), "algorithm": packing.get("algorithm"),
            "buffer_documents": packing.get("buffer_documents"), "samples": stats.samples,
            "fill_rate": round(fill, 6), "over_length_samples": stats.over_length,
            "sample_length": stats.sample_length, "sequences_per_sample": stats.sequences_per_sample,
            "split": packing.get("split")}
