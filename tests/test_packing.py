"""binarize --pack: property-based packing, megatron-core reading the files, the CLI, bad input."""

from __future__ import annotations

import filecmp
import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from jpcorpus.cli import main
from jpcorpus.indexed_dataset import IndexedDataset
from jpcorpus.packing import Packer, PackingWriter, best_fit_decreasing, packed_shard_stats
from jpcorpus.sidecar import read_sidecar, sidecar_path
from jpcorpus.split_writer import SplitWriter

from test_binarize import BAD_LINES


def _pack_to_files(prefix, lengths, seq_length, buffer, max_bytes=None, batch=7):
    """Documents of the given lengths whose tokens are 0, 1, 2, ... (so each token names its
    place in the input), packed through the real writer; returns the token stream's length."""
    writer = PackingWriter(SplitWriter(str(prefix), np.dtype(np.int32), max_bytes), seq_length, buffer)
    tokens = np.arange(sum(lengths), dtype=np.int32)
    ends = np.cumsum(lengths)
    for a in range(0, len(lengths), batch):  # batches as binarize hands them over
        lo = int(ends[a - 1]) if a else 0
        writer.add(tokens[lo:int(ends[min(a + batch, len(lengths)) - 1])], np.array(lengths[a:a + batch], np.int32))
    writer.close()
    return writer


documents = st.lists(st.integers(1, 70), min_size=0, max_size=60)


@settings(max_examples=80, deadline=None)
@given(lengths=documents, seq_length=st.integers(1, 24), buffer=st.integers(1, 12))
def test_every_token_once_in_order_and_no_sample_too_long(tmp_path_factory, lengths, seq_length, buffer):
    prefix = tmp_path_factory.mktemp("pack") / "p"
    writer = _pack_to_files(prefix, lengths, seq_length, buffer)
    ds = IndexedDataset(prefix)
    capacity = seq_length + 1
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    seqs = [ds[i] for i in range(len(ds))]
    # every input token exactly once
    assert np.array_equal(np.sort(np.concatenate(seqs or [np.empty(0, np.int32)])), np.arange(starts[-1]))
    # each sequence is one run of one document; a document's runs come in order and end to end
    seen_upto = starts[:-1].copy()
    for seq in seqs:
        doc = int(np.searchsorted(starts, seq[0], side="right") - 1)
        assert np.array_equal(seq, np.arange(seq[0], seq[0] + len(seq))) and seq[-1] < starts[doc + 1]
        assert seq[0] == seen_upto[doc]  # the next piece of that document, never an earlier one
        seen_upto[doc] += len(seq)
        is_last = seen_upto[doc] == starts[doc + 1]
        assert is_last or len(seq) == capacity  # pieces are whole samples but the remainder
    # no sample over seq_length + 1; documents that fit are never cut
    assert all(len(ds.document(i)) <= capacity for i in range(ds.documents))
    assert len(seqs) == sum(1 if n <= capacity else -(-n // capacity) for n in lengths)
    stats = writer.packer.stats
    assert stats.samples == ds.documents and stats.tokens == ds.tokens == starts[-1]
    assert stats.cut_documents == sum(n > capacity for n in lengths)
    assert stats.peak_buffer_tokens <= buffer * capacity  # memory: the buffer, whatever the input size
    assert packed_shard_stats(ds, capacity).over_length == 0
    assert packed_shard_stats(ds, capacity).samples == ds.documents


@settings(max_examples=60, deadline=None)
@given(lengths=documents, seq_length=st.integers(1, 24), buffer=st.integers(1, 12),
       batch_a=st.integers(1, 9), batch_b=st.integers(1, 9))
def test_independent_of_batching(tmp_path_factory, lengths, seq_length, buffer, batch_a, batch_b):
    """Workers change only how documents are batched on their way in: the files must not change."""
    root = tmp_path_factory.mktemp("batch")
    _pack_to_files(root / "a", lengths, seq_length, buffer, batch=batch_a)
    _pack_to_files(root / "b", lengths, seq_length, buffer, batch=batch_b)
    for suffix in (".bin", ".idx"):
        assert filecmp.cmp(root / f"a{suffix}", root / f"b{suffix}", shallow=False)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), max_size=80), capacity=st.integers(30, 64))
def test_best_fit_decreasing_bins(sizes, capacity):
    bins = best_fit_decreasing(sizes, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in b) <= capacity for b in bins)
    # any-fit property: a new bin is opened only for an item no open bin can take, so at most
    # one bin ends up at most half full (hence fewer than 2 x sum / capacity + 1 bins)
    assert sum(2 * sum(sizes[i] for i in b) <= capacity for b in bins) <= 1
    assert best_fit_decreasing(sizes, capacity) == bins  # deterministic


def test_best_fit_takes_the_tightest_bin():
    # rooms after 7, 6, 5 in bins of 10: 3, 4, 5; a 4 goes to the room-4 bin, a 3 to the room-3 one
    assert best_fit_decreasing([7, 6, 5, 4, 3], 10) == [[0, 4], [1, 3], [2]]


