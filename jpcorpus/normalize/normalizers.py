"""Formatters: ``text -> text`` steps that clean without dropping anything.

Run in the order a profile lists them; the shipped profiles use
``unicode_nfkc`` -> ``remove_invisible`` -> ``normalize_whitespace``.
See docs/normalize.md for why each choice was made.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar

from jpcorpus.normalize.steps import Formatter

# The wave dash problem: cp932 decodes 0x8160 as U+FF5E FULLWIDTH TILDE, while
# EUC-JP and ISO-2022-JP decode the same character as U+301C WAVE DASH. NFKC
# turns U+FF5E into an ASCII "~" and leaves U+301C alone, so the same "10〜20"
# would come out two ways depending on the source encoding.
WAVE_DASHES = "\uff5e\u301c"


@dataclass
class UnicodeNfkc(Formatter):
    """Unicode NFKC, with the wave dash unified and a few characters kept as they are.

    NFKC folds full-width ASCII to ASCII (``ＡＢＣ１２３！？`` -> ``ABC123!?``)
    and half-width katakana to full-width (``ｶﾞｯｺｳ`` -> ``ガッコウ``); 、。「」
    are untouched. It would also turn ``…`` into ``...`` and ``‥`` into ``..``,
    which breaks Japanese ellipses (``……`` is one mark in Japanese prose), so
    those are in ``preserve`` by default.

    >>> UnicodeNfkc().format("ＡＢＣ１２３！？ｶﾞｯｺｳ")
    'ABC123!?ガッコウ'
    >>> UnicodeNfkc().format("１０～２０円……（株）")
    '10〜20円……(株)'
    >>> UnicodeNfkc(wave_dash="", preserve="").format("１０～２０円……")
    '10~20円......'
    """

    name: ClassVar[str] = "unicode_nfkc"
    form: str = "NFKC"
    """Unicode normal form: NFKC (default), NFC, NFKD or NFD."""
    wave_dash: str = "\u301c"
    """Write both wave dashes (U+301C, U+FF5E) as this; "" leaves them to NFKC."""
    preserve: str = "…‥"
    """Characters kept exactly as they are (NFKC would expand them)."""

    def __post_init__(self) -> None:
        if self.form not in ("NFKC", "NFC", "NFKD", "NFD"):
            raise ValueError(f"{self.name}.form must be NFKC, NFC, NFKD or NFD, got {self.form!r}")
        pre = {c: self.wave_dash for c in WAVE_DASHES} if self.wave_dash else {}
        if self.form in ("NFKC", "NFKD"):
            pre["\u3000"] = " "  # exactly what NFKC does; done first so that indented text is often already normal
        self._pre = str.maketrans({c: to for c, to in pre.items() if c != to})
        self._pre_chars = tuple(chr(c) for c in self._pre)  # translate only texts that hold one
        # Preserved characters stand in as Unicode noncharacters (U+FDD0..), which
        # NFKC leaves alone and which real text never contains, then come back.
        if len(self.preserve) > 32:
            raise ValueError(f"{self.name}.preserve may list at most 32 characters")
        self._hide = str.maketrans({c: 0xFDD0 + i for i, c in enumerate(self.preserve)})
        self._show = str.maketrans({0xFDD0 + i: c for i, c in enumerate(self.preserve)})
        # The same as (c, stand-in) pairs for str.replace, which is much faster than
        # translate; only when no preserved character is itself a stand-in.
        pairs = [(c, chr(0xFDD0 + i)) for i, c in enumerate(self.preserve)]
        self._pairs = pairs if not any(0xFDD0 <= ord(c) <= 0xFDEF for c in self.preserve) else None

    def format(self, text: str) -> str:
        if any(c in text for c in self._pre_chars):  # str.translate costs ~20 ns a character
            text = text.translate(self._pre)
        if unicodedata.is_normalized(self.form, text):
            return text
        text = self._swap(text, hide=True)
        # No normal form joins characters across a line break, so only the lines
        # that are not yet normal need the (slow) normalisation.
        norm, check = unicodedata.normalize, unicodedata.is_normalized
        text = "\n".join(line if check(self.form, line) else norm(self.form, line) for line in text.split("\n"))
        return self._swap(text, hide=False)

    def _swap(self, text: str, hide: bool) -> str:
        """Preserved characters to their stand-ins (``hide``) or back."""
        if not self.preserve:
            return text
        if self._pairs is None:
            return text.translate(self._hide if hide else self._show)
        for c, stand_in in self._pairs:
            old, new = (c, stand_in) if hide else (stand_in, c)
            if old in text:
                text = text.replace(old, new)
        return text


def _invisible_pattern() -> re.Pattern:
    table: dict[int, None] = {}
    for cp in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0)):
        if chr(cp) not in "\n\t\r":
            table[cp] = None  # C0/C1 controls; newline, tab and CR are left to normalize_whitespace
    for cp in (0x00AD, 0x061C, 0x180E, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
               0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF, 0xFFF9, 0xFFFA, 0xFFFB):
        table[cp] = None  # soft hyphen, zero-width characters, marks, BOM
    for cp in list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A)):
        table[cp] = None  # bidirectional embedding and isolate controls
    return re.compile("[" + "".join(re.escape(chr(cp)) for cp in sorted(table)) + "]+")


@dataclass
class RemoveInvisible(Formatter):
    """Remove control characters, zero-width characters and byte order marks.

    Newlines and tabs stay (``normalize_whitespace`` handles them). Ideographic
    variation selectors (U+E0100..) stay: they pick a kanji glyph, they are not noise.

    >>> RemoveInvisible().format("\\ufeff吾輩は\\u200b猫で\\x07ある。")
    '吾輩は猫である。'
    """

    name: ClassVar[str] = "remove_invisible"
    _PATTERN: ClassVar[re.Pattern] = _invisible_pattern()

    def format(self, text: str) -> str:
        return self._PATTERN.sub("", text)


_LINE_BREAK_CHARS = "\r\u2028\u2029\x85\x0b\x0c"
_LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029\x85\x0b\x0c]")
# Runs of whitespace other than the newline (U+3000 included), except a lone ASCII
# space, which would be replaced by itself: a run that starts with a space and goes
# on, or one that starts with any other such character.
_HSPACE = re.compile("(?: [^\\S\n]+|[^\\S\n ][^\\S\n]*)")


@dataclass
class NormalizeWhitespace(Formatter):
    """Unify newlines, squeeze spaces, keep paragraphs, trim runs of blank lines.

    Every run of horizontal whitespace (tabs, U+3000 ideographic space,
    no-break space) becomes one ASCII space; spaces at the ends of lines go
    (with ``strip_indent``, also the leading U+3000 indentation of Japanese
    paragraphs); at most ``max_blank_lines`` empty lines separate paragraphs.

    >>> NormalizeWhitespace().format("　吾輩は猫である。\\r\\n\\r\\n\\r\\n\\r\\n名前は\\t まだ無い。  \\n")
    '吾輩は猫である。\\n\\n名前は まだ無い。'
    >>> NormalizeWhitespace(strip_indent=False, max_blank_lines=0).format("　一\\n\\n　二")
    ' 一\\n 二'
    """

    name: ClassVar[str] = "normalize_whitespace"
    max_blank_lines: int = 1
    """Longest run of empty lines kept between paragraphs (0 joins paragraphs line by line)."""
    strip_indent: bool = True
    """Remove leading spaces of each line (the full-width paragraph indent)."""

    def __post_init__(self) -> None:
        if self.max_blank_lines < 0:
            raise ValueError(f"{self.name}.max_blank_lines must be >= 0, got {self.max_blank_lines!r}")
        self._blank = re.compile("\n{%d,}" % (self.max_blank_lines + 2))
        self._blank_to = "\n" * (self.max_blank_lines + 1)

    def format(self, text: str) -> str:
        # Each regex pass costs ~10 ns a character; a substring test, a tenth of that:
        # the passes that are rarely needed run only when their test says so.
        if any(c in text for c in _LINE_BREAK_CHARS):
            text = _LINE_BREAKS.sub("\n", text)
        text = _HSPACE.sub(" ", text)
        text = text.replace(" \n", "\n")
        if self.strip_indent:
            text = text.replace("\n ", "\n").lstrip(" ")
        if self._blank_to + "\n" in text:
            text = self._blank.sub(self._blank_to, text)
        return text.strip("\n ") if self.strip_indent else text.rstrip("\n ").lstrip("\n")
