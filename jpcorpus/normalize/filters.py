"""Character-level quality filters: cheap, run before any morphological analysis.

Thresholds follow the Swallow corpus rules (Okazaki et al., 2024) and Gopher's
repetition rules (Rae et al., 2021) unless a profile says otherwise; the
shipped defaults are listed in docs/normalize.md. Each filter returns ``True``
to keep a document or ``(False, reason)`` to drop it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from jpcorpus.document import Document
from jpcorpus.normalize.charstats import (char_stats, char_stats_many, duplicate_ngram_share,
                                          duplicate_ngram_shares_many, duplicate_ngram_starts, ngram_counts_many,
                                          top_ngram_bound, top_ngram_bounds_many, top_ngram_count,
                                          top_ngram_share)
from jpcorpus.normalize.steps import Filter, FilterResult


class _CharStatsFilter(Filter):
    """A filter that reads :func:`char_stats`: computed for a whole chunk at once."""

    def prepare(self, docs: list[Document]) -> None:
        char_stats_many([d.text for d in docs])


@dataclass
class MinLength(_CharStatsFilter):
    """Drop documents shorter than ``min_chars`` characters (whitespace not counted).

    >>> MinLength(min_chars=10).filter(Document("短い。"))
    (False, 'too_short')
    """

    name: ClassVar[str] = "min_length"
    reasons: ClassVar[tuple[str, ...]] = ("too_short",)
    min_chars: int = 100
    """Fewest non-whitespace characters a kept document has."""

    def filter(self, doc: Document) -> FilterResult:
        return True if char_stats(doc.text).visible >= self.min_chars else (False, "too_short")


@dataclass
class JapaneseFraction(_CharStatsFilter):
    """Drop documents whose share of Japanese characters (kana, kanji, 、。「」) is low.

    >>> JapaneseFraction().filter(Document("This is English, not Japanese at all."))
    (False, 'not_japanese')
    >>> JapaneseFraction().filter(Document("今日は晴れです。"))
    True
    """

    name: ClassVar[str] = "japanese_fraction"
    reasons: ClassVar[tuple[str, ...]] = ("not_japanese",)
    min_fraction: float = 0.5
    """Least share of non-whitespace characters that are Japanese."""

    def __post_init__(self) -> None:
        self._check_fraction("min_fraction", self.min_fraction)

    def filter(self, doc: Document) -> FilterResult:
        s = char_stats(doc.text)
        return True if s.share(s.japanese) >= self.min_fraction else (False, "not_japanese")


@dataclass
class HiraganaFraction(_CharStatsFilter):
    """Drop documents with too little hiragana: prose needs particles and endings.

    Lists of kanji nouns, Chinese text and mojibake (``縺ｯ縺倥ａ``) have almost none.

    >>> HiraganaFraction().filter(Document("東京都千代田区丸の内一丁目"))
    (False, 'too_few_hiragana')
    """

    name: ClassVar[str] = "hiragana_fraction"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_hiragana",)
    min_fraction: float = 0.2
    """Least share of non-whitespace characters that are hiragana."""

    def __post_init__(self) -> None:
        self._check_fraction("min_fraction", self.min_fraction)

    def filter(self, doc: Document) -> FilterResult:
        s = char_stats(doc.text)
        return True if s.share(s.hiragana) >= self.min_fraction else (False, "too_few_hiragana")


@dataclass
class KatakanaFraction(_CharStatsFilter):
    """Drop documents that are mostly katakana (product lists, SEO keyword strings).

    >>> KatakanaFraction().filter(Document("セールスーパーセールアウトレットブランドバッグ"))
    (False, 'too_much_katakana')
    """

    name: ClassVar[str] = "katakana_fraction"
    reasons: ClassVar[tuple[str, ...]] = ("too_much_katakana",)
    max_fraction: float = 0.5
    """Greatest share of non-whitespace characters that are katakana."""

    def __post_init__(self) -> None:
        self._check_fraction("max_fraction", self.max_fraction)

    def filter(self, doc: Document) -> FilterResult:
        s = char_stats(doc.text)
        return True if s.share(s.katakana) <= self.max_fraction else (False, "too_much_katakana")


# A sentence ends after 。！？!? or at a line break. Matching the sentences (what splitting
# after each 。！？!? and at each line break leaves) is ~2.5x faster than splitting on a lookbehind.
_SENTENCE = re.compile(r"[^\n。！？!?]*[。！？!?]|[^\n。！？!?]+")


@dataclass
class SentenceLength(Filter):
    """Drop documents whose sentences are too short on average, too long, or one too long.

    >>> SentenceLength().filter(Document("はい。いいえ。そう。"))
    (False, 'mean_sentence_too_short')
    >>> SentenceLength(min_mean=5, max_chars=15).filter(Document("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"))
    (False, 'sentence_too_long')
    """

    name: ClassVar[str] = "sentence_length"
    reasons: ClassVar[tuple[str, ...]] = ("mean_sentence_too_short", "mean_sentence_too_long", "sentence_too_long")
    min_mean: float = 20
    """Least mean sentence length in characters."""
    max_mean: float = 90
    """Greatest mean sentence length in characters."""
    max_chars: int = 200
    """Longest sentence allowed anywhere in the document."""

    def filter(self, doc: Document) -> FilterResult:
        lengths = [len(s) for s in _SENTENCE.findall(doc.text) if s.strip()]
        if not lengths:
            return False, "mean_sentence_too_short"
        mean = sum(lengths) / len(lengths)
        if mean < self.min_mean:
            return False, "mean_sentence_too_short"
        if mean > self.max_mean:
            return False, "mean_sentence_too_long"
        if max(lengths) > self.max_chars:
            return False, "sentence_too_long"
        return True


_ELLIPSIS_END = ("…", "...", "‥", "..")


@dataclass
class EllipsisLines(Filter):
    """Drop documents where many lines end in an ellipsis (truncated snippets, link lists).

    >>> EllipsisLines().filter(Document("新着記事の続きは…\\n人気の理由とは…\\n今話題の…\\nまとめ。"))
    (False, 'too_many_ellipsis_lines')
    """

    name: ClassVar[str] = "ellipsis_lines"
    reasons: ClassVar[tuple[str, ...]] = ("too_many_ellipsis_lines",)
    max_fraction: float = 0.2
    """Greatest share of non-empty lines that end in … or ..."""

    def filter(self, doc: Document) -> FilterResult:
        lines = [line for line in doc.text.split("\n") if line.strip()]
        ending = sum(1 for line in lines if line.rstrip().endswith(_ELLIPSIS_END))
        return True if ending <= self.max_fraction * len(lines) else (False, "too_many_ellipsis_lines")


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

    >>> DuplicateLines().filter(Document("今すぐ登録！\\n今すぐ登録！\\n今すぐ登録！\\n本文です。"))
    (False, 'duplicate_lines')
    """

    name: ClassVar[str] = "duplicate_lines"
    reasons: ClassVar[tuple[str, ...]] = (
        "duplicate_lines", "duplicate_line_chars", "duplicate_paragraphs", "duplicate_paragraph_chars")
    max_line_fraction: float = 0.3
    """Greatest share of non-empty lines that repeat an earlier line."""
    max_line_char_fraction: float = 0.2
    """Greatest share of line characters inside repeated lines."""
    max_paragraph_fraction: float = 0.3
    """Greatest share of paragraphs (blank-line separated) that repeat an earlier one."""
    max_paragraph_char_fraction: float = 0.2
    """Greatest share of paragraph characters inside repeated paragraphs."""

    def filter(self, doc: Document) -> FilterResult:
        lines, line_chars = _duplicate_share([s.strip() for s in doc.text.split("\n") if s.strip()])
        if lines > self.max_line_fraction:
            return False, "duplicate_lines"
        if line_chars > self.max_line_char_fraction:
            return False, "duplicate_line_chars"
        paras, para_chars = _duplicate_share([p.strip() for p in doc.text.split("\n\n") if p.strip()])
        if paras > self.max_paragraph_fraction:
            return False, "duplicate_paragraphs"
        if para_chars > self.max_paragraph_char_fraction:
            return False, "duplicate_paragraph_chars"
        return True


