"""jpcorpus binarize through the CLI, with the real built-in Qwen2.5 tokenizer."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from jpcorpus.cli import main
from jpcorpus.indexed_dataset import IndexedDataset
from jpcorpus.sidecar import read_sidecar
from childproc import default_sigint


def run(*args: str):
    result = CliRunner().invoke(main, ["binarize", "--quiet", *map(str, args)])
    return result


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_tokens_equal_reference_tokenizer(tmp_path, sample_path, qwen):
    result = run(sample_path, "-o", tmp_path / "s")
    assert result.exit_code == 0, result.output
    ds = IndexedDataset(tmp_path / "s")
    texts = [r["text"] for r in _records(sample_path)]
    assert ds.documents == len(texts)
    assert ds.dtype == np.int32  # vocabulary 151,665 >= 65,500
    for i, text in enumerate(texts):
        expected = qwen.hf(text, add_special_tokens=False)["input_ids"] + [151643]
        assert ds[i].tolist() == expected
        assert qwen.decode(ds[i][:-1].tolist()) == text  # sample text is NFC already


def test_sidecar_records_provenance(tmp_path, sample_path, qwen):
    assert run(sample_path, "-o", tmp_path / "s").exit_code == 0
    side = read_sidecar(tmp_path / "s")
    assert side["tokenizer"]["fingerprint"] == qwen.fingerprint
    assert side["tokenizer"]["vocab_size"] == 151665
    assert side["tokenizer"]["eod_id"] == 151643
    assert side["documents"] == 26 and side["dtype"] == "int32"
    assert side["tokens"] == IndexedDataset(tmp_path / "s").tokens
    (item,) = side["inputs"]
    assert item["bytes"] == sample_path.stat().st_size and len(item["sha256"]) == 64
    assert side["command"][:2] == ["jpcorpus", "binarize"] or side["command"][0] == "jpcorpus"


def test_output_identical_for_any_worker_count(tmp_path, sample_path):
    for workers in (1, 2):
        result = run(sample_path, sample_path, "-o", tmp_path / f"w{workers}", "--workers", workers,
                     "--valid-fraction", "0.2")
        assert result.exit_code == 0, result.output
    for split in ("train", "valid"):
        for suffix in (".bin", ".idx"):
            a = (tmp_path / f"w1_{split}{suffix}").read_bytes()
            assert a == (tmp_path / f"w2_{split}{suffix}").read_bytes(), (split, suffix)


def test_split_is_by_document_id(tmp_path, sample_path):
    assert run(sample_path, "-o", tmp_path / "a", "--valid-fraction", "0.1").exit_code == 0
    # The same documents in reverse order land in the same splits.
    reversed_input = tmp_path / "rev.jsonl"
    reversed_input.write_text("\n".join(reversed(sample_path.read_text(encoding="utf-8").splitlines())) + "\n",
                              encoding="utf-8")
    assert run(reversed_input, "-o", tmp_path / "b", "--valid-fraction", "0.1").exit_code == 0
    for split in ("train", "valid"):
        a = IndexedDataset(tmp_path / f"a_{split}")
        b = IndexedDataset(tmp_path / f"b_{split}")
        docs_a = sorted(a[i].tolist() for i in range(len(a)))
        docs_b = sorted(b[i].tolist() for i in range(len(b)))
        assert docs_a == docs_b and len(docs_a) > 0
    assert IndexedDataset(tmp_path / "a_valid").documents == 2


def test_empty_validation_split_is_an_error(tmp_path, sample_path):
    result = run(sample_path, "-o", tmp_path / "s", "--valid-fraction", "0.0001")
    assert result.exit_code == 2
    assert "validation split received no documents" in result.output
    assert list(tmp_path.iterdir()) == []


def test_shards_concatenate_to_the_whole(tmp_path, qwen):
    big = tmp_path / "big.jsonl"
    rng = np.random.default_rng(0)
    syllables = list("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん")
    with open(big, "w", encoding="utf-8") as f:
        for i in range(400):
            text = "".join(rng.choice(syllables, size=2000)) + "。"
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    assert run(big, "-o", tmp_path / "whole").exit_code == 0
    result = run(big, "-o", tmp_path / "sh", "--max-shard-size", "1MB")
    assert result.exit_code == 0, result.output
    shards = sorted(tmp_path.glob("sh_*.idx"))
    assert len(shards) >= 2
    whole = IndexedDataset(tmp_path / "whole")
    pieces = [IndexedDataset(p.with_suffix("")) for p in shards]
    assert all(p.bin_size <= 1_000_000 for p in pieces)
    assert [d.tolist() for p in pieces for d in (p[i] for i in range(len(p)))] == \
           [whole[i].tolist() for i in range(len(whole))]
    assert [read_sidecar(p.with_suffix(""))["shard"] for p in shards] == list(range(len(shards)))


def test_plain_text_in_shift_jis(tmp_path, qwen):
    text = "吾輩は猫である。名前はまだ無い。"
    (tmp_path / "sjis.txt").write_bytes(text.encode("cp932"))
    result = run(tmp_path / "sjis.txt", "-o", tmp_path / "s")
    assert result.exit_code == 2
    assert "pass --encoding cp932" in result.output and "sjis.txt:1" in result.output
    result = run(tmp_path / "sjis.txt", "-o", tmp_path / "s", "--encoding", "cp932")
    assert result.exit_code == 0, result.output
    assert qwen.decode(IndexedDataset(tmp_path / "s")[0][:-1].tolist()) == text


BAD_LINES = {
    "malformed_json": b'{"text": "ok"',
    "not_an_object": b'["text"]',
    "missing_text_key": b'{"body": "x"}',
    "text_not_string": b'{"text": 12}',
    "empty_text": b'{"text": "   "}',
    "nul_byte": b'{"text": "a\\u0000b"}',
    "invalid_encoding": '{"text": "日本"}'.encode("cp932"),
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_record_stops_with_file_and_line(tmp_path, reason):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "good"}\n' + BAD_LINES[reason] + b"\n")
    result = run(path, "-o", tmp_path / "s")
    assert result.exit_code == 2
    assert f"{path}:2:" in result.output
    assert "Traceback" not in result.output
    assert not any(p.suffix in (".bin", ".idx") for p in tmp_path.iterdir())
    assert not list(tmp_path.glob("*.partial*"))


def test_bad_record_after_merged_partitions_leaves_no_shard(tmp_path, qwen):
    """Partitions are merged as they finish, so full shards exist before a late bad record is met:
    the error must still leave no .bin/.idx, rolled-over shards included."""
    path = tmp_path / "in.jsonl"
    rng = np.random.default_rng(1)
    syllables = list("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほ")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(250):
            f.write(json.dumps({"id": i, "text": "".join(rng.choice(syllables, size=3000))}, ensure_ascii=False) + "\n")
        f.write('{"text": 12}\n')
    out = tmp_path / "out"
    out.mkdir()
    result = run(path, "-o", out / "s", "--max-shard-size", "1MB", "--partition-size", "1MB",
                 "--workers", "2")
    assert result.exit_code == 2, result.output
    assert f"{path}:251:" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == []
    ok = run(path, "-o", out / "s", "--max-shard-size", "1MB", "--partition-size", "1MB", "--workers", "2",
             "--skip-bad")
    assert ok.exit_code == 0, ok.output
    assert len(list(out.glob("s*_0000[0-9].idx"))) >= 2  # the shards did roll over: the case above is the real one


def test_skip_bad_counts_and_logs(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "good"}\n' + b"\n".join(BAD_LINES.values()) + b'\n{"text": "also good"}\n')
    result = run(path, "-o", tmp_path / "s", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert IndexedDataset(tmp_path / "s").documents == 2
    logged = _records(tmp_path / "s.skipped.jsonl")
    assert sorted(r["reason"] for r in logged) == sorted(BAD_LINES)
    assert read_sidecar(tmp_path / "s")["skipped"] == {reason: 1 for reason in BAD_LINES}


def test_truncated_gzip(tmp_path):
    payload = "".join(json.dumps({"text": f"文書{i}です。" * 20}, ensure_ascii=False) + "\n" for i in range(2000))
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(payload.encode())[:-100])
    result = run(path, "-o", tmp_path / "s")
    assert result.exit_code == 2 and "truncated" in result.output
    result = run(path, "-o", tmp_path / "s", "--skip-bad")
    assert result.exit_code == 0
    kept = IndexedDataset(tmp_path / "s").documents
    assert 1500 < kept < 2000  # the documents before the damage are kept
    assert read_sidecar(tmp_path / "s")["skipped"] == {"truncated_input": 1}


def test_missing_input_and_bad_options(tmp_path):
    assert "no such file" in run(tmp_path / "nope.jsonl", "-o", tmp_path / "s").output
    result = run(tmp_path / "nope.jsonl", "-o", tmp_path / "s", "--valid-fraction", "1.5")
    assert result.exit_code == 2


def test_real_japanese_round_trip(tmp_path, aozora_path, qwen):
    """Decode equals source on real text (NFC-normalised, as the tokenizer's normalizer does)."""
    import unicodedata

    sample = tmp_path / "aozora.jsonl"
    with gzip.open(aozora_path, "rt", encoding="utf-8") as src, open(sample, "w", encoding="utf-8") as dst:
        for _, line in zip(range(20), src):
            dst.write(line)
    assert run(sample, "-o", tmp_path / "a", "--workers", "2").exit_code == 0
    ds = IndexedDataset(tmp_path / "a")
    for i, record in enumerate(_records(sample)):
        assert qwen.decode(ds[i][:-1].tolist()) == unicodedata.normalize("NFC", record["text"])


@pytest.mark.parametrize("sig", ["SIGINT", "SIGINT-group", "SIGKILL"])
def test_killed_run_leaves_no_complete_looking_pair(tmp_path, sig):
    """Interrupt a real run mid-way: no .bin/.idx/.json under the final names.

    SIGINT-group is Ctrl-C in a terminal: every process of the group, workers
    included, gets it; the workers ignore it and the run stops as cleanly.
    """
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(3)
    kana = list("あいうえおかきくけこさしすせそたちつてとなにぬねの")
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(3000):
            # sentences of 30 kana: one 3,000-kana run is a single BPE piece, ~16x slower to tokenize,
            # and under load the batches still in flight after the signal outlasted the timeout below
            text = "。".join("".join(rng.choice(kana, size=30)) for _ in range(100))
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "jpcorpus.cli", "binarize", str(path), "-o", str(tmp_path / "s"),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not list((tmp_path / ".s.work" / "tokenize").glob("*.done.json")):  # partitions finished, run going on
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    if sig == "SIGINT-group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    finals = [p.name for p in tmp_path.iterdir() if p.suffix in (".bin", ".idx", ".json")]
    assert finals == []
    if sig != "SIGKILL":  # a clean interruption also removes its partial files
        assert proc.returncode == 130, err
        assert not list(tmp_path.glob("*.partial*")), list(tmp_path.iterdir())
        assert b"interrupted" in err and b"Traceback" not in err, err
    assert list((tmp_path / ".s.work" / "tokenize").glob("*.done.json"))  # kept: a rerun reuses them
    if sig != "SIGKILL":
        assert b"finished partitions kept in" in err, err
