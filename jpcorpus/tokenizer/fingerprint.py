"""Tokenizer fingerprint: equal when two tokenizers tokenise alike, whatever their files look like.

``tokfp1:`` + sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of::

    {"version": 1,
     "vocab": [token string for id 0, 1, ..., max id]   # added tokens included; null for a hole
     "added": [[id, content, special], ...]              # sorted by id
     "probe": [[ids of PROBES[0]], [ids of PROBES[1]], ...]}

The ids come from the Hugging Face backend (``tokenizers.Tokenizer``) with
``add_special_tokens=False``. JSON layout, merge-list order or a chat template in
``tokenizer_config.json`` do not enter, so the official Qwen2.5 ``tokenizer.json``
and the built-in copy share one fingerprint; a different vocabulary, different
added tokens or a different pre-tokenizer/normaliser (seen through the probes)
changes it. It costs about 0.3 s for a 150k-token vocabulary.

>>> len(PROBES) > 20 and all(isinstance(p, str) for p in PROBES)
True
"""

from __future__ import annotations

import hashlib
import json

PREFIX = "tokfp1:"

# Fixed probe strings; changing them changes every fingerprint (bump PREFIX then).
PROBES: tuple[str, ...] = (
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
    "東京都渋谷区で２０２４年３月１５日に開催された会議では、ＡＩの安全性について議論した。",
    "「ちょっと待って！」と彼女は言った――しかし、誰も振り返らなかった……",
    "ｶﾀｶﾅ　ﾊﾝｶｸ　と　カタカナ　全角、ひらがな、漢字（かんじ）、〜〒※",
    "The quick brown fox jumps over the lazy dog. It's, they'll, we'RE, I'd've.",
    "0 1 12 123 1234 12345 3.14159 -42 1e-9 ０１２３４５６７８９ ½ ² ⅷ ٣ ໓",
    "a  b   c    d\t\te\n\nf\r\ng \r\n\r\n  h\u3000\u3000i\u00a0j\u2003k\u200bl\ufeffm",
    "   leading and trailing   ",
    "\n\n\n",
    " \u3000 \u3000",
    "😀👍🏽👨‍👩‍👧‍👦🇯🇵🏳️‍🌈 ✌️ ❤️",
    "\U0001f9ff\U0001fae8\U000e0061\U00010348\U0002a6d6\U0003134a\U000f0000\u0378\ufffd\uffff",
    "が が ぱ ぱ é é Å Å ﬁ ㌔ ①",
    "\u1e9b\u0323 \u0071\u0307\u0323 \u1100\u1161\u11a8 \u304b\u3099\u3099",
    "ＡＢＣａｂｃ！？＃＄％＆（）＝～｜｀｛｝＊＋＜＞＿",
    "def f(x):\n    return {'a': [1, 2, 3]}  # コメント\n",
    "<html><body><p class=\"x\">本文</p></body></html>",
    "한국어 텍스트, 中文文本, текст на русском, النص العربي, हिन्दी पाठ",
    "<|endoftext|>text<|im_start|>user\nこんにちは<|im_end|>\n<tool_call></tool_call><|fim_pad|>",
    "URL: https://example.com/path?q=検索&lang=ja#section-2",
    "ſ 's 'S 'ſ K k İ ı ß ẞ ﬀ",
    "\x00\x01\x7f\x80\x9f",
    "",
)


def backend_vocab_list(backend) -> list[str | None]:
    """Token strings in id order (added tokens included), ``None`` for unused ids."""
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens: list[str | None] = [None] * (max(vocab.values()) + 1 if vocab else 0)
    for token, idx in vocab.items():
        tokens[idx] = token
    return tokens


def fingerprint(backend) -> str:
    """Fingerprint of a ``tokenizers.Tokenizer`` (see the module docstring)."""
    added = sorted((int(i), tok.content, bool(tok.special))
                   for i, tok in backend.get_added_tokens_decoder().items())
    probe = [enc.ids for enc in backend.encode_batch(list(PROBES), add_special_tokens=False)]
    doc = {"version": 1, "vocab": backend_vocab_list(backend), "added": added, "probe": probe}
    blob = json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return PREFIX + hashlib.sha256(blob).hexdigest()
