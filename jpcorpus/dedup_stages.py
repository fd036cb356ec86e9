"""Deduplication across the whole corpus as stages, with memory bounded per task, not by corpus size.

The clean stage leaves, for every partition, the fingerprints of the documents
that survived the per-document steps (:func:`save_fingerprints`): one key
column for ``exact_dedup`` (the text's 64-bit BLAKE2b), fourteen band keys for
``near_dedup`` and, to verify candidates, 16 bits of each of its 112 MinHash
values. Documents are numbered ``g = 0, 1, ...`` in input order. Then, for each
deduplication step of the profile, in its order, over the documents no earlier
step dropped:

1. **map** (a task per range of partitions): records ``(key, g)``, one per key
   column, sorted into ``B`` buckets by key, one file per range;
2. **reduce** (a task per bucket): the bucket's records from every range, sorted
   by ``(key, g)``; documents that share a key form a group.

   - exact: in a group every document but the first is a duplicate. Dropped.
   - near: each document ``j`` of a group is a candidate of the group's documents
     before it (the first ``max_candidates`` of them); a candidate pair
     ``(i, j)``, ``i < j``, is an edge when the two signatures agree on at least
     ``threshold`` of their values (or always, with ``verify: false``);
3. **decide** (the driver, in input order, for near; :mod:`jpcorpus.dedup_run`):
   ``j`` is dropped iff some *kept* ``i`` has an edge to ``j``. Edges arrive
   sorted by ``j``; ``i < j`` is final by then, so one pass over the edges and
   a status byte per document decide everything.

This is the streaming rule "the first kept copy wins" made deterministic at
scale: a chain A~B~C where A and C are not alike keeps A and C and drops B (B
has an edge from kept A; C's only edge is from dropped B), whereas connected
components would drop B and C. It equals the streaming check of
:mod:`jpcorpus.normalize.dedup` whenever the candidates are the same; they differ
in one way: the streaming check compares a document with the *earliest kept
owner* of each of its band keys only, these stages with every earlier document
of the bucket (up to ``max_candidates``), so they can also find a duplicate of a
later kept document whose band it shares with an earlier, different one.

Memory: a map task holds at most ``task_bytes`` of records, a reduce task one
bucket (``B`` grows with the corpus to keep a bucket under ``task_bytes``), the
decision one window of ``WINDOW_DOCS`` documents' edges. What grows with the
corpus is on disk: the shuffle files and ``status.u8``, one byte per document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jpcorpus.workdir import load_array, save_array

TASK_BYTES = 512 << 20  # records one map or reduce task holds (x3 while sorting)
PAIR_CHUNK = 1 << 18  # candidate pairs verified at a time: their two signatures are ~120 MB
RECORD_BYTES = 16
SIGNATURE_BYTES = 224  # 112 values x 16 bits, per document, while a map task gathers them


@dataclass
class DedupSpec:
    """One deduplication step as the stages need it (built from the profile's step)."""

    name: str
    reason: str
    kind: str  # "exact" or "near"
    columns: int  # key columns (1, or the number of bands)
    verify: bool = False
    min_equal: int = 0  # equal signature values for an edge
    max_candidates: int = 64


def spec_of(step) -> DedupSpec:
    from jpcorpus.normalize.dedup import ExactDedup, NearDedup

    if isinstance(step, ExactDedup):
        return DedupSpec(step.name, step.reasons[0], "exact", 1)
    if isinstance(step, NearDedup):
        return DedupSpec(step.name, step.reasons[0], "near", step.num_bands, step.verify, step._min_equal,
                         step.max_candidates)
    raise ValueError(f"{step.name}: no staged form of this deduplication step")


def fingerprint_arrays(step, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(keys [n, columns] uint64, signatures [n, perm] uint16 or None)`` of ``texts`` for ``step``."""
    spec = spec_of(step)
    if spec.kind == "exact":
        return np.array([step.fingerprint(t) for t in texts], dtype=np.uint64).reshape(-1, 1), None
    rows = step.fingerprints(texts)
    if not rows:
        width = step.num_bands * step.rows_per_band
        return np.empty((0, spec.columns), np.uint64), (np.empty((0, width), np.uint16) if spec.verify else None)
    table = np.stack(rows)
    keys = np.ascontiguousarray(table[:, :spec.columns])
    if not spec.verify:
        return keys, None
    sig = np.ascontiguousarray(table[:, spec.columns:]).view(np.uint16)[:, :step.num_bands * step.rows_per_band]
    return keys, np.ascontiguousarray(sig)


def _keys_path(folder: Path, part: int, d: int) -> Path:
    return Path(folder) / f"p{part:06d}.d{d}.keys.npy"


def _sig_path(folder: Path, part: int, d: int) -> Path:
    return Path(folder) / f"p{part:06d}.d{d}.sig.npy"


def save_fingerprints(folder: Path, part: int, d: int, keys: np.ndarray, sig: np.ndarray | None) -> None:
    save_array(_keys_path(folder, part, d), keys)
    if sig is not None:
        save_array(_sig_path(folder, part, d), sig)


# ------------------------------------------------------------------ tasks


@dataclass
class MapTask:
    parts: str  # folder of the partitions' fingerprints
    folder: str  # this step's shuffle folder
    status: str
    d: int
    r: int
    partitions: list[int]
    starts: list[int]  # g of each partition's first document
    counts: list[int]
    buckets: int
    signatures: bool = False  # near with verify: also gather the range's signatures into one file


def shuffle_map(task: MapTask) -> int:
    """Write the ``(key, g)`` records of a range of partitions, grouped by bucket; returns how many.

    With ``signatures``, the signatures of the range's documents go into one file
    too, so that a reduce task opens one file per range, not one per partition.
    """
    keys, gs, sigs = [], [], []
    for part, start, count in zip(task.partitions, task.starts, task.counts):
        if count == 0:
            continue
        alive = np.fromfile(task.status, dtype=np.uint8, count=count, offset=start) == 0
        k = load_array(_keys_path(Path(task.parts), part, task.d))[alive]
        g = np.arange(start, start + count, dtype=np.uint64)[alive]
        keys.append(k.reshape(-1))
        gs.append(np.repeat(g, k.shape[1]))
        if task.signatures:
            sigs.append(load_array(_sig_path(Path(task.parts), part, task.d)))
    if sigs:
        save_array(Path(task.folder) / f"s{task.r:05d}.npy", np.concatenate(sigs))
    key = np.concatenate(keys) if keys else np.empty(0, np.uint64)
    g = np.concatenate(gs) if gs else np.empty(0, np.uint64)
    bucket = (key % np.uint64(task.buckets)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    records = np.stack([key[order], g[order]], axis=1) if len(order) else np.empty((0, 2), np.uint64)
    offsets = np.searchsorted(bucket[order], np.arange(task.buckets + 1))
    folder = Path(task.folder)
    save_array(folder / f"r{task.r:05d}.off.npy", offsets.astype(np.int64))
    save_array(folder / f"r{task.r:05d}.npy", records)
    return len(records)


@dataclass
class ReduceTask:
    folder: str
    d: int
    b: int
    ranges: int
    spec: DedupSpec
    range_starts: list[int]  # g of each map range's first document, and the total at the end
    windows: list[int] = field(default_factory=list)  # g where each decision window starts, and the total


def bucket_reduce(task: ReduceTask) -> dict:
    """Group one bucket's records by key: exact drops, or verified near edges; returns counts."""
    folder = Path(task.folder)
    chunks = []
    for r in range(task.ranges):
        off = load_array(folder / f"r{r:05d}.off.npy")
        lo, hi = int(off[task.b]), int(off[task.b + 1])
        if hi > lo:
            chunks.append(np.array(load_array(folder / f"r{r:05d}.npy", mmap=True)[lo:hi]))
    records = np.concatenate(chunks) if chunks else np.empty((0, 2), np.uint64)
    order = np.lexsort((records[:, 1], records[:, 0]))
    key, g = records[order, 0], records[order, 1]
    stats = {"records": len(g), "bytes": len(g) * RECORD_BYTES, "groups": 0, "pairs": 0, "edges": 0}
    first = np.ones(len(g), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    stats["groups"] = int(np.count_nonzero(np.diff(np.append(starts, len(g))) > 1))
    out = folder / f"b{task.b:05d}.npy"
    if task.spec.kind == "exact":
        drops = np.unique(g[~first])
        stats["edges"] = len(drops)
        save_array(out, drops)
        return stats
    edges = _near_edges(task, g, starts, stats)
    save_array(folder / f"b{task.b:05d}.off.npy", np.searchsorted(edges[:, 1], np.array(task.windows, dtype=np.uint64)))
    save_array(out, edges)
    return stats


def _near_edges(task: ReduceTask, g: np.ndarray, starts: np.ndarray, stats: dict) -> np.ndarray:
    """Candidate pairs of each group (each member with up to K members before it), verified, sorted by j."""
    sizes = np.diff(np.append(starts, len(g)))
    group_start = np.repeat(starts, sizes)
    per = np.minimum(np.arange(len(g)) - group_start, task.spec.max_candidates)  # pairs of each element
    ends = np.cumsum(per)
    store = _Signatures(Path(task.folder), np.array(task.range_starts, dtype=np.int64)) if task.spec.verify else None
    found = []
    lo = 0
    while lo < len(g):
        base = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + PAIR_CHUNK, side="right")))
        counts = per[lo:hi]
        total = int(counts.sum())
        lo, elements = hi, np.arange(lo, hi)
        if total == 0:
            continue
        j = np.repeat(g[elements], counts)
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        i = g[np.repeat(group_start[elements], counts) + within]
        pairs = np.unique(np.stack([i, j], axis=1), axis=0)
        stats["pairs"] += len(pairs)
        if store is not None:
            agree = np.count_nonzero(store.rows(pairs[:, 0]) == store.rows(pairs[:, 1]), axis=1)
            pairs = pairs[agree >= task.spec.min_equal]
        found.append(pairs)
    edges = np.concatenate(found) if found else np.empty((0, 2), np.uint64)
    edges = edges[np.lexsort((edges[:, 0], edges[:, 1]))]
    if len(edges):
        edges = edges[np.r_[True, np.any(edges[1:] != edges[:-1], axis=1)]]
    stats["edges"] = len(edges)
    return edges


class _Signatures:
    """Signature rows by document number, read from the map ranges' memory-mapped files."""

    def __init__(self, folder: Path, starts: np.ndarray):
        self.folder, self.starts = folder, starts
        self._open: dict[int, np.ndarray] = {}

    def rows(self, gs: np.ndarray) -> np.ndarray:
        gs = gs.astype(np.int64)
        where = np.searchsorted(self.starts, gs, side="right") - 1
        out = None
        for r in np.unique(where).tolist():
            sig = self._open.get(r)
            if sig is None:
                sig = self._open[r] = load_array(self.folder / f"s{r:05d}.npy", mmap=True)
            if out is None:
                out = np.empty((len(gs), sig.shape[1]), dtype=np.uint16)
            mask = where == r
            out[mask] = sig[gs[mask] - self.starts[r]]
        return out if out is not None else np.empty((0, 0), np.uint16)
