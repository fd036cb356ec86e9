"""Packed shards and document masking in the trainer's data path: a hand-made packed shard through
PackedGPTDataset (tokens, labels, loss mask, position ids, document ids), upstream's pad == eod
behaviour, megatron's reset_attention_mask semantics, NeMo's data module on binarize --pack shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core", reason="needs megatron-core (dev or train extra)")

from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig  # noqa: E402
from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: E402
from megatron.core.datasets.utils import Split  # noqa: E402

from jpcorpus.packing import PackingWriter  # noqa: E402
from jpcorpus.split_writer import SplitWriter  # noqa: E402
from trainer.megatron.document_masking import document_ids  # noqa: E402
from trainer.megatron.flex_attention import dense_document_mask  # noqa: E402
from trainer.megatron.gpt_datasets import EodSafeGPTDataset, PackedGPTDataset  # noqa: E402
from trainer.run.data import ShardInfo, ShardMismatch, sample_layout  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
E = 999  # end of document


class _Ids:  # what GPTDataset reads from its tokenizer; pad == eod, as Qwen2.5's
    eod, pad = E, E
    unique_identifiers = {"class": "test-ids"}


def _config(tmp_path, seq_length, masking=True):
    return GPTDatasetConfig(random_seed=1234, sequence_length=seq_length, split="1,0,0", tokenizer=_Ids(),
                            reset_position_ids=masking, reset_attention_mask=False, eod_mask_loss=masking,
                            create_attention_mask=False, path_to_cache=str(tmp_path / "cache"))


def _packed_shard(prefix, docs, seq_length):
    writer = PackingWriter(SplitWriter(str(prefix), np.dtype(np.int32), None), seq_length, 100)
    writer.add(np.concatenate(docs).astype(np.int32), np.array([len(d) for d in docs], np.int32))
    writer.close()
    return IndexedDataset(str(prefix))


def test_hand_made_packed_samples(tmp_path):
    docs = [np.array([1, 2, 3, E]), np.array([4, 5, E]), np.array([6, 7, 8, 9, 10, 11, 12, 13, 14, 15, E]),
            np.array([16, E])]
    low = _packed_shard(tmp_path / "p", docs, seq_length=8)  # samples of at most 9 tokens
    assert low.document_indices.tolist() == [0, 1, 4, 5]  # [6..14] | [1,2,3,E] [4,5,E] [15,E] | [16,E]
    ds = PackedGPTDataset(low, str(tmp_path / "p"), np.arange(3), None, Split.train, _config(tmp_path, 8))
    assert len(ds) == 3
    by_first = {int(s["tokens"][0]): s for s in (ds[i] for i in range(3))}
    full = by_first[1]
    assert full["tokens"].tolist() == [1, 2, 3, E, 4, 5, E, 15]
    assert full["labels"].tolist() == [2, 3, E, 4, 5, E, 15, E]  # the EOD labels stay, and are scored
    assert full["loss_mask"].tolist() == [1, 1, 1, 0, 1, 1, 0, 1]  # not the prediction across a boundary
    assert full["position_ids"].tolist() == [0, 1, 2, 3, 0, 1, 2, 0]
    assert document_ids(full["position_ids"][None]).tolist() == [[0, 0, 0, 0, 1, 1, 1, 2]]
    padded = by_first[16]
    assert padded["tokens"].tolist() == [16, E, 0, 0, 0, 0, 0, 0]  # padding read as token 0
    assert padded["labels"].tolist() == [E, 0, 0, 0, 0, 0, 0, 0]
    assert padded["loss_mask"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]  # loss on the EOD label only
    assert document_ids(padded["position_ids"][None]).tolist() == [[0, 0, 1, 1, 1, 1, 1, 1]]
    piece = by_first[6]  # a piece of a document longer than a sample
    assert piece["labels"].tolist() == [7, 8, 9, 10, 11, 12, 13, 14] and piece["loss_mask"].sum() == 8
    assert "attention_mask" not in full  # no dense mask is built


def test_more_samples_than_documents_repeat_in_new_orders(tmp_path):
    docs = [np.array([i, i + 1, E]) for i in range(1, 40, 3)]
    low = _packed_shard(tmp_path / "p", docs, seq_length=5)
    n = len(low.document_indices) - 1
    ds = PackedGPTDataset(low, str(tmp_path / "p"), np.arange(n), 3 * n - 1, Split.train, _config(tmp_path, 5))
    assert len(ds) == 3 * n
    epochs = np.asarray(ds.document_index).reshape(3, n)
    assert all(sorted(e) == list(range(n)) for e in epochs) and not (epochs[0] == epochs[1]).all()


def test_a_sample_longer_than_seq_length_is_refused(tmp_path):
    low = _packed_shard(tmp_path / "p", [np.array([1, 2, 3, 4, 5, 6, E])], seq_length=8)
    ds = PackedGPTDataset(low, str(tmp_path / "p"), np.arange(1), None, Split.train, _config(tmp_path, 4))
    with pytest.raises(ValueError, match="packed for a longer data.seq_length"):
        ds[0]


def _plain_shard(prefix, docs):
    from jpcorpus.indexed_dataset import IndexedDatasetWriter

    with IndexedDatasetWriter(prefix, np.int32) as w:
        for d in docs:
            w.add_document(np.asarray(d))
        w.finalize()
    return IndexedDataset(str(prefix))


def test_upstream_gpt_dataset_takes_eod_for_padding(tmp_path):
    """If this fails, megatron-core no longer mistakes pad == eod: EodSafeGPTDataset can go."""
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(0, 900, size=int(rng.integers(3, 9))), E) for _ in range(30)]
    low = _plain_shard(tmp_path / "s", docs)
    args = (low, str(tmp_path / "s"), np.arange(30), 10, Split.train, _config(tmp_path, 16, masking=False))
    upstream, ours = GPTDataset(*args), EodSafeGPTDataset(*args)
    for i in range(5):
        a, b = upstream[i], ours[i]
        assert (b["tokens"] == E).any() and not (a["tokens"] == E).any()  # upstream: EOD became token 0
        eod_labels = b["labels"] == E
        assert (b["loss_mask"][eod_labels] == 1).all() and (a["loss_mask"][eod_labels] == 0).all()
        assert torch.equal(a["labels"][~eod_labels], b["labels"][~eod_labels])


def test_document_ids_give_megatrons_reset_attention_mask(tmp_path):
    """data.document_masking on ordinary shards: the document ids from reset position ids mean exactly
    megatron's dense reset_attention_mask."""
    from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids

    rng = np.random.default_rng(1)
    docs = [np.append(rng.integers(0, 900, size=int(rng.integers(1, 12))), E) for _ in range(40)]
    low = _plain_shard(tmp_path / "s", docs)
    ds = EodSafeGPTDataset(low, str(tmp_path / "s"), np.arange(40), 12, Split.train, _config(tmp_path, 32))
    for i in range(12):
        sample = ds[i]
        inputs = torch.as_tensor(ds._query_document_sample_shuffle_indices(i)[0][:-1])
        dense, _, _ = _get_ltor_masks_and_position_ids(inputs, E, True, True, True, True)
        ours = dense_document_mask(document_ids(sample["position_ids"][None]))[0]
        assert torch.equal(ours, ~dense)  # megatron's mask is True where attention is forbidden


