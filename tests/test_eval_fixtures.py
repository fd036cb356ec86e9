"""Tiny models for the evaluation tests: a byte-level BPE tokenizer trained here on
a few sentences written for the tests, and two randomly initialised 2-layer Qwen2
models that share it ("adapted" and "base").

Imported by the other ``test_eval_*`` modules; pytest puts ``tests/`` on the path.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Written for these tests (not taken from any corpus).
SENTENCES = [
    "今日は朝から雨が降っていたので、傘を持って駅まで歩いた。",
    "図書館で借りた本を読みながら、温かいお茶を飲んだ。",
    "新しい電車の路線が来年の春に開業する予定です。",
    "The quick brown fox jumps over the lazy dog near the river.",
    "猫は窓の近くで昼寝をしている。犬は庭で遊んでいる。",
    "Researchers measured the temperature every hour for a week.",
]
EOS = "<|endoftext|>"


def build_tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    fast.save_pretrained(path)
    return fast


def build_model(path, tokenizer, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``(adapted_dir, base_dir)``: two tiny Qwen2 checkpoints with different weights."""
    root = tmp_path_factory.mktemp("tiny_models")
    tokenizer = build_tokenizer(root / "tok")
    return (str(build_model(root / "adapted", tokenizer, 1)), str(build_model(root / "base", tokenizer, 2)))


@pytest.fixture(scope="session")
def heldout_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("heldout") / "ja.jsonl"
    # One long document so that windows cut it, and short ones.
    texts = ["".join(SENTENCES) * 3, *SENTENCES[:3]]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def test_tiny_models_load(tiny_models):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models[0])
    assert model.config.num_hidden_layers == 2


@pytest.fixture(scope="session")
def qwen_vocab_model(tmp_path_factory):
    """A tiny random Qwen2 with the real Qwen2.5 vocabulary: the built-in ``qwen2.5`` tokenizer saved
    beside it, so prompts tokenize exactly as for Qwen2.5-0.5B. ``initializer_range`` is raised so
    that choices get clearly different scores (no near-ties for float rounding to flip)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from jpcorpus.tokenizer import load_tokenizer

    tok = load_tokenizer("qwen2.5")
    path = tmp_path_factory.mktemp("qwen_vocab") / "model"
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         initializer_range=0.2, eos_token_id=tok.eod_id)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.hf.save_pretrained(path)
    return str(path)
