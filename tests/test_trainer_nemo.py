"""trainer with real NeMo 2.7.3 + megatron-core 0.15.3 on CPU (skipped where the
`train` extra is not installed): upstream guards, import parity, dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

llm = pytest.importorskip("nemo.collections.llm", reason="needs the train extra (pip install -e '.[train]')")
if not hasattr(llm, "import_ckpt"):
    pytest.skip("nemo.collections.llm.api failed to import (nvidia-modelopt missing?)", allow_module_level=True)

from trainer.convert import importer  # noqa: E402
from trainer.megatron import nemo_patches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_upstream_importer_still_maps_norms_to_te_names(monkeypatch):
    """If this fails, upstream changed its Qwen2 mapping: re-check Qwen2LocalImporter."""
    from nemo.collections.llm.gpt.model.qwen2 import HFQwen2Importer
    from nemo.lightning import io

    seen = {}
    monkeypatch.setattr(io, "apply_transforms", lambda s, t, mapping, transforms=(): seen.update(mapping))
    HFQwen2Importer.convert_state(None, None, None)
    for key, te_name in importer.UPSTREAM_NORM_TARGETS.items():
        assert seen[key] == te_name
    assert seen["lm_head.weight"] == "output_layer.weight"


def test_lora_without_te_patch_applies():
    from nemo.collections.llm.peft import lora, utils

    nemo_patches.patch_lora_without_te()
    assert lora.te.Linear is nemo_patches._NeverMatched and utils.HAVE_TE is False


def _tiny_hf(path: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # non-trivial norms, so a norm left at init changes the loss
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(2.0, 4.0)
    model.save_pretrained(path)
    vocab = {f"t{i}": i for i in range(1000)} | {"<|endoftext|>": 1000}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="t0").save_pretrained(path)
    return path


@pytest.mark.slow
def test_import_parity_passes_with_fix_and_fails_with_upstream_mapping(tmp_path, monkeypatch):
    from trainer.convert.importer import ImportParityError, import_hf

    hf = _tiny_hf(tmp_path / "hf")
    out = import_hf(hf, tmp_path / "nemo")
    assert (out / "context").is_dir() and (out / "weights").is_dir()
    hf_loss, nemo_loss = importer.Qwen2LocalImporter.parity_losses
    assert abs(hf_loss - nemo_loss) <= 1e-3
    monkeypatch.setattr(importer, "LOCAL_NORM_TARGETS", {})  # upstream's TE names: norms left at init
    with pytest.raises(ImportParityError, match="Hugging Face loss"):
        import_hf(hf, tmp_path / "nemo_bad")
    assert not (tmp_path / "nemo_bad" / "weights").exists()


def _shards(tmp_path: Path, tok) -> str:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    import numpy as np
    import torch

    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(tok.hf_dir))  # jpcorpus's fast path needs tiktoken>0.7
    texts = [json.loads(line)["text"] for line in (ROOT / "data/sample/ja_sample.jsonl").read_text().splitlines()]
    for split, docs in (("train", texts * 4), ("valid", texts)):
        prefix = str(tmp_path / f"ja_{split}")
        builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
        n = 0
        for text in docs:
            ids = hf_tok(text)["input_ids"] + [tok.eod_id]
            builder.add_document(torch.tensor(ids, dtype=torch.int32), [len(ids)])
            n += len(ids)
        builder.finalize(prefix + ".idx")
        Path(prefix + ".json").write_text(json.dumps({
            "format": "megatron-indexed-dataset", "format_version": 1, "dtype": "int32", "documents": len(docs),
            "sequences": len(docs), "tokens": n, "tokenizer": tok.describe()}))
    return str(tmp_path / "ja")


@pytest.mark.slow
def test_dry_run_builds_nemo_objects_and_prints_plan(tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main
    from trainer.run.recipe import model_tokenizer

    try:
        tok = model_tokenizer("qwen2.5")
    except ImportError as exc:
        pytest.skip(f"jpcorpus.tokenizer unavailable: {exc}")
    prefix = _shards(tmp_path, tok)
    result = CliRunner().invoke(main, [
        "run", str(ROOT / "configs/qwen25_05b_ja_lora.yaml"), "--dry-run", "model.base=null", "model.from_scratch=true",
        f"data.train=[{prefix}_train]", f"data.valid=[{prefix}_valid]", f"run_dir={tmp_path}/run",
        "data.seq_length=64", "schedule.max_steps=300", "data.num_workers=0"])
    assert result.exit_code == 0, result.output
    assert "1,474,560" in result.output and "494,032,768" in result.output
    assert "2 shard(s) verified, data.verify=structure" in result.output  # said before NeMo's import
    assert "train samples (built)" in result.output


@pytest.mark.slow
def test_dry_run_refuses_shards_of_another_tokenizer(tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main
    from trainer.run.recipe import model_tokenizer

    try:
        tok = model_tokenizer("qwen2.5")
    except ImportError as exc:
        pytest.skip(f"jpcorpus.tokenizer unavailable: {exc}")
    prefix = _shards(tmp_path, tok)
    meta = json.loads(Path(prefix + "_train.json").read_text())
    meta["tokenizer"]["eod_id"] = 50256
    Path(prefix + "_train.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(main, [
        "run", str(ROOT / "configs/qwen25_05b_ja_lora.yaml"), "--dry-run", "model.base=null", "model.from_scratch=true",
        f"data.train=[{prefix}_train]", f"data.valid=[{prefix}_valid]", f"run_dir={tmp_path}/run"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")  # a refusal: a problem in the data
    assert "eod_id: shard 50256, model 151643" in result.output and "#tokenizer-mismatch" in result.output
