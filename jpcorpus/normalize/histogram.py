"""Fixed-bin histograms of the filters' measures, accumulated by the runner.

The bins depend only on the measure's name, so histograms from any batch,
worker or run add up bin by bin, and memory stays a few hundred integers per
measure whatever the corpus size. Shares (names ending in ``_share``) get 50
bins of 0.02 over [0, 1]; counts and lengths (characters, words) get 10 bins
a decade on a log scale from 1 to 10**6, with one bin below and one above.

>>> h = Histogram.for_measure("kana_share")
>>> h.add(0.31, dropped=False); h.add(0.01, dropped=True); h.add(None, dropped=False)
>>> h.kept[15], h.dropped[0], h.not_judged
(1, 1, 1)
>>> round(h.edges()[15], 2), round(h.edges()[16], 2)
(0.3, 0.32)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SHARE_BINS = 50
LOG_DECADES = 6
LOG_BINS_PER_DECADE = 10


@dataclass
class Histogram:
    """Counts of a measure's values in fixed bins, split into kept and dropped documents."""

    log: bool
    bins: int
    kept: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    not_judged: int = 0  # documents for which the measure did not apply (None)

    def __post_init__(self) -> None:
        if not self.kept:
            self.kept = [0] * self.bins
            self.dropped = [0] * self.bins

    @classmethod
    def for_measure(cls, name: str) -> "Histogram":
        if name.endswith("_share"):
            return cls(log=False, bins=SHARE_BINS)
        return cls(log=True, bins=LOG_DECADES * LOG_BINS_PER_DECADE + 2)

    def edges(self) -> list[float]:
        """The lower edge of each bin (log scale: the first bin holds values below 1)."""
        if not self.log:
            return [i / self.bins for i in range(self.bins + 1)]
        return [0.0] + [10 ** (i / LOG_BINS_PER_DECADE) for i in range(self.bins)]

    def bin_of(self, value: float) -> int:
        if not self.log:
            return min(self.bins - 1, max(0, int(value * self.bins)))
        if value < 1:
            return 0
        return min(self.bins - 1, 1 + int(math.log10(value) * LOG_BINS_PER_DECADE))

    def add(self, value: float | None, dropped: bool) -> None:
        if value is None:
            self.not_judged += 1
        elif self.log:
            (self.dropped if dropped else self.kept)[self.bin_of(value)] += 1
        else:  # bin_of, inlined: this runs for every document and measure
            (self.dropped if dropped else self.kept)[min(self.bins - 1, max(0, int(value * self.bins)))] += 1

    def merge(self, other: "Histogram") -> None:
        self.kept = [a + b for a, b in zip(self.kept, other.kept)]
        self.dropped = [a + b for a, b in zip(self.dropped, other.dropped)]
        self.not_judged += other.not_judged

    def as_dict(self) -> dict[str, Any]:
        return {"scale": "log" if self.log else "linear", "edges": [round(e, 6) for e in self.edges()],
                "kept": self.kept, "dropped": self.dropped, "not_judged": self.not_judged}
