"""Stream documents out of JSON Lines and plain-text files.

What a path holds is decided by its name:

- ``*.jsonl``, ``*.ndjson``, ``*.json`` (optionally ``.gz`` or ``.zst``): one JSON
  object per line; the text is in ``text_key``, the id (if any) in ``id_key``;
  every other field is kept in ``Document.metadata``.
- anything else (``*.txt``, optionally ``.gz``/``.zst``): plain text, one
  document per file.

Bad input never produces a traceback and never silently loses data. By
default the first bad record stops the run with an :class:`InputError` naming
the file, the line and what to change. With ``skip_bad=True`` bad records are
counted by reason in :class:`ReadStats` and handed to ``on_skip`` (the CLI
writes them to a log file), and reading goes on. A truncated ``.gz``/``.zst``
file ends that file: the documents before the damage are kept, the damage is
counted as ``truncated_input``.

Reasons (stable snake_case strings, asserted by tests): ``invalid_encoding``,
``malformed_json``, ``invalid_unicode`` (an escaped lone surrogate),
``too_deeply_nested``, ``number_too_large`` (see :mod:`jpcorpus.jsonline`),
``not_an_object``, ``missing_text_key``, ``text_not_string``, ``empty_text``,
``nul_byte``, ``truncated_input``. Unfinished temporary files of an interrupted
run (``*.partial-PID``, :mod:`jpcorpus.partial`) are never read.
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from jpcorpus.document import Document
from jpcorpus.jsonline import RecordError, loads_record

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
COMPRESSED_SUFFIXES = (".gz", ".zst")

# Encodings other than UTF-8 that Japanese text arrives in. When bytes are not
# valid in the encoding in use, the error says which of these would decode them.
JAPANESE_LEGACY_ENCODINGS = ("cp932", "euc_jp")


class InputError(ValueError):
    """Bad input: names the file, the line and what to change."""

    def __init__(self, source: str, reason: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = reason
        self.message = message


@dataclass
class ReadStats:
    """Counts kept up to date while documents are read."""

    files: int = 0
    documents: int = 0
    text_bytes: int = 0  # uncompressed bytes of the lines or files read
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "documents": self.documents,
            "text_bytes": self.text_bytes,
            "skipped": dict(sorted(self.skipped.items())),
        }


def expand_inputs(patterns: Iterable[str]) -> list[Path]:
    """Expand globs and directories into a sorted, de-duplicated file list.

    A pattern that matches nothing is an error, never a silent empty run. A
    directory contributes only its data files (:mod:`jpcorpus.input_folders`).
    """
    from jpcorpus.input_folders import data_files

    paths: list[Path] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(p for p in Path(pattern).rglob("*") if p.is_file())
        elif any(ch in pattern for ch in "*?["):
            found = sorted(Path(p) for p in glob(pattern, recursive=True) if os.path.isfile(p))
        else:
            found = [Path(pattern)] if os.path.isfile(pattern) else []
        if not found:
            raise InputError(pattern, "no_input", "no such file (or the pattern matches no file)")
        found = _without_partial_files(found, pattern)
        if os.path.isdir(pattern):
            found = data_files(pattern, [(str(p.relative_to(pattern)), p) for p in found])
        paths.extend(found)
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def _without_partial_files(found: list[Path], pattern: str) -> list[Path]:
    """Unfinished temporary files of an interrupted run are never input (skipped with a note)."""
    from jpcorpus.partial import is_partial

    kept = [p for p in found if not is_partial(p)]
    for path in found:
        if is_partial(path):
            log.warning("skipping %s: an unfinished temporary file of an interrupted run, not input", path)
    if found and not kept:
        raise InputError(pattern, "no_input", "only unfinished temporary files (*.partial-PID) of an "
                         "interrupted run: re-run the command that writes them")
    return kept


def is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.endswith(JSONL_SUFFIXES)


def open_binary(path: Path) -> BinaryIO:
    """Open a file for reading bytes, decompressing ``.gz`` and ``.zst``."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(open(path, "rb")), buffer_size=1 << 20)
    return open(path, "rb")


