"""The Megatron indexed-dataset format (``PREFIX.bin`` + ``PREFIX.idx``), version 1.

This module owns the format: the dtype codes, the streaming writer and the
validating reader. ``jpcorpus binarize`` writes through :class:`IndexedDatasetWriter`;
``jpcorpus inspect-idx`` reads through :class:`IndexedDataset`. The files are
byte-identical to what megatron-core's ``IndexedDatasetBuilder`` writes for the
same token sequences (``tests/test_indexed_dataset.py`` checks this against
megatron-core 0.15.3, and reads ours back with megatron-core's ``IndexedDataset``).

Byte layout (all integers little-endian; also in ``docs/megatron-format.md``)::

    PREFIX.idx
      offset 0   9 bytes   magic  b"MMIDIDX\\x00\\x00"
      offset 9   uint64    version, always 1
      offset 17  uint8     dtype code of the tokens in .bin (see DTYPE_CODES)
      offset 18  uint64    S, the number of sequences
      offset 26  uint64    D, the number of document indices (documents + 1)
      offset 34  int32[S]  length of each sequence, in tokens
      ...        int64[S]  byte offset of each sequence in .bin
      ...        int64[D]  sequence index where each document starts; the
                           last entry is S
    PREFIX.bin
      the tokens of all sequences, back to back, in the dtype above

``jpcorpus binarize`` writes one sequence per document (the end-of-document
token is the last token of each), so S = D - 1 and the document indices are
0..S. ``binarize --pack`` (``jpcorpus/packing.py``) groups sequences instead:
each original document (or piece of one) is a sequence and each packed sample
a document, whose indices say where each sample's sequences start.

A worked example: two documents ``[5, 6, 7]`` and ``[8, 9]`` in uint16 give
lengths ``[3, 2]``, pointers ``[0, 6]`` (bytes), document indices ``[0, 1, 2]``
and a 10-byte ``.bin``.

Memory: the writer streams the per-sequence lengths to a temporary file (4
bytes a sequence; grouped documents add 8 bytes each to another), so memory
stays flat however many documents are written.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jpcorpus.partial import partial_path, release, remove

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_SIZE = len(MAGIC) + 8 + 1 + 8 + 8  # magic, version, dtype code, S, D

# megatron-core's DType enum: code -> numpy dtype.
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF_DTYPE = {np.dtype(dtype): code for code, dtype in DTYPE_CODES.items()}

# Rows of lengths handled at a time when the index is assembled: 8 MB of int64.
_CHUNK = 1 << 20


class FormatError(ValueError):
    """The files are not a valid indexed dataset; the message says what is wrong."""


def optimal_dtype(vocab_size: int) -> type[np.number]:
    """megatron-core's choice: uint16 below 65,500 token ids, else int32.

    >>> optimal_dtype(32000).__name__, optimal_dtype(151665).__name__
    ('uint16', 'int32')
    """
    return np.uint16 if vocab_size < 65500 else np.int32


def bin_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.bin")


def idx_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.idx")


class IndexedDatasetWriter:
    """Write one ``.bin/.idx`` pair atomically, one sequence per document unless grouped.

    Everything goes to temporary ``NAME.partial-PID`` files (:mod:`jpcorpus.partial`);
    :meth:`finalize` renames them into place (``.bin`` first, ``.idx`` last), so an
    interrupted run never leaves a pair that looks complete. An old pair under the
    same prefix is removed at finalize, before the renames.

    >>> import tempfile
    >>> prefix = Path(tempfile.mkdtemp()) / "demo"
    >>> with IndexedDatasetWriter(prefix, np.uint16) as w:
    ...     w.add_document(np.array([5, 6, 7])); w.add_document(np.array([8, 9]))
    ...     _ = w.finalize()
    >>> ds = IndexedDataset(prefix)
    >>> len(ds), ds[1].tolist(), ds.pointers.tolist()
    (2, [8, 9], [0, 6])
    """

    def __init__(self, prefix: str | os.PathLike, dtype: type[np.number]):
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF_DTYPE:
            raise ValueError(f"dtype {self.dtype} has no code in the indexed-dataset format")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._bin_tmp = partial_path(bin_path(prefix))
        self._len_tmp = partial_path(f"{prefix}.lengths")
        self._docs_tmp = partial_path(f"{prefix}.docs")  # created by the first grouped write only
        self._idx_tmp = partial_path(idx_path(prefix))
        self._bin = open(self._bin_tmp, "wb")
        self._lengths = open(self._len_tmp, "wb")
        self._docs = None  # document start indices, opened by the first grouped write
        self._bin_hash = hashlib.sha256()
        self.documents = 0
        self.sequences = 0
        self.tokens = 0
        self._done = False

    @property
    def bin_bytes(self) -> int:
        return self.tokens * self.dtype.itemsize

    def add_document(self, tokens: np.ndarray) -> None:
        """Append one document (its end-of-document token already included)."""
        self.add_documents(np.asarray(tokens), np.array([len(tokens)], dtype=np.int32))

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray, doc_sequences: np.ndarray | None = None) -> None:
        """Append many sequences at once: ``tokens`` concatenated, ``lengths`` each.

        Each sequence is a document of its own unless ``doc_sequences`` groups
        them: document k is then the next ``doc_sequences[k]`` sequences (a packed
        sample and the documents in it).
        """
        if doc_sequences is not None or self._docs is not None:
            self._add_document_starts(len(lengths), doc_sequences)
        else:
            self.documents += len(lengths)
        data = np.ascontiguousarray(tokens, dtype=self.dtype).tobytes()
        self._bin.write(data)
        self._bin_hash.update(data)
        self._lengths.write(np.ascontiguousarray(lengths, dtype=np.int32).tobytes())
        self.sequences += len(lengths)
        self.tokens += int(tokens.size)

    def _add_document_starts(self, count: int, doc_sequences: np.ndarray | None) -> None:
        groups = np.ones(count, np.int64) if doc_sequences is None else np.asarray(doc_sequences, np.int64)
        if int(groups.sum()) != count or (groups < 1).any():
            raise ValueError(f"doc_sequences {groups.tolist()[:8]}... must be positive and sum to {count} sequences")
        if self._docs is None:  # documents so far were one sequence each
            self._docs = open(self._docs_tmp, "wb")
            self._docs.write(np.arange(self.sequences, dtype=np.int64).tobytes())
        starts = self.sequences + np.cumsum(groups) - groups
        self._docs.write(starts.astype(np.int64).tobytes())
        self.documents += len(groups)

    def finalize(self) -> str:
        """Write the index, move both files into place; returns the .bin's sha256."""
        self._bin.close()
        self._lengths.close()
        if self._docs is not None:
            self._docs.close()
        self._write_index()
        for stale in (idx_path(self.prefix), bin_path(self.prefix)):
            stale.unlink(missing_ok=True)
        os.replace(self._bin_tmp, bin_path(self.prefix))
        os.replace(self._idx_tmp, idx_path(self.prefix))
        remove(self._len_tmp)
        remove(self._docs_tmp)
        release(self._bin_tmp)
        release(self._idx_tmp)
        self._done = True
        return self._bin_hash.hexdigest()

    def _write_index(self) -> None:
        count = self.sequences
        itemsize = self.dtype.itemsize
        with open(self._idx_tmp, "wb") as out, open(self._len_tmp, "rb") as lengths:
            out.write(MAGIC)
            out.write(struct.pack("<Q", VERSION))
            out.write(struct.pack("<B", CODE_OF_DTYPE[self.dtype]))
            out.write(struct.pack("<Q", count))  # sequences
            out.write(struct.pack("<Q", self.documents + 1))  # document indices
            while chunk := lengths.read(_CHUNK * 4):  # lengths, copied as they are
                out.write(chunk)
            lengths.seek(0)
            offset = 0  # pointers: running byte offset of each sequence
            while chunk := lengths.read(_CHUNK * 4):
                sizes = np.frombuffer(chunk, dtype=np.int32).astype(np.int64) * itemsize
                ends = np.cumsum(sizes) + offset
                out.write((ends - sizes).tobytes())
                offset = int(ends[-1])
            if self._docs is None:
                for start in range(0, count + 1, _CHUNK):  # document indices 0..S
                    out.write(np.arange(start, min(start + _CHUNK, count + 1), dtype=np.int64).tobytes())
                return
            with open(self._docs_tmp, "rb") as starts:  # grouped: each document's first sequence, then S
                while chunk := starts.read(_CHUNK * 8):
                    out.write(chunk)
            out.write(struct.pack("<q", count))

    def abort(self) -> None:
        """Remove the partial files (called on error or interruption)."""
        for handle in (self._bin, self._lengths, self._docs):
            if handle is not None:
                handle.close()
        for path in (self._bin_tmp, self._len_tmp, self._docs_tmp, self._idx_tmp):
            remove(path)
        self._done = True

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()