def _info(prefix, packing=None):
    return ShardInfo(prefix, 1.0, 10, 100, {}, packing)


def test_sample_layout():
    packed = {"seq_length": 2048}
    layout = sample_layout([_info("a", packed)], 2048, None)
    assert layout.packed and layout.document_masking
    assert not sample_layout([_info("a", packed)], 2048, False).document_masking  # packed, causal: an ablation
    plain = sample_layout([_info("a")], 2048, None)
    assert not plain.packed and not plain.document_masking
    assert sample_layout([_info("a")], 2048, True).document_masking
    with pytest.raises(ShardMismatch, match="is packed .* but b is not"):
        sample_layout([_info("a", packed), _info("b")], 2048, None)
    with pytest.raises(ShardMismatch, match="set data.seq_length=1024 or re-binarize with --pack 2048"):
        sample_layout([_info("a", {"seq_length": 1024})], 2048, None)


# ---------------------------------------------------------------- NeMo's data module, real files


@pytest.mark.slow
def test_nemo_data_module_on_binarize_pack_shards(tmp_path):
    pytest.importorskip("nemo.collections.llm", reason="needs the train extra")
    from click.testing import CliRunner

    from jpcorpus.cli import main
    from trainer.run.data import build_data_module, nemo_tokenizer, read_shard
    from trainer.run.recipe import model_tokenizer

    tok = model_tokenizer("qwen2.5")
    sample = ROOT / "data/sample/ja_sample.jsonl"
    result = CliRunner().invoke(main, ["binarize", "--quiet", str(sample), str(sample), str(sample), "-o",
                                       str(tmp_path / "ja"), "--pack", "128", "--valid-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    train, valid = read_shard(str(tmp_path / "ja_train")), read_shard(str(tmp_path / "ja_valid"))
    layout = sample_layout([train, valid], 128, None)
    assert layout.packed and layout.document_masking and train.packing["seq_length"] == 128
    data = build_data_module([train], [valid], nemo_tokenizer(tok.hf_dir), seq_length=128, micro_batch_size=2,
                             global_batch_size=4, num_workers=0, seed=1, index_dir=str(tmp_path / "idx"),
                             causal_mask=False, layout=layout)
    data.build(trainer_max_steps=3, trainer_val_check_interval=3, trainer_limit_val_batches=1,
               trainer_limit_test_batches=1)
    low = IndexedDataset(str(tmp_path / "ja_train"))
    ds = data._train_ds
    assert isinstance(ds, PackedGPTDataset) and len(ds) >= 12
    eod = tok.eod_id
    for i in range(6):
        s = ds[i]
        doc = int(ds.document_index[i])
        first, last = low.document_indices[doc], low.document_indices[doc + 1]
        text = np.concatenate([low[j] for j in range(first, last)])
        n = len(text) - 1
        assert s["tokens"][:n].tolist() == text[:-1].tolist() and s["labels"][:n].tolist() == text[1:].tolist()
        assert (s["loss_mask"][n:] == 0).all() and "attention_mask" not in s
        assert s["loss_mask"][:n].tolist() == [float(t != eod) for t in text[:-1]]
        expected, d = [], 0
        for t in s["tokens"].tolist():  # a new document after every end-of-document input
            expected.append(d)
            d += t == eod
        assert document_ids(s["position_ids"][None])[0].tolist() == expected
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))  # NeMo's loader collates the same way
    assert batch["tokens"].shape == (2, 128) and "attention_mask" not in batch
    assert isinstance(data._validation_ds, PackedGPTDataset)


