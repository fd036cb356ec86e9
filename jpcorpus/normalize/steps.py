"""The two kinds of per-document step, and what the runner needs from them.

A :class:`Formatter` rewrites text (``format(text) -> text``); a
:class:`Filter` decides (``filter(doc) -> True | (False, reason)``). Each is a
small dataclass whose fields are its parameters, so a profile entry such as
``- hiragana_fraction: {min_fraction: 0.2}`` builds it directly. ``name`` is the
key used in profiles, reports and the rejects file; reasons are stable
snake_case strings.

The runner (:mod:`jpcorpus.normalize.pipeline`) owns counting, batching,
parallelism and the rejects file; steps never print or count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from jpcorpus.document import Document

FilterResult = Union[bool, "tuple[bool, str]"]
Measures = dict  # measure name -> float, or None where the measure does not apply to the document


@dataclass(frozen=True)
class Limit:
    """One rule of a filter: drop with ``reason`` when ``measure`` is below ``low`` or above ``high``.

    A filter states its rules as limits so that the runner, not the filter, can
    record what each document measured (histograms in the report, the value in
    the rejects file) and the report can mark the thresholds.
    """

    reason: str
    measure: str
    low: float | None = None
    high: float | None = None

    def broken_by(self, value: float | None) -> bool:
        if value is None:
            return False
        return (self.low is not None and value < self.low) or (self.high is not None and value > self.high)


class Step:
    """Base of every per-document step."""

    name: ClassVar[str] = ""
    # True for steps that read Sudachi's analysis: the runner groups them over a
    # whole batch, the character-level ones over small chunks (pipeline.process_docs).
    word_level: ClassVar[bool] = False

    def prepare(self, docs: list[Document]) -> None:
        """Called with every document a group sends to this step, before the first; may precompute."""

    def _check_fraction(self, key: str, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{self.name}.{key} must be between 0 and 1, got {value!r}")

    def _check_positive(self, key: str, value: float) -> None:
        if value <= 0:
            raise ValueError(f"{self.name}.{key} must be positive, got {value!r}")


class Formatter(Step):
    """Rewrites the text of every document; never drops one."""

    def format(self, text: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class Filter(Step):
    """Keeps a document (``True``) or drops it with a reason (``(False, reason)``).

    A filter measures (``measure(doc) -> {name: value}``) and states its rules
    (``limits()``); ``filter`` judges the measures against the limits in order,
    the first broken one giving the reason. The runner calls ``measure`` and
    ``judge`` itself so that it can keep the values.
    """

    reasons: ClassVar[tuple[str, ...]] = ()

    def measure(self, doc: Document) -> Measures:  # pragma: no cover - abstract
        raise NotImplementedError

    def limits(self) -> list[Limit]:  # pragma: no cover - abstract
        raise NotImplementedError

    def judge(self, values: Measures) -> tuple[FilterResult, Limit | None]:
        """The verdict on measured ``values`` and the limit that decided it (None when kept)."""
        for limit in self._limits():
            if limit.broken_by(values.get(limit.measure)):
                return (False, limit.reason), limit
        return True, None

    def filter(self, doc: Document) -> FilterResult:
        return self.judge(self.measure(doc))[0]

    def _limits(self) -> list[Limit]:
        found = self.__dict__.get("_limit_list")
        if found is None:
            found = self.__dict__["_limit_list"] = self.limits()
        return found


def as_document(text: str) -> Document:
    """A bare document, for doctests and quick checks."""
    return Document(text)
