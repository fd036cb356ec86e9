"""Filters for text that went wrong on the way: mojibake and page boilerplate.

Both are cheap string checks and run with the other character-level filters,
before Sudachi.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from jpcorpus.document import Document
from jpcorpus.normalize.steps import Filter, Limit, Measures

# Characters that are rare in real Japanese but frequent in the two common
# mojibake: UTF-8 bytes decoded as cp932 (縺 繧 繝 譁 ...) and as Latin-1 or
# cp1252 (ã â ¯ ...), plus the replacement character a lossy decoder leaves.
MOJIBAKE_MARKS = "\ufffd縺繧繝譁荳蜷隱逕遘閠ãâ¯¿¢"


@dataclass
class Mojibake(Filter):
    """Drop documents that carry the marks of a wrong decoding.

    ``縺薙ｌ縺ｯ`` is ``これは`` written in UTF-8 and read as cp932;
    ``ã“ã‚Œã¯`` is the same read as cp1252.

    >>> Mojibake().filter(Document("縺薙ｌ縺ｯ譁�蟄怜喧縺代〒縺吶"))
    (False, 'mojibake')
    >>> Mojibake().filter(Document("これは普通の文章です。"))
    True
    """

    name: ClassVar[str] = "mojibake"
    reasons: ClassVar[tuple[str, ...]] = ("mojibake",)
    max_fraction: float = 0.01
    """Greatest share of characters that are mojibake marks or U+FFFD."""
    marks: str = MOJIBAKE_MARKS
    """The characters counted as marks."""

    def __post_init__(self) -> None:
        self._check_fraction("max_fraction", self.max_fraction)
        self._marks = frozenset(self.marks)

    def measure(self, doc: Document) -> Measures:
        text = doc.text
        count = sum(text.count(mark) for mark in self._marks) if text else 0
        return {"mojibake_share": count / len(text) if text else 0.0}

    def limits(self) -> list[Limit]:
        return [Limit("mojibake", "mojibake_share", high=self.max_fraction)]


DEFAULT_BOILERPLATE = (
    "ログイン", "会員登録", "新規登録", "利用規約", "プライバシーポリシー", "お問い合わせ",
    "サイトマップ", "ページの先頭へ", "ページトップへ", "トップへ戻る", "ホームに戻る",
    "copyright", "all rights reserved", "無断転載", "このページをシェア", "ツイート",
    "関連記事", "人気記事", "カテゴリー", "前のページ", "次のページ", "もっと見る",
    "クッキー", "cookie", "javascript", "広告", "pr:", "送料無料", "カートに入れる",
)


@dataclass
class BoilerplateLines(Filter):
    """Drop documents where many lines are navigation, footers or shop widgets.

    A line counts as boilerplate when it is short (at most ``max_line_chars``)
    and contains one of ``phrases`` (compared in lower case).

    >>> page = "ホーム\\nログイン\\n会員登録\\n利用規約\\nお問い合わせ\\n本日の記事です。\\nCopyright 2024"
    >>> BoilerplateLines().filter(Document(page))
    (False, 'boilerplate_lines')
    """

    name: ClassVar[str] = "boilerplate_lines"
    reasons: ClassVar[tuple[str, ...]] = ("boilerplate_lines",)
    max_fraction: float = 0.3
    """Greatest share of non-empty lines that are boilerplate."""
    max_line_chars: int = 40
    """Longer lines are never counted as boilerplate (prose may mention ログイン)."""
    phrases: list = field(default_factory=lambda: list(DEFAULT_BOILERPLATE))
    """Phrases that mark a short line as boilerplate (lower case)."""

    def __post_init__(self) -> None:
        self._check_fraction("max_fraction", self.max_fraction)
        # one alternation of the phrases: a single regex search per line, not one `in` per phrase
        self._pattern = re.compile("|".join(map(re.escape, (p.lower() for p in self.phrases)))) if self.phrases \
            else None

    def measure(self, doc: Document) -> Measures:
        lines = [line.strip() for line in doc.text.split("\n") if line.strip()]
        search = self._pattern.search if self._pattern else (lambda line: None)
        hits = sum(1 for line in lines if len(line) <= self.max_line_chars and search(line.lower()))
        return {"boilerplate_line_share": hits / len(lines) if lines else 0.0}

    def limits(self) -> list[Limit]:
        return [Limit("boilerplate_lines", "boilerplate_line_share", high=self.max_fraction)]
