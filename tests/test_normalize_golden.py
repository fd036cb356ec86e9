"""Golden files: fixture inputs through the CLI to the expected output and rejects, at 1 and 2 workers.

Regenerate (then review the diff): python tests/data/normalize/make_golden.py --expected
"""

import gzip
import json
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from jpcorpus.normalize import pipeline
from jpcorpus.normalize.cli import normalize

DATA = Path(__file__).parent / "data" / "normalize"


def _run(args, monkeypatch):
    monkeypatch.chdir(DATA)  # sources in the rejects file are relative: golden_in.jsonl:7
    monkeypatch.setattr(pipeline, "BATCH_DOCS", 3)  # several batches in flight at once
    result = CliRunner().invoke(normalize, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("workers", [1, 2])
def test_golden_jsonl(tmp_path, monkeypatch, workers):
    out, rejects, report = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl", tmp_path / "report.json"
    result = _run(["golden_in.jsonl", "--skip-bad", "-o", str(out), "--rejects", str(rejects),
                   "--report", str(report), "--workers", str(workers)], monkeypatch)
    assert out.read_bytes() == (DATA / "golden_out.jsonl").read_bytes()
    assert rejects.read_bytes() == (DATA / "golden_out.rejects.jsonl").read_bytes()
    assert "too_many_nouns=2" in result.output and "wrote 3 documents" in result.output

    summary = json.loads(report.read_text(encoding="utf-8"))
    assert (summary["docs_in"], summary["docs_out"], summary["workers"]) == (11, 3, workers)
    assert summary["read"]["skipped"] == {"malformed_json": 1, "missing_text_key": 1}
    dropped = {s["step"]: s["reasons"] for s in summary["steps"] if s["docs_dropped"]}
    assert dropped == {
        "min_length": {"too_short": {"docs": 1, "chars": 6}},
        "mojibake": {"mojibake": {"docs": 1, "chars": 75}},
        "japanese_fraction": {"not_japanese": {"docs": 1, "chars": 95}},
        "sentence_length": {"mean_sentence_too_short": {"docs": 1, "chars": 54}},
        "noun_ratio": {"too_many_nouns": {"docs": 2, "chars": 162}},
        "exact_dedup": {"exact_duplicate": {"docs": 1, "chars": 77}},
        "near_dedup": {"near_duplicate": {"docs": 1, "chars": 78}},
    }
    assert summary["chars_out"] == 264


def test_golden_record_fields_pass_through():
    first = json.loads((DATA / "golden_out.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["url"] == "https://example.jp/a" and first["meta"] == {"lang": "ja", "score": 0.9}
    noisy = json.loads((DATA / "golden_out.jsonl").read_text(encoding="utf-8").splitlines()[1])["text"]
    assert noisy.startswith("ABC社の新製品は10〜20台限定で、カタログに")  # NFKC, wave dash, half-width kana
    assert "\u200b" not in noisy and "\r" not in noisy and "……" in noisy and "\n\n\n" not in noisy


@pytest.mark.parametrize("workers", [1, 2])
def test_golden_shift_jis(tmp_path, monkeypatch, workers):
    out = tmp_path / "sjis.jsonl"
    _run(["golden_sjis.txt", "--encoding", "cp932", "-o", str(out), "--workers", str(workers)], monkeypatch)
    assert out.read_bytes() == (DATA / "golden_sjis_out.jsonl").read_bytes()
    assert "どんぶらこ" in out.read_text(encoding="utf-8") and "モモ〜!" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".zst", lambda p: zstandard.open(p, "rb"))])
def test_compressed_output_by_suffix(tmp_path, monkeypatch, suffix, opener):
    out = tmp_path / f"out.jsonl{suffix}"
    _run(["golden_in.jsonl", "--skip-bad", "-o", str(out)], monkeypatch)
    with opener(out) as f:
        assert f.read() == (DATA / "golden_out.jsonl").read_bytes()
    again = tmp_path / f"again.jsonl{suffix}"
    _run(["golden_in.jsonl", "--skip-bad", "-o", str(again)], monkeypatch)
    assert again.read_bytes() == out.read_bytes()  # reproducible bytes: no name or time in headers
