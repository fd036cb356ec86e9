"""jpcorpus.verify: every single-byte change of an index is caught, damage never raises."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jpcorpus.indexed_dataset import HEADER_SIZE, IndexedDatasetWriter, bin_path, idx_path
from jpcorpus.sidecar import file_sha256, sidecar_path, write_sidecar
from jpcorpus.verify import verify_content, verify_shard, verify_structure

DOCS = [[5, 6, 7, 151643], [8, 9, 151643], [151643], [1, 2, 3, 4, 5, 151643], [42, 151643]]


def make_shard(prefix, docs=DOCS, dtype=np.int32, vocab_size=151665):
    """A shard with a sidecar as binarize writes it (the counts and hashes that verify reads)."""
    with IndexedDatasetWriter(prefix, dtype) as writer:
        for doc in docs:
            writer.add_document(np.array(doc))
        sha = writer.finalize()
    write_sidecar(prefix, {
        "format": "megatron-indexed-dataset", "format_version": 1, "schema": 1, "dtype": np.dtype(dtype).name,
        "documents": len(docs), "sequences": len(docs), "tokens": sum(map(len, docs)),
        "bin_sha256": sha, "idx_sha256": file_sha256(idx_path(prefix)),
        "bin_bytes": bin_path(prefix).stat().st_size, "idx_bytes": idx_path(prefix).stat().st_size,
        "tokenizer": {"name": "qwen2.5", "fingerprint": "tokfp1:test", "vocab_size": vocab_size, "eod_id": 151643},
    })
    return prefix


def messages(problems):
    return [str(p) for p in problems]


def test_a_sound_shard_has_no_problem(tmp_path):
    prefix = make_shard(tmp_path / "s")
    assert verify_shard(prefix, full=True) == []


def test_every_single_byte_change_of_the_index_is_caught(tmp_path):
    prefix = make_shard(tmp_path / "s")
    index = idx_path(prefix)
    good = index.read_bytes()
    assert len(good) == HEADER_SIZE + 12 * len(DOCS) + 8 * (len(DOCS) + 1)
    missed = []
    for at in range(len(good)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(good)
            damaged[at] ^= flip
            index.write_bytes(bytes(damaged))
            if not verify_structure(prefix):
                missed.append((at, flip))
    index.write_bytes(good)
    assert missed == []
    assert verify_structure(prefix) == []


@pytest.mark.parametrize("cut", [1, 4, 5])
def test_truncated_bin_names_the_file(tmp_path, cut):
    prefix = make_shard(tmp_path / "s")
    data = bin_path(prefix)
    data.write_bytes(data.read_bytes()[:-cut])
    (problem,) = verify_shard(prefix, full=True)
    assert problem.path == str(data) and problem.anchor == "damaged-shard"
    assert "the .bin is truncated" in str(problem) and "re-run jpcorpus binarize" in str(problem)


def test_flipped_token_bytes_need_the_full_check(tmp_path):
    prefix = make_shard(tmp_path / "s")
    data = bin_path(prefix)
    raw = bytearray(data.read_bytes())
    raw[4] ^= 0x01  # token 6 -> 7: still a valid id, sizes unchanged
    data.write_bytes(bytes(raw))
    assert verify_structure(prefix) == []
    (problem,) = verify_content(prefix)
    assert problem.anchor == "shard-changed" and "sha256 differs" in problem.message


def test_token_outside_the_vocabulary(tmp_path):
    prefix = make_shard(tmp_path / "s", docs=[[1, 2, 999_999]], vocab_size=151665)
    assert verify_structure(prefix) == []
    (problem,) = verify_content(prefix)
    assert "token id 999999 outside the vocabulary [0, 151665)" in problem.message


def test_sidecar_counts_and_presence(tmp_path):
    prefix = make_shard(tmp_path / "s")
    side = json.loads(sidecar_path(prefix).read_text(encoding="utf-8"))
    sidecar_path(prefix).write_text(json.dumps(dict(side, documents=4, tokens=1)), encoding="utf-8")
    problems = verify_structure(prefix)
    assert [p.anchor for p in problems] == ["sidecar-mismatch"] * 2
    assert "documents is 4 but the files have 5" in messages(problems)[0]
    sidecar_path(prefix).write_text("{not json", encoding="utf-8")
    (problem,) = verify_structure(prefix)
    assert "not a valid sidecar" in problem.message
    sidecar_path(prefix).unlink()
    (problem,) = verify_structure(prefix)
    assert problem.anchor == "missing-sidecar" and "no sidecar" in problem.message
    assert verify_structure(prefix, sidecar=False) == []


def test_missing_files(tmp_path):
    (problem,) = verify_shard(tmp_path / "nothing", full=True, sidecar=False)[:1]
    assert problem.anchor == "missing-shard" and problem.message == "missing"


@settings(max_examples=150, deadline=None)
@given(idx=st.binary(max_size=200), data=st.binary(max_size=64), side=st.binary(max_size=64))
def test_garbage_never_raises(tmp_path_factory, idx, data, side):
    prefix = tmp_path_factory.mktemp("g") / "s"
    idx_path(prefix).write_bytes(idx)
    bin_path(prefix).write_bytes(data)
    sidecar_path(prefix).write_bytes(side)
    problems = verify_shard(prefix, full=True)
    assert problems and all(p.path and p.message for p in problems)


def test_structure_check_is_cheap_on_a_large_index(tmp_path):
    """1 million documents (a 20 MB index, a sparse 4 GB .bin): well under a second."""
    n = 1_000_000
    lengths = np.full(n, 1000, dtype=np.int32)
    pointers = np.arange(n, dtype=np.int64) * 4000
    header = b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + bytes([4]) + n.to_bytes(8, "little") \
        + (n + 1).to_bytes(8, "little")
    prefix = tmp_path / "big"
    with open(idx_path(prefix), "wb") as f:
        for part in (header, lengths.tobytes(), pointers.tobytes(), np.arange(n + 1, dtype=np.int64).tobytes()):
            f.write(part)
    with open(bin_path(prefix), "wb") as f:
        f.truncate(n * 4000)
    started = time.perf_counter()
    assert verify_structure(prefix, sidecar=False) == []
    assert time.perf_counter() - started < 1.0
