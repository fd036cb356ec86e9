"""Detect what makes a run's numbers untrustworthy, from its :class:`MetricsLog`.

Each detector returns :class:`Anomaly` records; consecutive steps of one kind are
merged into one record (``step`` .. ``last_step``). Kinds (stable strings the
tests assert on) and severities:

- ``non_finite`` (error): NaN or inf in loss, val_loss, grad_norm or lr.
- ``loss_spike`` (warn): loss above ``spike_factor`` x the median of the
  previous ``window`` finite losses.
- ``loss_near_uniform`` (error): the median loss of the first or of the last
  ``window`` steps is at least ``uniform_fraction`` x ln(vocab): the model
  predicts like a uniform distribution, i.e. random weights (the base checkpoint
  was not loaded) or shards made with another tokenizer.
- ``lr_zero`` (error): the learning rate has been 0 for ``stall_steps`` steps or
  more at the end of the log: nothing is being learned.
- ``lr_stalled`` (warn): the learning rate has not changed for ``stall_steps``
  steps at the end of the log after changing before (a frozen scheduler; ignore
  it for a schedule with a constant tail).
- ``throughput_collapse`` (warn): the centred 5-point rolling median of tokens/s
  (or of 1/step time) is below ``collapse_factor`` x the run's median (first ``skip`` records,
  which include compilation, left out).
- ``unreadable_lines`` (warn): lines of the file that are not JSON records.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from trainer.evaluate.metrics_log import MetricsLog, finite


@dataclass(frozen=True)
class Thresholds:
    vocab_size: int = 151_665
    """Tokens the model can predict: ln(151665) = 11.93 nats is a uniform guess."""
    window: int = 20
    spike_factor: float = 1.5
    uniform_fraction: float = 0.85
    stall_steps: int = 100
    collapse_factor: float = 0.5
    skip: int = 3


@dataclass
class Anomaly:
    kind: str
    severity: str
    step: int
    last_step: int
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def _group(kind: str, severity: str, steps: list[int], all_steps: list[int], message) -> list[Anomaly]:
    """Merge flagged steps that are consecutive in ``all_steps`` into ranges."""
    position = {s: i for i, s in enumerate(all_steps)}
    out: list[Anomaly] = []
    for s in steps:
        if out and position[s] == position[out[-1].last_step] + 1:
            out[-1].last_step = s
        else:
            out.append(Anomaly(kind, severity, s, s, ""))
    for a in out:
        a.message = message(a)
    return out


def non_finite(log: MetricsLog) -> list[Anomaly]:
    found = []
    for key in ("loss", "val_loss", "grad_norm", "lr"):
        steps, values = log.points(key)
        bad = [s for s, v in zip(steps, values) if not math.isfinite(v)]
        found += _group("non_finite", "error", bad, steps,
                        lambda a, key=key: f"{key} is NaN/inf at steps {a.step}-{a.last_step}: training has diverged "
                                           "or a batch is broken; lower the learning rate or check the data")
    return found


def loss_spikes(log: MetricsLog, t: Thresholds) -> list[Anomaly]:
    steps, values = log.points("loss")
    flagged, history = [], []
    for s, v in zip(steps, values):
        if not math.isfinite(v):
            continue
        recent = history[-t.window:]
        if len(recent) >= 5 and v > t.spike_factor * statistics.median(recent):
            flagged.append(s)
        history.append(v)
    return _group("loss_spike", "warn", flagged, steps,
                  lambda a: f"loss above {t.spike_factor}x its recent median at steps {a.step}-{a.last_step}")


def loss_near_uniform(log: MetricsLog, t: Thresholds) -> list[Anomaly]:
    steps, values = log.points("loss")
    pairs = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
    limit = t.uniform_fraction * math.log(t.vocab_size)
    found = []
    for label, part in (("first", pairs[: t.window]), ("last", pairs[-t.window:])):
        if part and statistics.median(v for _, v in part) >= limit:
            a = Anomaly("loss_near_uniform", "error", part[0][0], part[-1][0],
                        f"median loss of the {label} {len(part)} steps is >= {limit:.2f} "
                        f"({t.uniform_fraction} x ln({t.vocab_size}) = {math.log(t.vocab_size):.2f}): "
                        "the model guesses uniformly; random weights (model.base not loaded) or "
                        "shards tokenized with another tokenizer")
            if not found or found[-1].step != a.step:
                found.append(a)
    return found


def lr_problems(log: MetricsLog, t: Thresholds) -> list[Anomaly]:
    steps, values = log.points("lr")
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return []
    last = values[-1]
    i = len(values) - 1
    while i > 0 and math.isclose(values[i - 1], last, rel_tol=1e-9, abs_tol=0.0):
        i -= 1
    span = steps[-1] - steps[i]
    if span < t.stall_steps:
        return []
    if last == 0:
        return [Anomaly("lr_zero", "error", steps[i], steps[-1],
                        f"learning rate 0 for {span} steps: nothing is learned; check optim.lr and the schedule")]
    if i > 0:
        return [Anomaly("lr_stalled", "warn", steps[i], steps[-1],
                        f"learning rate stuck at {last:.3g} for {span} steps after changing before: "
                        "a frozen scheduler (ignore for a schedule with a constant tail)")]
    return []


def throughput_collapse(log: MetricsLog, t: Thresholds) -> list[Anomaly]:
    steps, values = log.points("tokens_per_s")
    unit = "tokens/s"
    if not values:
        steps, times = log.points("step_time_s")
        steps, values, unit = steps, [1 / v if v and v > 0 else math.nan for v in times], "steps/s"
    pairs = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)][t.skip:]
    if len(pairs) < 5:
        return []
    run_median = statistics.median(v for _, v in pairs)
    flagged = []
    for i in range(len(pairs)):
        rolling = statistics.median(v for _, v in pairs[max(0, i - 2): i + 3])  # centred, 5 points
        if rolling < t.collapse_factor * run_median:
            flagged.append(pairs[i][0])
    return _group("throughput_collapse", "warn", flagged, [s for s, _ in pairs],
                  lambda a: f"{unit} below {t.collapse_factor}x the run's median ({run_median:.4g}) at steps "
                            f"{a.step}-{a.last_step}: another job on the GPU, thermal throttling, "
                            "a slow filesystem or host memory swapping")


def detect(log: MetricsLog, t: Thresholds = Thresholds()) -> list[Anomaly]:
    """All anomalies of ``log``, ordered by step."""
    found = non_finite(log) + loss_spikes(log, t) + loss_near_uniform(log, t) + lr_problems(log, t)
    found += throughput_collapse(log, t)
    if log.bad_lines:
        found.append(Anomaly("unreadable_lines", "warn", 0, 0,
                             f"{len(log.bad_lines)} lines are not JSON records (first: line {log.bad_lines[0]})"))
    return sorted(found, key=lambda a: (a.step, a.kind))


def median_or_none(values: list[float]) -> float | None:
    values = finite(values)
    return statistics.median(values) if values else None
