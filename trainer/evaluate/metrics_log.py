"""Read a run's ``metrics.jsonl`` while the run writes it, or after.

One JSON object per line, written by ``trainer run`` every
``logging.every_n_steps`` steps (schema in docs/evaluation.md)::

    {"step": 120, "loss": 2.41, "lr": 1.9e-4, "grad_norm": 0.83, "step_time_s": 0.78,
     "tokens_per_s": 84012, "gpu_mem_gb": 44.5}
    {"step": 200, "loss": 2.38, "val_loss": 2.45, ...}      # validation steps only

Every key but ``step`` may be missing or null. ``step_time`` and ``gpu_mem_gib``
are accepted for ``step_time_s`` and ``gpu_mem_gb``. Non-finite values may be
written as JSON ``NaN``/``Infinity`` (Python's ``json`` does) or as strings.

A last line without its newline is a line being written: it is left out and
``partial_last_line`` says so. A broken line elsewhere is skipped and counted. Records
of the same step are merged, later values winning: a validation record may come
on its own line, and a resumed run repeats the steps after its last checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from jpcorpus.jsonline import RecordError, loads_record

FIELDS = ("loss", "val_loss", "lr", "grad_norm", "step_time_s", "tokens_per_s", "gpu_mem_gb")
ALIASES = {"step_time": "step_time_s", "gpu_mem_gib": "gpu_mem_gb"}


@dataclass
class MetricsLog:
    path: str
    steps: list[int] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=lambda: {k: [] for k in FIELDS})
    """One value per step for every field: ``None`` where the step did not log it."""
    partial_last_line: bool = False
    bad_lines: list[int] = field(default_factory=list)
    restarts: int = 0
    """Times the step went backwards (a resumed run)."""

    def points(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values where ``key`` was logged (non-finite values included)."""
        pairs = [(s, v) for s, v in zip(self.steps, self.series[key]) if v is not None]
        return [s for s, _ in pairs], [v for _, v in pairs]


def _number(value) -> float | None:
    """A logged value as float; ``None`` for missing/null; non-finite strings parsed.

    >>> [_number(v) for v in (None, 2, "nan", "inf", True)]
    [None, 2.0, nan, inf, None]
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_lines(text: str) -> tuple[list[dict], bool, list[int]]:
    """``(records, partial_last_line, bad line numbers)`` of the file's text."""
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline, else a line being written
    records, bad = [], []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = loads_record(line)  # never raises anything but RecordError (deep nesting, huge numbers)
        except RecordError:
            bad.append(lineno)
            continue
        if isinstance(rec, dict) and _number(rec.get("step")) is not None:
            records.append(rec)
        else:
            bad.append(lineno)
    return records, bool(tail.strip()), bad


def read_metrics(path: str | Path) -> MetricsLog:
    """Read ``path`` (a metrics file, or a run directory holding ``metrics.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: no metrics file (trainer run writes RUN_DIR/metrics.jsonl from its first step)")
    records, partial, bad = parse_lines(path.read_text(encoding="utf-8", errors="replace"))
    log = MetricsLog(str(path), partial_last_line=partial, bad_lines=bad)
    by_step: dict[int, dict] = {}
    previous = None
    for rec in records:
        step = int(_number(rec["step"]))
        if previous is not None and step < previous:
            log.restarts += 1
        previous = step
        values = {ALIASES.get(k, k): _number(v) for k, v in rec.items()}
        merged = by_step.setdefault(step, {})
        merged.update({k: values[k] for k in FIELDS if values.get(k) is not None})
    for step in sorted(by_step):
        log.steps.append(step)
        for key in FIELDS:
            log.series[key].append(by_step[step].get(key))
    return log


def finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]
