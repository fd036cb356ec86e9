"""JSON Lines output written atomically, compressed by suffix.

The file is written under a temporary name in the same folder and renamed
into place only when the run ends well, so an interrupted run leaves no file
that looks complete. ``.gz`` output has no name or time in its header and
``.zst`` output is written in one frame at level 3, so the same input gives
the same bytes on every run and for every ``--workers``.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, BinaryIO


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
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.count = 0
        self._raw: BinaryIO | None = None
        self._stream: BinaryIO | None = None

    def __enter__(self) -> "AtomicJsonlWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        self._stream.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._stream is not self._raw:
            self._stream.close()
        self._raw.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
