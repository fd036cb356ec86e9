"""JSON Lines output written atomically, compressed by suffix.

The file is written under a temporary name in the same folder
(``NAME.partial-PID``, :mod:`jpcorpus.partial`) and renamed into place only
when the run ends well, so an interrupted run leaves no file that looks
complete; leftovers of a killed run are removed when the next run starts.
``.gz`` output has no name or time in its header and ``.zst`` output is
written in one frame at level 3, so the same input gives the same bytes on
every run and for every ``--workers``.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from jpcorpus.partial import clean_stale, partial_path, remove


def encode_record(record: dict[str, Any]) -> bytes:
    """One output line: the record as JSON, UTF-8, newline-terminated."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"


class AtomicJsonlWriter:
    """Write one JSON object per line to ``path`` (``.gz``/``.zst`` compress).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> with AtomicJsonlWriter(path) as out:
    ...     out.write({"text": "猫である。"})
    >>> path.read_text(encoding="utf-8")
    '{"text": "猫である。"}\\n'
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.count = 0
        self._discard = False
        self._raw: BinaryIO | None = None
        self._stream: BinaryIO | None = None

    def __enter__(self) -> "AtomicJsonlWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.path)
        self._raw = open(self.tmp, "wb")
        name = self.path.name.lower()
        if name.endswith(".gz"):
            self._stream = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
        elif name.endswith(".zst"):
            import zstandard

            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
        else:
            self._stream = self._raw
        return self

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(encode_record(record))
        self.count += 1

    def discard(self) -> None:
        """End without the rename: the temporary file is removed, ``path`` left as it was."""
        self._discard = True

    def write_lines(self, data: bytes, count: int) -> None:
        """Write ``count`` lines made by :func:`encode_record` (a staged run's partitions), as they are."""
        self._stream.write(data)
        self.count += count

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._stream is not self._raw:
                self._stream.close()
            self._raw.close()
            if exc_type is None and not self._discard:
                os.replace(self.tmp, self.path)
        finally:
            remove(self.tmp)