def test_config_key():
    from trainer.run.config import from_dict

    base = {"model": {"from_scratch": True}, "data": {"train": ["a"], "valid": ["b"]}}
    assert from_dict(base).data.document_masking is None
    assert from_dict(base, ["data.document_masking=true"]).data.document_masking is True
    with pytest.raises(ValueError, match="data.document_masking"):
        from_dict(base, ["data.document_masking=maybe"])


def test_model_config_with_document_masking():
    pytest.importorskip("nemo.collections.llm", reason="needs the train extra")
    from trainer.megatron.document_masking import document_forward_step
    from trainer.megatron.flex_attention import flex_layer_spec
    from trainer.megatron.layers import local_layer_spec
    from trainer.run.config import from_dict
    from trainer.run.presets import get_preset
    from trainer.run.recipe import nemo_model_config

    cfg = from_dict({"model": {"from_scratch": True, "preset": "tiny", "cuda_graphs": False}})
    on, off = nemo_model_config(get_preset("tiny"), cfg, True), nemo_model_config(get_preset("tiny"), cfg)
    assert on.forward_step_fn is document_forward_step and on.transformer_layer_spec is flex_layer_spec
    assert off.forward_step_fn is not document_forward_step and off.transformer_layer_spec is not flex_layer_spec
    local = from_dict({"model": {"from_scratch": True, "preset": "tiny", "attention": "local", "cuda_graphs": False}})
    assert nemo_model_config(get_preset("tiny"), local, True).transformer_layer_spec is local_layer_spec
    # model.flex_kernel_options reaches FlexCoreAttention through the megatron config
    assert on.jp_flex_kernel_options == "tuned"
    torch_choice = from_dict({"model": {"from_scratch": True, "preset": "tiny", "cuda_graphs": False,
                                        "flex_kernel_options": "torch"}})
    assert nemo_model_config(get_preset("tiny"), torch_choice, True).jp_flex_kernel_options == "torch"
    with pytest.raises(ValueError, match="model.flex_kernel_options"):
        from_dict({"model": {"from_scratch": True, "preset": "tiny", "flex_kernel_options": "fast"}})


@pytest.mark.slow
def test_dry_run_on_packed_shards_plans_document_masking(tmp_path):
    pytest.importorskip("nemo.collections.llm", reason="needs the train extra")
    from click.testing import CliRunner

    from jpcorpus.cli import main as jpcorpus_main
    from trainer.cli import main

    sample = ROOT / "data/sample/ja_sample.jsonl"
    result = CliRunner().invoke(jpcorpus_main, ["binarize", "--quiet", *[str(sample)] * 4, "-o", str(tmp_path / "ja"),
                                                "--pack", "64", "--valid-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    args = ["run", str(ROOT / "configs/qwen25_05b_ja_lora.yaml"), "--dry-run", "model.base=null",
            "model.from_scratch=true", f"data.train=[{tmp_path}/ja_train]", f"data.valid=[{tmp_path}/ja_valid]",
            f"run_dir={tmp_path}/run", "schedule.max_steps=300", "data.num_workers=0"]
    result = CliRunner().invoke(main, args + ["data.seq_length=64"])
    assert result.exit_code == 0, result.output
    assert "one packed document per sample" in result.output and "flex_attention on document ids" in result.output
    assert "; fill " in result.output
    assert "train samples (built)" in result.output
    result = CliRunner().invoke(main, args + ["data.seq_length=128"])
    assert result.exit_code == 1 and "was packed for seq_length 64" in result.output  # a refusal