@dataclass
class IndexHeader:
    version: int
    dtype: np.dtype
    sequences: int
    document_indices: int


def read_header(path: str | os.PathLike) -> IndexHeader:
    """Read and check the fixed-size header of an ``.idx`` file."""
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        raise FormatError(f"{path}: {len(head)} bytes, shorter than the {HEADER_SIZE}-byte header")
    if head[: len(MAGIC)] != MAGIC:
        raise FormatError(f"{path}: bad magic {head[:len(MAGIC)]!r}, not a Megatron .idx file")
    version, code, sequences, doc_count = struct.unpack("<QBQQ", head[len(MAGIC):])
    if version != VERSION:
        raise FormatError(f"{path}: format version {version}, only version {VERSION} is supported")
    if code not in DTYPE_CODES:
        raise FormatError(f"{path}: unknown dtype code {code}")
    return IndexHeader(version, np.dtype(DTYPE_CODES[code]), sequences, doc_count)


class IndexedDataset:
    """Read a ``.bin/.idx`` pair through memory maps, checking sizes on open.

    ``ds[i]`` is sequence ``i`` as a numpy array; ``lengths``, ``pointers`` and
    ``doc_indices`` are the index arrays.
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        index_file, data_file = idx_path(prefix), bin_path(prefix)
        for path in (index_file, data_file):
            if not path.is_file():
                raise FormatError(f"{path}: missing")
        self.header = read_header(index_file)
        self.dtype = self.header.dtype
        s, d = self.header.sequences, self.header.document_indices
        expected = HEADER_SIZE + 4 * s + 8 * s + 8 * d
        actual = index_file.stat().st_size
        if actual != expected:
            raise FormatError(
                f"{index_file}: {actual} bytes, but its header ({s} sequences, {d} document "
                f"indices) needs {expected}: the index is truncated or corrupted"
            )
        index = np.memmap(index_file, mode="r", dtype=np.uint8)
        self.lengths = index[HEADER_SIZE: HEADER_SIZE + 4 * s].view(np.int32)
        self.pointers = index[HEADER_SIZE + 4 * s: HEADER_SIZE + 12 * s].view(np.int64)
        self.doc_indices = index[HEADER_SIZE + 12 * s: expected].view(np.int64)
        self.bin_size = data_file.stat().st_size
        if self.bin_size % self.dtype.itemsize:
            raise FormatError(f"{data_file}: {self.bin_size} bytes, not a whole number of {self.dtype.name} "
                              "tokens: the .bin is truncated")
        self._data = np.memmap(data_file, mode="r", dtype=self.dtype) if self.bin_size else np.empty(0, self.dtype)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    @property
    def documents(self) -> int:
        return max(len(self.doc_indices) - 1, 0)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self._data[start: start + int(self.lengths[i])])

    def document(self, i: int) -> np.ndarray:
        """All tokens of document ``i`` (its sequences concatenated)."""
        first, last = int(self.doc_indices[i]), int(self.doc_indices[i + 1])
        if first == last:
            return np.empty(0, self.dtype)
        start = int(self.pointers[first]) // self.dtype.itemsize
        stop = int(self.pointers[last - 1]) // self.dtype.itemsize + int(self.lengths[last - 1])
        return np.asarray(self._data[start:stop])

    def iter_token_chunks(self, chunk_tokens: int = 1 << 24):
        """Yield the whole token stream in bounded chunks (for scans like max id)."""
        for start in range(0, len(self._data), chunk_tokens):
            yield np.asarray(self._data[start: start + chunk_tokens])
