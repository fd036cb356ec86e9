"""Summarise, verify and decode indexed-dataset shards (``jpcorpus inspect-idx``).

Everything here reads through :mod:`jpcorpus.indexed_dataset`, the module that
writes the format. Checks that scan the whole index or data file go in
bounded chunks, so a shard of any size can be verified.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jpcorpus.indexed_dataset import FormatError, IndexedDataset, bin_path, idx_path
from jpcorpus.sidecar import file_sha256, read_sidecar, tokenizer_mismatches

_CHUNK = 1 << 20


def summarize(prefix: str | os.PathLike) -> dict:
    """Format facts, counts, length statistics and the sidecar's provenance."""
    ds = IndexedDataset(prefix)
    lengths = np.asarray(ds.lengths)
    summary = {
        "prefix": str(prefix),
        "format_version": ds.header.version,
        "dtype": ds.dtype.name,
        "sequences": len(ds),
        "documents": ds.documents,
        "tokens": ds.tokens,
        "bin_bytes": ds.bin_size,
        "idx_bytes": idx_path(prefix).stat().st_size,
    }
    if len(lengths):
        summary["length"] = {
            "min": int(lengths.min()),
            "median": float(np.median(lengths)),
            "mean": round(float(lengths.mean(dtype=np.float64)), 1),
            "max": int(lengths.max()),
        }
        summary["histogram"] = length_histogram(lengths)
    sidecar = read_sidecar(prefix)
    if sidecar is not None:
        summary["sidecar"] = {k: sidecar.get(k) for k in
                              ("tokenizer", "split", "shard", "shards", "inputs", "skipped",
                               "jpcorpus_version", "command", "created")}
    return summary


def length_histogram(lengths: np.ndarray) -> list[dict]:
    """Counts of sequence lengths in power-of-two buckets [2^k, 2^(k+1)).

    >>> length_histogram(np.array([1, 2, 3, 4, 100]))
    [{'from': 1, 'to': 1, 'count': 1}, {'from': 2, 'to': 3, 'count': 2}, {'from': 4, 'to': 7, 'count': 1}, {'from': 64, 'to': 127, 'count': 1}]
    """
    positive = lengths[lengths > 0]
    buckets = np.bincount(np.floor(np.log2(positive)).astype(np.int64)) if positive.size else np.zeros(0, np.int64)
    rows = [{"from": 0, "to": 0, "count": int((lengths == 0).sum())}] if (lengths == 0).any() else []
    rows += [{"from": 2**k, "to": 2 ** (k + 1) - 1, "count": int(n)} for k, n in enumerate(buckets) if n]
    return rows


def verify(prefix: str | os.PathLike, vocab_size: int | None = None, check_tokenizer: bool = True) -> list[str]:
    """Every check that can be made; returns the problems found (empty: all good).

    Checks: the index header and sizes (on open), pointers consistent with the
    lengths, document indices monotonic from 0 to the sequence count, the .bin
    size equal to the tokens the index describes, every token id in
    [0, vocab size), and the sidecar's counts, sizes and sha256 against the
    files; with ``check_tokenizer``, also that the tokenizer the sidecar names
    still has the fingerprint the sidecar recorded.
    """
    try:
        ds = IndexedDataset(prefix)
    except FormatError as exc:
        return [str(exc)]
    problems = _check_index(ds)
    index_sound = not problems
    sidecar = read_sidecar(prefix)
    if sidecar is None:
        problems.append(f"{prefix}.json: no sidecar, so the tokenizer that made this shard is unknown")
    else:
        problems += _check_sidecar(ds, sidecar)
        vocab_size = vocab_size or sidecar.get("tokenizer", {}).get("vocab_size")
        if check_tokenizer:
            problems += _check_tokenizer(sidecar)
    if vocab_size and index_sound:
        problems += _check_token_range(ds, int(vocab_size))
    return problems


