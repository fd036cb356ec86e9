"""Sudachi morphological analysis (sudachidict-core) for the word-level filters.

Whitespace-based word rules (Gopher, C4) do not work for Japanese, which has
no spaces. The filters of :mod:`jpcorpus.normalize.word_filters` count real
morphemes instead, and all of them read one :func:`analyze` result per
document (cached), so a document is tokenized once however many of these
filters a profile lists.
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

import numpy as np

from jpcorpus.normalize.charstats import char_stats_many

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
# Out-of-vocabulary words that are not noise: transliterated names and loanwords (katakana
# only), and numbers written in kanji or digits (一一〇, 二〇二四, 3.14).
_NAME_OR_NUMBER = re.compile(r"[ァ-ヺー・=ヽヾ]+|[0-9０-９〇一二三四五六七八九十百千万億兆・.,]+")
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
    unknown: np.ndarray  # bool: out of the dictionary, and not ASCII, katakana only or a number
    class_counts: tuple = ()  # words per class (index NOUN, PARTICLE, ...), counted once
    unknown_count: int = 0
    noun_units: int = 0  # runs of consecutive nouns (joined by nothing, ・ or =): a compound counts once

    @property
    def words(self) -> int:
        return len(self.classes)

    def share(self, word_class: int) -> float:
        return float(self.class_counts[word_class]) / self.words if self.words else 0.0

    @property
    def units(self) -> int:
        """Words, with each compound noun (``2011年4月7日``, ``ジョン・F・ケネディ``) counted once."""
        return self.words - self.class_counts[NOUN] + self.noun_units if self.words else 0

    def unit_share(self, word_class: int) -> float:
        """Share of :attr:`units` in ``word_class`` (compound nouns counted once)."""
        count = self.noun_units if word_class == NOUN else self.class_counts[word_class]
        return float(count) / self.units if self.units else 0.0

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
    ``UTC``), nor for many transliterated names (``ヴィトゲンシュタイン``) and kanji
    numerals (``一一〇``): they come out as out-of-vocabulary words, but they are
    not noise, so ``unknown`` counts only the out-of-vocabulary words that are
    neither ASCII, nor katakana only, nor a number.
    Results are cached until :func:`clear_caches`; :func:`analyze_many` fills
    the cache for many texts at once, which is cheaper per text.

    >>> a = analyze("吾輩は猫である。2024年UTC")
    >>> a.words, round(a.share(NOUN), 2), int(a.unknown.sum()), a.noun_units
    (8, 0.5, 0, 2)
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

    A text written in katakana where modern text uses hiragana (katakana-kanji
    orthography, a children's text in katakana: :func:`is_katakana_orthography`)
    is analyzed with its katakana read as hiragana (:func:`as_analyzed`):
    Sudachi's dictionary writes particles and endings in hiragana, and took
    ``ガ`` and ``ニ`` for nouns.
    """
    tokenizer = _tokenizer(mode)
    parts, sizes, pending = [], [], []
    for text, stats in zip(texts, char_stats_many(texts)):
        size = 0
        if stats.katakana > stats.hiragana and is_katakana_orthography(text, stats.hiragana, stats.visible):
            text = as_analyzed(text)
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
    token_text = np.repeat(np.arange(len(texts)), sizes)
    units = _noun_units(classes, ids, token_text, len(texts))
    words = classes != SYMBOL
    text_of = token_text[words]  # which text each word belongs to
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
        result = Analysis(classes[start:end], ids[start:end], unknown[start:end], tuple(per_class[k]), unknowns[k],
                          units[k])
        _ANALYSES[(text, mode)] = result
        results.append(result)
        start = end
    return results


# What katakana orthography writes in katakana and loanwords and names never are: the particle ヲ,
# a particle standing alone (between kanji, or between spaces), polite and classical endings.
_KATAKANA_GRAMMAR = re.compile(r"ヲ|(?<![ァ-ヺー])[ハガニヘトモノデ](?![ァ-ヺー])|[ァ-ヶ](?:マス|マシタ|デス|ナリ|タリ|ケリ)")


def is_katakana_orthography(text: str, hiragana: int, visible: int) -> bool:
    """Whether ``text`` writes its particles and endings in katakana: such marks (ヲ, a lone ハ or ニ,
    マス, タリ) are at least one in 50 characters. Called for texts with more katakana than hiragana.

    >>> is_katakana_orthography("余ハ幼キ頃ヨリ山ヲ好ミタリ。", 0, 14)
    True
    >>> t = "ファイル 日清食品 時間 発表 サイト マラソン レース 東京 選手 ランナー オリンピック"
    >>> is_katakana_orthography(t, 0, len(t))
    False
    """
    return 50 * len(_KATAKANA_GRAMMAR.findall(text)) >= visible


_KATAKANA_TO_HIRAGANA = {c: c - 0x60 for c in range(0x30A1, 0x30F7)} | {0x30FD: 0x309D, 0x30FE: 0x309E}


def as_analyzed(text: str) -> str:
    """``text`` with katakana turned into hiragana, for the analysis of text written in katakana.

    >>> as_analyzed("余ハ幼キ頃ヨリ山ヲ好ミタリ。")
    '余は幼き頃より山を好みたり。'
    """
    return text.translate(_KATAKANA_TO_HIRAGANA)


@lru_cache(maxsize=None)
def _joiner_ids() -> np.ndarray:
    """Word ids of the symbols that join the parts of one name: ・ and = (after NFKC)."""
    return np.array(sorted({m.word_id() for text in ("・", "=", "＝") for m in _tokenizer("C").tokenize(text)}),
                    dtype=np.int64)


def _noun_units(classes: np.ndarray, ids: np.ndarray, text_of: np.ndarray, texts: int) -> list[int]:
    """Runs of consecutive nouns per text, over all tokens (symbols included: they end a run, but ・ and =
    do not). Sudachi cuts a date or a foreign name into many nouns; as a run it counts once."""
    keep = ~np.isin(ids, _joiner_ids()) | (classes != SYMBOL)
    noun, owner = classes[keep] == NOUN, text_of[keep]
    starts = noun.copy()
    starts[1:] &= ~(noun[:-1] & (owner[1:] == owner[:-1]))
    return np.bincount(owner[starts], minlength=texts).tolist()


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
        unknown[oov] = [not (s.isascii() or _NAME_OR_NUMBER.fullmatch(s)) for s in surfaces]
    return classes, ids, unknown


def clear_caches() -> None:
    """Drop the cached analyses (the pipeline does after each batch of documents)."""
    _ANALYSES.clear()
