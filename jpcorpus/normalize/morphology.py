"""Quality filters that need words: Sudachi morphological analysis (sudachidict-core).

Whitespace-based word rules (Gopher, C4) do not work for Japanese, which has
no spaces. These filters count real morphemes instead: how many words, how
many are nouns (a list of nouns is not prose), whether particles and
auxiliary verbs are there to hold sentences together, how many words the
dictionary does not know, and how often word n-grams repeat.

All of them read one :func:`analyze` result per document (cached), so a
document is tokenized once however many of these filters a profile lists.
Each worker process creates its own Sudachi tokenizer the first time it needs
one; nothing is created at import time, so ``--help`` stays instant.

Sudachi refuses inputs longer than 49,149 bytes of UTF-8. :func:`split_for_sudachi`
cuts a long text into pieces at line breaks (else after 。！？, else, for a
single enormous run without either, at a character boundary) that are
analyzed one after another: every character is analyzed, nothing is dropped.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from jpcorpus.document import Document
from jpcorpus.normalize.steps import Filter, FilterResult

SUDACHI_MAX_BYTES = 49_149
# A character is at most 4 bytes of UTF-8, so a piece of this many characters
# always fits. Pieces of ~12k characters cost the same per byte as whole texts.
MAX_PIECE_CHARS = SUDACHI_MAX_BYTES // 4
_SENTENCE_END = re.compile(r"[。！？!?]")

# Word classes read from the first field of Sudachi's part of speech.
SYMBOL, NOUN, PARTICLE, AUX_VERB, OTHER = 0, 1, 2, 3, 4
_CLASS_OF_POS = {"補助記号": SYMBOL, "記号": SYMBOL, "空白": SYMBOL,
                 "名詞": NOUN, "助詞": PARTICLE, "助動詞": AUX_VERB}
OOV_WORD_ID = 0xF000_0000  # Sudachi gives out-of-vocabulary words the id 0xF0000000 | pos id
# Documents in a batch of the pipeline, whose word-level steps run over every
# document of the batch in turn (``pipeline.process_docs``) and then clear the cache.
CACHE_TEXTS = 256


def split_for_sudachi(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Cut ``text`` into pieces Sudachi accepts; ``"".join(pieces) == text`` always.

    >>> split_for_sudachi("一行目。\\n二行目。三行目。", max_chars=6)
    ['一行目。\\n', '二行目。', '三行目。']
    """
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = text.rfind("\n", start + max_chars // 2, end)
        if cut < 0:
            ends = [m.end() for m in _SENTENCE_END.finditer(text, start + max_chars // 2, end)]
            cut = ends[-1] - 1 if ends else end - 1
        pieces.append(text[start:cut + 1])
        start = cut + 1
    pieces.append(text[start:])
    return pieces


@lru_cache(maxsize=None)
def _dictionary():
    from sudachipy import Dictionary  # heavy: loaded on first use in each process

    return Dictionary(dict="core")


@lru_cache(maxsize=None)
def _tokenizer(mode: str):
    return _dictionary().tokenizer(mode)


@lru_cache(maxsize=None)
def _pos_classes() -> np.ndarray:
    """Word class of every Sudachi part-of-speech id."""
    dictionary, classes = _dictionary(), []
    while (pos := dictionary.pos_of(len(classes))) is not None:
        classes.append(_CLASS_OF_POS.get(pos[0], OTHER))
    return np.array(classes, dtype=np.uint8)


@dataclass(frozen=True)
class Analysis:
    """The words of one text (symbols and spaces left out), as parallel arrays."""

    classes: np.ndarray  # uint8 word class (NOUN, PARTICLE, ...) of each word
    word_ids: np.ndarray  # int64 Sudachi word id; unknown words: OOV_WORD_ID + CRC32 of the surface
    unknown: np.ndarray  # bool: out of the dictionary and not ASCII (numbers, Latin words are fine)
    class_counts: tuple = ()  # words per class (index NOUN, PARTICLE, ...), counted once
    unknown_count: int = 0

    @property
    def words(self) -> int:
        return len(self.classes)

    def share(self, word_class: int) -> float:
        return float(self.class_counts[word_class]) / self.words if self.words else 0.0

    @property
    def unknown_share(self) -> float:
        return float(self.unknown_count) / self.words if self.words else 0.0


_POS_ID = _WORD_ID = None  # Morpheme.part_of_speech_id / .word_id, bound on first use
_ANALYSES: dict[tuple[str, str], Analysis] = {}  # (text, mode) -> analysis; emptied by clear_caches
# Word class of each dictionary word id seen so far in this process (UNSEEN: not yet). A
# dictionary entry has one part of speech, so reading it once per word id is enough.
UNSEEN = 255
_WORD_ID_LIMIT = 1 << 28  # Sudachi keeps the dictionary number in the top 4 bits: system words are below
_WORD_CLASS = np.full(1 << 16, UNSEEN, dtype=np.uint8)  # ~9.4 MB once grown (sudachidict-core 2026)
# Morphemes read from Sudachi at a time. Each morpheme keeps its MorphemeList alive, and with
# it Sudachi's working buffers for that text (~200 KB for a news article): held for a whole
# batch, they added ~55 MB to a worker's peak memory.
READ_MORPHEMES = 1 << 12


def analyze(text: str, mode: str = "C") -> Analysis:
    """Tokenize ``text`` with Sudachi (in pieces if long) and keep word classes and ids.

    Sudachi has no dictionary entries for numbers and Latin words (``2024``,
    ``UTC``): they come out as out-of-vocabulary words, but they are not noise,
    so ``unknown`` counts only the out-of-vocabulary words that are not ASCII.
    Results are cached until :func:`clear_caches`; :func:`analyze_many` fills
    the cache for many texts at once, which is cheaper per text.

    >>> a = analyze("吾輩は猫である。2024年UTC")
    >>> a.words, round(a.share(NOUN), 2), int(a.unknown.sum())
    (8, 0.5, 0)
    """
    found = _ANALYSES.get((text, mode))
    return found if found is not None else analyze_many([text], mode)[0]


def analyze_many(texts: list[str], mode: str = "C") -> list[Analysis]:
    """:func:`analyze` for each of ``texts``, with the array work done once for all of them.

    Per text only Sudachi's ``tokenize`` runs; the morphemes of many texts are
    read together (:func:`_read_morphemes`), and word classes, masks and counts
    are a few array operations over the concatenation, each text's arrays
    views into it (per text, the same steps were ~20 small numpy calls).
    What remains around ``tokenize`` is mostly making a Python object of each
    morpheme and reading its word id: ~11% of ``tokenize``'s time on news
    articles, which SudachiPy's API offers no way around.
    """
    tokenizer = _tokenizer(mode)
    parts, sizes, pending = [], [], []
    for text in texts:
        size = 0
        for piece in split_for_sudachi(text):
            before = len(pending)
            pending += tokenizer.tokenize(piece)
            size += len(pending) - before
            if len(pending) >= READ_MORPHEMES:
                parts.append(_read_morphemes(pending))
                pending = []
        sizes.append(size)
    parts.append(_read_morphemes(pending))
    classes, ids, unknown = (np.concatenate(arrays) for arrays in zip(*parts))
    words = classes != SYMBOL
    text_of = np.repeat(np.arange(len(texts)), sizes)[words]  # which text each word belongs to
    classes, ids, unknown = classes[words], ids[words], unknown[words]
    per_class = np.bincount(text_of * (OTHER + 1) + classes, minlength=len(texts) * (OTHER + 1))
    per_class = per_class.reshape(len(texts), OTHER + 1).tolist()
    unknowns = np.bincount(text_of, weights=unknown, minlength=len(texts)).astype(np.int64).tolist()
    ends = np.cumsum(np.bincount(text_of, minlength=len(texts))).tolist()
    if len(_ANALYSES) + len(texts) > CACHE_TEXTS:  # bounded, for callers that never clear
        _ANALYSES.clear()
    results, start = [], 0
    for k, text in enumerate(texts):
        end = ends[k]
        result = Analysis(classes[start:end], ids[start:end], unknown[start:end], tuple(per_class[k]), unknowns[k])
        _ANALYSES[(text, mode)] = result
        results.append(result)
        start = end
    return results


def _read_morphemes(ms: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word classes, word ids and ``unknown`` flags of the morphemes ``ms`` (see :class:`Analysis`).

    Reads each morpheme's word id through SudachiPy's objects (``map`` over
    the method descriptor: no Python loop), but its part of speech only for
    word ids this process has not seen yet (``_WORD_CLASS``; 2-4% of words
    after the first thousand news articles), since reading it for every
    morpheme cost ~6% of ``tokenize``'s time. Out-of-vocabulary words carry their part-of-speech
    id in the low bits of their word id and are then given
    ``OOV_WORD_ID + CRC32`` of their surface, so that different unknown words differ.
    """
    global _POS_ID, _WORD_ID, _WORD_CLASS
    if _POS_ID is None:
        from sudachipy import Morpheme

        _POS_ID, _WORD_ID = Morpheme.part_of_speech_id, Morpheme.word_id
    ids = np.fromiter(map(_WORD_ID, ms), dtype=np.int64, count=len(ms))
    classes = _WORD_CLASS[np.minimum(ids, len(_WORD_CLASS) - 1)]  # the last slot stays UNSEEN
    oov = np.flatnonzero(ids >= OOV_WORD_ID)  # ~1 word in 10
    classes[oov] = _pos_classes()[ids[oov] - OOV_WORD_ID]
    todo = np.flatnonzero(classes == UNSEEN)
    if len(todo):
        pos = np.fromiter(map(_POS_ID, map(ms.__getitem__, todo.tolist())), dtype=np.int64, count=len(todo))
        classes[todo] = _pos_classes()[pos]
        learn = todo[ids[todo] < _WORD_ID_LIMIT]
        if len(learn):
            top = int(ids[learn].max())
            if top >= len(_WORD_CLASS) - 1:  # grow by whole MiB, keeping a last slot that is never learned
                grown = np.full(-(-(top + 2) // (1 << 20)) << 20, UNSEEN, dtype=np.uint8)
                grown[:len(_WORD_CLASS)] = _WORD_CLASS
                _WORD_CLASS = grown
            _WORD_CLASS[ids[learn]] = classes[learn]
    unknown = np.zeros(len(ids), dtype=bool)
    if len(oov):
        surfaces = [ms[i].surface() for i in oov.tolist()]
        ids[oov] = np.fromiter(map(zlib.crc32, map(str.encode, surfaces)), dtype=np.int64, count=len(oov))
        ids[oov] += OOV_WORD_ID
        unknown[oov] = [not s.isascii() for s in surfaces]
    return classes, ids, unknown


def clear_caches() -> None:
    """Drop the cached analyses (the pipeline does after each batch of documents)."""
    _ANALYSES.clear()


class _MorphologyFilter(Filter):
    mode: str
    word_level: ClassVar[bool] = True  # the pipeline runs these over a whole batch (process_docs)

    def prepare(self, docs: list[Document]) -> None:
        """Analyze, in one :func:`analyze_many`, those of ``docs`` not analyzed yet."""
        todo = list({d.text: None for d in docs if (d.text, self.mode) not in _ANALYSES})
        if todo:
            analyze_many(todo, self.mode)

    def _analysis(self, doc: Document) -> Analysis:
        return analyze(doc.text, self.mode)

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

    def filter(self, doc: Document) -> FilterResult:
        return True if self._analysis(doc).words >= self.min_words else (False, "too_few_words")


@dataclass
class NounRatio(_MorphologyFilter):
    """Drop documents that are mostly nouns: keyword lists, tag clouds, menus.

    >>> NounRatio().filter(Document("東京 大阪 名古屋 札幌 福岡 温泉 旅館 ホテル 格安 予約"))
    (False, 'too_many_nouns')
    >>> NounRatio().filter(Document("週末は友達と京都へ行って、お寺を見て回りました。"))
    True
    """

    name: ClassVar[str] = "noun_ratio"
    reasons: ClassVar[tuple[str, ...]] = ("too_many_nouns",)
    max_ratio: float = 0.7
    """Greatest share of words that are nouns."""
    mode: str = "C"
    """Sudachi split mode."""

    def __post_init__(self) -> None:
        self._check_fraction("max_ratio", self.max_ratio)
        self._check_mode()

    def filter(self, doc: Document) -> FilterResult:
        return True if self._analysis(doc).share(NOUN) <= self.max_ratio else (False, "too_many_nouns")


@dataclass
class FunctionWordRatio(_MorphologyFilter):
    """Drop documents without enough particles and auxiliary verbs (は が を に です ます).

    Japanese sentences are held together by them; their absence marks lists,
    titles, tables and text in other languages.

    >>> FunctionWordRatio().filter(Document("新製品 発表 限定 価格 送料 無料"))
    (False, 'too_few_function_words')
    >>> FunctionWordRatio().filter(Document("雨が降ったので、試合は中止になりました。"))
    True
    """

    name: ClassVar[str] = "function_word_ratio"
    reasons: ClassVar[tuple[str, ...]] = ("too_few_function_words",)
    min_ratio: float = 0.15
    """Least share of words that are particles (助詞) or auxiliary verbs (助動詞)."""
    mode: str = "C"
    """Sudachi split mode."""

    def __post_init__(self) -> None:
        self._check_fraction("min_ratio", self.min_ratio)
        self._check_mode()

    def filter(self, doc: Document) -> FilterResult:
        a = self._analysis(doc)
        share = a.share(PARTICLE) + a.share(AUX_VERB)
        return True if share >= self.min_ratio else (False, "too_few_function_words")


@dataclass
class UnknownWordRatio(_MorphologyFilter):
    """Drop documents with many words Sudachi's dictionary does not know (mojibake, noise).

    >>> UnknownWordRatio().filter(Document("ｑｚｘ ｗｖｋ ｊｊｑ ｘｘｚ ｐｑｒ は です"))
    (False, 'too_many_unknown_words')
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

    def filter(self, doc: Document) -> FilterResult:
        return True if self._analysis(doc).unknown_share <= self.max_ratio else (False, "too_many_unknown_words")


@dataclass
class WordNgramRepetition(_MorphologyFilter):
    """Drop documents where word n-grams repeat too often (spam, generated filler).

    The share is the fraction of word n-grams that repeat an earlier one
    (words are compared by Sudachi word id, unknown words by their surface).

    >>> WordNgramRepetition().filter(Document("今すぐ登録して稼ごう。" * 5 + "簡単です。"))
    (False, 'repeated_word_ngrams')
    """

    name: ClassVar[str] = "word_ngram_repetition"
    reasons: ClassVar[tuple[str, ...]] = ("repeated_word_ngrams",)
    n: int = 3
    """Words per n-gram."""
    max_share: float = 0.3
    """Greatest share of word n-grams that repeat an earlier one."""
    mode: str = "C"
    """Sudachi split mode."""

    def __post_init__(self) -> None:
        self._check_fraction("max_share", self.max_share)
        self._check_positive("n", self.n)
        self._check_mode()

    def filter(self, doc: Document) -> FilterResult:
        ids = self._analysis(doc).word_ids
        if len(ids) < self.n:
            return True
        count = len(ids) - self.n + 1
        grams = ids[:count].copy()  # int64 arithmetic on arrays wraps silently, as a hash should
        for k in range(1, self.n):
            grams *= np.int64(1_000_003)
            grams += ids[k:count + k]
        grams.sort()
        distinct = 1 + int(np.count_nonzero(grams[1:] != grams[:-1]))
        repeated = 1.0 - distinct / len(grams)
        return True if repeated <= self.max_share else (False, "repeated_word_ngrams")
