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

from typing import ClassVar, Union

from jpcorpus.document import Document

FilterResult = Union[bool, "tuple[bool, str]"]


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
    """Keeps a document (``True``) or drops it with a reason (``(False, reason)``)."""

    reasons: ClassVar[tuple[str, ...]] = ()

    def filter(self, doc: Document) -> FilterResult:  # pragma: no cover - abstract
        raise NotImplementedError


def as_document(text: str) -> Document:
    """A bare document, for doctests and quick checks."""
    return Document(text)