def test_megatron_core_reads_packed_files(tmp_path):
    mc = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=400).tolist()
    _pack_to_files(tmp_path / "p", lengths, 127, 50)
    ours = IndexedDataset(tmp_path / "p")
    theirs = mc.IndexedDataset(str(tmp_path / "p"))
    assert len(theirs) == len(ours) and theirs.document_indices.tolist() == ours.doc_indices.tolist()
    assert len(theirs.document_indices) - 1 < len(theirs)  # several sequences per document
    for i in range(len(ours)):
        assert theirs[i].tolist() == ours[i].tolist()
    # and byte for byte what megatron-core's own builder writes for the same samples
    builder = mc.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.int32)
    for d in range(ours.documents):
        for s in range(int(ours.doc_indices[d]), int(ours.doc_indices[d + 1])):
            builder.add_item(torch.from_numpy(np.array(ours[s])))
        builder.end_document()
    builder.finalize(str(tmp_path / "m.idx"))
    for suffix in (".bin", ".idx"):
        assert filecmp.cmp(tmp_path / f"m{suffix}", tmp_path / f"p{suffix}", shallow=False), suffix


def test_shards_end_between_samples(tmp_path):
    rng = np.random.default_rng(1)
    lengths = rng.integers(100, 5000, size=600).tolist()
    _pack_to_files(tmp_path / "whole", lengths, 2047, 100)
    _pack_to_files(tmp_path / "sh", lengths, 2047, 100, max_bytes=10**6)
    shards = sorted(tmp_path.glob("sh_*.idx"))
    assert len(shards) >= 3
    whole = IndexedDataset(tmp_path / "whole")
    parts = [IndexedDataset(p.with_suffix("")) for p in shards]
    assert all(p.bin_size <= 10**6 for p in parts)
    assert [p.document(i).tolist() for p in parts for i in range(p.documents)] == \
           [whole.document(i).tolist() for i in range(whole.documents)]


def test_packer_counts_cut_documents():
    packer = Packer(seq_length=9, buffer_documents=100)  # samples of 10 tokens
    assert packer.add(np.arange(25)) and packer.add(np.arange(10)) and not packer.add(np.arange(3))
    rest = packer.flush()
    s = packer.stats
    assert (s.documents, s.cut_documents, s.pieces, s.samples) == (3, 1, 3, 4)
    assert [[len(x) for x in sample] for sample in rest] == [[5, 3]]
    assert s.fill_rate == 38 / 40


# ------------------------------------------------------------------ through the CLI


def run(*args):
    return CliRunner().invoke(main, ["binarize", "--quiet", *map(str, args)])


def test_cli_pack_sidecar_inspect_and_workers(tmp_path, sample_path):
    for workers in (1, 2):
        result = run(sample_path, sample_path, "-o", tmp_path / f"w{workers}", "--pack", 48, "--pack-buffer", 8,
                     "--valid-fraction", "0.2", "--workers", workers)
        assert result.exit_code == 0, result.output
    assert "packed train:" in result.output and "fill rate" in result.output
    for split in ("train", "valid"):
        for suffix in (".bin", ".idx"):
            assert (tmp_path / f"w1_{split}{suffix}").read_bytes() == (tmp_path / f"w2_{split}{suffix}").read_bytes()
    # the split is by document, before packing: the same documents as an unpacked run
    assert run(sample_path, sample_path, "-o", tmp_path / "plain", "--valid-fraction", "0.2").exit_code == 0
    for split in ("train", "valid"):
        packed, plain = IndexedDataset(tmp_path / f"w1_{split}"), IndexedDataset(tmp_path / f"plain_{split}")
        assert packed.tokens == plain.tokens
        assert sorted(np.asarray(packed._data).tolist()) == sorted(np.asarray(plain._data).tolist())
    side = read_sidecar(tmp_path / "w1_train")
    ds = IndexedDataset(tmp_path / "w1_train")
    assert side["documents"] == ds.documents and side["sequences"] == len(ds) > ds.documents
    pk = side["packing"]
    assert (pk["seq_length"], pk["sample_tokens"], pk["algorithm"], pk["buffer_documents"]) == \
           (48, 49, "best-fit-decreasing", 8)
    assert pk["split"]["samples"] == ds.documents and pk["split"]["tokens"] == ds.tokens
    assert pk["split"]["cut_documents"] > 0 and pk["split"]["pieces"] > pk["split"]["cut_documents"]
    report = CliRunner().invoke(main, ["inspect-idx", str(tmp_path / "w1_train"), "--verify", "--json"])
    assert report.exit_code == 0, report.output
    summary = json.loads(report.output)
    assert summary["problems"] == []
    assert summary["packing"]["samples"] == ds.documents and summary["packing"]["over_length_samples"] == 0
    assert summary["packing"]["sample_length"]["max"] <= 49
    text = CliRunner().invoke(main, ["inspect-idx", str(tmp_path / "w1_train")]).output
    assert "packed for seq_length 48" in text and "fill rate" in text


@pytest.mark.parametrize("packing, message", [({"sample_tokens": 100}, "packed samples exceed 100 tokens"),
                                              ("junk", "'packing' has no valid sample_tokens")])
