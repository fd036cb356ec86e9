"""jpcorpus.tokenizer: the built-in Qwen2.5 tokenizer is exact, offline, and fast-path safe.

Real tokenizers, no mocks. The session fixture builds the built-in into an empty
temporary cache (as on a fresh machine): ~10 s for the files, ~13 s for the
fast-path table.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
import unicodedata

import numpy as np
import pytest

from jpcorpus.tokenizer import TokenizerError, builtin_qwen, load_tokenizer

# Token ids published for Qwen2/2.5/3 (same base vocabulary), found in public code:
# tokenizer tests in Qwen ports (e.g. a C++ runtime's test against Qwen2.5-0.5B-Instruct
# vocab/merges, Qwen3-TTS and llama.cpp-parity checks), an llama-factory note, torchtune.
KNOWN_IDS = {
    "Hello world": [9707, 1879],
    "Hello, my name is Ryan.": [9707, 11, 847, 829, 374, 13646, 13],
    "Testing 123": [16451, 220, 16, 17, 18],
    "Hello, world! 123": [9707, 11, 1879, 0, 220, 16, 17, 18],
    "What is the capital of France?": [3838, 374, 279, 6722, 315, 9625, 30],
    " hello sir. How are you Edward?": [23811, 27048, 13, 2585, 525, 498, 21891, 30],
    "how are you!": [5158, 525, 498, 0],
    "I'm fine!": [40, 2776, 6915, 0],
    "1+1=": [16, 10, 16, 28],
    "hello": [14990],
    "hello  ": [14990, 256],
    "\n": [198],
    "hello\n\n": [14990, 271],
    " \n": [715],
    "hello\tworld": [14990, 76508],
    "😊": [144236],
    "": [],
}

JAPANESE = ("吾輩は猫である。名前はまだ無い。\nどこで生れたかとんと見当がつかぬ。"
            "　何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。"
            "ｶﾞｷﾞ（半角）とが（か\u3099）と１２３、ＡＢＣ。")


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jpcorpus-cache")


@pytest.fixture(scope="session")
def qwen(cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("JPCORPUS_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    mp.delenv("JPCORPUS_NO_FAST_TOKENIZER", raising=False)
    tok = load_tokenizer("qwen2.5")
    yield tok
    mp.undo()


@pytest.fixture(scope="session")
def qwen_hf(qwen):
    """The same built-in, HF path only."""
    return load_tokenizer("qwen2.5", fast_path=False)


def test_builtin_loads_offline_into_the_cache(qwen, cache):
    assert qwen.name == "qwen2.5"
    assert qwen.hf_dir.parent.parent == cache
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
            "merges.txt"} <= {p.name for p in qwen.hf_dir.iterdir()}
    assert qwen.vocab_size == 151_665
    assert qwen.eod_id == 151_643 and qwen.eod_token == "<|endoftext|>"
    assert qwen.fast_path is True


def test_added_tokens_ids_and_flags(qwen):
    added = {i: (t.content, t.special) for i, t in qwen.hf.added_tokens_decoder.items()}
    expected = {151_643 + i: cs for i, cs in enumerate(builtin_qwen.ADDED_TOKENS)}
    assert added == expected
    assert added[151_644] == ("<|im_start|>", True) and added[151_645] == ("<|im_end|>", True)
    assert added[151_657] == ("<tool_call>", False) and added[151_664] == ("<|file_sep|>", False)
    assert sum(special for _, special in added.values()) == 14


def test_tokenizer_config_matches_qwen25_base(qwen):
    cfg = json.loads((qwen.hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["eos_token"] == cfg["pad_token"] == "<|endoftext|>"
    assert cfg["bos_token"] is None and cfg["add_bos_token"] is False
    assert cfg["model_max_length"] == 131072 and cfg["tokenizer_class"] == "Qwen2Tokenizer"
    assert cfg["errors"] == "replace" and cfg["split_special_tokens"] is False
    assert cfg["clean_up_tokenization_spaces"] is False and cfg["add_prefix_space"] is False
    hf = qwen.hf
    assert hf.eos_token_id == 151_643 and hf.pad_token_id == 151_643 and hf.bos_token_id is None
    assert hf("Hello world")["input_ids"] == [9707, 1879]  # no BOS added


def test_tokenizer_json_pipeline(qwen):
    doc = json.loads((qwen.hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert doc["normalizer"] == {"type": "NFC"}
    split, byte_level = doc["pre_tokenizer"]["pretokenizers"]
    assert split["pattern"] == {"Regex": builtin_qwen.QWEN2_PATTERN} and split["behavior"] == "Isolated"
    assert byte_level["add_prefix_space"] is False and byte_level["use_regex"] is False
    assert doc["model"]["ignore_merges"] is False and len(doc["model"]["merges"]) == 151_387
    assert len(doc["model"]["vocab"]) == 151_643


@pytest.mark.parametrize("text", list(KNOWN_IDS))
def test_known_ids(qwen, qwen_hf, text):
    assert qwen.encode(text).tolist() == KNOWN_IDS[text]
    assert qwen_hf.encode(text).tolist() == KNOWN_IDS[text]


def test_special_tokens_in_text_and_im_start(qwen):
    assert qwen.hf.convert_tokens_to_ids("<|im_start|>") == 151_644
    ids = qwen.encode("a<|im_start|>b").tolist()
    assert ids == [64, 151_644, 65]
    assert qwen.encode("<tool_call>").tolist() == [151_657]


def test_matches_independent_construction(qwen):
    """A tokenizer assembled here from vocab.json + merges.txt with the low-level API agrees."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    model = BPE.from_file(str(qwen.hf_dir / "vocab.json"), str(qwen.hf_dir / "merges.txt"))
    ref = Tokenizer(model)
    ref.normalizer = normalizers.NFC()
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                                   r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    ref.decoder = decoders.ByteLevel()
    texts = [JAPANESE, *KNOWN_IDS, "price: 1,234,567円 (税込)", "I've  seen 'em\r\n\tall", "🇯🇵👍🏽 ＡＩ"]
    assert [e.ids for e in ref.encode_batch(texts)] == [a.tolist() for a in qwen.encode_batch(texts)]
    assert ref.get_vocab_size() == 151_643