@dataclass
class TopNgramShare(Filter):
    """Drop documents where one character n-gram covers too much of the text.

    ``max_share`` maps n to the greatest share of characters the most frequent
    n-gram may cover (Gopher's 2/3/4-gram limits of 0.20/0.18/0.16).

    >>> TopNgramShare().filter(Document("激安激安激安激安激安激安セール中"))
    (False, 'top_ngram_share')
    """

    name: ClassVar[str] = "top_ngram_share"
    reasons: ClassVar[tuple[str, ...]] = ("top_ngram_share",)
    max_share: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    """n -> greatest share of characters in the most frequent character n-gram."""

    def __post_init__(self) -> None:
        self.max_share = {int(n): float(v) for n, v in self.max_share.items()}
        self._by_n = sorted(self.max_share.items())

    def prepare(self, docs: list[Document]) -> None:
        # An upper bound of the shortest n's top count (no sort) settles most documents;
        # the others get the exact count, one sort for all of them.
        n = self._by_n[0][0]
        texts = [d.text for d in docs]
        bounds = top_ngram_bounds_many(texts, n)
        unsettled = [t for t, bound in zip(texts, bounds) if not self._within(t, bound)]
        if unsettled:
            ngram_counts_many(unsettled, n)

    def _within(self, text: str, count: int) -> bool:
        """Whether every limit holds when the shortest n-gram's top count is at most ``count``."""
        return all(top_ngram_share(text, n, count) <= limit for n, limit in self._by_n)

    def filter(self, doc: Document) -> FilterResult:
        text = doc.text
        bound = top_ngram_bound(text, self._by_n[0][0])  # cached by prepare, if it ran
        if bound is not None and self._within(text, bound):
            return True
        # Shortest n first: its top count bounds every longer n-gram's (see top_ngram_count),
        # so on ordinary prose one sort (n = 2) proves all limits hold and the rest are skipped.
        bound = None
        for n, limit in self._by_n:
            if bound is not None and len(text) >= n and top_ngram_share(text, n, bound) <= limit:
                continue
            bound = top_ngram_count(text, n)
            if top_ngram_share(text, n, bound) > limit:
                return False, "top_ngram_share"
        return True


