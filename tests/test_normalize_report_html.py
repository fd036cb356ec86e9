"""The HTML report: made during a run and from its files, self-contained, and rendered by a real Chromium."""

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from jpcorpus.cli import main

LABELLED = Path(__file__).parent / "data" / "normalize" / "labelled.jsonl"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A normalize run over the labelled set with every report written."""
    tmp = tmp_path_factory.mktemp("report")
    paths = {k: tmp / f"{k}" for k in ("out.jsonl", "rejects.jsonl", "report.json", "report.html", "again.html")}
    result = CliRunner().invoke(main, ["normalize", str(LABELLED), "-o", str(paths["out.jsonl"]),
                                       "--rejects", str(paths["rejects.jsonl"]), "--report", str(paths["report.json"]),
                                       "--report-html", str(paths["report.html"])])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["report", str(paths["rejects.jsonl"]), "--report", str(paths["report.json"]),
                                       "-o", str(paths["again.html"])])
    assert result.exit_code == 0, result.output
    return paths


def _reasons(report_path: Path) -> set:
    summary = json.loads(report_path.read_text(encoding="utf-8"))
    return {r for step in summary["steps"] for r in step["reasons"]}


def test_page_from_the_run_equals_the_page_from_its_files(run):
    assert run["report.html"].read_text(encoding="utf-8") == run["again.html"].read_text(encoding="utf-8")


def test_page_is_self_contained_and_small(run):
    page = run["report.html"].read_text(encoding="utf-8")
    assert len(page.encode()) < 200_000
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(|src=", page, re.I)
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}  # SVG namespace only
    reasons = _reasons(run["report.json"])
    assert len(reasons) >= 6
    for reason in reasons:
        assert f'id="reason-{reason}"' in page and f'href="#reason-{reason}"' in page
    # a histogram per measure, thresholds marked, examples with their measured values
    summary = json.loads(run["report.json"].read_text(encoding="utf-8"))
    measures = {m for step in summary["steps"] for m in step.get("histograms", {})}
    assert {"kana_share", "noun_share", "mean_sentence_chars"} <= measures
    assert page.count("<svg") == len(measures) and "stroke-dasharray" in page
    assert "mojibake_share = " in page and page.count('class="ex"') <= 5 * len(reasons)


def test_rejects_lines_carry_the_measured_value(run):
    lines = [json.loads(line) for line in run["rejects.jsonl"].read_text(encoding="utf-8").splitlines()]
    first = lines[0]
    assert list(first)[:4] == ["filter", "reason", "measure", "value"] and list(first)[-2:] == ["source", "record"]
    mojibake = [x for x in lines if x["reason"] == "mojibake"]
    assert mojibake and all(x["measure"] == "mojibake_share" and x["value"] > 0.01 for x in mojibake)


def test_report_command_errors_are_one_line(tmp_path, run):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"filter": "x"}\nnot json\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["report", str(bad), "--report", str(run["report.json"]), "-o",
                                       str(tmp_path / "r.html")])
    assert result.exit_code != 0 and f"{bad}:2: not a JSON line" in result.output
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (apt-get install chromium; .ci/run installs it)")
def test_chromium_renders_every_reason_section(run, tmp_path):
    shot = tmp_path / "shot.png"
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    url = run["report.html"].resolve().as_uri()
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    subprocess.run(common + ["--window-size=1200,2000", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120, check=True)
    sections = set(re.findall(r'<section id="reason-([a-z_]+)"', dom))
    assert sections == _reasons(run["report.json"])
    assert dom.count("<svg") >= 10 and "<rect" in dom
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1200, 2000)
    assert len(png) > 20_000  # drawn, not blank
