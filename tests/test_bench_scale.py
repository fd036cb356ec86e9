"""bench/scale.py: the synthetic corpus's ground truth, and one small run of the whole script (local engine)."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import scale  # noqa: E402


def test_synthetic_corpus_is_reproducible_and_marks_its_copies(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    counts = scale.synthetic(a, 3000, 0.2)
    assert scale.synthetic(b, 3000, 0.2) == counts and a.read_bytes() == b.read_bytes()
    records = [json.loads(line) for line in a.read_text(encoding="utf-8").splitlines()]
    copies = [r for r in records if r["copy_of"] is not None]
    assert len(copies) == counts["near"] + counts["exact"] and 500 < counts["near"] < 700
    by_id = {r["id"]: r for r in records}
    assert all(by_id[c["copy_of"]]["copy_of"] is None and c["copy_of"] < c["id"] for c in copies)


def test_a_small_run_of_the_script(tmp_path, sample_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(sample_path, "rb") as src, gzip.open(corpus / "wikinews_ja.jsonl.gz", "wb") as dst:
        dst.write(src.read())
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--corpus-dir", str(corpus),
                           "--corpora", "wikinews", "--engines", "local", "--workers", "1", "--dedup-docs", "3000",
                           "--partition-size", "0.05", "--dedup-task-size", "512MB,64KB", "--out", str(out),
                           "--tmp", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| wikinews | normalize | local | 1 |" in proc.stdout and "| 3,000 | local | 1 |" in proc.stdout
    results = json.loads(out.read_text())
    assert {r["command"] for r in results["scaling"]} == {"normalize", "binarize"}
    big, small = results["dedup"]  # the same documents dropped whatever the task size
    assert (big["dedup_task_size"], small["dedup_task_size"]) == ("512MB", "64KB")
    assert big["recall"] > 0.95 and big["precision"] == 1.0 and small["dropped"] == big["dropped"]
    ranges = [[s["ranges"] for s in r["stages"]["dedup"]] for r in (big, small)]
    assert ranges[0] == [1, 1] and min(ranges[1]) > 1, ranges
    assert "| 3,000 | local | 1 | 64KB |" in proc.stdout
    assert results["driver"]["decide_edges_s"] > 0


def test_schedule_window_holds_back_tasks_behind_a_long_one():
    """bench/scale_schedule.py: with 2 tasks in flight, a 3 s head keeps the next ones waiting."""
    import scale_schedule as mod

    assert mod.finish_time([3, 1, 1, 1], workers=2, ahead=2) == 4
    assert mod.finish_time([3, 1, 1, 1], workers=2, ahead=100) == 3
    assert mod.finish_time([1] * 8, workers=1, ahead=2) == 8


def test_host_ceiling_python_work(tmp_path):
    """bench/host_ceiling.py: copies started together, each timed; the table's efficiency is 1-process s / mean s."""
    out = tmp_path / "c.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "host_ceiling.py"), "--works", "python", "--procs",
                           "1,2", "--loops", "300000", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["procs"] for r in rows] == [1, 2] and all(len(r["seconds"]) == r["procs"] for r in rows)
    assert all(0 < s < 30 for r in rows for s in r["seconds"])
    assert "| python | 2 |" in proc.stdout


def test_copies_repeat_the_slice(tmp_path, sample_path):
    src = tmp_path / "s.jsonl.gz"
    with open(sample_path, "rb") as f, gzip.open(src, "wb") as g:
        g.write(f.read())
    one = scale.slice_corpus(src, 0.01, tmp_path / "one.jsonl").read_bytes()
    three = scale.slice_corpus(src, 0.01, tmp_path / "three.jsonl", copies=3).read_bytes()
    assert one and three == one * 3
