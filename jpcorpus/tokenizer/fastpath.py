"""tiktoken fast path for the built-in Qwen2.5 tokenizer, exact by construction and by test.

tiktoken runs the same ranks and split regex about 2x faster per core than
Hugging Face ``tokenizers`` on Japanese prose. The two agree token for token
except where their Unicode tables differ. Three things can differ:

1. the regex classes (``\\p{L}``, ``\\p{N}``, ``\\s``, the negated classes, and the
   case-insensitive ``'s|'t|...`` letters): tiktoken uses fancy-regex (Rust
   ``regex`` tables), ``tokenizers`` uses Oniguruma;
2. NFC: ``tokenizers`` normalises with Rust's tables, we call Python's
   ``unicodedata`` (Unicode 14 on Python 3.11) before tiktoken. New combining
   marks (e.g. U+1AC1..U+1ACE) reorder differently;
3. added tokens (``<|endoftext|>``...) written in the text: HF encodes them as
   their ids, tiktoken's ``encode_ordinary`` does not.

So, once per (tiktoken, tokenizers, Python) version, :func:`unsafe_codepoints`
asks both engines about every code point (0..0x10FFFF): one pass per regex class
over a string holding all code points, and NFC of ``'a' + U+0345 + c + U+0334``
(canonical reordering tells combining classes 0, 1, 2..239 and 240+ apart). Any disagreement, and
every surrogate, goes into the unsafe set (about 100 code points; ~12 s, cached
as a small JSON). :class:`FastEncoder` sends a text to HF when it holds an
unsafe code point or an added token's text, and to tiktoken otherwise. BPE itself
is the same in both (450k strings of concatenated vocabulary tokens and 10 MB
of Aozora text agree); tests/test_tokenizer.py fuzzes the whole router against
HF on 60k random strings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import unicodedata
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_CI_LETTERS = "strevmld"  # letters of (?i:'s|'t|'re|'ve|'m|'ll|'d)


def _class_patterns(pattern: str) -> dict[str, str]:
    """Character classes the split regex is built from (as runs: fewer pieces, same characters)."""
    if "\\p{L}" not in pattern:
        raise ValueError("the fast path only knows Qwen2-style split regexes; set JPCORPUS_NO_FAST_TOKENIZER=1")
    return {"L": r"\p{L}+", "N": r"\p{N}+", "s": r"\s+", "notRNLN": r"[^\r\n\p{L}\p{N}]+",
            "notSLN": r"[^\s\p{L}\p{N}]+", "ci": f"(?i:[{_CI_LETTERS}])+"}


def _tiktoken_matches(pattern: str, text: str) -> str:
    """Concatenation of ``pattern``'s matches in ``text`` per tiktoken (identity byte vocab)."""
    import tiktoken

    enc = tiktoken.Encoding("probe", pat_str=pattern, mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={})
    return bytes(enc.encode_ordinary(text)).decode("utf-8")


