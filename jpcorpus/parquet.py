"""Apache Parquet input (the format of Hugging Face datasets), read in row-group batches.

A Parquet file is split into partitions along its row groups (from the footer,
without reading any data: :func:`plan_file`), and a partition is read batch by
batch with pyarrow (:func:`read_rows`), so at most one row group's worth of a
column is in memory, never the whole file. The text is the ``--text-key``
column; every other column becomes the document's metadata, written back out
by ``normalize`` like the other fields of a JSON record.

Bad files follow the readers' conventions (``error: FILE: ...``, exit 2, or a
counted skip with ``--skip-bad``):

- ``missing_text_key``: no such column (the message lists the columns);
- ``text_not_string``: the column is not a string column, or a row's text is null;
- ``truncated_input``: no valid footer (truncated, or not Parquet), or a row group
  that cannot be decoded (the rows before it were read);
- ``empty_text`` and ``nul_byte`` per row, as for JSON Lines.

A row's source is ``FILE:ROW``, the row counted from 1 in the file, the way a
JSON Lines source is ``FILE:LINE``. Metadata values that JSON has no type for are
written as text: timestamps and dates in ISO 8601, decimals as their digits,
binary values in base64.

pyarrow is needed only when a Parquet file is read (``pip install
'jpcorpus[parquet]'``; NeMo pins ``pyarrow<26``, which works).
"""

from __future__ import annotations

import base64
import datetime
import decimal
from typing import Any, Iterator

from jpcorpus.document import Document
from jpcorpus.readers import InputError, ReadStats

PARQUET_SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 512  # rows converted to Python at a time: ~25 MB of book-length texts


def is_parquet(path) -> bool:
    return str(path).lower().endswith(PARQUET_SUFFIXES)


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ValueError("reading Parquet needs pyarrow: pip install 'jpcorpus[parquet]'") from None
    return pyarrow


def open_parquet(path: str):
    """A ``pyarrow.parquet.ParquetFile``, or an :class:`InputError` saying why the file cannot be read."""
    pa = _pyarrow()
    from jpcorpus.inputs import open_raw

    try:
        return pa.parquet.ParquetFile(open_raw(path), pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        return InputError(str(path), "truncated_input",
                          f"not a readable Parquet file ({_one_line(exc)}): it is truncated, or not Parquet")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def plan_file(path: str, target_bytes: int, text_key: str) -> list[tuple[int, int, int]] | InputError:
    """Partitions of ``path``: ``(first row group, last + 1, first row)`` runs of at least ``target_bytes``.

    Only the footer is read. The check of the text column happens here, so that a
    file without it stops the run before any work (or is skipped whole).
    """
    pf = open_parquet(path)
    if isinstance(pf, InputError):
        return pf
    problem = _column_problem(pf.schema_arrow, text_key, path)
    if problem is not None:
        return problem
    meta, runs = pf.metadata, []
    start, size, row, first_row = 0, 0, 1, 1
    for k in range(meta.num_row_groups):
        group = meta.row_group(k)
        size += group.total_byte_size
        row += group.num_rows
        if size >= target_bytes or k == meta.num_row_groups - 1:
            runs.append((start, k + 1, first_row))
            start, size, first_row = k + 1, 0, row
    return runs


def _column_problem(schema, text_key: str, path: str) -> InputError | None:
    pa = _pyarrow()
    if text_key not in schema.names:
        columns = ", ".join(schema.names[:8]) or "none"
        return InputError(str(path), "missing_text_key",
                          f"Parquet file has no column {text_key!r} (columns: {columns}); choose it with --text-key")
    kind = schema.field(text_key).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    string_view = getattr(pa.types, "is_string_view", lambda t: False)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or string_view(kind)):
        return InputError(str(path), "text_not_string", f"column {text_key!r} is {kind}, not a string column")
    return None


def read_rows(location: str, groups: tuple[int, int, int], text_key: str, id_key: str,
              stats: ReadStats, name: str | None = None) -> Iterator[Document | InputError]:
    """The documents of row groups ``groups[0]:groups[1]`` of the file at ``location``, the first being
    row ``groups[2]``; sources and messages name it ``name`` (the path as the user gave it)."""
    pa = _pyarrow()
    import pyarrow.compute as pc

    path = name or location
    pf = open_parquet(location)
    if isinstance(pf, InputError):
        yield InputError(path, pf.reason, pf.message)
        return
    start, stop, row = groups
    plain = {field.name for field in pf.schema_arrow if _is_plain(pa, field.type)}
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=range(start, stop), use_threads=False):
            texts = batch.column(text_key)
            stats.text_bytes += int(pc.sum(pc.binary_length(texts.cast(pa.large_string()))).as_py() or 0)
            columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
            for k in range(batch.num_rows):
                yield _row_document(columns, k, row + k, path, text_key, id_key, plain)
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        yield InputError(f"{path}:{row}", "truncated_input",
                         f"Parquet data is truncated or corrupt ({_one_line(exc)}); the rows before were read, "
                         "the rest of these row groups was not")


def _row_document(columns: dict, k: int, row: int, path: str, text_key: str, id_key: str,
                  plain: set) -> Document | InputError:
    from jpcorpus.readers import _text_problem

    source = f"{path}:{row}"
    text = columns[text_key][k]
    if text is None:
        return InputError(source, "text_not_string", f"column {text_key!r} is null in this row")
    problem = _text_problem(text, source)
    if problem is not None:
        return problem
    metadata = {name: values[k] if name in plain else jsonable(values[k])
                for name, values in columns.items() if name != text_key}
    doc_id = metadata.get(id_key)
    return Document(text, None if doc_id is None else str(doc_id), metadata, source)


def _is_plain(pa, kind) -> bool:
    """Types whose Python values JSON writes as they are."""
    return (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind))


def jsonable(value: Any) -> Any:
    """A metadata value JSON can hold.

    >>> jsonable({"t": datetime.date(2024, 4, 1), "b": b"\\x00\\xff", "d": [decimal.Decimal("1.50")]})
    {'t': '2024-04-01', 'b': 'AP8=', 'd': ['1.50']}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)
