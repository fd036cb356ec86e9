"""Which lines of a document are prose: section dividers, annotations and headings are not.

Books mark sections with lines of symbols (``――――``, ``◇``, ``＊　＊　＊``) and
number their chapters (``一``, ``第二章``); a silence in dialogue is written
``「…………」``. Such lines repeat by design, and they are one- or two-character
"sentences": counted as prose they made the duplicate-line and sentence-length
filters drop whole novels. Those filters read :func:`prose_lines` instead of
every line.

Verse is prose too, but lineated: short lines that do not end a sentence.
:func:`is_lineated` tells the sentence-length filter that its rules (made for
running text) do not apply.

>>> prose_lines("一\\n\\n雪が降った。\\n――――\\n「…………」\\n[#改ページ]\\n春が来た。")
['雪が降った。', '春が来た。']
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD_CHAR = re.compile(r"[^\W_]")  # a letter, digit, kana or kanji: a line without one is only symbols
_ANNOTATION = re.compile(r"\[#[^\]]*\]|《[^》]*》|〔[^〕]*〕")  # Aozora [#...] notes and ruby, after NFKC
_NUMBER = "0-9一二三四五六七八九十百千〇零壱弐参"
_HEADING = re.compile(rf"(第[{_NUMBER}]+[章節回話部編巻幕篇条]|[{_NUMBER}]+|[上中下前後]編?|序章?|終章|跋|結び"
                      rf"|[(][{_NUMBER}]+[)]|[{_NUMBER}]+[.、])(\s.{{0,28}})?")
_SENTENCE_END = ("。", "!", "?", "」", "』", ")", "…", "‥")
HEADING_CHARS = 20
"""A line standing alone between blank lines, this short and not ending a sentence, is a heading."""
VERSE_LINE_CHARS = 40
"""Lines of verse are at most this long (most are 5 to 25 characters)."""


def is_symbol_line(line: str) -> bool:
    """A line without a letter, digit, kana or kanji: a divider, or dialogue that is only ``……``.

    >>> is_symbol_line("＊　　　＊　　　＊"), is_symbol_line("「…………」"), is_symbol_line("一")
    (True, True, False)
    """
    return _WORD_CHAR.search(line) is None


def is_annotation(line: str) -> bool:
    """A line that is only editorial notes or ruby: ``[#ここから2字下げ]``, ``《るび》``.

    >>> is_annotation("[#改ページ]"), is_annotation("猫《ねこ》がいる。")
    (True, False)
    """
    if "[" not in line and "《" not in line and "〔" not in line:
        return False
    return _ANNOTATION.sub("", line).strip() == "" and line.strip() != ""


@lru_cache(maxsize=64)  # the duplicate-line and sentence filters read the same document in turn
def line_kinds(text: str) -> tuple[tuple[str, str, int], ...]:
    """Each non-empty line of ``text`` (stripped), its kind (prose, symbols, annotation or heading)
    and the number of its paragraph (paragraphs are separated by blank lines).

    A heading is a chapter number (``第三章``, ``二``, ``(四)``, optionally with a
    short title) or a short line standing alone between blank lines that does
    not end a sentence.

    >>> [k for _, k, _ in line_kinds("第一章 旅立ち\\n\\n朝が来た。\\n\\n港\\n\\n船が出た。")]
    ['heading', 'prose', 'heading', 'prose']
    """
    raw = text.split("\n")
    out = []
    paragraph = 0
    for i, line in enumerate(raw):
        s = line.strip()
        if not s:
            paragraph += bool(out)
            continue
        if is_symbol_line(s):
            kind = "symbols"
        elif is_annotation(s):
            kind = "annotation"
        elif _HEADING.fullmatch(s) or (len(s) <= HEADING_CHARS and not s.endswith(_SENTENCE_END)
                                       and (i == 0 or not raw[i - 1].strip())
                                       and (i == len(raw) - 1 or not raw[i + 1].strip()) and len(raw) > 1):
            kind = "heading"
        else:
            kind = "prose"
        out.append((s, kind, paragraph))
    return tuple(out)


def prose_lines(text: str) -> list[str]:
    """The non-empty lines of ``text`` that are prose (see :func:`line_kinds`), stripped."""
    return [s for s, kind, _ in line_kinds(text) if kind == "prose"]


def is_verse_line(line: str) -> bool:
    """Short, not dialogue, and not ending a sentence with 。: a line of verse (or of a list).

    >>> is_verse_line("松の葉の青きに"), is_verse_line("「来たよ」"), is_verse_line("雨が降った。")
    (True, False, False)
    """
    return len(line) <= VERSE_LINE_CHARS and not line.startswith(("「", "『")) and not line.endswith("。")


def is_lineated(lines: list[str]) -> bool:
    """Whether prose ``lines`` are lineated like verse: at least four, and half of them verse lines.

    >>> is_lineated(["見てたよ", "窓からじつと", "遠い街の灯", "ほらね", "お星様の下の空"])
    True
    >>> is_lineated(["雨が降った。", "傘をさして駅まで歩いた。", "電車は遅れていた。", "家に着いた。"])
    False
    """
    return len(lines) >= 4 and 2 * sum(map(is_verse_line, lines)) >= len(lines)
