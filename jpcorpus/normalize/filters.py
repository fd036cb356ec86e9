"""Character-level quality filters: cheap, run before any morphological analysis.

Each filter measures a document (``measure(doc) -> {name: value}``) and states
its rules as limits; the runner judges, counts and records the values. The
shipped thresholds and the distributions they were set from (books and news
from Aozora Bunko and Wikinews) are in docs/normalize.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from jpcorpus.document import Document
from jpcorpus.normalize.charstats import (char_stats, char_stats_many, top_ngram_count, top_ngram_counts_many,
                                          top_ngram_share, windowed_duplicate_shares)
from jpcorpus.normalize.steps import Filter, Limit, Measures


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

    def measure(self, doc: Document) -> Measures:
        return {"chars": char_stats(doc.text).visible}

    def limits(self) -> list[Limit]:
        return [Limit("too_short", "chars", low=self.min_chars)]


@dataclass
class JapaneseFraction(_CharStatsFilter):
    """Drop documents whose share of Japanese characters (kana, kanji, 、。「」) is low.

    The share is of the letters: ASCII digits, punctuation and symbols are left
    out of the count, so dates, scores and URLs in a news article do not make it
    look foreign (``letters_only: false`` counts every visible character).

    >>> JapaneseFraction().filter(Document("This is English, not Japanese at all."))
    (False, 'not_japanese')
    >>> JapaneseFraction().filter(Document("2024年12月1日(UTC+9)、M7.1。"))
    True
    """

    name: ClassVar[str] = "japanese_fraction"
    reasons: ClassVar[tuple[str, ...]] = ("not_japanese",)
    min_fraction: float = 0.5
    """Least share of letters (or of all visible characters) that are Japanese."""
    letters_only: bool = True
    """Leave ASCII digits, punctuation and symbols out of the denominator."""

    def __post_init__(self) -> None:
        self._check_fraction("min_fraction", self.min_fraction)

    def measure(self, doc: Document) -> Measures:
        s = char_stats(doc.text)
        total = s.letters if self.letters_only else s.visible
        return {"japanese_share": s.japanese / total if total else 0.0}

    def limits(self) -> list[Limit]:
        return [Limit("not_japanese", "japanese_share", low=self.min_fraction)]


@dataclass
class HiraganaFraction(_CharStatsFilter):
    """Drop documents with too little hiragana: prose needs particles and endings.

    Lists of kanji nouns, Chinese text and mojibake (``縺ｯ縺倥ａ``) have almost none.
    Text in katakana-kanji orthography (pre-war essays, laws, telegrams) has none
    either: use :class:`KanaFraction` where such text must be kept.

    >>> HiraganaFraction().filter(Document("東京都千代田区丸の内一丁目"))
    (False, 'too_few_hiragana')
    """

    name: ClassVar[str] = "hiragana_fraction"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_hiragana",)
    min_fraction: float = 0.2
    """Least share of non-whitespace characters that are hiragana."""

    def __post_init__(self) -> None:
        self._check_fraction("min_fraction", self.min_fraction)

    def measure(self, doc: Document) -> Measures:
        s = char_stats(doc.text)
        return {"hiragana_share": s.share(s.hiragana)}

    def limits(self) -> list[Limit]:
        return [Limit("too_few_hiragana", "hiragana_share", low=self.min_fraction)]


@dataclass
class KanaFraction(_CharStatsFilter):
    """Drop documents with too little kana (hiragana and katakana together).

    Japanese writes its particles and endings in kana: hiragana in modern
    orthography, katakana in the katakana-kanji orthography of pre-war essays,
    laws and telegrams, which has almost no hiragana and is still Japanese
    prose. Chinese text and lists of kanji nouns have neither.

    >>> KanaFraction().filter(Document("余ガ故友ト相識リシハ、初メテ調所ニ入リシ日ニアリ。爾来交情親善ナリ。"))
    True
    >>> KanaFraction().filter(Document("今天天气很好，我们一起去公园散步吧。"))
    (False, 'too_little_kana')
    """

    name: ClassVar[str] = "kana_fraction"
    reasons: ClassVar[tuple[str, ...]] = ("too_little_kana",)
    min_fraction: float = 0.15
    """Least share of non-whitespace characters that are hiragana or katakana."""

    def __post_init__(self) -> None:
        self._check_fraction("min_fraction", self.min_fraction)

    def measure(self, doc: Document) -> Measures:
        s = char_stats(doc.text)
        return {"kana_share": s.share(s.hiragana + s.katakana)}

    def limits(self) -> list[Limit]:
        return [Limit("too_little_kana", "kana_share", low=self.min_fraction)]


@dataclass
class KatakanaFraction(_CharStatsFilter):
    """Drop documents that are mostly katakana (product lists, SEO keyword strings).

    With ``min_run`` above 1 only katakana in runs of at least that many
    characters count (``ー`` belongs to a run; ``・``, spaces and everything else
    end one). Keyword strings glue katakana words into long runs; prose breaks
    them: foreign names are joined by ``・`` (``レオナルド・ダ・ヴィンチ``), and a
    children's text in katakana separates its words with spaces and particles.

    >>> KatakanaFraction().filter(Document("セールスーパーセールアウトレットブランドバッグ"))
    (False, 'too_much_katakana')
    >>> KatakanaFraction(min_run=6).filter(Document("ムカシ ムカシ アル トコロニ オジイサン ト オバアサン ガ アリマシタ。"))
    True
    """

    name: ClassVar[str] = "katakana_fraction"
    reasons: ClassVar[tuple[str, ...]] = ("too_much_katakana",)
    max_fraction: float = 0.5
    """Greatest share of non-whitespace characters that are katakana (in runs of ``min_run``)."""
    min_run: int = 1
    """Katakana in shorter runs is not counted (1: every katakana character counts)."""

    def __post_init__(self) -> None:
        self._check_fraction("max_fraction", self.max_fraction)
        self._check_positive("min_run", self.min_run)
        self._run = re.compile(r"[ァ-ヺーヽヾ]{%d,}" % self.min_run)

    def measure(self, doc: Document) -> Measures:
        s = char_stats(doc.text)
        if self.min_run == 1:
            return {"katakana_share": s.share(s.katakana)}
        return {"katakana_share": s.share(sum(map(len, self._run.findall(doc.text))))}

    def limits(self) -> list[Limit]:
        return [Limit("too_much_katakana", "katakana_share", high=self.max_fraction)]


@dataclass
class TopNgramShare(Filter):
    """Drop documents where one character n-gram covers too much of the text.

    ``max_share`` maps n to the greatest share of characters the most frequent
    n-gram may cover (Gopher's 2/3/4-gram limits of 0.20/0.18/0.16).
    ``min_chars``: shorter documents are not judged.

    The shortest n is measured on every document. An n-gram's count never
    exceeds that of its first n - 1 characters, so the shortest n's top count
    bounds every longer one's; where that bound already proves a longer n's
    limit holds (ordinary prose), the longer n is not measured (None: "not
    judged" in the report's histogram), which saves a count per n.

    >>> TopNgramShare().filter(Document("激安激安激安激安激安激安セール中"))
    (False, 'top_ngram_share')
    """

    name: ClassVar[str] = "top_ngram_share"
    reasons: ClassVar[tuple[str, ...]] = ("top_ngram_share",)
    max_share: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    """n -> greatest share of characters in the most frequent character n-gram."""
    min_chars: int = 0
    """Documents shorter than this are not judged."""

    def __post_init__(self) -> None:
        self.max_share = {int(n): float(v) for n, v in self.max_share.items()}
        self._by_n = sorted(self.max_share.items())

    def prepare(self, docs: list[Document]) -> None:
        texts = [d.text for d in docs]
        first = self._by_n[0][0]
        top_ngram_counts_many(texts, first)
        for n, limit in self._by_n[1:]:
            todo = [t for t in texts if top_ngram_share(t, n, top_ngram_count(t, first)) > limit]
            if todo:
                top_ngram_counts_many(todo, n)

    def measure(self, doc: Document) -> Measures:
        text = doc.text
        if len(text) < self.min_chars:
            return {f"top_{n}gram_share": None for n, _ in self._by_n}
        first = self._by_n[0][0]
        bound = top_ngram_count(text, first)
        values = {}
        for n, limit in self._by_n:
            proven = n != first and top_ngram_share(text, n, bound) <= limit
            values[f"top_{n}gram_share"] = None if proven else top_ngram_share(text, n, top_ngram_count(text, n))
        return values

    def limits(self) -> list[Limit]:
        return [Limit("top_ngram_share", f"top_{n}gram_share", high=limit) for n, limit in self._by_n]


@dataclass
class DuplicateNgramShare(Filter):
    """Drop documents where repeated character n-grams cover too much of the text.

    Repeats are counted within windows of ``window`` characters (0: the whole
    document), so the measure does not grow with length: over a whole novel any
    ten characters recur somewhere (the share of a 300,000-character book is
    several times that of its own 2,000-character pages).

    >>> DuplicateNgramShare().filter(Document("今日はいい天気。今日はいい天気。今日はいい天気。"))
    (False, 'duplicate_ngram_share')
    """

    name: ClassVar[str] = "duplicate_ngram_share"
    reasons: ClassVar[tuple[str, ...]] = ("duplicate_ngram_share",)
    max_share: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    """n -> greatest share of characters inside character n-grams seen more than once (in a window)."""
    window: int = 0
    """Characters per window in which repeats are counted (0: the whole document)."""

    def __post_init__(self) -> None:
        self.max_share = {int(n): float(v) for n, v in self.max_share.items()}
        self._shares: dict[tuple[str, int], float] = {}

    def prepare(self, docs: list[Document]) -> None:
        texts = list(dict.fromkeys(d.text for d in docs))
        self._shares = {}
        for n in self.max_share:  # one argsort for the chunk per n
            for text, share in zip(texts, windowed_duplicate_shares(texts, n, self.window)):
                self._shares[(text, n)] = share

    def measure(self, doc: Document) -> Measures:
        text = doc.text
        if any((text, n) not in self._shares for n in self.max_share):
            self.prepare([doc])
        return {f"duplicate_{n}gram_share": self._shares[(text, n)] for n in self.max_share}

    def limits(self) -> list[Limit]:
        return [Limit("duplicate_ngram_share", f"duplicate_{n}gram_share", high=v) for n, v in self.max_share.items()]
