"""Cut the input into partitions, deterministically, and read a partition back into documents.

A partition is the unit of work of every engine: one task cleans or tokenizes
one partition. Partitions are defined by the input alone, never by the number
of workers, so a rerun finds the same partitions (and their completion markers):

- JSON Lines (plain, ``.gz``, ``.zst``): the driver reads the file line by line
  and cuts it after the first line that brings a partition to ``target_bytes``
  of (decompressed) input; the partition carries those bytes and the number of
  its first line. Reading here is a plain line split, hundreds of MB/s; all the
  parsing happens in the workers.
- Plain text: one file, one document, one partition (its bytes).
- Parquet: runs of whole row groups of at least ``target_bytes`` (from the
  footer, :mod:`jpcorpus.parquet`); the worker reads them itself, so Parquet
  data never passes through the driver.

A file the driver finds damaged (a truncated ``.gz``) or unusable (a Parquet file
without the text column) yields a partition that carries the error after any
data read before it, so the error reaches the run at its place in input order:
with ``--skip-bad`` it is counted there, without it the run stops there, after
every earlier partition was checked, exactly as a sequential read would stop.

Results never depend on where partitions are cut: deduplication is global and
every output is written in input order (a test compares several sizes).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Iterator

from jpcorpus import parquet
from jpcorpus.document import Document
from jpcorpus.inputs import absolute, identity, open_decompressed
from jpcorpus.readers import (InputError, ReadStats, damage_error, damage_errors, is_jsonl, jsonl_records,
                              plain_records)

MIN_TARGET = 1 << 20
MAX_TARGET = 64 << 20


@dataclass
class Partition:
    """One unit of input. ``data`` is None for Parquet (and once a finished partition is recognised)."""

    index: int
    path: str
    kind: str  # "jsonl", "text", "parquet" or "error"
    first: int = 1  # jsonl: the first line's number
    groups: tuple[int, int, int] | None = None  # parquet: row groups start, stop, first row
    data: bytes | None = None
    error: tuple[str, str, str] | None = None  # (source, reason, message), after the data
    key: str = ""  # hash of what the partition covers: a finished partition is reused only if it matches
    location: str = ""  # parquet: where a worker opens the file (absolute); ``path`` is kept for messages

    def size(self) -> int:
        return len(self.data) if self.data is not None else 0


def default_target(total_bytes: int) -> int:
    """Partition size for ``total_bytes`` of input files: 1/256 of it, within 1 MiB..64 MiB.

    Enough partitions for a few hundred workers to balance, few enough files.

    >>> default_target(10**6), default_target(10**9), default_target(10**12)
    (1048576, 3906250, 67108864)
    """
    return int(min(max(total_bytes // 256, MIN_TARGET), MAX_TARGET))


def plan(paths: list[str], target_bytes: int, text_key: str, stats: ReadStats) -> Iterator[Partition]:
    """Every partition of ``paths`` in input order (lazily: JSON Lines partitions hold their bytes)."""
    index = 0
    for path in paths:
        stats.files += 1
        if parquet.is_parquet(path):
            parts = _parquet(path, target_bytes, text_key)
        elif is_jsonl_name(path):
            parts = _jsonl(path, target_bytes)
        else:
            parts = _text(path)
        for part in parts:
            part.index = index
            index += 1
            yield part


def is_jsonl_name(path: str) -> bool:
    from pathlib import PurePosixPath

    return is_jsonl(PurePosixPath(path))


def _key(*parts) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def _jsonl(path: str, target: int) -> Iterator[Partition]:
    lines: list[bytes] = []
    first, line_no, size = 1, 0, 0
    error = None
    try:
        with open_decompressed(path) as stream:
            for raw in stream:
                line_no += 1
                lines.append(raw)
                size += len(raw)
                if size >= target:
                    data = b"".join(lines)
                    yield Partition(0, path, "jsonl", first=first, data=data, key=_key("jsonl", path, first, data))
                    lines, first, size = [], line_no + 1, 0
    except damage_errors() as exc:
        error = damage_error(path, exc)
    if lines or error is not None:
        data = b"".join(lines)
        err = None if error is None else (error.source, error.reason, error.message)
        yield Partition(0, path, "jsonl", first=first, data=data, error=err, key=_key("jsonl", path, first, data, err))


def _text(path: str) -> Iterator[Partition]:
    try:
        with open_decompressed(path) as stream:
            data = stream.read()
    except damage_errors() as exc:
        error = damage_error(path, exc)
        err = (error.source, error.reason, error.message)
        yield Partition(0, path, "error", error=err, key=_key("error", path, err))
        return
    yield Partition(0, path, "text", data=data, key=_key("text", path, data))


def _parquet(path: str, target: int, text_key: str) -> Iterator[Partition]:
    runs = parquet.plan_file(path, target, text_key)
    if isinstance(runs, InputError):
        err = (runs.source, runs.reason, runs.message)
        yield Partition(0, path, "error", error=err, key=_key("error", path, err))
        return
    ident = identity(path)
    for groups in runs:
        yield Partition(0, path, "parquet", groups=groups, key=_key("parquet", ident, groups, text_key),
                        location=absolute(path))


def read(part: Partition, text_key: str, id_key: str, encoding: str,
         stats: ReadStats) -> Iterator[Document | InputError]:
    """The documents and bad records of ``part``, in order (``stats.documents`` counts the documents)."""
    if part.kind == "jsonl":
        items = jsonl_records(io.BytesIO(part.data), part.path, part.first, text_key, id_key, encoding, stats)
    elif part.kind == "text":
        items = plain_records(part.data, part.path, encoding, stats)
    elif part.kind == "parquet":
        items = parquet.read_rows(part.location, part.groups, text_key, id_key, stats, name=part.path)
    else:
        items = iter(())
    for item in items:
        if not isinstance(item, InputError):
            stats.documents += 1
        yield item
    if part.error is not None:
        yield InputError(*part.error)
