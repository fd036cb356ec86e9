"""Character classes and character n-gram hashes of a text, computed once.

The character-level filters and the near-duplicate fingerprint all look at
the same text several times (hiragana share, katakana share, n-gram shares,
shingles). This module does that work with numpy over the text's code points
and caches the result for the last ``CACHE_TEXTS`` texts, so a document that goes
through eight filters is scanned once, not eight times.

Cost, measured on Wikinews (~750 characters a document): the class counts are
one ``searchsorted`` + ``bincount`` over the code points (~30 us; five regex
passes took ~150 us); each n-gram share is one sort of the document's hashes
plus a handful of whole-array operations. On short documents the number of
numpy calls, not their size, is the cost, so each function here makes as few
as it can.

>>> s = char_stats("ねこがいる。ネコ 2024!")
>>> (s.hiragana, s.katakana, s.kanji, s.japanese, s.visible, s.digits, s.ascii_symbols)
(5, 2, 0, 8, 13, 4, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Texts whose code points, class counts and n-gram hashes stay cached. The pipeline sends a
# chunk of at most this many documents through each step in turn and clears the caches
# after the chunk (``clear_caches``), so every filter finds its document's numbers here.
CACHE_TEXTS = 32

# Code point ranges (inclusive). Half-width katakana are folded by NFKC before
# the filters run, but they are counted as katakana in case a profile skips NFKC.
HIRAGANA = ((0x3041, 0x309F),)
KATAKANA = ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
KANJI = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F), (0x3005, 0x3007))
# Japanese punctuation and brackets (、。「」『』〜…) count as Japanese text.
JAPANESE_PUNCT = ((0x3000, 0x3004), (0x3008, 0x303F), (0x2026, 0x2026), (0x2025, 0x2025))
# Whitespace: exactly the characters for which str.isspace() is true (what regex \s matches;
# a test checks this list against every code point).
WHITESPACE = ((0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
              (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))
DIGITS = ((0x30, 0x39),)
ASCII_SYMBOLS = ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E))

_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class CharStats:
    """Counts of character classes in one text (whitespace excluded from ``visible``)."""

    hiragana: int
    katakana: int
    kanji: int
    japanese: int  # hiragana + katakana + kanji + Japanese punctuation
    visible: int  # characters that are not whitespace
    digits: int = 0  # ASCII digits (NFKC folds full-width ones to these)
    ascii_symbols: int = 0  # ASCII punctuation and symbols

    def share(self, count: int) -> float:
        return count / self.visible if self.visible else 0.0

    @property
    def letters(self) -> int:
        """Visible characters that are not ASCII digits, punctuation or symbols."""
        return self.visible - self.digits - self.ascii_symbols


@lru_cache(maxsize=CACHE_TEXTS)
def codepoints(text: str) -> np.ndarray:
    """The text's code points as a uint32 array (cached: filters share it)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _class_table(classes: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Cut the code space at every range edge; return the cut points and, per piece, its classes.

    A code point's piece is ``searchsorted(cuts, cp, "right") - 1``; ``member[piece, k]``
    is 1 when the piece lies in class ``k``. Classes may overlap (U+3000 is both
    whitespace and Japanese punctuation), which is why this is a matrix.
    """
    cuts = sorted({0} | {edge for ranges in classes for lo, hi in ranges for edge in (lo, hi + 1)})
    member = np.array([[any(lo <= cut <= hi for lo, hi in ranges) for ranges in classes] for cut in cuts],
                      dtype=np.int64)
    return np.array(cuts, dtype=np.uint32), member


_CUTS, _MEMBER = _class_table((HIRAGANA, KATAKANA, KANJI, JAPANESE_PUNCT, WHITESPACE, DIGITS, ASCII_SYMBOLS))


def char_stats(text: str) -> CharStats:
    """Class counts of ``text`` (cached until :func:`clear_caches`)."""
    found = _STATS.get(text)
    return found if found is not None else char_stats_many([text])[0]


def char_stats_many(texts: list[str]) -> list[CharStats]:
    """:func:`char_stats` of each of ``texts``: one ``searchsorted`` and one ``bincount`` for all.

    >>> [s.hiragana for s in char_stats_many(["ねこ", "ネコ", "猫がいる"])]
    [2, 0, 3]
    """
    if len(_STATS) + len(texts) > 4 * CACHE_TEXTS:  # bounded, for callers that never clear
        _STATS.clear()
    todo = [t for t in dict.fromkeys(texts) if t not in _STATS]
    if todo:
        lengths = [len(t) for t in todo]
        cp = np.frombuffer("".join(todo).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        pieces = np.searchsorted(_CUTS, cp, side="right") - 1
        pieces += np.repeat(np.arange(len(todo)) * len(_CUTS), lengths)  # one row of bins per text
        counts = np.bincount(pieces, minlength=len(todo) * len(_CUTS)).reshape(len(todo), len(_CUTS)) @ _MEMBER
        for text, (hira, kata, kanji, punct, space, digits, symbols) in zip(todo, counts.tolist()):
            _STATS[text] = CharStats(hira, kata, kanji, hira + kata + kanji + punct, len(text) - space, digits, symbols)
    return [_STATS[t] for t in texts]


class _NgramHashes:
    """Polynomial hashes of a text's n-grams, for the n asked for, each built from shorter ones.

    ``h_n[i] = sum((cp[i+k] + 1) * M**(n-1-k) for k < n) mod 2**64``, so
    ``h_{a+b}[i] = h_a[i] * M**b + h_b[i+a]``: n = 10 takes four steps
    (1 -> 2 -> 4 -> 5 -> 10) of two whole-array operations each. uint64
    arithmetic on arrays wraps silently: that wrap is the hash.
    """

    def __init__(self, cp: np.ndarray):
        self.by_n = {1: cp.astype(np.uint64) + np.uint64(1)}

    def get(self, n: int) -> np.ndarray:
        h = self.by_n.get(n)
        if h is None:
            a = n // 2 if n % 2 == 0 else n - 1  # h_n from h_a and h_(n-a)
            left, right = self.get(a), self.get(n - a)
            h = left[:len(left) - (n - a)] * np.uint64(pow(int(_MIX), n - a, 1 << 64))
            h += right[a:]
            self.by_n[n] = h
        return h


@lru_cache(maxsize=CACHE_TEXTS)
def _hashes_of(text: str) -> _NgramHashes:
    return _NgramHashes(codepoints(text))


def poly_hashes(cp: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every n-gram of the code points ``cp`` (n <= len(cp)).

    The hash of an n-gram depends only on its characters, so the hashes of a
    concatenation of texts contain those of each text (used for batches).
    """
    return _NgramHashes(cp).get(n)