@dataclass
class DuplicateNgramShare(Filter):
    """Drop documents where repeated character n-grams cover too much of the text.

    >>> DuplicateNgramShare().filter(Document("今日はいい天気。今日はいい天気。今日はいい天気。"))
    (False, 'duplicate_ngram_share')
    """

    name: ClassVar[str] = "duplicate_ngram_share"
    reasons: ClassVar[tuple[str, ...]] = ("duplicate_ngram_share",)
    max_share: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    """n -> greatest share of characters inside character n-grams seen more than once."""

    def __post_init__(self) -> None:
        self.max_share = {int(n): float(v) for n, v in self.max_share.items()}

    def prepare(self, docs: list[Document]) -> None:
        # Many short documents: one argsort for the chunk gives every exact share (the cheap
        # bound below does not settle ~40% of news articles). A long document alone: the
        # bound (one sort) first, which settles most books, and its argsort only if needed.
        n = next(iter(self.max_share))
        if len(docs) > 1:
            duplicate_ngram_shares_many([d.text for d in docs], n)
        else:
            ngram_counts_many([d.text for d in docs], n)

    @staticmethod
    def _bound(text: str, n: int) -> float:
        """An upper bound of the duplicate share: n characters for each duplicated n-gram."""
        return float(min(n * duplicate_ngram_starts(text, n), len(text))) / len(text)

    def filter(self, doc: Document) -> FilterResult:
        text = doc.text
        for n, limit in self.max_share.items():
            # Cheap bound first: n characters per repeated n-gram. On ordinary prose it
            # proves the limit holds, and the exact share (an argsort) is not needed.
            if len(text) >= n and self._bound(text, n) <= limit:
                continue
            if duplicate_ngram_share(text, n) > limit:
                return False, "duplicate_ngram_share"
        return True
