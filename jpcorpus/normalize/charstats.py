"""Character classes and character n-gram hashes of a text, computed once.

The character-level filters and the near-duplicate fingerprint all look at
the same text several times (hiragana share, katakana share, n-gram shares,
shingles). This module does that work with numpy over the text's code points
and caches the result for the last few texts, so a document that goes through
eight filters is scanned once, not eight times.

>>> s = char_stats("ねこがいる。ネコ")
>>> (s.hiragana, s.katakana, s.kanji, s.japanese, s.visible)
(5, 2, 0, 8, 8)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Code point ranges (inclusive). Half-width katakana are folded by NFKC before
# the filters run, but they are counted as katakana in case a profile skips NFKC.
HIRAGANA = ((0x3041, 0x309F),)
KATAKANA = ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
KANJI = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F), (0x3005, 0x3007))
# Japanese punctuation and brackets (、。「」『』〜…) count as Japanese text.
JAPANESE_PUNCT = ((0x3000, 0x3004), (0x3008, 0x303F), (0x2026, 0x2026), (0x2025, 0x2025))

_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class CharStats:
    """Counts of character classes in one text (whitespace excluded from ``visible``)."""

    hiragana: int
    katakana: int
    kanji: int
    japanese: int  # hiragana + katakana + kanji + Japanese punctuation
    visible: int  # characters that are not whitespace

    def share(self, count: int) -> float:
        return count / self.visible if self.visible else 0.0


@lru_cache(maxsize=4)
def codepoints(text: str) -> np.ndarray:
    """The text's code points as a uint32 array (cached: filters share it)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _class_pattern(*ranges) -> re.Pattern:
    return re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for group in ranges for lo, hi in group) + "]")


_HIRAGANA, _KATAKANA, _KANJI, _PUNCT = (_class_pattern(r) for r in (HIRAGANA, KATAKANA, KANJI, JAPANESE_PUNCT))
_SPACE = re.compile(r"\s")


def _count(pattern: re.Pattern, text: str) -> int:
    return pattern.subn("", text)[1]  # regex beats numpy on the many short texts


@lru_cache(maxsize=4)
def char_stats(text: str) -> CharStats:
    """Class counts of ``text`` (cached for the last few texts)."""
    hira, kata, kanji = _count(_HIRAGANA, text), _count(_KATAKANA, text), _count(_KANJI, text)
    japanese = hira + kata + kanji + _count(_PUNCT, text)
    return CharStats(hira, kata, kanji, japanese, len(text) - _count(_SPACE, text))


@lru_cache(maxsize=16)
def _poly_hashes(text: str, n: int) -> np.ndarray:
    """Polynomial hashes of the n-grams, built from the (n-1)-gram ones (cached)."""
    cp = codepoints(text).astype(np.uint64)
    if n == 1:
        return cp + np.uint64(1)
    shorter = _poly_hashes(text, n - 1)
    with np.errstate(over="ignore"):
        return shorter[:-1] * _MIX + cp[n - 1:] + np.uint64(1)


def ngram_hashes(text: str, n: int, mixed: bool = True) -> np.ndarray:
    """64-bit hashes of every character n-gram of ``text``, in order.

    A polynomial hash over the code points followed (``mixed``) by a splitmix64
    finaliser, so that equal n-grams get equal hashes and different ones look
    random (MinHash needs the latter). Texts shorter than ``n`` give one hash
    of the whole text.

    >>> h = ngram_hashes("ねこねこ", 2)
    >>> len(h), h[0] == h[2], h[0] == h[1]
    (3, True, False)
    """
    n = max(1, min(n, len(text)))
    h = _poly_hashes(text, n) if text else np.zeros(1, dtype=np.uint64)
    return mix64(h) if mixed else h


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection of uint64 that scrambles every bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def top_ngram_share(text: str, n: int) -> float:
    """Share of characters covered by the single most frequent n-gram.

    Overlapping occurrences are counted, so the share is capped at 1.0.

    >>> top_ngram_share("ははははは", 2)
    1.0
    >>> round(top_ngram_share("ねこがいる。いぬもいる。", 2), 2)
    0.33
    """
    if len(text) < n:
        return 0.0
    _, counts = np.unique(ngram_hashes(text, n, mixed=False), return_counts=True)
    return min(1.0, float(counts.max()) * n / len(text))


def duplicate_ngram_share(text: str, n: int) -> float:
    """Share of characters inside n-grams that occur more than once in the text.

    >>> duplicate_ngram_share("あいうえおあいうえお", 5)
    1.0
    >>> duplicate_ngram_share("あいうえおかきくけこ", 5)
    0.0
    """
    if len(text) < n:
        return 0.0
    h = ngram_hashes(text, n, mixed=False)
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    dup_start = counts[inverse] > 1
    # Mark every character covered by a duplicated n-gram: +1 at its start, -1 after its end.
    starts = np.flatnonzero(dup_start)
    edge = np.bincount(starts, minlength=len(text) + 1) - np.bincount(starts + n, minlength=len(text) + 1)
    covered = np.cumsum(edge[:-1]) > 0
    return float(covered.sum()) / len(text)