# (text, n) -> top_ngram_count / duplicate_ngram_starts (/ duplicate_ngram_share), filled
# for a whole chunk at once by ngram_counts_many and duplicate_ngram_shares_many
# (the n-gram filters' ``prepare``).
_TOP_COUNTS: dict[tuple[str, int], int] = {}
_TOP_BOUNDS: dict[tuple[str, int], int] = {}  # filled by top_ngram_bounds_many
_DUP_STARTS: dict[tuple[str, int], int] = {}
_DUP_SHARES: dict[tuple[str, int], float] = {}  # filled by duplicate_ngram_shares_many
_STATS: dict[str, CharStats] = {}  # char_stats, filled a chunk at a time by char_stats_many
_NGRAM_CACHES = (_TOP_COUNTS, _TOP_BOUNDS, _DUP_STARTS, _DUP_SHARES)


def clear_caches() -> None:
    """Drop the cached arrays (the pipeline does after each chunk of documents)."""
    for cached in (codepoints, _hashes_of):
        cached.cache_clear()
    for cache in (*_NGRAM_CACHES, _STATS):
        cache.clear()


def ngram_counts_many(texts: list[str], n: int) -> None:
    """Cache :func:`top_ngram_count` and :func:`duplicate_ngram_starts` of every text, for ``n``.

    One sort for all the texts instead of one per text: each n-gram's key is
    its text's index in the top bits and the low bits of its hash in the rest,
    so equal keys are equal n-grams of the same text and each text's n-grams
    sort together. (58 hash bits for a chunk of 32 texts: two different
    n-grams of one text share a key with probability ~n_grams**2 / 2**58.)
    On short documents the per-text version's cost is its dozen numpy calls,
    not the work: this makes a dozen for the whole chunk.

    >>> ngram_counts_many(["ねこねこねこ", "あいうあいう", "a"], 2)
    >>> top_ngram_count("ねこねこねこ", 2), duplicate_ngram_starts("あいうあいう", 2), top_ngram_count("a", 2)
    (3, 4, 0)
    >>> clear_caches()
    """
    todo = _todo(texts, n, _TOP_COUNTS)
    if len(todo) == 1:  # a long document is a chunk alone: its hashes need no text index
        _, runs = _runs(np.sort(_hashes_of(todo[0]).get(n)))
        _TOP_COUNTS[(todo[0], n)], _DUP_STARTS[(todo[0], n)] = int(runs.max()), int(runs[runs >= 2].sum())
        return
    if not todo:
        return
    keys, shift, _ = _chunk_keys(todo, n)
    keys.sort()
    firsts, runs = _runs(keys)
    run_text = (keys[firsts] >> shift).astype(np.int64)
    top = np.zeros(len(todo), dtype=np.int64)
    np.maximum.at(top, run_text, runs)
    dup = np.bincount(run_text, weights=runs * (runs >= 2), minlength=len(todo)).astype(np.int64)
    for t, count, starts in zip(todo, top.tolist(), dup.tolist()):
        _TOP_COUNTS[(t, n)] = count
        _DUP_STARTS[(t, n)] = starts


