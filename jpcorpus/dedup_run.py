"""The driver of the deduplication stages: bucket counts, task lists, the decision in input order.

:mod:`jpcorpus.dedup_stages` holds the algorithm and what a task does (map,
reduce); this module runs the steps on an engine, applies exact drops as the
reduce tasks finish, and decides the near duplicates window by window: the
only part that runs in one process, one pass over the edges sorted by ``j``
(4.4M edges/s on a loaded 2-core VM, docs/benchmarks.md).

The verdicts live in ``status.u8``, one byte per document in input order: 0
kept, ``d + 1`` dropped by deduplication step ``d``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jpcorpus.dedup_stages import (RECORD_BYTES, SIGNATURE_BYTES, TASK_BYTES, DedupSpec, MapTask, ReduceTask,
                                   bucket_reduce, shuffle_map)
from jpcorpus.workdir import load_array, remove

MIN_BUCKETS = 32  # reduce tasks at least: enough to spread a mid-size corpus over a cluster
WINDOW_DOCS = 1 << 24  # documents decided per window (their edges are in memory at once)


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
