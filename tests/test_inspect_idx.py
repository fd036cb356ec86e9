"""jpcorpus inspect-idx: summaries, decoding and --verify on good and damaged shards."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from jpcorpus.cli import main
from jpcorpus.sidecar import sidecar_path


@pytest.fixture()
def shard(tmp_path, sample_path):
    result = CliRunner().invoke(main, ["binarize", "--quiet", str(sample_path), "-o", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    return tmp_path / "s"


def inspect(*args):
    return CliRunner().invoke(main, ["inspect-idx", *map(str, args)])


def test_summary_and_decode(shard, sample_path):
    result = inspect(shard, "--json", "--decode", "2", "--verify")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["problems"] == []
    assert report["format_version"] == 1 and report["dtype"] == "int32"
    assert report["documents"] == report["sequences"] == 26
    first = json.loads(sample_path.read_text(encoding="utf-8").splitlines()[0])["text"]
    assert report["decoded"][0] == first
    assert sum(row["count"] for row in report["histogram"]) == 26
    assert report["sidecar"]["tokenizer"]["name"] == "qwen2.5"
    text = inspect(shard).output
    assert "26 documents" in text and "qwen2.5" in text


def test_verify_truncated_bin(shard):
    data = shard.with_suffix(".bin")
    data.write_bytes(data.read_bytes()[:-8])
    result = inspect(shard, "--verify")
    assert result.exit_code == 1
    assert "the .bin is truncated" in result.output


def test_verify_corrupted_idx_header(shard):
    index = shard.with_suffix(".idx")
    raw = bytearray(index.read_bytes())
    raw[0:4] = b"XXXX"
    index.write_bytes(bytes(raw))
    result = inspect(shard, "--verify")
    assert result.exit_code == 1 and "bad magic" in result.output


def test_verify_sidecar_from_another_tokenizer(shard):
    path = sidecar_path(shard)
    side = json.loads(path.read_text(encoding="utf-8"))
    side["tokenizer"]["fingerprint"] = "tokfp1:" + "0" * 64
    path.write_text(json.dumps(side), encoding="utf-8")
    result = inspect(shard, "--verify")
    assert result.exit_code == 1 and "fingerprint" in result.output


def test_verify_changed_bin_content(shard):
    data = shard.with_suffix(".bin")
    raw = bytearray(data.read_bytes())
    raw[0:4] = (5).to_bytes(4, "little")
    data.write_bytes(bytes(raw))
    result = inspect(shard, "--verify")
    assert result.exit_code == 1 and "sha256 differs" in result.output


def test_verify_token_out_of_vocabulary(tmp_path):
    import numpy as np

    from jpcorpus.indexed_dataset import IndexedDatasetWriter

    with IndexedDatasetWriter(tmp_path / "x", np.int32) as writer:
        writer.add_document(np.array([1, 2, 999_999]))
        writer.finalize()
    result = CliRunner().invoke(main, ["inspect-idx", str(tmp_path / "x"), "--verify"])
    assert result.exit_code == 1 and "no sidecar" in result.output
    from jpcorpus.inspect_idx import verify

    assert any("outside the vocabulary" in p for p in verify(tmp_path / "x", vocab_size=151665))


def test_every_command_has_help_with_example():
    for name, command in main.commands.items():
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, name


@pytest.mark.parametrize("damage", ["bin one byte short", "sidecar not JSON"])
def test_damage_without_verify_is_a_data_problem_naming_the_file(shard, damage):
    if damage == "bin one byte short":
        data = shard.with_suffix(".bin")
        data.write_bytes(data.read_bytes()[:-1])
        expected = f"{data}: "
    else:
        sidecar_path(shard).write_text("{oops", encoding="utf-8")
        expected = f"{sidecar_path(shard)}: not a valid sidecar"
    for args in ([], ["--verify"], ["--decode", "1"]):
        result = inspect(shard, *args)
        assert result.exit_code == 1 and expected in result.output and "Traceback" not in result.output, args