class _ZstdReader(io.RawIOBase):
    """Decompress a ``.zst`` stream (one or more frames) and notice truncation.

    zstandard's own ``stream_reader`` returns a clean end of file when the
    input stops in the middle of a frame; this raises ``EOFError`` instead, so
    a truncated file is reported rather than silently cut short.
    """

    def __init__(self, raw: BinaryIO):
        import zstandard

        self._zstd = zstandard
        self._raw = raw
        self._dobj = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ended in the middle of a frame")
                return 0
            self._pending = self._feed(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self._in_frame = True
            out.append(self._dobj.decompress(chunk))
            if not self._dobj.eof:
                break
            self._in_frame = False
            chunk = self._dobj.unused_data
            self._dobj = self._zstd.ZstdDecompressor().decompressobj()
        return b"".join(out)

    def close(self) -> None:
        self._raw.close()
        super().close()


def iter_documents(
    paths: Iterable[Path],
    *,
    text_key: str = "text",
    id_key: str = "id",
    encoding: str = "utf-8",
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    on_skip: Callable[[InputError], None] | None = None,
) -> Iterator[Document]:
    """Yield every good document of ``paths``, in order.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text('{"id": 7, "text": "猫である。"}\\n', encoding="utf-8")
    >>> [(doc.id, doc.text) for doc in iter_documents([d / "a.jsonl"])]
    [('7', '猫である。')]
    """
    stats = stats if stats is not None else ReadStats()
    codecs.lookup(encoding)  # raises LookupError for an unknown --encoding
    for path in paths:
        stats.files += 1
        reader = _iter_jsonl if is_jsonl(path) else _iter_plain
        try:
            for item in reader(path, text_key, id_key, encoding, stats):
                if isinstance(item, InputError):
                    if not skip_bad:
                        raise item
                    stats.skipped[item.reason] += 1
                    if on_skip is not None:
                        on_skip(item)
                    continue
                stats.documents += 1
                yield item
        except damage_errors() as exc:
            error = damage_error(path, exc)
            if not skip_bad:
                raise error from None
            stats.skipped[error.reason] += 1
            if on_skip is not None:
                on_skip(error)


def damage_errors() -> tuple[type[Exception], ...]:
    """What reading a truncated or corrupt ``.gz``/``.zst`` stream raises."""
    return (EOFError, zlib.error, gzip.BadGzipFile, _zstd_errors())


def damage_error(path, exc: Exception) -> InputError:
    """The ``truncated_input`` error for a damaged compressed file."""
    return InputError(
        str(path), "truncated_input",
        f"compressed file is truncated or corrupt ({exc}); the documents "
        "before the damage were read, the rest of the file was not",
    )


def _zstd_errors() -> type[Exception]:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a dependency
        return EOFError
    return zstandard.ZstdError


def _iter_jsonl(path, text_key, id_key, encoding, stats) -> Iterator[Document | InputError]:
    with open_binary(path) as stream:
        yield from jsonl_records(stream, str(path), 1, text_key, id_key, encoding, stats)


def jsonl_records(lines: Iterable[bytes], name: str, first_line: int, text_key: str, id_key: str,
                  encoding: str, stats: ReadStats) -> Iterator[Document | InputError]:
    """The records of raw JSON Lines ``lines`` of file ``name``, the first being line ``first_line``."""
    for line_no, raw in enumerate(lines, start=first_line):
        stats.text_bytes += len(raw)
        source = f"{name}:{line_no}"
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8) and _is_utf8(encoding):
            raw = raw[len(codecs.BOM_UTF8):]
        if not raw.strip():
            continue  # blank lines between records are not records
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            yield InputError(source, "invalid_encoding", _encoding_message(raw, encoding, exc))
            continue
        yield _record_to_document(line, source, text_key, id_key)


def _record_to_document(line: str, source: str, text_key: str, id_key: str) -> Document | InputError:
    try:
        record = loads_record(line)  # also refuses lone surrogates, deep nesting, endless numbers
    except RecordError as exc:
        return InputError(source, exc.reason, exc.message)
    if not isinstance(record, dict):
        return InputError(source, "not_an_object", f"expected a JSON object, got {type(record).__name__}")
    if text_key not in record:
        keys = ", ".join(repr(k)[1:-1] for k in sorted(record)[:8]) or "none"  # escaped: a key may hold a line break
        return InputError(
            source, "missing_text_key",
            f"record has no field {text_key!r} (fields: {keys}); choose the field with --text-key",
        )
    text = record.pop(text_key)
    if not isinstance(text, str):
        return InputError(source, "text_not_string", f"field {text_key!r} is {type(text).__name__}, not a string")
    problem = _text_problem(text, source)
    if problem is not None:
        return problem
    doc_id = record.get(id_key)
    return Document(text, None if doc_id is None else str(doc_id), record, source)


def _iter_plain(path, text_key, id_key, encoding, stats) -> Iterator[Document | InputError]:
    with open_binary(path) as stream:
        raw = stream.read()
    yield from plain_records(raw, str(path), encoding, stats)


def plain_records(raw: bytes, path: str, encoding: str, stats: ReadStats) -> Iterator[Document | InputError]:
    """The one document of a plain-text file whose bytes are ``raw``."""
    stats.text_bytes += len(raw)
    source = f"{path}:1"
    try:
        text = raw.decode("utf-8-sig" if _is_utf8(encoding) else encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        yield InputError(f"{path}:{line}", "invalid_encoding", _encoding_message(raw, encoding, exc))
        return
    problem = _text_problem(text, source)
    yield problem if problem is not None else Document(text, None, {}, source)


def _is_utf8(encoding: str) -> bool:
    """True for every spelling of UTF-8 (``utf-8``, ``UTF8``, ``utf_8``): a BOM is then dropped."""
    return codecs.lookup(encoding).name == "utf-8"


def _text_problem(text: str, source: str) -> InputError | None:
    if not text.strip():
        return InputError(source, "empty_text", "text is empty or only whitespace")
    if "\x00" in text:
        return InputError(
            source, "nul_byte",
            f"text contains a NUL character at offset {text.index(chr(0))} (binary data or a broken export?)",
        )
    return None


def _encoding_message(raw: bytes, encoding: str, exc: UnicodeDecodeError) -> str:
    """Say what is wrong and, when a Japanese legacy encoding fits, what to pass."""
    message = f"bytes are not valid {encoding} (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    for candidate in JAPANESE_LEGACY_ENCODINGS:
        if candidate == encoding:
            continue
        try:
            raw.decode(candidate)
        except UnicodeDecodeError:
            continue
        return f"{message}; they decode as {candidate}: pass --encoding {candidate}"
    return message
