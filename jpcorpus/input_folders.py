"""Which files of an input folder are input: data files by their name, never a README.

A folder given as input (local or an fsspec URL) contributes only the files whose
names end with a data extension the readers know, in sorted order:

- ``*.jsonl``, ``*.ndjson``, ``*.json``, ``*.txt``, each optionally ``.gz`` or ``.zst``;
- ``*.parquet``, ``*.pq``.

Everything else is skipped, and so is whatever lies under a hidden name (``.git/``,
``.cache/``, the ``.NAME.work`` folder of an earlier run, whose markers end in
``.json``). A Hugging Face dataset folder (``data/part-0.parquet``, ``README.md``,
``.gitattributes``) thus gives exactly its rows. The skipped files are never
opened; one warning counts them and names a few. A folder with no data file at
all is an error that says which names are expected. Both engines take their file
list from here (:func:`jpcorpus.inputs.expand`), so they read the same files. A
file named explicitly, or matched by a glob, is read whatever its name.

>>> [is_data_name(n) for n in ("part-0.parquet", "a.jsonl.zst", "b.TXT.gz", "README.md", "c.tar.gz")]
[True, True, True, False, False]
"""

from __future__ import annotations

import logging
from typing import Sequence, TypeVar

from jpcorpus.parquet import PARQUET_SUFFIXES
from jpcorpus.readers import COMPRESSED_SUFFIXES, JSONL_SUFFIXES, InputError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (*JSONL_SUFFIXES, ".txt")  # each also compressed (COMPRESSED_SUFFIXES)
EXPECTED = "*.jsonl, *.ndjson, *.json, *.txt (each also .gz or .zst), *.parquet, *.pq"
NAMED = 3  # skipped files the warning and the error name

T = TypeVar("T")


def is_data_name(name: str) -> bool:
    """True for a file name the readers read as data (JSON Lines, plain text, Parquet)."""
    name = name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return True
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.endswith(TEXT_SUFFIXES)


def _counts_as_data(relative: str) -> bool:
    parts = relative.replace("\\", "/").split("/")
    return not any(part.startswith(".") for part in parts) and is_data_name(parts[-1])


def data_files(folder: str, entries: Sequence[tuple[str, T]]) -> list[T]:
    """The items of ``entries`` (``(name relative to folder, item)``, in order) that are data files.

    Raises :class:`InputError` (``no_input``) when none is; logs one warning for the others.
    """
    kept = [item for relative, item in entries if _counts_as_data(relative)]
    skipped = [relative for relative, _ in entries if not _counts_as_data(relative)]
    named = ", ".join(skipped[:NAMED]) + (", ..." if len(skipped) > NAMED else "")
    if not kept:
        raise InputError(folder, "no_input", f"no data file in this folder ({len(skipped)} other files: {named}); "
                         f"a folder contributes only {EXPECTED} files: name any other file explicitly")
    if skipped:
        log.warning("%s: skipped %d files that are not data (%s); a folder contributes only %s files",
                    folder, len(skipped), named, EXPECTED)
    return kept