def test_merges_are_the_official_ones(qwen):
    merges = (qwen.hf_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    # Opening lines of Qwen2's public merges.txt; its size (CRLF copy: 1,429,889 chars) matches too.
    assert merges[:8] == ["#version: 0.2", "Ġ Ġ", "ĠĠ ĠĠ", "i n", "Ġ t", "ĠĠĠĠ ĠĠĠĠ", "e r", "ĠĠ Ġ"]
    assert merges[-3:] == ["âį ¨", "âº Ł", "â½ Ĺ"]
    assert sum(len(m) + 2 for m in merges) == 1_429_889


def test_decode_roundtrip_is_nfc(qwen):
    for text in (JAPANESE, "が が é é", "\u3000\u3000全角スペース\r\n"):
        assert qwen.decode(qwen.encode(text)) == unicodedata.normalize("NFC", text)


def test_encode_batch_types(qwen):
    out = qwen.encode_batch(["今日は", "", "<|endoftext|>"])
    assert all(isinstance(a, np.ndarray) and a.dtype == np.int32 for a in out)
    assert out[1].size == 0 and out[2].tolist() == [151_643]  # no eod appended by encode_batch


def test_fingerprint_stable_and_equal_for_resaved_copy(qwen, tmp_path):
    fp = qwen.fingerprint
    assert fp.startswith("tokfp1:") and len(fp) == len("tokfp1:") + 64
    copy = tmp_path / "copy"
    qwen.hf.save_pretrained(copy)  # re-serialised by transformers: other layout, other files
    other = load_tokenizer(str(copy))
    assert other.name == str(copy) and other.hf_dir == copy and other.fast_path is True  # encodes exactly as the built-in: same fast path
    assert other.fingerprint == fp
    assert load_tokenizer("qwen2.5", fast_path=False).fingerprint == fp
    desc = other.describe()
    assert desc["vocab_size"] == 151_665 and desc["eod_id"] == 151_643 and "tokenizer.json" in desc["files"]


def test_fingerprint_differs_for_a_different_vocabulary(qwen, tmp_path):
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tiny = Tokenizer(BPE({"a": 0, "b": 1, "ab": 2, "</s>": 3}, [("a", "b")]))
    tiny.pre_tokenizer = pre_tokenizers.Whitespace()
    tiny.decoder = decoders.BPEDecoder()
    PreTrainedTokenizerFast(tokenizer_object=tiny, eos_token="</s>").save_pretrained(tmp_path / "tiny")
    tok = load_tokenizer(str(tmp_path / "tiny"))
    assert tok.fingerprint != qwen.fingerprint
    assert tok.eod_token == "</s>" and tok.eod_id == 3  # no <|endoftext|>: falls back to eos
    assert tok.encode("ab a").tolist() == [2, 0] and tok.vocab_size == 4


def test_eod_override_and_errors(qwen, tmp_path):
    assert load_tokenizer("qwen2.5", eod_token="<|im_end|>").eod_id == 151_645
    with pytest.raises(TokenizerError, match="eod-token"):
        load_tokenizer("qwen2.5", eod_token="<no such token>")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(str(tmp_path / "empty"))


def test_builtin_eod_ids_without_parsing_tokenizer_json(qwen):
    """A worker's load: the fast path and the eod id, not the 0.4 s parse of tokenizer.json (same ids)."""
    raw = qwen._backend  # the driver's tokenizer.json backend: the reference
    for content, _ in builtin_qwen.ADDED_TOKENS:
        tok = load_tokenizer("qwen2.5", eod_token=content)
        assert tok.eod_id == raw.token_to_id(content)
        assert tok.encode(JAPANESE).tolist() == qwen.encode(JAPANESE).tolist()
        assert tok._raw_backend is None
    plain = load_tokenizer("qwen2.5")
    assert (plain.eod_token, plain.eod_id) == ("<|endoftext|>", 151_643) and plain._raw_backend is None
    word = load_tokenizer("qwen2.5", eod_token="hello")  # not an added token: looked up in tokenizer.json
    assert word.eod_id == 14990 and word._raw_backend is not None


def test_hub_id_offline_error(qwen, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerError) as err:
        load_tokenizer("no-such-org/no-such-tokenizer-jpcorpus")
    msg = str(err.value)
    assert "no such local directory" in msg and "hub unreachable" in msg and "--tokenizer qwen2.5" in msg
    assert isinstance(err.value, ValueError)


def _build_in_child(cache: str) -> str:
    import os

    os.environ["JPCORPUS_CACHE"] = cache
    from jpcorpus.tokenizer import builtin_qwen as bq

    return str(bq.materialize(bq.Path(cache)))


def test_concurrent_builds_into_an_empty_cache(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        dirs = pool.map(_build_in_child, [str(tmp_path)] * 2)
    assert dirs[0] == dirs[1]
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] == [builtin_qwen.builtin_dir(tmp_path).name]
    shutil.rmtree(tmp_path / "tokenizers")


def _fuzz_strings(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    spaces = [0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0x85, 0xA0, 0x1680, 0x2000, 0x200B, 0x2028, 0x2029,
              0x202F, 0x205F, 0x3000, 0xFEFF, 0x180E]
    japanese = [*range(0x3040, 0x3100), *range(0x4E00, 0x5600), *range(0xFF01, 0xFFA0)]
    combining = [*range(0x300, 0x370), 0x3099, 0x309A, *range(0x1AB0, 0x1B00), *range(0x1DC0, 0x1E00),
                 *range(0x20D0, 0x2100)]
    pools = [spaces, japanese, combining, list(range(0x20, 0x7F)), [ord(c) for c in "'sStTlLdDmMrReEvVſ"]]

    def char() -> str:
        r = rng.random()
        if r < 0.35:  # any code point: rare, unassigned, private use, surrogates excluded
            c = rng.randrange(0x110000)
            return chr(c) if not 0xD800 <= c < 0xE000 else "\ufffd"
        return chr(rng.choice(pools[int((r - 0.35) / 0.13) % len(pools)]))

    return ["".join(char() for _ in range(rng.randint(1, 14))) for _ in range(n)]


def test_fast_path_equals_hf_on_fuzz(qwen, qwen_hf):
    texts = _fuzz_strings(60_000, seed=20240601) + [JAPANESE, "<|endoftext|>は", "\u1ac1\u0334a"]
    fast = qwen.encode_batch(texts)
    slow = qwen_hf.encode_batch(texts)
    bad = [t for t, a, b in zip(texts, fast, slow) if not np.array_equal(a, b)]
    assert bad == []
    assert 0 < qwen._fast.routed_to_hf < len(texts) // 5  # most texts did take the fast path


def test_fast_path_can_be_disabled(qwen, monkeypatch):
    monkeypatch.setenv("JPCORPUS_NO_FAST_TOKENIZER", "1")
    tok = load_tokenizer("qwen2.5")
    assert tok.fast_path is False and tok.encode(JAPANESE).tolist() == qwen.encode(JAPANESE).tolist()
