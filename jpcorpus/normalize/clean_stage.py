"""The first stage of ``normalize``: one partition through the per-document steps, in a worker.

A task reads its partition (:func:`jpcorpus.partitions.read`), runs the profile's
per-document steps batch by batch exactly as before (:func:`pipeline.process_docs`),
computes the deduplication fingerprints of the survivors, and leaves in the
clean folder, for partition ``N``:

- ``pN.kept.zst``: the output line of every survivor, in order (the line it will
  have in the output if no deduplication step drops it);
- ``pN.rejects.zst``: the rejects line of every document a step dropped and of
  every bad record skipped;
- ``pN.npz``: where each of those lines sits among the partition's records, the
  rejects' reasons (for the report's examples), and the survivors' lengths and
  sources (for the deduplication counts and rejects);
- ``pN.dD.keys.npy`` (and ``.sig.npy``): the fingerprints for deduplication step D;
- ``pN.done.json``: written last, the marker with the counts (see :mod:`jpcorpus.workdir`).

With ``skip_bad`` off, the first bad record ends the task with the error as its
result (nothing written): the driver raises it when the run reaches this
partition in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jpcorpus import dedup_stages, partitions, workdir
from jpcorpus.engines import cached
from jpcorpus.normalize import pipeline
from jpcorpus.normalize.histogram import Histogram
from jpcorpus.normalize.output import encode_record
from jpcorpus.normalize.report import StepCount
from jpcorpus.readers import InputError, ReadStats

ZSTD_LEVEL = 1  # partition files are read once, by the driver: fast beats small


@dataclass
class CleanJob:
    """What every clean task of a run shares."""

    profile: dict
    text_key: str
    id_key: str
    encoding: str
    skip_bad: bool
    folder: str
    key: str  # hash of the settings above (see workdir.settings_key)


@dataclass
class CleanTask:
    job: CleanJob
    part: partitions.Partition



def counts_to_dicts(counts: list[StepCount]) -> list[dict]:
    """A task's counts as JSON (they travel back to the driver and stay in the marker)."""
    return [{"step": c.step, "kind": c.kind, "docs_in": c.docs_in, "chars_in": c.chars_in,
             "docs_changed": c.docs_changed, "chars_out": c.chars_out,
             "reason_docs": dict(c.reason_docs), "reason_chars": dict(c.reason_chars),
             "histograms": {name: [h.log, h.bins, h.kept, h.dropped, h.not_judged]
                            for name, h in c.histograms.items()}} for c in counts]


def counts_from_dicts(rows: list[dict]) -> list[StepCount]:
    out = []
    for row in rows:
        count = StepCount(row["step"], row["kind"], row["docs_in"], row["chars_in"], row["docs_changed"],
                          row["chars_out"])
        count.reason_docs.update(row["reason_docs"])
        count.reason_chars.update(row["reason_chars"])
        count.histograms = {name: Histogram(*h) for name, h in row.get("histograms", {}).items()}
        out.append(count)
    return out


def clean_partition(task: CleanTask) -> dict:
    """Run the per-document steps on one partition and write its files; returns its summary."""
    from jpcorpus.normalize.profiles import build_steps

    job, part = task.job, task.part
    steps, dedups = cached(("normalize-steps", job.key), lambda: build_steps(job.profile))
    counts = pipeline._new_counts(steps)
    stats = ReadStats()
    out = _Collected(len(dedups))
    pending: list = []
    chars = 0
    position = 0
    for item in partitions.read(part, job.text_key, job.id_key, job.encoding, stats):
        if isinstance(item, InputError):
            if not job.skip_bad:
                return {"index": part.index, "error": [item.source, item.reason, item.message]}
            stats.skipped[item.reason] += 1
            out.reject(position, {"filter": "read", "reason": item.reason, "source": item.source,
                                  "message": item.message})
        else:
            pending.append((position, item))
            chars += len(item.text)
            if len(pending) >= pipeline.BATCH_DOCS or chars >= pipeline.BATCH_CHARS:
                _run_batch(pending, steps, dedups, counts, out, job.text_key)
                pending, chars = [], 0
        position += 1
    _run_batch(pending, steps, dedups, counts, out, job.text_key)
    summary = {"index": part.index, "error": None, "items": position, "kept": len(out.kept_pos),
               "counts": counts_to_dicts(counts), "read": stats.as_dict()}
    folder, name = Path(job.folder), workdir.partition_name(part.index)
    out.save(folder, name)
    workdir.mark_done(folder, name, workdir.partition_marker_key(job.key, part), summary)
    return summary


