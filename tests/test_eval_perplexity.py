"""Perplexity and bits per character, checked against a per-token loop."""

from __future__ import annotations

import json
import math

import pytest

from test_eval_fixtures import SENTENCES, heldout_jsonl, tiny_models  # noqa: F401


@pytest.fixture(scope="module")
def loaded(tiny_models):
    from trainer.evaluate.models import load_model

    return load_model(tiny_models[0], device="cpu", dtype="float32")


def reference_nll(loaded, ids: list[int], max_length: int) -> float:
    """Independent: one forward per scored token, over exactly the context the
    window scheme allows (the window's tokens plus the one before it)."""
    import torch

    full = [loaded.context_token_id, *ids]
    total = 0.0
    with torch.inference_mode():
        for j in range(1, len(full)):  # full[j] is scored
            window_start = ((j - 1) // max_length) * max_length  # index in full of its context token
            ctx = full[window_start:j]
            logits = loaded.model(input_ids=torch.tensor([ctx])).logits[0, -1]
            total -= torch.log_softmax(logits.float(), dim=-1)[full[j]].item()
    return total


def test_perplexity_matches_per_token_loop(loaded, tmp_path):
    from trainer.evaluate.perplexity import evaluate_perplexity

    texts = [SENTENCES[0] * 2, SENTENCES[3]]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    result = evaluate_perplexity(loaded, str(path), max_length=16, batch_size=3, progress=False)
    ids = [loaded.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    expected = sum(reference_nll(loaded, i, 16) for i in ids)
    assert result.tokens == sum(map(len, ids)) and result.tokens > 16
    assert result.chars == sum(map(len, texts))
    assert result.nll == pytest.approx(expected, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected / result.tokens), rel=1e-5)
    assert result.bits_per_char == pytest.approx(expected / math.log(2) / result.chars, rel=1e-5)
    # A random model is close to uniform: perplexity near the vocabulary size.
    assert 0.3 * len(loaded.tokenizer) < result.perplexity < 3 * len(loaded.tokenizer)


def test_batch_size_order_and_chunking_do_not_change_the_result(loaded, heldout_jsonl, monkeypatch):
    from trainer.evaluate import perplexity
    from trainer.evaluate.perplexity import evaluate_perplexity

    monkeypatch.setattr(perplexity, "DOCS_PER_CHUNK", 1)
    one = evaluate_perplexity(loaded, str(heldout_jsonl), max_length=32, batch_size=1, progress=False)
    monkeypatch.undo()
    many = evaluate_perplexity(loaded, str(heldout_jsonl), max_length=32, batch_size=5, progress=False)
    assert one.tokens == many.tokens
    assert one.nll == pytest.approx(many.nll, rel=1e-5)


def test_shard_gives_the_same_numbers_as_its_jsonl(loaded, heldout_jsonl, tmp_path):
    import numpy as np

    from jpcorpus.indexed_dataset import IndexedDatasetWriter
    from jpcorpus.sidecar import write_sidecar
    from trainer.evaluate.perplexity import evaluate_perplexity

    eod = loaded.tokenizer.eos_token_id
    prefix = tmp_path / "valid_000"
    with IndexedDatasetWriter(prefix, np.uint16) as writer:
        for line in heldout_jsonl.read_text(encoding="utf-8").splitlines():
            ids = loaded.tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
            writer.add_document(np.array([*ids, eod], dtype=np.uint16))
        writer.finalize()
    write_sidecar(prefix, {"tokenizer": {"name": "tiny-test-bpe", "eod_id": eod}})
    shard = evaluate_perplexity(loaded, str(prefix), max_length=64, progress=False)
    text = evaluate_perplexity(loaded, str(heldout_jsonl), max_length=64, progress=False)
    assert (shard.documents, shard.tokens, shard.chars) == (text.documents, text.tokens, text.chars)
    assert shard.nll == pytest.approx(text.nll, rel=1e-6)
    assert shard.decoded_with.startswith("model:")  # the sidecar's name is not a jpcorpus tokenizer
    assert evaluate_perplexity(loaded, f"{prefix}.bin", max_length=64, max_docs=1, progress=False).documents == 1


def test_shard_from_another_tokenizer_is_refused(loaded, tmp_path):
    import numpy as np

    from jpcorpus.indexed_dataset import IndexedDatasetWriter
    from trainer.evaluate.perplexity import evaluate_perplexity

    prefix = tmp_path / "big_vocab"
    with IndexedDatasetWriter(prefix, np.int32) as writer:
        writer.add_document(np.array([5, 151000, 151643], dtype=np.int32))
        writer.finalize()
    with pytest.raises(ValueError, match="another tokenizer"):
        evaluate_perplexity(loaded, str(prefix), progress=False)


def test_real_qwen_tokenizer_shard_decodes_through_jpcorpus(tmp_path):
    """A shard made with the built-in qwen2.5 tokenizer is decoded with it (sidecar name),
    and gives the same numbers as the JSONL it came from, on a tiny Qwen2 with Qwen's vocabulary."""
    import numpy as np
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from jpcorpus.indexed_dataset import IndexedDatasetWriter
    from jpcorpus.sidecar import write_sidecar
    from trainer.evaluate.models import load_model
    from trainer.evaluate.perplexity import evaluate_perplexity

    tokenizer_module = pytest.importorskip("jpcorpus.tokenizer")
    tok = tokenizer_module.load_tokenizer("qwen2.5")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         eos_token_id=tok.eod_id)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "model")
    tok.hf.save_pretrained(tmp_path / "model")
    texts = [SENTENCES[0], SENTENCES[2] + SENTENCES[4], SENTENCES[3]]
    jsonl = tmp_path / "ja.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    prefix = tmp_path / "valid_000"
    with IndexedDatasetWriter(prefix, np.int32) as writer:
        for ids in tok.encode_batch(texts):
            writer.add_document(np.array([*ids, tok.eod_id], dtype=np.int32))
        writer.finalize()
    write_sidecar(prefix, {"tokenizer": tok.describe()})
    loaded = load_model(tmp_path / "model", device="cpu", dtype="float32")
    shard = evaluate_perplexity(loaded, str(prefix), progress=False)
    text = evaluate_perplexity(loaded, str(jsonl), progress=False)
    assert shard.decoded_with == "jpcorpus:qwen2.5"
    assert shard.chars == sum(map(len, texts)) and shard.tokens == text.tokens
    assert shard.nll == pytest.approx(text.nll, rel=1e-6)


