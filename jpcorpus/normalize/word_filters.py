"""Quality filters that need words: counts over Sudachi's analysis (:mod:`morphology`).

How many words, how many are nouns (a list of nouns is not prose), whether
particles and auxiliary verbs are there to hold sentences together, how many
words the dictionary does not know, and how often word n-grams repeat. They
read one cached :func:`~jpcorpus.normalize.morphology.analyze` per document,
made for a whole batch at once (``prepare``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from jpcorpus.document import Document
from jpcorpus.normalize import morphology
from jpcorpus.normalize.morphology import AUX_VERB, NOUN, PARTICLE, Analysis
from jpcorpus.normalize.steps import Filter, Limit, Measures


class _MorphologyFilter(Filter):
    mode: str
    word_level: ClassVar[bool] = True  # the pipeline runs these over a whole batch (process_docs)

    def prepare(self, docs: list[Document]) -> None:
        """Analyze, in one :func:`analyze_many`, those of ``docs`` not analyzed yet."""
        todo = list({d.text: None for d in docs if (d.text, self.mode) not in morphology._ANALYSES})
        if todo:
            morphology.analyze_many(todo, self.mode)

    def _analysis(self, doc: Document) -> Analysis:
        return morphology.analyze(doc.text, self.mode)

    def _check_mode(self) -> None:
        if self.mode not in ("A", "B", "C"):
            raise ValueError(f"{self.name}.mode must be A, B or C (Sudachi split mode), got {self.mode!r}")


@dataclass
class MinWords(_MorphologyFilter):
    """Drop documents with fewer than ``min_words`` words (symbols not counted).

    >>> MinWords(min_words=10).filter(Document("猫がいる。"))
    (False, 'too_few_words')
    """

    name: ClassVar[str] = "min_words"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_words",)
    min_words: int = 20
    """Fewest words a kept document has."""
    mode: str = "C"
    """Sudachi split mode (A short units, C long units)."""

    def __post_init__(self) -> None:
        self._check_mode()

    def measure(self, doc: Document) -> Measures:
        return {"words": self._analysis(doc).words}

    def limits(self) -> list[Limit]:
        return [Limit("too_few_words", "words", low=self.min_words)]


@dataclass
class NounRatio(_MorphologyFilter):
    """Drop documents that are mostly nouns: keyword lists, tag clouds, menus.

    With ``compounds_once`` (the default) a run of nouns counts as one word:
    Sudachi cuts ``2011年4月7日午後11時`` into eight nouns and a foreign name
    into one per part, so that a news item full of dates and names looked like
    a list; a list keeps its separators (spaces, 、) between its nouns.

    >>> NounRatio().filter(Document("東京 大阪 名古屋 札幌 福岡 温泉 旅館 ホテル 格安 予約"))
    (False, 'too_many_nouns')
    >>> NounRatio().filter(Document("2011年4月7日午後11時32分、ジョン・F・ケネディ国際空港で停電があった。"))
    True
    """

    name: ClassVar[str] = "noun_ratio"
    reasons: ClassVar[tuple[str, ...]] = ("too_many_nouns",)
    max_ratio: float = 0.7
    """Greatest share of words that are nouns."""
    compounds_once: bool = True
    """Count a run of consecutive nouns as one word."""
    mode: str = "C"
    """Sudachi split mode."""

    def __post_init__(self) -> None:
        self._check_fraction("max_ratio", self.max_ratio)
        self._check_mode()

    def measure(self, doc: Document) -> Measures:
        a = self._analysis(doc)
        return {"noun_share": a.unit_share(NOUN) if self.compounds_once else a.share(NOUN)}

    def limits(self) -> list[Limit]:
        return [Limit("too_many_nouns", "noun_share", high=self.max_ratio)]


@dataclass
class FunctionWordRatio(_MorphologyFilter):
    """Drop documents without enough particles and auxiliary verbs (は が を に です ます).

    Japanese sentences are held together by them; their absence marks lists,
    titles, tables and text in other languages. ``compounds_once``: as in
    :class:`NounRatio`, a run of nouns counts as one word.

    >>> FunctionWordRatio().filter(Document("新製品 発表 限定 価格 送料 無料"))
    (False, 'too_few_function_words')
    >>> FunctionWordRatio().filter(Document("雨が降ったので、試合は中止になりました。"))
    True
    """

    name: ClassVar[str] = "function_word_ratio"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_function_words",)
    min_ratio: float = 0.15
    """Least share of words that are particles (助詞) or auxiliary verbs (助動詞)."""
    compounds_once: bool = True
    """Count a run of consecutive nouns as one word."""
    mode: str = "C"
    """Sudachi split mode."""

    def __post_init__(self) -> None:
        self._check_fraction("min_ratio", self.min_ratio)
        self._check_mode()

    def measure(self, doc: Document) -> Measures:
        a = self._analysis(doc)
        share = a.unit_share if self.compounds_once else a.share
        return {"function_word_share": share(PARTICLE) + share(AUX_VERB)}

    def limits(self) -> list[Limit]:
        return [Limit("too_few_function_words", "function_word_share", low=self.min_ratio)]


@dataclass
class UnknownWordRatio(_MorphologyFilter):
    """Drop documents with many words Sudachi's dictionary does not know (mojibake, noise).

    Katakana-only words and numbers are not counted as unknown: a paragraph about
    ``ヴィトゲンシュタイン`` is not noise (see :func:`analyze`).

    >>> UnknownWordRatio().filter(Document("ｑｚｘ ｗｖｋ ｊｊｑ ｘｘｚ ｐｑｒ は です"))
    (False, 'too_many_unknown_words')
    >>> UnknownWordRatio().filter(Document("ルートヴィヒ・ヴィトゲンシュタインはウィーンに生まれた。"))
    True
    """

    name: ClassVar[str] = "unknown_word_ratio"
    reasons: ClassVar[tuple[str, ...]] = ("too_many_unknown_words",)
    max_ratio: float = 0.1
    """Greatest share of words that are out of the dictionary."""
    mode: str = "C"
    """Sudachi split mode."""

    def __post_init__(self) -> None:
        self._check_fraction("max_ratio", self.max_ratio)
        self._check_mode()

    def measure(self, doc: Document) -> Measures:
        return {"unknown_share": self._analysis(doc).unknown_share}

    def limits(self) -> list[Limit]:
        return [Limit("too_many_unknown_words", "unknown_share", high=self.max_ratio)]


@dataclass
class WordNgramRepetition(_MorphologyFilter):
    """Drop documents where word n-grams repeat too often (spam, generated filler).

    The share is the fraction of word n-grams that repeat an earlier one of the
    same window of ``window`` words (0: the whole document); words are compared
    by Sudachi word id, unknown words by their surface. Over a whole document the
    share grows with length (an 80,000-character translation scored 0.43 while
    each of its 20,000-character slices scored 0.23-0.35); over windows it does not.

    >>> WordNgramRepetition().filter(Document("今すぐ登録して稼ごう。" * 5 + "簡単です。"))
    (False, 'repeated_word_ngrams')
    """

    name: ClassVar[str] = "word_ngram_repetition"
    reasons: ClassVar[tuple[str, ...]] = ("repeated_word_ngrams",)
    n: int = 3
    """Words per n-gram."""
    max_share: float = 0.3
    """Greatest share of word n-grams that repeat an earlier one (in the same window)."""
    window: int = 0
    """Words per window (0: the whole document); a last window under half this size joins the one before."""
    mode: str = "C"
    """Sudachi split mode."""

    def __post_init__(self) -> None:
        self._check_fraction("max_share", self.max_share)
        self._check_positive("n", self.n)
        self._check_mode()

    def measure(self, doc: Document) -> Measures:
        return {"repeated_word_ngram_share": repeated_ngram_share(self._analysis(doc).word_ids, self.n, self.window)}

    def limits(self) -> list[Limit]:
        return [Limit("repeated_word_ngrams", "repeated_word_ngram_share", high=self.max_share)]


def repeated_ngram_share(ids: np.ndarray, n: int, window: int = 0) -> float:
    """Share of the n-grams of ``ids`` that repeat an earlier n-gram of their window.

    >>> round(repeated_ngram_share(np.array([1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9]), 3), 3)
    0.1
    >>> repeated_ngram_share(np.array([1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9]), 3, window=3)
    0.0
    """
    if len(ids) < n:
        return 0.0
    count = len(ids) - n + 1
    grams = ids[:count].copy()  # int64 arithmetic on arrays wraps silently, as a hash should
    for k in range(1, n):
        grams *= np.int64(1_000_003)
        grams += ids[k:count + k]
    if window > 0 and count >= window + window // 2:
        win = np.arange(count) // window
        last = win[-1]
        if count - last * window < window // 2:
            win[win == last] = last - 1
        grams += win * np.int64(-7046029254386353131)  # mixes the window into the hash
    grams.sort()
    distinct = 1 + int(np.count_nonzero(grams[1:] != grams[:-1]))
    return 1.0 - distinct / len(grams)
