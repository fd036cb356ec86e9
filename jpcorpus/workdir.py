"""The work directory of a staged run: partition results, shuffle files, completion markers.

Every stage writes its files here under temporary names and renames them into
place, and a partition is finished only once its marker ``NAME.done.json`` exists
(written last, atomically). The marker holds the hash of the input the
partition covers and of the settings that shape its result, so a rerun of an
interrupted command reuses exactly the partitions that would come out the same,
and redoes the others. Nothing here looks like an output: the final files are
written elsewhere, at the end, under temporary names until they are complete.

Default place: beside the output, ``.NAME.work`` for output ``NAME``. With the Ray
engine on several machines it must be a folder every node sees (``--work-dir`` on
a shared filesystem); the workers write their partitions there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the files of a stage change meaning: old markers are then ignored


def default_work_dir(output: str) -> Path:
    out = Path(output)
    return out.with_name(f".{out.name}.work")


def settings_key(**settings: Any) -> str:
    """A short hash of the settings that shape a partition's result."""
    from jpcorpus import __version__

    text = json.dumps({"format": FORMAT, "version": __version__, **settings}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def write_bytes(path: Path, data: bytes) -> None:
    tmp = _tmp(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8"))


def save_array(path: Path, array: np.ndarray) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def marker_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.done.json"


def finished(folder: Path, name: str, key: str) -> dict | None:
    """The summary a finished partition left in its marker, if its key is ``key``; else None."""
    path = marker_path(folder, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("summary") if data.get("key") == key else None


def mark_done(folder: Path, name: str, key: str, summary: dict) -> None:
    write_json(marker_path(folder, name), {"key": key, "summary": summary})


def partition_name(index: int) -> str:
    """A partition's file stem in a stage folder: its place in the input (names sort in input order)."""
    return f"p{index:06d}"


def partition_marker_key(job_key: str, part) -> str:
    """What a partition's marker must hold to be reused: the stage's settings and the partition's input."""
    return f"{job_key}:{part.key}"


def tasks_or_reused(parts: Iterable, folder: Path, job, make_task: Callable) -> Iterator:
    """Each partition as ``make_task(job, part)``, or as ``Done`` with the summary an earlier run's
    marker holds for these settings (marked ``reused``), for an engine's ``map``."""
    from jpcorpus.engines import Done

    for part in parts:
        summary = finished(folder, partition_name(part.index), partition_marker_key(job.key, part))
        yield Done(dict(summary, reused=True)) if summary else make_task(job, part)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def note_kept(work: Path) -> None:
    """After an interruption: say where the finished partitions are, for the rerun that reuses them."""
    done = sum(1 for _ in Path(work).rglob("*.done.json"))
    if done:
        log.warning("%d finished partitions kept in %s: the same command again goes on from them", done, work)
