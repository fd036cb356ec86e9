"""Filters that read a document line by line: sentence length, ellipses, repeated lines.

They judge the prose lines (:mod:`jpcorpus.normalize.lines`): section dividers,
editorial notes and headings repeat by design and are not sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from jpcorpus.document import Document
from jpcorpus.normalize.lines import is_lineated, line_kinds, prose_lines
from jpcorpus.normalize.steps import Filter, Limit, Measures

# A sentence ends after 。！？!? or at a line break. Matching the sentences (what splitting
# after each 。！？!? and at each line break leaves) is ~2.5x faster than splitting on a lookbehind.
_SENTENCE = re.compile(r"[^\n。！？!?]*[。！？!?]|[^\n。！？!?]+")
_CLAUSE = re.compile(r"[^\n。！？!?、,，]*[。！？!?、,，]|[^\n。！？!?、,，]+")


@dataclass
class SentenceLength(Filter):
    """Drop documents whose sentences are too short on average, too long, or one too long.

    Sentences are cut after 。！？!? and at line breaks, in the prose lines only.
    Lineated text (verse: most lines short and not ending in 。) is not judged:
    its line breaks are not sentence ends, and the rules were made for running
    text. ``max_clause_chars`` limits the longest clause (cut also after 、,):
    literary sentences run to hundreds of characters, but between commas.

    >>> SentenceLength().filter(Document("はい。いいえ。そう。"))
    (False, 'mean_sentence_too_short')
    >>> SentenceLength(min_mean=5, max_chars=15).filter(Document("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"))
    (False, 'sentence_too_long')
    >>> SentenceLength().filter(Document("松の葉の青きに\\nしとしとと雨はふる\\n\\n色黄なる毛虫は\\n土に沁みつき"))
    True
    """

    name: ClassVar[str] = "sentence_length"
    reasons: ClassVar[tuple[str, ...]] = (
        "mean_sentence_too_short", "mean_sentence_too_long", "sentence_too_long", "clause_too_long")
    min_mean: float = 20
    """Least mean sentence length in characters."""
    max_mean: float = 90
    """Greatest mean sentence length in characters."""
    max_chars: int = 200
    """Longest sentence allowed anywhere in the document."""
    max_clause_chars: int = 0
    """Longest clause (between 、,， and sentence ends) allowed; 0: no limit."""
    judge_lineated: bool = False
    """Judge lineated text (verse) too."""

    def measure(self, doc: Document) -> Measures:
        lines = prose_lines(doc.text)
        names = ["mean_sentence_chars", "max_sentence_chars"] + (["max_clause_chars"] if self.max_clause_chars else [])
        if not self.judge_lineated and is_lineated(lines):
            return dict.fromkeys(names)  # None: not judged
        text = "\n".join(lines)
        lengths = [len(s) for s in _SENTENCE.findall(text) if s.strip()]
        values = {"mean_sentence_chars": sum(lengths) / len(lengths) if lengths else 0.0,
                  "max_sentence_chars": max(lengths, default=0)}
        if self.max_clause_chars:
            values["max_clause_chars"] = max((len(s) for s in _CLAUSE.findall(text) if s.strip()), default=0)
        return values

    def limits(self) -> list[Limit]:
        limits = [Limit("mean_sentence_too_short", "mean_sentence_chars", low=self.min_mean),
                  Limit("mean_sentence_too_long", "mean_sentence_chars", high=self.max_mean),
                  Limit("sentence_too_long", "max_sentence_chars", high=self.max_chars)]
        if self.max_clause_chars:
            limits.append(Limit("clause_too_long", "max_clause_chars", high=self.max_clause_chars))
        return limits


_ELLIPSIS_END = ("…", "...", "‥", "..")
_LITERARY_END = re.compile(r"(……|‥‥)[」』)]?$")


@dataclass
class EllipsisLines(Filter):
    """Drop documents where many lines end in an ellipsis (truncated snippets, link lists).

    A page of snippets ends its lines with one ``…`` or ``...``, cut by a program;
    fiction trails off with the doubled ``……`` of Japanese typesetting, which
    is not counted unless ``count_doubled``.

    >>> EllipsisLines().filter(Document("新着記事の続きは…\\n人気の理由とは…\\n今話題の…\\nまとめ。"))
    (False, 'too_many_ellipsis_lines')
    >>> EllipsisLines().filter(Document("「それで……」\\n彼は黙った……\\n雨の音だけが……\\n夜が明けた。"))
    True
    """

    name: ClassVar[str] = "ellipsis_lines"
    reasons: ClassVar[tuple[str, ...]] = ("too_many_ellipsis_lines",)
    max_fraction: float = 0.2
    """Greatest share of non-empty lines that end in … or ..."""
    count_doubled: bool = False
    """Count lines ending in the doubled …… or ‥‥ too."""

    def measure(self, doc: Document) -> Measures:
        lines = [line.rstrip() for line in doc.text.split("\n") if line.strip()]
        ending = sum(1 for line in lines if line.endswith(_ELLIPSIS_END)
                     and (self.count_doubled or not _LITERARY_END.search(line)))
        return {"ellipsis_line_share": ending / len(lines) if lines else 0.0}

    def limits(self) -> list[Limit]:
        return [Limit("too_many_ellipsis_lines", "ellipsis_line_share", high=self.max_fraction)]


def _duplicate_share(parts: list[str]) -> tuple[float, float]:
    """(share of parts repeating an earlier part, share of characters in them)."""
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for part in parts:
        total_chars += len(part)
        if part in seen:
            dup += 1
            dup_chars += len(part)
        else:
            seen.add(part)
    return (dup / len(parts), dup_chars / total_chars) if parts else (0.0, 0.0)


@dataclass
class DuplicateLines(Filter):
    """Drop documents that repeat lines or paragraphs (menus, spam, scraped templates).

    Only prose lines count: a novel's ``＊　＊　＊`` between sections and its
    chapter numbers repeat by design.

    >>> DuplicateLines().filter(Document("今すぐ登録！\\n今すぐ登録！\\n今すぐ登録！\\n本文です。"))
    (False, 'duplicate_lines')
    >>> DuplicateLines().filter(Document("一\\n\\n雪が降った。\\n\\n＊\\n\\n一\\n\\n春が来た。\\n\\n＊\\n\\n一\\n\\n夏が来た。"))
    True
    """

    name: ClassVar[str] = "duplicate_lines"
    reasons: ClassVar[tuple[str, ...]] = (
        "duplicate_lines", "duplicate_line_chars", "duplicate_paragraphs", "duplicate_paragraph_chars")
    max_line_fraction: float = 0.3
    """Greatest share of prose lines that repeat an earlier line."""
    max_line_char_fraction: float = 0.2
    """Greatest share of prose line characters inside repeated lines."""
    max_paragraph_fraction: float = 0.3
    """Greatest share of paragraphs (blank-line separated, prose lines only) that repeat an earlier one."""
    max_paragraph_char_fraction: float = 0.2
    """Greatest share of paragraph characters inside repeated paragraphs."""

    def measure(self, doc: Document) -> Measures:
        lines, by_paragraph = [], {}
        for line, kind, paragraph in line_kinds(doc.text):
            if kind == "prose":
                lines.append(line)
                by_paragraph.setdefault(paragraph, []).append(line)
        line_share, line_chars = _duplicate_share(lines)
        para_share, para_chars = _duplicate_share(["\n".join(p) for p in by_paragraph.values()])
        return {"duplicate_line_share": line_share, "duplicate_line_char_share": line_chars,
                "duplicate_paragraph_share": para_share, "duplicate_paragraph_char_share": para_chars}

    def limits(self) -> list[Limit]:
        return [Limit("duplicate_lines", "duplicate_line_share", high=self.max_line_fraction),
                Limit("duplicate_line_chars", "duplicate_line_char_share", high=self.max_line_char_fraction),
                Limit("duplicate_paragraphs", "duplicate_paragraph_share", high=self.max_paragraph_fraction),
                Limit("duplicate_paragraph_chars", "duplicate_paragraph_char_share",
                      high=self.max_paragraph_char_fraction)]