def test_verify_finds_a_sample_longer_than_its_length(tmp_path, sample_path, packing, message):
    assert run(sample_path, "-o", tmp_path / "s", "--pack", 512).exit_code == 0
    path = sidecar_path(tmp_path / "s")
    side = json.loads(path.read_text(encoding="utf-8"))
    side["packing"] = side["packing"] | packing if isinstance(packing, dict) else packing  # as if packed shorter
    path.write_text(json.dumps(side), encoding="utf-8")
    result = CliRunner().invoke(main, ["inspect-idx", str(tmp_path / "s"), "--verify"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output


@pytest.mark.parametrize("reason", ["malformed_json", "invalid_encoding", "empty_text"])  # the reader's paths
def test_bad_record_stops_packing_too(tmp_path, reason):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "good"}\n' + BAD_LINES[reason] + b"\n")
    result = run(path, "-o", tmp_path / "s", "--pack", 64)
    assert result.exit_code == 2 and f"{path}:2:" in result.output and "Traceback" not in result.output
    assert not any(p.suffix in (".bin", ".idx", ".json") for p in tmp_path.iterdir())
    assert not list(tmp_path.glob("*.partial"))
    result = run(path, "-o", tmp_path / "s", "--pack", 64, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert read_sidecar(tmp_path / "s")["packing"]["split"]["input_documents"] == 1


@pytest.mark.parametrize("flags, message", [(["--pack", "0"], "--pack must be a positive"),
                                            (["--pack", "64", "--pack-buffer", "0"], "--pack-buffer must be at least")])
def test_bad_pack_options(tmp_path, sample_path, flags, message):
    result = run(sample_path, "-o", tmp_path / "s", *flags)
    assert result.exit_code == 2 and message in result.output
    assert list(tmp_path.iterdir()) == []


def test_news_fill_rate_at_2048(tmp_path):
    """The goal on real text: >= 98% of every sample used at seq_length 2048 (Japanese Wikinews)."""
    from conftest import SHARED_CORPUS

    news = SHARED_CORPUS / "wikinews_ja.jsonl.gz"
    if not news.is_file():
        pytest.skip(f"{news} not present")
    result = run(news, "-o", tmp_path / "n", "--pack", 2048)
    assert result.exit_code == 0, result.output
    split = read_sidecar(tmp_path / "n")["packing"]["split"]
    assert split["fill_rate"] >= 0.98, split
    assert split["input_documents"] == 3669 and split["cut_documents"] > 0


def test_real_text_round_trip(tmp_path, aozora_path):
    """Real books: the packed sequences are exactly each document's sample-sized pieces, in order."""
    sample = tmp_path / "aozora.jsonl"
    with gzip.open(aozora_path, "rt", encoding="utf-8") as src, open(sample, "w", encoding="utf-8") as dst:
        for _, line in zip(range(12), src):
            dst.write(line)
    assert run(sample, "-o", tmp_path / "plain").exit_code == 0
    assert run(sample, "-o", tmp_path / "packed", "--pack", 1024, "--pack-buffer", 4).exit_code == 0
    plain, packed = IndexedDataset(tmp_path / "plain"), IndexedDataset(tmp_path / "packed")
    expected = [tuple(doc[a:a + 1025].tolist()) for doc in (plain[i] for i in range(len(plain)))
                for a in range(0, len(doc), 1025)]
    assert sorted(tuple(packed[i].tolist()) for i in range(len(packed))) == sorted(expected)
    assert max(len(packed.document(i)) for i in range(packed.documents)) <= 1025


def test_repack_equals_binarize_pack(tmp_path, sample_path):
    """Packing an existing shard gives the bytes binarize --pack gives, and a sidecar that says so."""
    from jpcorpus.repack import repack_shard

    assert run(sample_path, "-o", tmp_path / "plain", "--valid-fraction", "0.2").exit_code == 0
    assert run(sample_path, "-o", tmp_path / "direct", "--valid-fraction", "0.2", "--pack", 48,
               "--pack-buffer", 5).exit_code == 0
    for split in ("train", "valid"):
        stats = repack_shard(tmp_path / f"plain_{split}", tmp_path / f"re_{split}", 48, 5)
        for suffix in (".bin", ".idx"):
            assert (tmp_path / f"re_{split}{suffix}").read_bytes() == (tmp_path / f"direct_{split}{suffix}").read_bytes()
        side, direct = read_sidecar(tmp_path / f"re_{split}"), read_sidecar(tmp_path / f"direct_{split}")
        for key in ("documents", "sequences", "tokens", "bin_sha256", "idx_sha256", "packing", "tokenizer", "split"):
            assert side[key] == direct[key], key
        assert side["packed_from"] == str(tmp_path / f"plain_{split}") and stats.samples == side["documents"]
        report = CliRunner().invoke(main, ["inspect-idx", str(tmp_path / f"re_{split}"), "--verify"])
        assert report.exit_code == 0, report.output
    with pytest.raises(ValueError, match="already packed"):
        repack_shard(tmp_path / "re_train", tmp_path / "again", 48)
