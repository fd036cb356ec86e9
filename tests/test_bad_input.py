"""Hostile input through the real CLIs: broken Unicode, hostile JSON, empty results, partial files.

Every failure is one ``error:`` line with the file and line, status 1 (nothing
left to write) or 2 (bad input), and no output under its final name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from childproc import default_sigint
from click.testing import CliRunner

from jpcorpus.cli import main
from jpcorpus.indexed_dataset import IndexedDataset
from jpcorpus.sidecar import read_sidecar

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "ja_sample.jsonl"
GOOD = SAMPLE.read_text(encoding="utf-8").splitlines()[0]  # kept by normalize's default profile
HOSTILE = {
    "invalid_unicode": r'{"id": 2, "text": "猫\ud800です"}',
    "too_deeply_nested": '{"id": 3, "text": "猫", "meta": ' + "[" * 5000 + "]" * 5000 + "}",
    "number_too_large": '{"id": 4, "text": "猫", "n": ' + "9" * 5000 + "}",
}


def cli(*args):
    result = CliRunner().invoke(main, [*map(str, args)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def finals(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".idx", ".json") or ".partial" in p.name)


@pytest.fixture
def lines(tmp_path):
    def write(*rows, name="in.jsonl"):
        path = tmp_path / name
        path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        return path
    return write


@pytest.mark.parametrize("reason", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["binarize", "normalize"])
def test_hostile_record_stops_with_file_and_line(tmp_path, lines, reason, command):
    path = lines(GOOD, HOSTILE[reason])
    out = tmp_path / "out"
    result = cli(command, path, "-o", out / ("s" if command == "binarize" else "o.jsonl"),
                 *(["--quiet"] if command == "binarize" else []))
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}:2: ") and "--skip-bad" in result.output
    assert not out.exists() or finals(out) == []


@pytest.mark.parametrize("command", ["binarize", "normalize"])
def test_skip_bad_counts_each_hostile_reason(tmp_path, lines, command):
    path = lines(GOOD, *HOSTILE.values())
    if command == "binarize":
        result = cli("binarize", "--quiet", path, "-o", tmp_path / "s", "--skip-bad")
        assert result.exit_code == 0, result.output
        assert read_sidecar(tmp_path / "s")["skipped"] == {reason: 1 for reason in HOSTILE}
    else:
        result = cli("normalize", path, "-o", tmp_path / "o.jsonl", "--skip-bad", "--report", tmp_path / "r.json")
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "r.json").read_text())["read"]["skipped"] == {reason: 1 for reason in HOSTILE}


def test_lone_surrogate_message_and_valid_pairs(tmp_path, lines, qwen):
    path = lines(r'{"text": "絵文字\ud83d\ude00です"}', r'{"text": "後半だけ\ude00"}')
    message = cli("binarize", "--quiet", path, "-o", tmp_path / "s").output
    assert message.startswith(f"error: {path}:2: escaped lone surrogate \\ude00 at column 15")
    assert cli("binarize", "--quiet", path, "-o", tmp_path / "s", "--skip-bad").exit_code == 0
    assert IndexedDataset(tmp_path / "s")[0][:-1].tolist() == list(qwen.encode_batch(["絵文字😀です"])[0])
    assert qwen.decode(IndexedDataset(tmp_path / "s")[0][:-1].tolist()) == "絵文字😀です"


def test_control_character_message_says_at_once(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "tab\there"}\n')
    message = cli("binarize", "--quiet", path, "-o", tmp_path / "s").output
    assert "Invalid control character at column 14" in message and "at at" not in message


def test_everything_skipped_is_an_error_not_an_empty_shard(tmp_path, lines):
    path = lines(*HOSTILE.values())
    result = cli("binarize", "--quiet", path, "-o", tmp_path / "s", "--skip-bad")
    assert result.exit_code == 1, result.output
    assert "nothing written: every record was skipped as bad input" in result.output
    assert f"{tmp_path / 's'}.skipped.jsonl lists them" in result.output
    assert finals(tmp_path) == []
    result = cli("binarize", "--quiet", path, "-o", tmp_path / "s", "--skip-bad", "--allow-empty")
    assert result.exit_code == 0 and IndexedDataset(tmp_path / "s").documents == 0


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_input_without_documents(tmp_path, content):
    path = tmp_path / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    for command, out in (("binarize", tmp_path / "s"), ("normalize", tmp_path / "o.jsonl")):
        result = cli(command, path, "-o", out)
        assert result.exit_code == 1 and "the input holds no documents" in result.output, result.output
    assert finals(tmp_path) == [] and not (tmp_path / "o.jsonl").exists()


def test_normalize_dropping_everything_keeps_the_evidence(tmp_path, lines):
    path = lines('{"id": 1, "text": "短い。"}', '{"id": 2, "text": "これも短い。"}')
    out, rejects, report = tmp_path / "o.jsonl", tmp_path / "rej.jsonl", tmp_path / "report.json"
    result = cli("normalize", path, "-o", out, "--rejects", rejects, "--report", report)
    assert result.exit_code == 1
    assert "nothing written: all 2 documents were dropped (too_short 2)" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.partial*"))
    assert [json.loads(x)["reason"] for x in rejects.read_text().splitlines()] == ["too_short", "too_short"]
    assert json.loads(report.read_text())["docs_out"] == 0
    assert cli("normalize", path, "-o", out, "--allow-empty").exit_code == 0 and out.read_text() == ""


def test_partial_files_are_never_input_and_are_cleaned(tmp_path, lines):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(GOOD + "\n", encoding="utf-8")
    for name in ("a.jsonl.partial-999999999", ".b.jsonl.partial-999999999", "c.jsonl.partial"):
        (folder / name).write_text('{"text": "途中で止まった書きかけの文書"}\n', encoding="utf-8")
    result = cli("binarize", "--quiet", folder, "-o", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert IndexedDataset(tmp_path / "s").documents == 1
    (folder / "a.jsonl").unlink()
    result = cli("binarize", "--quiet", folder, "-o", tmp_path / "t")
    assert result.exit_code == 2 and "only unfinished temporary files" in result.output
    # leftovers of a killed run of the same output (a process id that no longer runs) go at the next run
    out = tmp_path / "o.jsonl"
    stale = [tmp_path / "o.jsonl.partial-999999999", tmp_path / ".o.jsonl.partial-999999999",
             tmp_path / "s_train.bin.partial-999999999", tmp_path / "s.json.partial"]
    for path in stale:
        path.write_text("x")
    assert cli("normalize", lines(GOOD), "-o", out).exit_code == 0
    assert cli("binarize", "--quiet", lines(GOOD), "-o", tmp_path / "s").exit_code == 0
    assert [p.exists() for p in stale] == [False] * 4


def test_sigterm_removes_the_temporary_files(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(4000):
            f.write(json.dumps({"id": i, "text": f"文書{i}。" * 400}, ensure_ascii=False) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "jpcorpus.cli", "binarize", str(path), "-o", str(tmp_path / "s")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint)
    partial = tmp_path / f"s.bin.partial-{proc.pid}"
    deadline = time.time() + 180
    while not partial.exists() or partial.stat().st_size < 10_000:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    # the work directory of finished partitions stays, for a rerun to reuse (docs/scale.md)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.work", "big.jsonl"]
    from jpcorpus.partial import is_partial

    assert not [p for p in (tmp_path / ".s.work").rglob("*") if is_partial(p)]


def test_every_command_documents_the_exit_status():
    from trainer.cli import main as trainer_main

    for group in (main, trainer_main):
        for name in group.commands:
            output = CliRunner().invoke(group, [name, "--help"]).output
            assert "Exit status: 0 done; 1 a problem found in the data" in output, name