def _run_batch(pending: list, steps: list, dedups: list, counts: list, out: "_Collected", text_key: str) -> None:
    if not pending:
        return
    results = pipeline.process_docs([doc for _, doc in pending], steps, counts)
    survivors = []
    for (position, doc), result in zip(pending, results):
        if result[0] == "keep":
            survivors.append((position, doc))
        else:
            line = {"filter": result[2], "reason": result[3]}
            if result[4] is not None:  # the measure that decided and its value (rounded: JSON stays short)
                line.update(measure=result[4][0], value=round(float(result[4][1]), 6))
            line.update(source=doc.source, record=doc.to_record(text_key))
            out.reject(position, line)
    texts = [doc.text for _, doc in survivors]
    for d, step in enumerate(dedups):
        keys, sig = dedup_stages.fingerprint_arrays(step, texts)
        out.keys[d].append(keys)
        if sig is not None:
            out.sigs[d].append(sig)
    for position, doc in survivors:
        out.keep(position, encode_record(doc.to_record(text_key)), len(doc.text), doc.source)


class _Collected:
    """A partition's lines, positions and fingerprints while its task runs."""

    def __init__(self, dedups: int):
        self.kept: list[bytes] = []
        self.kept_pos: list[int] = []
        self.kept_chars: list[int] = []
        self.kept_src: list[str] = []
        self.rejects: list[tuple[int, bytes]] = []
        self.keys: list[list[np.ndarray]] = [[] for _ in range(dedups)]
        self.sigs: list[list[np.ndarray]] = [[] for _ in range(dedups)]

    def keep(self, position: int, line: bytes, chars: int, source: str) -> None:
        self.kept.append(line)
        self.kept_pos.append(position)
        self.kept_chars.append(chars)
        self.kept_src.append(source)

    def reject(self, position: int, line: dict) -> None:
        self.rejects.append((position, line["reason"], encode_record(line)))

    def save(self, folder: Path, name: str) -> None:
        import zstandard

        self.rejects.sort(key=lambda r: r[0])  # a batch's drops come after skips read later
        compress = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress
        workdir.write_bytes(folder / f"{name}.kept.zst", compress(b"".join(self.kept)))
        workdir.write_bytes(folder / f"{name}.rejects.zst", compress(b"".join(line for _, _, line in self.rejects)))
        workdir.save_arrays(
            folder / f"{name}.npz",
            kept_pos=np.array(self.kept_pos, dtype=np.int64),
            kept_len=np.array([len(line) for line in self.kept], dtype=np.int64),
            kept_chars=np.array(self.kept_chars, dtype=np.int64),
            kept_src=np.array(self.kept_src, dtype=str),
            rej_pos=np.array([p for p, _, _ in self.rejects], dtype=np.int64),
            rej_len=np.array([len(line) for _, _, line in self.rejects], dtype=np.int64),
            rej_reason=np.array([reason for _, reason, _ in self.rejects], dtype=str),
        )
        for d, (keys, sigs) in enumerate(zip(self.keys, self.sigs)):
            width = keys[0].shape[1] if keys else 1
            dedup_stages.save_fingerprints(folder, int(name[1:]), d,
                                           np.concatenate(keys) if keys else np.empty((0, width), np.uint64),
                                           np.concatenate(sigs) if sigs else None)