def test_damaged_shard_is_refused_before_scoring(loaded, heldout_jsonl, tiny_models, tmp_path):
    """A .bin cut by one byte: trainer eval --text refuses it as trainer run does (exit 1, the shard, the fix)."""
    import numpy as np
    from click.testing import CliRunner

    from jpcorpus.errors import DataProblem
    from jpcorpus.indexed_dataset import IndexedDatasetWriter
    from trainer.cli import main
    from trainer.evaluate.perplexity import evaluate_perplexity

    prefix = tmp_path / "cut"
    with IndexedDatasetWriter(prefix, np.uint16) as writer:
        writer.add_document(np.array([5, 6, 7, loaded.tokenizer.eos_token_id], dtype=np.uint16))
        writer.finalize()
    assert evaluate_perplexity(loaded, str(prefix), progress=False).documents == 1  # sound: scored
    bin_path = prefix.with_suffix(".bin")
    bin_path.write_bytes(bin_path.read_bytes()[:-1])
    with pytest.raises(DataProblem, match=r"cut.*re-run jpcorpus binarize.*troubleshooting\.md#"):
        evaluate_perplexity(loaded, str(prefix), progress=False)
    result = CliRunner().invoke(main, ["eval", tiny_models[0], "--text", f"v={prefix}", "--device", "cpu",
                                       "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and str(prefix) in result.output and "Traceback" not in result.output