def _check_index(ds: IndexedDataset) -> list[str]:
    problems = []
    itemsize = ds.dtype.itemsize
    expected_bin = ds.tokens * itemsize
    if ds.bin_size != expected_bin:
        problems.append(f"{bin_path(ds.prefix)}: {ds.bin_size} bytes, but the index describes "
                        f"{ds.tokens} tokens = {expected_bin} bytes: the .bin is truncated or does not belong to this .idx")
    offset = 0
    for start in range(0, len(ds), _CHUNK):
        lengths = np.asarray(ds.lengths[start:start + _CHUNK], dtype=np.int64)
        if (lengths < 0).any():
            problems.append(f"{idx_path(ds.prefix)}: negative sequence length near sequence {start}")
            break
        ends = np.cumsum(lengths * itemsize) + offset
        if not np.array_equal(np.asarray(ds.pointers[start:start + _CHUNK]), ends - lengths * itemsize):
            problems.append(f"{idx_path(ds.prefix)}: sequence pointers disagree with the lengths near sequence {start}")
            break
        offset = int(ends[-1])
    docs = np.asarray(ds.doc_indices)
    if len(docs) == 0 or docs[0] != 0 or docs[-1] != len(ds) or (np.diff(docs) < 0).any():
        problems.append(f"{idx_path(ds.prefix)}: document indices are not monotonic from 0 to {len(ds)}")
    return problems


def _check_sidecar(ds: IndexedDataset, sidecar: dict) -> list[str]:
    problems = []
    facts = {"documents": ds.documents, "sequences": len(ds), "tokens": ds.tokens, "dtype": ds.dtype.name,
             "bin_bytes": ds.bin_size, "idx_bytes": idx_path(ds.prefix).stat().st_size}
    for key, actual in facts.items():
        if key in sidecar and sidecar[key] != actual:
            problems.append(f"{ds.prefix}.json: {key} is {sidecar[key]} but the files have {actual}")
    for key, path in (("bin_sha256", bin_path(ds.prefix)), ("idx_sha256", idx_path(ds.prefix))):
        if key in sidecar and not problems and file_sha256(path) != sidecar[key]:
            problems.append(f"{path}: sha256 differs from the sidecar's {key}: the file changed after it was written")
    return problems


def _check_tokenizer(sidecar: dict) -> list[str]:
    from jpcorpus.tokenizer import TokenizerError, load_tokenizer

    recorded = sidecar.get("tokenizer", {})
    try:
        current = load_tokenizer(recorded.get("name", ""), eod_token=recorded.get("eod_token")).describe()
    except (TokenizerError, OSError, ValueError) as exc:
        return [f"tokenizer {recorded.get('name')!r} named by the sidecar could not be loaded to check it: {exc}"]
    return [f"sidecar's tokenizer {recorded.get('name')!r} differs from that tokenizer today: {m}"
            for m in tokenizer_mismatches(recorded, current)]


def _check_token_range(ds: IndexedDataset, vocab_size: int) -> list[str]:
    for n, chunk in enumerate(ds.iter_token_chunks()):
        if chunk.size and (int(chunk.max()) >= vocab_size or int(chunk.min()) < 0):
            bad = chunk[(chunk >= vocab_size) | (chunk < 0)][0]
            return [f"{bin_path(ds.prefix)}: token id {int(bad)} outside the vocabulary [0, {vocab_size})"]
    return []


def decode_documents(prefix: str | os.PathLike, count: int, tokenizer_name: str | None = None) -> list[str]:
    """The first ``count`` documents decoded with the sidecar's tokenizer."""
    from jpcorpus.tokenizer import load_tokenizer

    sidecar = read_sidecar(prefix) or {}
    name = tokenizer_name or sidecar.get("tokenizer", {}).get("name")
    if not name:
        raise ValueError(f"{prefix}.json names no tokenizer: pass --tokenizer")
    tokenizer = load_tokenizer(name)
    ds = IndexedDataset(prefix)
    texts = []
    for i in range(min(count, ds.documents)):
        ids = ds.document(i).tolist()
        if ids and ids[-1] == tokenizer.eod_id:
            ids = ids[:-1]  # the end-of-document token binarize appended
        texts.append(tokenizer.decode(ids))
    return texts


def find_prefixes(path: str) -> list[str]:
    """``path`` as a prefix, or every prefix of ``*.idx`` files in a directory."""
    if os.path.isdir(path):
        return sorted(str(p.with_suffix("")) for p in Path(path).glob("*.idx"))
    return [path.removesuffix(".idx").removesuffix(".bin").removesuffix(".json")]
