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
3. **decide** (the driver, in input order, for near): ``j`` is dropped iff some
   *kept* ``i`` has an edge to ``j``. Edges arrive sorted by ``j``; ``i < j`` is
   final by then, so one pass over the edges and a status byte per document
   decide everything.

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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jpcorpus.workdir import load_array, remove, save_array

TASK_BYTES = 512 << 20  # records one map or reduce task holds (x3 while sorting)
MIN_BUCKETS = 32  # reduce tasks at least: enough to spread a mid-size corpus over a cluster
WINDOW_DOCS = 1 << 24  # documents decided per window (their edges are in memory at once)
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


# ------------------------------------------------------------------ the driver


@dataclass
class DedupStats:
    """What the stages did, per step: records, groups, candidate pairs, edges, the biggest task."""

    steps: list[dict] = field(default_factory=list)

    @property
    def peak_task_bytes(self) -> int:
        return max((s["peak_task_bytes"] for s in self.steps), default=0)


def status_path(work: Path) -> Path:
    return Path(work) / "status.u8"


def run(engine, parts_folder: Path, work: Path, counts: list[int], specs: list[DedupSpec],
        task_bytes: int = TASK_BYTES, progress=None) -> DedupStats:
    """Every deduplication step over the partitions' fingerprints; leaves ``status.u8`` (0 kept, d + 1 dropped by step d)."""
    offsets = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    total = int(offsets[-1])
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    path = status_path(work)
    with open(path, "wb") as f:
        f.truncate(total)
    stats = DedupStats()
    if total == 0:
        return stats
    for d, spec in enumerate(specs):
        stats.steps.append(_run_step(engine, Path(parts_folder), work, path, d, spec, counts, offsets,
                                     task_bytes, progress))
    return stats


def _run_step(engine, parts: Path, work: Path, path: Path, d: int, spec: DedupSpec, counts, offsets,
              task_bytes: int, progress) -> dict:
    started = time.perf_counter()
    folder = work / f"d{d}"
    remove(folder)
    folder.mkdir(parents=True)
    alive = _count(path, 0)
    buckets = max(MIN_BUCKETS, math.ceil(3 * alive * spec.columns * RECORD_BYTES / task_bytes))
    per_doc = 3 * spec.columns * RECORD_BYTES + (SIGNATURE_BYTES if spec.verify else 0)
    ranges = _ranges(counts, max(1, task_bytes // per_doc))
    maps = [MapTask(str(parts), str(folder), str(path), d, r, list(range(a, b)), [int(x) for x in offsets[a:b]],
                    list(counts[a:b]), buckets, spec.verify) for r, (a, b) in enumerate(ranges)]
    if progress is not None:
        progress.stage(f"{spec.name}: shuffle", len(maps), "tasks")
    records = 0
    for n in engine.map(shuffle_map, maps):
        records += n
        if progress is not None:
            progress.advance(1)
    total = int(offsets[-1])
    windows = [*range(0, total, WINDOW_DOCS), total]
    range_starts = [int(offsets[a]) for a, _ in ranges] + [total]
    reduces = [ReduceTask(str(folder), d, b, len(ranges), spec, range_starts, windows)
               for b in range(buckets)]
    if progress is not None:
        progress.stage(f"{spec.name}: buckets", buckets, "tasks")
    summary = {"step": spec.name, "documents": alive, "records": records, "buckets": buckets,
               "ranges": len(ranges), "groups": 0, "pairs": 0, "edges": 0, "peak_task_bytes": 0}
    status = np.memmap(path, dtype=np.uint8, mode="r+")
    for b, result in enumerate(engine.map(bucket_reduce, reduces)):
        for key in ("groups", "pairs", "edges"):
            summary[key] += result[key]
        summary["peak_task_bytes"] = max(summary["peak_task_bytes"], result["bytes"])
        if spec.kind == "exact":
            status[load_array(folder / f"b{b:05d}.npy").astype(np.int64)] = d + 1
        if progress is not None:
            progress.advance(1)
    if spec.kind == "near":
        for w in range(len(windows) - 1):
            decide_window(folder, buckets, w, windows[w], windows[w + 1], status, d + 1)
    status.flush()
    del status
    summary["dropped"] = _count(path, d + 1)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    remove(folder)
    return summary


def _count(path: Path, value: int, chunk: int = 1 << 26) -> int:
    """How many bytes of the status file equal ``value``, read 64 MB at a time."""
    total = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            total += int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == value))
    return total


def _ranges(counts: list[int], docs: int) -> list[tuple[int, int]]:
    """Consecutive partitions with at most ``docs`` documents together (at least one partition each)."""
    out, start, size = [], 0, 0
    for k, n in enumerate(counts):
        if k > start and size + n > docs:
            out.append((start, k))
            start, size = k, 0
        size += n
    out.append((start, len(counts)))
    return out


def decide_window(folder: Path, buckets: int, w: int, lo: int, hi: int, status: np.ndarray, code: int) -> None:
    """First kept wins over the documents ``lo..hi``: ``j`` dropped iff an edge comes from a kept ``i``."""
    parts = []
    for b in range(buckets):
        off = load_array(folder / f"b{b:05d}.off.npy")
        if off[w + 1] > off[w]:
            parts.append(np.array(load_array(folder / f"b{b:05d}.npy", mmap=True)[off[w]:off[w + 1]]))
    if not parts:
        return
    edges = np.concatenate(parts).astype(np.int64)
    edges = np.unique(edges[:, ::-1], axis=0)[:, ::-1]  # sorted by j, then i
    decide(edges[:, 0], edges[:, 1], status, lo, hi, code)


def decide(i: np.ndarray, j: np.ndarray, status: np.ndarray, lo: int, hi: int, code: int) -> None:
    """Apply the rule to edges ``(i, j)`` sorted by ``j`` (all ``j`` in ``lo..hi``), writing ``status``.

    >>> status = np.zeros(4, dtype=np.uint8)   # A=0 ~ B=1 ~ C=2: A kept, B dropped, C kept
    >>> decide(np.array([0, 1]), np.array([1, 2]), status, 0, 4, 2); status.tolist()
    [0, 2, 0, 0]
    """
    window = bytearray(np.asarray(status[lo:hi]).tobytes())
    outside = i < lo
    if outside.any():  # edges from earlier windows: those i are decided already
        kept = np.asarray(status[i[outside]]) == 0
        for target in (j[outside][kept] - lo).tolist():
            window[target] = code
    inner_i, inner_j = (i[~outside] - lo).tolist(), (j[~outside] - lo).tolist()
    for a, b in zip(inner_i, inner_j):
        if not window[b] and not window[a]:
            window[b] = code
    status[lo:hi] = np.frombuffer(bytes(window), dtype=np.uint8)
