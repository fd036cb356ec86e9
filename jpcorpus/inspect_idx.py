"""Summarise, verify and decode indexed-dataset shards (``jpcorpus inspect-idx``).

Everything here reads through :mod:`jpcorpus.indexed_dataset`, the module that
writes the format; the checks of ``--verify`` are :mod:`jpcorpus.verify`'s,
the same ones ``trainer run`` makes before it trains.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jpcorpus.indexed_dataset import IndexedDataset, idx_path
from jpcorpus.packing import packing_summary
from jpcorpus.sidecar import read_sidecar, tokenizer_mismatches


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
        packed = packing_summary(ds, sidecar)  # binarize --pack: per-sample statistics
        if packed is not None:
            summary["packing"] = packed
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

    The structural and content checks of :mod:`jpcorpus.verify` (the same the
    trainer runs): the index header and sizes, pointers consistent with the
    lengths, document indices monotonic from 0 to the sequence count, the .bin
    size equal to the tokens the index describes, the sidecar's counts, sizes
    and sha256 against the files, every token id in [0, vocab size); with
    ``check_tokenizer``, also that the tokenizer the sidecar names still has
    the fingerprint the sidecar recorded.
    """
    from jpcorpus.verify import verify_shard

    problems = [str(p) for p in verify_shard(prefix, full=True, vocab_size=vocab_size)]
    try:
        sidecar = read_sidecar(prefix)
    except ValueError:
        sidecar = None  # reported above
    if sidecar is not None and check_tokenizer:
        problems += _check_tokenizer(sidecar)
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