def top_ngram_bounds_many(texts: list[str], n: int) -> list[int]:
    """An upper bound of :func:`top_ngram_count` for each of ``texts``, with no sort.

    Every n-gram (keyed by its text, as in :func:`ngram_counts_many`) is counted
    into a bin of a table with about two bins per n-gram; a bin's count is
    at least that of each n-gram in it (other n-grams only add), so the
    greatest bin count over a text's n-grams bounds its top count. On prose it
    is the top count or a little more, which settles the top n-gram limits of
    most documents; the rest need :func:`ngram_counts_many`. Also cached for
    :func:`top_ngram_bound`.

    >>> bounds = top_ngram_bounds_many(["ねこねこねこ", "あいうえお", "a"], 2)
    >>> bounds[0] >= 3, bounds[1] >= 1, bounds[2]
    (True, True, 0)
    >>> clear_caches()
    """
    todo = _todo(texts, n, _TOP_BOUNDS)
    if todo:
        keys, _, _ = _chunk_keys(todo, n)
        per_text = np.array([len(t) - n + 1 for t in todo], dtype=np.int64)
        top = np.maximum.reduceat(_bin_counts(keys, 2), np.cumsum(per_text) - per_text)
        for t, bound in zip(todo, top.tolist()):
            _TOP_BOUNDS[(t, n)] = bound
    return [_TOP_BOUNDS[(t, n)] for t in texts]


def top_ngram_counts_many(texts: list[str], n: int) -> None:
    """Cache the exact :func:`top_ngram_count` of every text, without sorting all n-grams.

    As in :func:`top_ngram_bounds_many`, every n-gram is counted into a hash
    bin (4 per n-gram): no n-gram occurs more often than its bin's count.
    Then, per text, (1) the n-grams in its fullest bins are counted exactly,
    which gives a count ``e`` that some n-gram reaches; (2) the n-grams whose
    bin count exceeds ``e`` are counted exactly: the top n-gram, if it occurs
    more than ``e`` times, is among them. Both sets are small (the frequent
    n-grams and what shares their bins), so the two sorts are small; on news
    articles this costs ~2x the bound alone, where sorting every n-gram cost ~8x.

    >>> top_ngram_counts_many(["ねこねこねこ", "あいうえお", "a"], 2)
    >>> top_ngram_count("ねこねこねこ", 2), top_ngram_count("あいうえお", 2), top_ngram_count("a", 2)
    (3, 1, 0)
    >>> clear_caches()
    """
    todo = _todo(texts, n, _TOP_COUNTS)
    if not todo:
        return
    keys, shift, _ = _chunk_keys(todo, n)
    per_text = np.array([len(t) - n + 1 for t in todo], dtype=np.int64)
    counts = _bin_counts(keys, 4)
    bound = np.maximum.reduceat(counts, np.cumsum(per_text) - per_text)
    reached = _exact_top(keys[counts == np.repeat(bound, per_text)], shift, len(todo))
    above = _exact_top(keys[counts > np.repeat(reached, per_text)], shift, len(todo))
    for t, top in zip(todo, np.maximum(reached, above).tolist()):
        _TOP_COUNTS[(t, n)] = top


def _exact_top(keys: np.ndarray, shift: np.uint64, texts: int) -> np.ndarray:
    """Per text (index in the keys' top bits), the greatest number of times one key occurs in ``keys``."""
    top = np.zeros(texts, dtype=np.int64)
    if len(keys):
        distinct, occurrences = np.unique(keys, return_counts=True)
        np.maximum.at(top, (distinct >> shift).astype(np.int64), occurrences)
    return top


def top_ngram_bound(text: str, n: int) -> int | None:
    """The bound :func:`top_ngram_bounds_many` cached for ``text``, else None."""
    return _TOP_BOUNDS.get((text, n))


