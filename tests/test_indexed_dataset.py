"""The .bin/.idx format three ways: round trip, byte equality with megatron-core, read-back by megatron-core."""

from __future__ import annotations

import filecmp
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jpcorpus.indexed_dataset import (
    FormatError, IndexedDataset, IndexedDatasetWriter, bin_path, idx_path, optimal_dtype,
)

megatron_indexed = pytest.importorskip(
    "megatron.core.datasets.indexed_dataset", reason="megatron-core (the dev extra) is not installed"
)


def _write(prefix, docs, dtype):
    with IndexedDatasetWriter(prefix, dtype) as writer:
        for doc in docs:
            writer.add_document(np.asarray(doc, dtype=np.int64))
        writer.finalize()


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, 65499), max_size=40), max_size=30),
       wide=st.booleans())
def test_round_trip(tmp_path_factory, docs, wide):
    prefix = tmp_path_factory.mktemp("rt") / "x"
    dtype = np.int32 if wide else np.uint16
    _write(prefix, docs, dtype)
    ds = IndexedDataset(prefix)
    assert ds.documents == len(docs) == len(ds)
    assert [ds[i].tolist() for i in range(len(ds))] == docs
    assert ds.tokens == sum(map(len, docs))
    assert bin_path(prefix).stat().st_size == ds.tokens * np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_bytes_equal_megatron_builder(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    high = 65_000 if dtype == np.uint16 else 151_665
    docs = [rng.integers(0, high, size=int(rng.integers(1, 300))) for _ in range(500)]
    builder = megatron_indexed.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=dtype)
    for doc in docs:
        builder.add_item(torch.from_numpy(doc))
        builder.end_document()
    builder.finalize(str(tmp_path / "m.idx"))
    _write(tmp_path / "j", docs, dtype)
    for suffix in (".bin", ".idx"):
        assert filecmp.cmp(tmp_path / f"m{suffix}", tmp_path / f"j{suffix}", shallow=False), suffix


def test_megatron_reads_ours(tmp_path):
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 151_665, size=int(rng.integers(1, 100))) for _ in range(200)]
    _write(tmp_path / "j", docs, np.int32)
    theirs = megatron_indexed.IndexedDataset(str(tmp_path / "j"))
    assert len(theirs) == len(docs)
    assert theirs.document_indices.tolist() == list(range(len(docs) + 1))
    for i, doc in enumerate(docs):
        assert theirs[i].tolist() == doc.tolist()
    assert theirs.get(7, offset=2, length=3).tolist() == docs[7][2:5].tolist()


def test_gpt_dataset_samples_are_our_tokens(tmp_path):
    """megatron-core's GPTDataset cuts its samples out of exactly the tokens our reader sees."""
    gpt = pytest.importorskip("megatron.core.datasets.gpt_dataset")
    from megatron.core.datasets.utils import Split

    rng = np.random.default_rng(2)
    docs = [np.append(rng.integers(0, 990, size=int(rng.integers(5, 60))), 999) for _ in range(300)]
    _write(tmp_path / "j", docs, np.int32)
    ours = IndexedDataset(tmp_path / "j")

    class _Ids:  # GPTDataset reads only these ids from its tokenizer
        eod, pad = 999, 998
        unique_identifiers = {"class": "test-ids"}

    config = gpt.GPTDatasetConfig(
        random_seed=1234, sequence_length=32, split="1,0,0", tokenizer=_Ids(),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        path_to_cache=str(tmp_path / "cache"),
    )
    theirs = megatron_indexed.IndexedDataset(str(tmp_path / "j"))
    dataset = gpt.GPTDataset(theirs, str(tmp_path / "j"), np.arange(len(docs), dtype=np.int32),
                             40, Split.train, config)
    stream = np.concatenate([ours.document(int(d)) for d in dataset.document_index])
    for i in range(len(dataset)):
        sample = dataset[i]
        j = dataset.shuffle_index[i]
        doc_pos, offset = dataset.sample_index[j]
        start = sum(len(ours.document(int(d))) for d in dataset.document_index[:doc_pos]) + offset
        expected = stream[start: start + 33]
        assert sample["tokens"].tolist() == expected[:-1].tolist()
        assert sample["labels"].tolist() == expected[1:].tolist()


def test_interrupted_writer_leaves_no_pair(tmp_path):
    prefix = tmp_path / "x"
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(prefix, np.int32) as writer:
            writer.add_document(np.arange(10))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_finalize_replaces_an_old_pair(tmp_path):
    _write(tmp_path / "x", [[1, 2, 3]] * 5, np.int32)
    _write(tmp_path / "x", [[4]], np.int32)
    ds = IndexedDataset(tmp_path / "x")
    assert ds.documents == 1 and ds[0].tolist() == [4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin", "x.idx"]


def test_reader_rejects_bad_files(tmp_path):
    _write(tmp_path / "x", [[1, 2, 3], [4, 5]], np.int32)
    raw = idx_path(tmp_path / "x").read_bytes()
    idx_path(tmp_path / "x").write_bytes(raw[:-4])
    with pytest.raises(FormatError, match="truncated or corrupted"):
        IndexedDataset(tmp_path / "x")
    idx_path(tmp_path / "x").write_bytes(b"NOTMAGIC!" + raw[9:])
    with pytest.raises(FormatError, match="bad magic"):
        IndexedDataset(tmp_path / "x")
    idx_path(tmp_path / "x").write_bytes(raw[:9] + struct.pack("<Q", 2) + raw[17:])
    with pytest.raises(FormatError, match="version 2"):
        IndexedDataset(tmp_path / "x")


def test_optimal_dtype_matches_megatron():
    for vocab in (100, 65_499, 65_500, 151_665):
        assert optimal_dtype(vocab) == megatron_indexed.DType.optimal_dtype(vocab)
