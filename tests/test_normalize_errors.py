"""Bad input and bad options: a clean one-line error, never a traceback, never a half-written output."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from jpcorpus.cli import main

DATA = Path(__file__).parent / "data" / "normalize"


def normalize(args):
    return CliRunner().invoke(main, ["normalize", *args])


def _fail(args):
    result = normalize(args)
    assert result.exit_code == 2, result.output  # input and usage errors (docs: exit status)
    assert "Traceback" not in result.output and result.output.startswith("error: ")
    return result.output


def _no_files_left(folder: Path):
    assert sorted(p.name for p in folder.iterdir()) == []


def test_shift_jis_without_encoding_says_what_to_pass(tmp_path):
    out = tmp_path / "out"
    message = _fail([str(DATA / "golden_sjis.txt"), "-o", str(out / "o.jsonl")])
    assert "golden_sjis.txt:1" in message and "pass --encoding cp932" in message
    _no_files_left(out)


def test_malformed_json_stops_and_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    message = _fail([str(DATA / "golden_in.jsonl"), "-o", str(out / "o.jsonl"), "--rejects", str(out / "r.jsonl")])
    assert "golden_in.jsonl:7: not valid JSON" in message
    _no_files_left(out)  # neither the output nor the rejects file, nor a temporary file


def test_missing_text_key_names_the_flag(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "body": "本文です。"}\n', encoding="utf-8")
    assert "choose the field with --text-key" in _fail([str(path), "-o", str(tmp_path / "o.jsonl")])


def test_text_key_option_reads_other_field(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "body": "本文です。"}\n', encoding="utf-8")
    result = normalize([str(path), "-o", str(tmp_path / "o.jsonl"), "--text-key", "body",
                        "--rejects", str(tmp_path / "r.jsonl"), "--allow-empty"])
    assert result.exit_code == 0, result.output
    assert '"reason": "too_short"' in (tmp_path / "r.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize("args,expected", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--profile", "nosuch"], "not a shipped profile (default, web)"),
    (["--encoding", "klingon"], "unknown encoding"),
])
def test_bad_options(tmp_path, args, expected):
    assert expected in _fail([str(DATA / "golden_sjis.txt"), "-o", str(tmp_path / "o.jsonl"), *args])


def test_no_such_input(tmp_path):
    assert "no such file" in _fail([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")])


def test_output_may_not_overwrite_input(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "猫"}\n', encoding="utf-8")
    assert "would overwrite an input" in _fail([str(path), "-o", str(path)])
    assert path.read_text(encoding="utf-8") == '{"text": "猫"}\n'


@pytest.mark.parametrize("name,text,expected", [
    ("p.yaml", "steps:\n  - min_length: {min_chrs: 5}\n", "unknown parameter 'min_chrs' (known: min_chars)"),
    ("p.yaml", "steps:\n  - no_such_step: {}\n", "profile step 'no_such_step': unknown step"),
    ("p.yaml", "filters: []\n", "expected one top-level key 'steps'"),
    ("p.yaml", "steps: [\n", "not valid YAML"),
    ("p.toml", "[[steps]]\nhiragana_fraction = {min_fraction = 2.0}\n", "min_fraction must be between 0 and 1"),
    ("p.yaml", "steps:\n  - exact_dedup: {}\n  - min_length: {}\n", "must come before exact_dedup"),
])
def test_bad_profiles(tmp_path, name, text, expected):
    profile = tmp_path / name
    profile.write_text(text, encoding="utf-8")
    assert expected in _fail([str(DATA / "golden_sjis.txt"), "-o", str(tmp_path / "o.jsonl"),
                              "--profile", str(profile)])