def _hf_matches(pattern: str, text: str) -> str:
    """Concatenation of ``pattern``'s matches in ``text`` per tokenizers' Oniguruma."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
    step = 1 << 16  # 3x faster than one 1.1M-character string; classes are per character
    return "".join(piece for i in range(0, len(text), step) for piece, _ in split.pre_tokenize_str(text[i:i + step]))


def _nfc_disagreements(cps: list[int]) -> set[int]:
    from tokenizers import normalizers

    # ccc 0 / 1 / 2..239 / 240+ and any decomposition give different results.
    probes = ["a\u0345" + chr(c) + "\u0334" for c in cps]
    nfc, step = normalizers.NFC(), 1 << 14
    chunks = ["\n".join(probes[i:i + step]) for i in range(0, len(probes), step)]
    ours = "\n".join(unicodedata.normalize("NFC", chunk) for chunk in chunks).split("\n")
    theirs = "\n".join(nfc.normalize_str(chunk) for chunk in chunks).split("\n")
    if len(ours) != len(theirs):
        raise ValueError("NFC probe lost its separators; set JPCORPUS_NO_FAST_TOKENIZER=1")
    unsafe = {cps[i] for i, (a, b) in enumerate(zip(ours, theirs)) if a != b}
    # Exact combining classes: every mark against one mark of each class, both orders.
    marks = [c for c in cps if unicodedata.combining(chr(c))]
    refs = {}
    for c in marks:
        refs.setdefault(unicodedata.combining(chr(c)), chr(c))
    differs = {m: {c for c in marks if unicodedata.normalize("NFC", s := f"a{chr(c)}{m}\na{m}{chr(c)}")
                   != nfc.normalize_str(s)} for m in refs.values()}
    # A reference that one engine does not know disagrees with nearly every mark: drop it.
    bad_refs = {m for m, cs in differs.items() if len(cs) > len(marks) // 2}
    unsafe |= {ord(m) for m in bad_refs}
    for m, cs in differs.items():
        if m not in bad_refs:
            unsafe |= cs
    return unsafe


def unsafe_codepoints(pattern: str) -> list[int]:
    """Code points on which tiktoken+unicodedata and tokenizers may disagree (sorted)."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    everything = "".join(map(chr, cps))
    unsafe = set(range(0xD800, 0xE000)) | _nfc_disagreements(cps)
    for name, pat in _class_patterns(pattern).items():
        ours, theirs = set(_tiktoken_matches(pat, everything)), set(_hf_matches(pat, everything))
        unsafe |= {ord(ch) for ch in ours ^ theirs}
        if name == "ci":  # which letter each case-folds to, on the few candidates
            few = "".join(sorted(ours & theirs))
            for x in _CI_LETTERS:
                unsafe |= {ord(ch) for ch in set(_tiktoken_matches(f"(?i:{x})", few)) ^ set(_hf_matches(f"(?i:{x})", few))}
    return sorted(unsafe)


def _versions_key() -> str:
    import platform
    from importlib.metadata import version

    return f"tiktoken{version('tiktoken')}-tokenizers{version('tokenizers')}-unicode{unicodedata.unidata_version}" \
           f"-py{platform.python_version()}"


def cached_unsafe_codepoints(folder: Path, pattern: str) -> list[int]:
    """:func:`unsafe_codepoints`, cached in ``folder`` per library versions (atomic write)."""
    path = folder / f"fastpath-unsafe-{_versions_key()}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["unsafe"]
    except (OSError, ValueError, KeyError):
        pass
    log.info("checking which code points the tiktoken fast path must leave to HF (once per library version, ~15 s)")
    unsafe = unsafe_codepoints(pattern)
    fd, tmp = tempfile.mkstemp(prefix=".fastpath-", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pattern": pattern, "unsafe": unsafe}, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return unsafe


def _char_class(cps: list[int]) -> str:
    """A ``re`` character class matching exactly ``cps`` (as ranges)."""
    ranges, start, prev = [], None, None
    for c in cps:
        if start is not None and c == prev + 1:
            prev = c
            continue
        if start is not None:
            ranges.append((start, prev))
        start = prev = c
    if start is not None:
        ranges.append((start, prev))
    return "[" + "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]"


class FastEncoder:
    """Route each text to tiktoken when provably identical to HF, else to HF."""

    def __init__(self, ranks: dict[bytes, int], pattern: str, unsafe: list[int], added_tokens: list[str]):
        import tiktoken

        self._enc = tiktoken.Encoding("jpcorpus-qwen", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
        alternatives = [_char_class(unsafe)] if unsafe else []
        alternatives += [re.escape(t) for t in sorted(added_tokens, key=len, reverse=True)]
        self._to_hf = re.compile("|".join(alternatives)) if alternatives else None
        self.routed_to_hf = 0  # texts sent to HF so far (for benchmarks and tests)
        self._to_numpy = getattr(self._enc, "encode_to_numpy", None)

    def encode(self, text: str) -> np.ndarray | None:
        """int32 ids via tiktoken, or ``None`` when this text must go to HF."""
        if self._to_hf is not None and self._to_hf.search(text):
            self.routed_to_hf += 1
            return None
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        if self._to_numpy is not None:
            return self._to_numpy(text, disallowed_special=()).astype(np.int32)
        return np.array(self._enc.encode_ordinary(text), dtype=np.int32)  # tiktoken < 0.8 (NeMo pins 0.7)
