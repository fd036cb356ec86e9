"""Exact and near-duplicate removal, streaming, with memory bounded per document.

Deduplication is split in two so that the result never depends on the number
of workers: ``fingerprint(text)`` is pure and runs in the worker processes
with the other per-document steps; ``check(fingerprint)`` runs in the main
process, in input order, and remembers only fixed-size 64-bit keys (never
text) in a :class:`FingerprintTable`. The first copy of a document is kept,
later copies are dropped.

Memory: 8 bytes per key at a load of at most 1/2, so about 16 bytes per key;
``exact_dedup`` stores 1 key per kept document and ``near_dedup`` one per band
(14 by default) plus, to confirm candidates, which document owns each band key
(4 bytes a slot) and 16 bits of each of the 112 MinHash values: roughly 600 bytes
per kept document, 600 MB for a million (~250 with ``verify: false``).

Near duplicates: MinHash over character 5-gram shingles with LSH banding. See
docs/normalize.md for why character 5-grams (Japanese has no spaces; five
characters are about two or three words; no dictionary needed, so it is cheap
and stable) and for the threshold the bands give.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from jpcorpus.normalize.charstats import codepoints, mix64, ngram_hashes, poly_hashes
from jpcorpus.normalize.steps import FilterResult, Step


_BLOCK = 4096  # shingles per MinHash block: 112 permutations x 4096 x 4 bytes = 1.8 MB


class FingerprintTable:
    """A set of 64-bit keys in one flat array (open addressing, linear probing).

    The array is an ``array('Q')``, not numpy: probing reads single slots, and
    ``array`` returns them as Python ints about three times faster.

    >>> t = FingerprintTable()
    >>> t.add(42), t.add(42), 42 in t, 7 in t, len(t)
    (True, False, True, False, 1)
    """

    def __init__(self, capacity: int = 1 << 16):
        self._keys = array("Q", bytes(8 * capacity))  # 0 marks an empty slot
        self._mask = capacity - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return len(self._keys) * self._keys.itemsize

    def _slot(self, key: int) -> int:
        key = key or 1  # 0 is the empty marker
        i = key & self._mask
        keys = self._keys
        while (k := keys[i]) and k != key:
            i = (i + 1) & self._mask
        return i

    def __contains__(self, key: int) -> bool:
        return bool(self._keys[self._slot(int(key))])

    def add(self, key: int) -> bool:
        """Insert ``key``; True if it was not there before."""
        key = int(key) or 1
        i = self._slot(key)
        if self._keys[i]:
            return False
        self._keys[i] = key
        self._size += 1
        if 2 * self._size > len(self._keys):
            self._grow()
        return True

    def _grow(self) -> None:
        old = [key for key in self._keys if key]
        self._keys = array("Q", bytes(16 * len(self._keys)))
        self._mask = len(self._keys) - 1
        self._size = 0
        for key in old:
            self._keys[self._slot(key)] = key
            self._size += 1


class FingerprintMap(FingerprintTable):
    """A :class:`FingerprintTable` that also remembers a 32-bit value per key (the first one given).

    >>> m = FingerprintMap()
    >>> m.setdefault(42, 7), m.setdefault(42, 9), m.get(42), m.get(5)
    (7, 7, 7, None)
    """

    def __init__(self, capacity: int = 1 << 16):
        super().__init__(capacity)
        self._values = array("I", bytes(4 * capacity))

    @property
    def nbytes(self) -> int:
        return super().nbytes + len(self._values) * self._values.itemsize

    def get(self, key: int) -> int | None:
        i = self._slot(int(key))
        return self._values[i] if self._keys[i] else None

    def setdefault(self, key: int, value: int) -> int:
        """The value stored for ``key``, storing ``value`` first if the key is new."""
        key = int(key) or 1
        i = self._slot(key)
        if self._keys[i]:
            return self._values[i]
        self._keys[i], self._values[i] = key, value
        self._size += 1
        if 2 * self._size > len(self._keys):
            self._grow()
        return value

    def add(self, key: int) -> bool:  # a map needs a value: use setdefault
        raise TypeError("FingerprintMap.add: use setdefault(key, value)")

    def _grow(self) -> None:
        old = [(k, v) for k, v in zip(self._keys, self._values) if k]
        self._keys = array("Q", bytes(16 * len(self._keys)))
        self._values = array("I", bytes(8 * len(self._values)))
        self._mask = len(self._keys) - 1
        self._size = 0
        for key, value in old:
            i = self._slot(key)
            self._keys[i], self._values[i] = key, value
            self._size += 1


class Deduplicator(Step):
    """A step whose fingerprint is computed anywhere and whose check runs in input order."""

    def fingerprint(self, text: str):  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprints(self, texts: list[str]) -> list:
        """``[fingerprint(t) for t in texts]``; a step may compute them for a whole batch at once."""
        return [self.fingerprint(text) for text in texts]

    def check(self, fingerprint) -> FilterResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def memory_bytes(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class ExactDedup(Deduplicator):
    """Drop documents whose normalized text equals an earlier kept document's.

    The key is an 8-byte BLAKE2b digest of the text (collisions: about one in
    10^19 per pair, i.e. none in practice below billions of documents).

    >>> d = ExactDedup()
    >>> [d.check(d.fingerprint(t)) for t in ("猫である。", "犬である。", "猫である。")]
    [True, True, (False, 'exact_duplicate')]
    """

    name: ClassVar[str] = "exact_dedup"
    reasons: ClassVar[tuple[str, ...]] = ("exact_duplicate",)

    def __post_init__(self) -> None:
        self._seen = FingerprintTable()

    def fingerprint(self, text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")

    def check(self, fingerprint: int) -> FilterResult:
        return True if self._seen.add(fingerprint) else (False, "exact_duplicate")

    def memory_bytes(self) -> int:
        return self._seen.nbytes


@dataclass
class NearDedup(Deduplicator):
    """Drop documents whose MinHash shares a whole LSH band with an earlier kept one
    and, with ``verify``, agrees with it on at least ``threshold`` of all MinHash values.

    With ``num_bands`` b and ``rows_per_band`` r, two documents whose shingle
    sets have Jaccard similarity s become candidates with probability
    1 - (1 - s^r)^b: with b=14, r=8 that is 50% at s=0.72 and over 95% at s=0.82,
    but also 21% at s=0.6 and 5% at s=0.5. The fraction of equal values among the
    112 estimates s (standard error ~0.045 at s=0.6), so ``verify`` keeps the
    candidates below ``threshold`` that banding alone would drop.

    >>> d = NearDedup()
    >>> a = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" * 3
    >>> d.check(d.fingerprint(a)), d.check(d.fingerprint(a + "以上。"))
    (True, (False, 'near_duplicate'))
    >>> d.check(d.fingerprint("今日は朝から雨が降っていて、駅まで歩くのが大変だった。"))
    True
    """

    name: ClassVar[str] = "near_dedup"
    reasons: ClassVar[tuple[str, ...]] = ("near_duplicate",)
    ngram: int = 5
    """Characters per shingle."""
    num_bands: int = 14
    """LSH bands (more bands: more candidates, lower threshold)."""
    rows_per_band: int = 8
    """MinHash values per band (more rows: fewer candidates, higher threshold)."""
    seed: int = 1
    """Seed of the MinHash permutations (change it and fingerprints change)."""
    verify: bool = True
    """Confirm a candidate against the earlier document's signature before dropping it
    (keeps 16 bits of each MinHash value per kept document: ~224 bytes more each)."""
    threshold: float = 0.7
    """With ``verify``: the least share of equal MinHash values (estimated Jaccard
    similarity of the two shingle sets) for a candidate to be dropped."""
    max_candidates: int = 64
    """In a run (the staged form, :mod:`jpcorpus.dedup_stages`): a document is compared with
    at most this many earlier documents of each band bucket it is in, the earliest ones
    (bounds the work on buckets that thousands of templated pages share)."""

    def __post_init__(self) -> None:
        for key in ("ngram", "num_bands", "rows_per_band", "max_candidates"):
            self._check_positive(key, getattr(self, key))
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"{self.name}.threshold must be in (0, 1], got {self.threshold!r}")
        rng = np.random.default_rng(self.seed)
        num_perm = self.num_bands * self.rows_per_band
        # 32-bit permutations x -> a*x + b mod 2^32 (a odd: a bijection): half the memory
        # traffic of 64-bit ones, and 2^32 values are plenty to estimate Jaccard similarity.
        self._a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint32) | np.uint32(1)
        self._b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
        self._salt = mix64(np.arange(1, self.num_bands + 1, dtype=np.uint64))
        self._num_perm = num_perm
        self._min_equal = math.ceil(self.threshold * num_perm - 1e-9)
        self._seen = FingerprintMap() if self.verify else FingerprintTable()
        self._signatures = array("H")  # with verify: 16 bits of each MinHash value, kept documents in order
        self._kept = 0

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature: the least permuted hash per permutation."""
        return self.signatures([text])[0]

    def fingerprint(self, text: str) -> np.ndarray:
        """One 64-bit key per band (the band's rows hashed together, salted by band); with
        ``verify``, followed by the low 16 bits of every MinHash value, four to a uint64."""
        return self.fingerprints([text])[0]

    def _shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The shingle hashes of all ``texts``, one after the other, and where each text's start.

        The polynomial hash of an n-gram depends only on its characters, so the
        n-grams of the texts are hashed together over their concatenation and the
        n-grams that straddle two texts are left out. A text shorter than ``ngram``
        has one shingle, the hash of the whole text (see ``ngram_hashes``).
        """
        n = self.ngram
        lengths = np.array([len(t) for t in texts], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)))
        counts = np.maximum(lengths - n + 1, 1)
        if len(texts) == 1 or lengths.min() < n:  # short texts: one at a time, as ngram_hashes does
            h = np.concatenate([ngram_hashes(t, n) for t in texts])
        else:
            h = poly_hashes(codepoints("".join(texts)), n)
            # keep the n-grams that start at least n - 1 characters before their text ends
            h = mix64(h[np.arange(len(h)) < np.repeat(starts[1:] - n + 1, lengths)[:len(h)]])
        return (h >> np.uint64(32)).astype(np.uint32), np.concatenate(([0], np.cumsum(counts)[:-1]))

    def signatures(self, texts: list[str]) -> np.ndarray:
        """The MinHash signatures of ``texts`` (one row each), over blocks of ~4k shingles.

        A block is (permutations x shingles), so that each text's minimum is a
        contiguous reduction (``minimum.reduceat`` along the rows): twice as fast
        as the other layout. Repeated shingles change no minimum, so they stay.
        """
        shingles, firsts = self._shingles(texts)
        bounds = np.append(firsts, len(shingles))
        sig = np.empty((len(texts), len(self._a)), dtype=np.uint32)
        a, b = self._a[:, None], self._b[:, None]
        doc = 0
        while doc < len(texts):
            # whole texts up to _BLOCK shingles per block; a longer text alone, in _BLOCK slices
            last = max(doc + 1, int(np.searchsorted(bounds, bounds[doc] + _BLOCK, side="right")) - 1)
            lo, hi = bounds[doc], bounds[last]
            for start in range(lo, hi, _BLOCK):
                block = a * shingles[None, start:min(start + _BLOCK, hi)]  # uint32: wraps mod 2^32
                block += b
                if hi - lo <= _BLOCK:
                    sig[doc:last] = np.minimum.reduceat(block, bounds[doc:last] - lo, axis=1).T
                elif start == lo:
                    sig[doc] = block.min(axis=1)
                else:
                    np.minimum(sig[doc], block.min(axis=1), out=sig[doc])
            doc = last
        return sig

    def fingerprints(self, texts: list[str]) -> list[np.ndarray]:
        """The band keys of ``texts``, computed for all of them at once."""
        if not texts:
            return []
        rows = self.signatures(texts).reshape(len(texts), self.num_bands, self.rows_per_band)
        keys = np.repeat(self._salt[None, :], len(texts), axis=0)
        for j in range(self.rows_per_band):
            keys = mix64(keys ^ rows[:, :, j].astype(np.uint64))
        if not self.verify:
            return list(keys)
        low = (rows.reshape(len(texts), -1) & np.uint32(0xFFFF)).astype(np.uint16)
        pad = (-low.shape[1]) % 4
        if pad:
            low = np.concatenate([low, np.zeros((len(texts), pad), dtype=np.uint16)], axis=1)
        return list(np.concatenate([keys, np.ascontiguousarray(low).view(np.uint64)], axis=1))

    def check(self, fingerprint: np.ndarray) -> FilterResult:
        keys = fingerprint[:self.num_bands].tolist()
        if not self.verify:
            if any(key in self._seen for key in keys):
                return False, "near_duplicate"
            for key in keys:
                self._seen.add(key)
            return True
        num_perm = self._num_perm
        signature = fingerprint[self.num_bands:].view(np.uint16)[:num_perm]
        owners = {owner for key in keys if (owner := self._seen.get(key)) is not None}
        for owner in sorted(owners):
            earlier = np.array(self._signatures[owner * num_perm:(owner + 1) * num_perm], dtype=np.uint16)
            if np.count_nonzero(earlier == signature) >= self._min_equal:
                return False, "near_duplicate"
        self._signatures.frombytes(signature.tobytes())
        for key in keys:
            self._seen.setdefault(key, self._kept)
        self._kept += 1
        return True

    def memory_bytes(self) -> int:
        return self._seen.nbytes + len(self._signatures) * self._signatures.itemsize
