"""The engine machinery without Ray: no Ray import, reuse of finished partitions, option checks, shards."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from jpcorpus.cli import main

DATA = Path(__file__).parent / "data" / "normalize"
ROOT = Path(__file__).resolve().parents[1]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_jpcorpus_without_engine_ray_never_imports_ray(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        import jpcorpus, jpcorpus.cli, jpcorpus.normalize.pipeline, jpcorpus.binarize
        from jpcorpus.cli import main
        for args in (["normalize", "{DATA / 'golden_in.jsonl'}", "--skip-bad", "-o", "{tmp_path / 'o.jsonl'}",
                      "--workers", "2"],
                     ["binarize", "--quiet", "{DATA / 'golden_sjis.txt'}", "--encoding", "cp932",
                      "-o", "{tmp_path / 's'}"],
                     ["normalize", "--help"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


KEEP = [r["text"] for r in map(json.loads, (DATA / "labelled.jsonl").read_text(encoding="utf-8").splitlines())
        if r["label"] == "keep"]


def _lines(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"id": k, "text": KEEP[k % len(KEEP)] + f"\n第{k}節。"}, ensure_ascii=False) + "\n"
                   for k in range(start, start + n))


def test_rerun_after_a_failure_reuses_the_finished_partitions(tmp_path):
    """Run 1 stops at a bad record in the second file; fixed, run 2 reuses the first file's partitions."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(_lines(40), encoding="utf-8")
    second.write_text(_lines(5, 40) + "{broken\n", encoding="utf-8")
    work = tmp_path / "work"
    args = ["normalize", first, second, "-o", tmp_path / "out.jsonl", "--partition-size", "2KB",
            "--work-dir", work, "--report", tmp_path / "rep.json"]
    result = _invoke(*args)
    assert result.exit_code == 2 and "b.jsonl:6: not valid JSON" in result.output
    finished = len(list((work / "clean").glob("*.done.json")))
    assert not (tmp_path / "out.jsonl").exists() and finished >= 5  # a.jsonl's partitions
    second.write_text(_lines(6, 40), encoding="utf-8")
    assert _invoke(*args, "--keep-work").exit_code == 0
    engine = json.loads((tmp_path / "rep.json").read_text(encoding="utf-8"))["engine"]
    assert engine["reused_partitions"] == finished and engine["partitions"] > finished
    fresh = _invoke("normalize", first, second, "-o", tmp_path / "fresh.jsonl")
    assert fresh.exit_code == 0 and (tmp_path / "fresh.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()
    again = _invoke(*args)  # everything reused, work directory removed at the end
    assert again.exit_code == 0 and not work.exists()
    assert json.loads((tmp_path / "rep.json").read_text(encoding="utf-8"))["engine"]["reused_partitions"] == \
        engine["partitions"]


def test_a_changed_setting_is_not_reused(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text(_lines(20), encoding="utf-8")
    work = tmp_path / "w"
    base = ["normalize", src, "--partition-size", "2KB", "--work-dir", work, "--keep-work", "--report",
            tmp_path / "r.json"]
    assert _invoke(*base, "-o", tmp_path / "o1.jsonl").exit_code == 0
    assert _invoke(*base, "-o", tmp_path / "o2.jsonl", "--profile", "web", "--allow-empty").exit_code == 0
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["engine"]["reused_partitions"] == 0


def test_engine_options_are_checked(tmp_path):
    src = DATA / "golden_sjis.txt"
    result = _invoke("binarize", src, "-o", tmp_path / "s", "--ray-address", "auto")
    assert result.exit_code == 2 and "--ray-address needs --engine ray" in result.output
    result = _invoke("binarize", src, "-o", tmp_path / "s", "--workers", "0")
    assert result.exit_code == 2 and "--workers must be at least 1" in result.output
    result = _invoke("normalize", src, "-o", tmp_path / "o.jsonl", "--engine", "spark")
    assert result.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in result.output
    result = _invoke("normalize", src, "-o", tmp_path / "o.jsonl", "--partition-size", "lots")
    assert result.exit_code == 2 and "is not a size like 512MB" in result.output


@pytest.mark.parametrize("pack", [[], ["--pack", "128"]])
def test_binarize_shards_are_the_same_for_any_workers_and_partitions(tmp_path, sample_path, pack):
    """--max-shard-size (and --pack): the same shard files from one process and from 2 workers over small partitions."""
    def run(name, *extra):
        result = _invoke("binarize", "--quiet", sample_path, sample_path, "-o", tmp_path / name,
                         "--valid-fraction", "0.2", "--max-shard-size", "1MB", *pack, *extra)
        assert result.exit_code == 0, result.output
        return {p.name.removeprefix(name): p.read_bytes() for p in sorted(tmp_path.glob(f"{name}_*"))
                if p.suffix in (".bin", ".idx")}

    one = run("one")
    many = run("many", "--workers", "2", "--partition-size", "5KB")
    assert one == many and len(one) >= 4


def test_the_ledger_counts_every_task_and_each_processs_builds(tmp_path):
    """Spawned workers build the steps once each; inline (one worker) the driver is the only process."""
    import os

    from jpcorpus.normalize.pipeline import run_normalize

    (tmp_path / "in.jsonl").write_text(_lines(60), encoding="utf-8")
    inputs = [str(tmp_path / "in.jsonl")]
    two = run_normalize(inputs, str(tmp_path / "a.jsonl"), workers=2, partition_bytes=2048).engine
    assert two["partitions"] >= 8
    assert sum(r["tasks"] for r in two["processes"]) > two["partitions"]  # and the deduplication's tasks
    assert len(two["processes"]) <= 2 and all(r["built"] == {"normalize-steps": 1} for r in two["processes"])
    one = run_normalize(inputs, str(tmp_path / "b.jsonl"), workers=1, partition_bytes=2048).engine
    assert [r["pid"] for r in one["processes"]] == [os.getpid()]
    assert one["processes"][0]["tasks"] == sum(r["tasks"] for r in two["processes"])
