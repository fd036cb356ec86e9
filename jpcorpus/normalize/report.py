"""Counts per step, the end-of-run table, and the report written by ``--report``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from jpcorpus.normalize.histogram import Histogram

EXAMPLES_PER_REASON = 5  # dropped documents kept per reason for the HTML report
EXAMPLE_CHARS = 300


@dataclass
class StepCount:
    """What one step saw and removed. Counts add up across batches and workers.

    >>> c = StepCount("min_length", "filter")
    >>> c.saw("短い。"); c.dropped("too_short", 3); c.as_dict()["docs_dropped"]
    1
    """

    step: str
    kind: str  # "formatter", "filter" or "dedup"
    docs_in: int = 0
    chars_in: int = 0
    docs_changed: int = 0  # formatters: documents whose text changed
    chars_out: int = 0
    reason_docs: Counter = field(default_factory=Counter)
    reason_chars: Counter = field(default_factory=Counter)
    limits: list = field(default_factory=list)  # filters: their Limit rules, for the report
    histograms: dict = field(default_factory=dict)  # measure name -> Histogram

    def measured(self, values: dict, dropped_by: str | None) -> None:
        """Record a document's measures; ``dropped_by``: the measure whose limit dropped it.

        A dropped document's other measures are not recorded: the histograms
        show, per measure, what passed and what that measure's rule removed.
        """
        if dropped_by is not None:
            values = {dropped_by: values[dropped_by]}
        histograms = self.histograms
        for name, value in values.items():
            hist = histograms.get(name)
            if hist is None:
                hist = histograms[name] = Histogram.for_measure(name)
            hist.add(value, dropped=dropped_by is not None)

    def saw(self, text: str) -> None:
        self.docs_in += 1
        self.chars_in += len(text)

    def dropped(self, reason: str, chars: int) -> None:
        self.reason_docs[reason] += 1
        self.reason_chars[reason] += chars

    @property
    def docs_dropped(self) -> int:
        return sum(self.reason_docs.values())

    @property
    def chars_dropped(self) -> int:
        return sum(self.reason_chars.values())

    def merge(self, other: "StepCount") -> None:
        self.docs_in += other.docs_in
        self.chars_in += other.chars_in
        self.docs_changed += other.docs_changed
        self.chars_out += other.chars_out
        self.reason_docs.update(other.reason_docs)
        self.reason_chars.update(other.reason_chars)
        for name, hist in other.histograms.items():
            if name in self.histograms:
                self.histograms[name].merge(hist)
            else:
                self.histograms[name] = Histogram(hist.log, hist.bins, list(hist.kept), list(hist.dropped),
                                                  hist.not_judged)

    def as_dict(self) -> dict[str, Any]:
        out = {"step": self.step, "kind": self.kind, "docs_in": self.docs_in, "chars_in": self.chars_in,
               "docs_dropped": self.docs_dropped, "chars_dropped": self.chars_dropped,
               "docs_out": self.docs_in - self.docs_dropped}
        if self.kind == "formatter":
            out.update(docs_changed=self.docs_changed, chars_out=self.chars_out)
        else:
            out["chars_out"] = self.chars_in - self.chars_dropped
        out["reasons"] = {r: {"docs": self.reason_docs[r], "chars": self.reason_chars[r]}
                          for r in sorted(self.reason_docs)}
        if self.limits:
            out["limits"] = [{"reason": x.reason, "measure": x.measure, "low": x.low, "high": x.high}
                             for x in self.limits]
        if self.histograms:
            out["histograms"] = {name: self.histograms[name].as_dict() for name in sorted(self.histograms)}
        return out


@dataclass
class RunReport:
    """Everything ``jpcorpus normalize`` reports at the end of a run."""

    profile: str
    workers: int
    read: dict[str, Any]
    steps: list[StepCount]
    docs_out: int = 0
    chars_out: int = 0
    seconds: float = 0.0
    dedup_memory_bytes: int = 0
    engine: dict[str, Any] = field(default_factory=dict)  # how the run was executed (staged engines)
    examples: dict = field(default_factory=dict)  # reason -> the first EXAMPLES_PER_REASON drops (not in as_dict)

    def add_example(self, line: dict) -> None:
        """Keep the rejects ``line`` (shortened) as an example of its reason, up to the cap."""
        kept = self.examples.setdefault(line["reason"], [])
        if len(kept) < EXAMPLES_PER_REASON:
            kept.append(example_of(line))

    @property
    def docs_in(self) -> int:
        return self.steps[0].docs_in if self.steps else self.docs_out

    def as_dict(self) -> dict[str, Any]:
        mb = self.read.get("text_bytes", 0) / 1e6
        return {"profile": self.profile, "workers": self.workers, "read": self.read,
                "docs_in": self.docs_in, "docs_out": self.docs_out, "chars_out": self.chars_out,
                "steps": [s.as_dict() for s in self.steps],
                "dedup_memory_bytes": self.dedup_memory_bytes, "seconds": round(self.seconds, 3),
                "mb_per_s": round(mb / self.seconds, 3) if self.seconds else None,
                **({"engine": self.engine} if self.engine else {})}

    def table(self) -> str:
        """A plain-text table: one row per step, then one per drop reason."""
        rows = [("step", "docs in", "dropped", "chars dropped", "reasons")]
        for s in self.steps:
            if s.kind == "formatter":
                delta = s.chars_out - s.chars_in
                rows.append((s.step, f"{s.docs_in:,}", "-", f"({delta:+,} chars)", f"{s.docs_changed:,} changed"))
                continue
            reasons = ", ".join(f"{r}={n:,}" for r, n in sorted(s.reason_docs.items()))
            rows.append((s.step, f"{s.docs_in:,}", f"{s.docs_dropped:,}", f"{s.chars_dropped:,}", reasons))
        skipped = self.read.get("skipped", {})
        if skipped:
            rows.append(("(bad input)", "", f"{sum(skipped.values()):,}", "",
                         ", ".join(f"{r}={n:,}" for r, n in skipped.items())))
        rows.append(("kept", f"{self.docs_in:,}", f"{self.docs_out:,} docs", f"{self.chars_out:,} chars", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r[:4], widths)))
                 + ("  " + r[4] if r[4] else "") for r in rows]
        return "\n".join(line.rstrip() for line in lines)


def example_of(line: dict, text_key: str = "text") -> dict[str, Any]:
    """The part of a rejects line an HTML report shows: filter, reason, value, source and the text's start."""
    record = line.get("record") or {}
    text = record.get(text_key) if isinstance(record.get(text_key), str) else line.get("message", "")
    return {"filter": line.get("filter"), "reason": line.get("reason"), "measure": line.get("measure"),
            "value": line.get("value"), "source": line.get("source"), "id": record.get("id"),
            "chars": len(text), "head": "\n".join(text[:EXAMPLE_CHARS].split("\n")[:4])}
