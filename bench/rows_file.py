"""``rows.jsonl``: one JSON line per measured row, appended by several processes while
another reads it.

A row is written with one ``write`` on an ``O_APPEND`` descriptor, so rows from two
processes never interleave; a reader that meets a last line still being written (no newline
yet) leaves it for its next read instead of failing on half a row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def append_row(path: Path, row: dict) -> None:
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:  # a regular file takes it in one call; loop in case it does not
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def read_rows(path: Path) -> list[dict]:
    """The complete rows so far; a line without its newline is not complete yet."""
    if not path.is_file():
        return []
    text = path.read_bytes().decode(errors="replace")
    complete = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