def duplicate_ngram_shares_many(texts: list[str], n: int) -> None:
    """Cache :func:`duplicate_ngram_starts` and :func:`duplicate_ngram_share` of every text, for ``n``.

    Keys as in :func:`ngram_counts_many`, but one argsort for the chunk, so that
    the duplicated n-grams' positions, and from them the characters they
    cover, come out for every text at once. On news articles the cheap bound
    (n characters per duplicated n-gram) fails for ~40% of documents, each of
    which then needed an argsort of its own.

    >>> duplicate_ngram_shares_many(["あいうえおあいうえお", "あいうえおかきくけこ", "あい"], 5)
    >>> duplicate_ngram_share("あいうえおあいうえお", 5), duplicate_ngram_share("あいうえおかきくけこ", 5)
    (1.0, 0.0)
    >>> clear_caches()
    """
    todo = _todo(texts, n, _DUP_SHARES)
    if not todo:
        return
    counts, covered = _duplicate_coverage(todo, n)
    for t, starts_t, cov in zip(todo, counts.tolist(), covered.tolist()):
        _DUP_STARTS[(t, n)] = starts_t
        _DUP_SHARES[(t, n)] = cov / len(t)


def windowed_duplicate_shares(texts: list[str], n: int, window: int) -> list[float]:
    """Share of each text's characters inside n-grams seen twice *within the same window*.

    Each text is cut into windows of ``window`` characters (a last piece shorter
    than half a window joins the one before; ``window`` 0: the whole text), the
    duplicate coverage is counted in each window, and the covered characters
    are summed over the text's windows. Over a whole text the share grows with
    its length (a long novel repeats any phrase somewhere); over windows it
    does not, and a text shorter than 1.5 windows gets exactly
    :func:`duplicate_ngram_share`. Not cached: the filter calls it once per chunk.

    >>> windowed_duplicate_shares(["あいうえお" * 4, "あいうえおかきくけこ" * 2], 5, 10)
    [1.0, 0.0]
    """
    pieces, owner = [], []
    for k, text in enumerate(texts):
        for piece in _windows(text, window):
            if len(piece) >= n:
                pieces.append(piece)
                owner.append(k)
    covered = np.zeros(len(texts))
    if pieces:
        _, cov = _duplicate_coverage(pieces, n)
        np.add.at(covered, np.array(owner, dtype=np.int64), cov)
    return [float(c) / len(t) if t else 0.0 for c, t in zip(covered.tolist(), texts)]


def _windows(text: str, window: int) -> list[str]:
    """``text`` cut every ``window`` characters; a last piece under half a window joins the one before."""
    if window <= 0 or len(text) < window + window // 2:
        return [text]
    cuts = list(range(0, len(text), window))
    if len(text) - cuts[-1] < window // 2:
        cuts.pop()
    return [text[a:b] for a, b in zip(cuts, cuts[1:] + [len(text)])]


