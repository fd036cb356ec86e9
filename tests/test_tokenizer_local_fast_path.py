"""A local directory holding the Qwen2.5 tokenizer gets the built-in's exact fast path; others do not."""

from __future__ import annotations

import json

from jpcorpus.tokenizer import load_tokenizer

TEXTS = ["吾輩は猫である。名前はまだ無い。", "Hello world 2048", "\u3000\u3000全角スペース", "x\u0301e\u0301 <|endoftext|>"]


def test_resaved_copy_gets_the_fast_path_and_same_ids(tmp_path, qwen):
    qwen.hf.save_pretrained(tmp_path)
    local = load_tokenizer(str(tmp_path))
    assert local.fast_path and local.fingerprint == qwen.fingerprint
    assert [ids.tolist() for ids in local.encode_batch(TEXTS)] == [ids.tolist() for ids in qwen.encode_batch(TEXTS)]
    assert not load_tokenizer(str(tmp_path), fast_path=False).fast_path


def test_a_different_bpe_model_keeps_the_hf_path(tmp_path, qwen):
    qwen.hf.save_pretrained(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["merges"] = spec["model"]["merges"][:-5]  # the last five merges dropped
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    local = load_tokenizer(str(tmp_path))
    assert not local.fast_path