def _duplicate_coverage(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per text (each at least n characters): duplicated n-gram occurrences, characters they cover."""
    keys, shift, valid = _chunk_keys(texts, n)
    # Only n-grams whose bin (8 per n-gram) holds another one can occur twice: the
    # argsort that finds the real repeats needs those alone (~15% of news n-grams).
    may_repeat = np.flatnonzero(_bin_counts(keys, 8) >= 2)
    candidates = keys[may_repeat]
    order = np.argsort(candidates)
    same = candidates[order[1:]] == candidates[order[:-1]]
    dup = np.zeros(len(keys), dtype=bool)  # dup[i]: the i-th n-gram (in text order) occurs twice or more
    dup[may_repeat[order[1:][same]]] = True
    dup[may_repeat[order[:-1][same]]] = True
    starts = np.flatnonzero(dup)
    text_of = (keys[starts] >> shift).astype(np.int64)
    # characters covered by the union of [start, start + n) in each text: each
    # start adds n, or less when the next duplicated n-gram starts within it
    gaps = np.minimum(np.diff(np.flatnonzero(valid)[starts]), n)  # (positions in the concatenation)
    inside = text_of[1:] == text_of[:-1]
    covered = np.bincount(text_of[:-1][inside], weights=gaps[inside], minlength=len(texts))
    counts = np.bincount(text_of, minlength=len(texts))
    covered += n * (counts > 0)
    return counts, covered


def _bin_counts(keys: np.ndarray, per_key: int) -> np.ndarray:
    """For each key, how many of ``keys`` fall in its bin of a table with ~``per_key`` bins per key.

    Equal keys share a bin, so each count is at least the key's own number
    of occurrences (other keys only add). Bins: the top bits of the key times
    an odd constant (Fibonacci hashing); at most 2**20 of them (8 MB of counts),
    so a book-length text alone gets fewer bins per key, not more memory.
    """
    bits = min(20, max(10, (per_key * len(keys) - 1).bit_length()))
    bins = ((keys * _MIX) >> np.uint64(64 - bits)).astype(np.intp)
    return np.bincount(bins, minlength=1 << bits)[bins]


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first key of each run of equal keys, and the run lengths."""
    firsts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    return firsts, np.diff(np.append(firsts, len(sorted_keys)))


def _todo(texts: list[str], n: int, cache: dict) -> list[str]:
    """The distinct texts of at least n characters not in ``cache`` yet (shorter ones get zeros)."""
    if len(cache) + len(texts) > 4 * CACHE_TEXTS:  # bounded, for callers that never clear
        for each in _NGRAM_CACHES:
            each.clear()
    for t in texts:
        if len(t) < n:
            _TOP_COUNTS[(t, n)] = _TOP_BOUNDS[(t, n)] = _DUP_STARTS[(t, n)] = 0
            _DUP_SHARES[(t, n)] = 0.0
    return [t for t in dict.fromkeys(texts) if len(t) >= n and (t, n) not in cache]


def _chunk_keys(texts: list[str], n: int) -> tuple[np.ndarray, np.uint64, np.ndarray]:
    """Keys (text index in the top bits, low bits of the n-gram hash below) of every n-gram
    lying inside one text (texts of at least n characters), in text order; the shift of the
    text index; which n-grams of the concatenation of ``texts`` those are (a mask)."""
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    h = poly_hashes(codepoints("".join(texts)), n)
    valid = np.ones(len(h), dtype=bool)  # drop the n - 1 n-grams that run from each text into the next
    valid[(np.cumsum(lengths)[:-1, None] - np.arange(1, n)).ravel()] = False
    bits = max(1, (len(texts) - 1).bit_length())
    shift = np.uint64(64 - bits)
    keys = np.repeat(np.arange(len(texts), dtype=np.uint64), lengths)[:len(h)] << shift
    keys |= h & np.uint64((1 << (64 - bits)) - 1)
    return keys[valid], shift, valid


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
    h = _hashes_of(text).get(n) if text else np.zeros(1, dtype=np.uint64)
    return mix64(h) if mixed else h


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection of uint64 that scrambles every bit (arrays only)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def top_ngram_count(text: str, n: int) -> int:
    """How often the most frequent character n-gram occurs (overlaps counted; 0 if ``len(text) < n``).

    It never grows with n: every occurrence of an n-gram starts an occurrence of
    its first n - 1 characters, so ``top_ngram_count(t, 2)`` bounds every longer one.

    >>> top_ngram_count("ねこねこねこ", 2), top_ngram_count("ねこねこねこ", 4)
    (3, 2)
    """
    if len(text) < n:
        return 0
    if (cached := _TOP_COUNTS.get((text, n))) is None:
        ngram_counts_many([text], n)
        cached = _TOP_COUNTS[(text, n)]
    return cached


def top_ngram_share(text: str, n: int, count: int | None = None) -> float:
    """Share of characters covered by the single most frequent n-gram (``count`` of it if known).

    Overlapping occurrences are counted, so the share is capped at 1.0.

    >>> top_ngram_share("ははははは", 2)
    1.0
    >>> round(top_ngram_share("ねこがいる。いぬもいる。", 2), 2)
    0.33
    """
    if len(text) < n:
        return 0.0
    top = top_ngram_count(text, n) if count is None else count
    return min(1.0, float(top) * n / len(text))


def duplicate_ngram_starts(text: str, n: int) -> int:
    """How many n-grams of ``text`` occur more than once in it (each occurrence counted).

    Each covers at most n characters, so ``n * duplicate_ngram_starts`` bounds
    the characters :func:`duplicate_ngram_share` counts; it costs one sort, no argsort.

    >>> duplicate_ngram_starts("あいうあいう", 2)
    4
    """
    if len(text) < n:
        return 0
    if (cached := _DUP_STARTS.get((text, n))) is None:
        ngram_counts_many([text], n)
        cached = _DUP_STARTS[(text, n)]
    return cached


def duplicate_ngram_share(text: str, n: int) -> float:
    """Share of characters inside n-grams that occur more than once in the text.

    >>> duplicate_ngram_share("あいうえおあいうえお", 5)
    1.0
    >>> duplicate_ngram_share("あいうえおかきくけこ", 5)
    0.0
    """
    if len(text) < n:
        return 0.0
    if (cached := _DUP_SHARES.get((text, n))) is None:
        duplicate_ngram_shares_many([text], n)
        cached = _DUP_SHARES[(text, n)]
    return cached
