"""--engine ray on a real two-node Ray cluster (tests/ray_cluster.py): the local engine's bytes, faults survived.

Every run here joins the session's cluster; inputs are cut into small partitions so
that both nodes take part (the report counts the nodes that ran tasks).
"""

import json
import random
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jpcorpus.cli import main
from jpcorpus.normalize.pipeline import run_normalize

DATA = Path(__file__).parent / "data" / "normalize"
LABELLED = DATA / "labelled.jsonl"


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _counts(report: Path) -> dict:
    data = json.loads(report.read_text(encoding="utf-8"))
    return {k: data[k] for k in ("read", "docs_in", "docs_out", "chars_out", "steps", "dedup_memory_bytes")}


@pytest.fixture(scope="module")
def local_normalize(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    _invoke("normalize", LABELLED, DATA / "golden_in.jsonl", "--skip-bad", "-o", out / "o.jsonl",
            "--rejects", out / "r.jsonl", "--report", out / "rep.json")
    return out


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_normalize_on_two_nodes_is_the_local_engines_bytes(ray_cluster, tmp_path, local_normalize, workers):
    _invoke("normalize", LABELLED, DATA / "golden_in.jsonl", "--skip-bad", "-o", tmp_path / "o.jsonl",
            "--rejects", tmp_path / "r.jsonl", "--report", tmp_path / "rep.json", "--engine", "ray",
            "--ray-address", ray_cluster.address, "--workers", workers, "--partition-size", "4KB")
    for name in ("o.jsonl", "r.jsonl"):
        assert (tmp_path / name).read_bytes() == (local_normalize / name).read_bytes()
    assert _counts(tmp_path / "rep.json") == _counts(local_normalize / "rep.json")
    engine = json.loads((tmp_path / "rep.json").read_text(encoding="utf-8"))["engine"]
    assert engine["engine"] == "ray" and engine["nodes"] == 2 and engine["partitions"] >= 8
    if workers > 1:
        assert engine["nodes_used"] == 2


def test_golden_files_through_ray(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(DATA)  # sources in the rejects file are relative
    _invoke("normalize", "golden_in.jsonl", "--skip-bad", "-o", tmp_path / "o.jsonl", "--rejects", tmp_path / "r.jsonl",
            "--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "2", "--partition-size", "300")
    assert (tmp_path / "o.jsonl").read_bytes() == (DATA / "golden_out.jsonl").read_bytes()
    assert (tmp_path / "r.jsonl").read_bytes() == (DATA / "golden_out.rejects.jsonl").read_bytes()


def test_engine_ray_without_an_address_starts_ray_here(tmp_path):
    """The default --engine ray: a Ray instance of --workers CPUs on this machine (one node), stopped at the end."""
    pytest.importorskip("ray")
    import os
    import subprocess
    import sys

    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "jpcorpus.cli", "normalize", "golden_in.jsonl", "--skip-bad",
                           "-o", str(tmp_path / "o.jsonl"), "--rejects", str(tmp_path / "r.jsonl"),
                           "--engine", "ray", "--workers", "2", "--partition-size", "300",
                           "--report", str(tmp_path / "rep.json")],
                          cwd=DATA, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "o.jsonl").read_bytes() == (DATA / "golden_out.jsonl").read_bytes()
    assert (tmp_path / "r.jsonl").read_bytes() == (DATA / "golden_out.rejects.jsonl").read_bytes()
    assert json.loads((tmp_path / "rep.json").read_text(encoding="utf-8"))["engine"]["nodes"] == 1


@pytest.mark.parametrize("command", ["normalize", "binarize"])
def test_an_address_nobody_answers_at_fails_in_seconds_with_the_fix(tmp_path, command):
    """Ray itself retries such an address for minutes, logging; we refuse it at once (exit 2), saying what to do.

    In a fresh process: this one may already be connected to the session's cluster.
    """
    pytest.importorskip("ray")
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    started = time.monotonic()
    for address, says in [(f"127.0.0.1:{port}", "nothing answers there"), ("headnode", "expected HOST:PORT")]:
        proc = subprocess.run([sys.executable, "-m", "jpcorpus.cli", command, str(DATA / "golden_in.jsonl"),
                               "--skip-bad", "-o", str(tmp_path / "out"), "--engine", "ray", "--ray-address", address],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"error: --ray-address {address}: {says}" in proc.stderr, proc.stderr[-2000:]
        if says == "nothing answers there":
            assert "ray start --head --port PORT" in proc.stderr and "#ray-cluster" in proc.stderr
    assert time.monotonic() - started < 60
    assert not list(tmp_path.iterdir())  # no output, no work directory


def _shard_files(prefix: Path) -> dict[str, bytes]:
    """Every .bin/.idx of a binarize output, by its name after the prefix (``_train_00001.bin``...)."""
    return {p.name[len(prefix.name):]: p.read_bytes() for p in prefix.parent.glob(f"{prefix.name}_*")
            if p.suffix in (".bin", ".idx")}


def _binarize_counts(result) -> dict:
    return {"read": result.stats.as_dict(),
            "shards": [(s.prefix.rsplit("_", 2)[-2:], s.documents, s.tokens, s.bin_sha256) for s in result.shards]}


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    _big_corpus(path)  # 2 MB, 1500 documents: ~370,000 train tokens, two 1 MB shards
    return path


def _binarize_big(corpus: Path, prefix: Path, **engine):
    from jpcorpus.binarize import BinarizeOptions, binarize

    return binarize(BinarizeOptions(inputs=[str(corpus)], output=str(prefix), progress=False, valid_fraction=0.2,
                                    max_shard_bytes=10**6, **engine))


@pytest.fixture(scope="module")
def local_binarize(big_corpus, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("local_binarize") / "s"
    result = _binarize_big(big_corpus, prefix)
    shards = _shard_files(prefix)
    assert {"_train_00000.bin", "_train_00001.bin", "_valid_00000.bin"} <= set(shards)  # shards rolled over
    return shards, _binarize_counts(result)


@pytest.mark.parametrize("workers", [1, 4])
def test_binarize_on_two_nodes_is_the_local_engines_bytes(ray_cluster, tmp_path, big_corpus, local_binarize, workers):
    """--valid-fraction and --max-shard-size (rolled over: two train shards): every shard file, and the counts."""
    result = _binarize_big(big_corpus, tmp_path / "r", engine="ray", ray_address=ray_cluster.address,
                           workers=workers, partition_bytes=64 << 10)
    shards, counts = local_binarize
    assert _shard_files(tmp_path / "r") == shards and len(shards) == 6
    assert _binarize_counts(result) == counts and counts["read"]["documents"] == 1500
    assert result.engine["partitions"] >= 30
    if workers > 1:
        assert result.engine["nodes_used"] == 2


def test_heavy_state_is_built_once_per_worker_process_not_per_task(ray_cluster, tmp_path, sample_path):
    """The engine's ledger: every task counted once, the tokenizer and the steps built at most once per process.

    A worker keeps its cache across the runs of a session (the steps of an earlier
    test's profile may be there already); the eod token here is this test's own, so
    the tokenizer is built in this run, once in each process that tokenizes.
    """
    from jpcorpus.binarize import BinarizeOptions, binarize

    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(Path(sample_path).read_bytes() * 8)
    result = binarize(BinarizeOptions(inputs=[str(corpus)], output=str(tmp_path / "s"), progress=False,
                                      engine="ray", ray_address=ray_cluster.address, workers=2,
                                      partition_bytes=4 << 10, eod_token="<|box_end|>"))
    rows = result.engine["processes"]
    assert sum(r["tasks"] for r in rows) == result.engine["partitions"] + 1  # + describe of the input
    assert result.engine["partitions"] >= 3 * len(rows)  # so that per task would show
    tokenize_workers = [r for r in rows if r["built"]]
    assert tokenize_workers and all(r["built"] == {"tokenizer": 1} for r in tokenize_workers)
    assert all(r["cpu_s"] > 0 for r in tokenize_workers)
    report = run_normalize([str(LABELLED)], str(tmp_path / "o.jsonl"), engine="ray",
                           ray_address=ray_cluster.address, workers=2, partition_bytes=4 << 10, skip_bad=True)
    rows = report.engine["processes"]
    assert report.engine["partitions"] >= 3 * len(rows)
    assert all(r["built"] in ({"normalize-steps": 1}, {}) for r in rows)


def test_parquet_through_ray_with_relative_paths(ray_cluster, tmp_path, monkeypatch):
    """The workers' current directory is not the driver's: relative inputs and outputs still work."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    records = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    pq.write_table(pa.table({"text": [r["text"] for r in records], "label": [r["label"] for r in records]}),
                   tmp_path / "in.parquet", row_group_size=8)
    monkeypatch.chdir(tmp_path)
    _invoke("normalize", "in.parquet", "-o", "l.jsonl")
    _invoke("normalize", "in.parquet", "-o", "r.jsonl", "--engine", "ray",
            "--ray-address", ray_cluster.address, "--workers", "2", "--partition-size", "1")
    assert (tmp_path / "r.jsonl").read_bytes() == (tmp_path / "l.jsonl").read_bytes()
    assert len((tmp_path / "l.jsonl").read_text(encoding="utf-8").splitlines()) == 32


def _big_corpus(path: Path, n: int = 1500) -> None:
    """Clean texts of the labelled set, recombined, with edited copies (near duplicates) among them."""
    keep = [r["text"] for r in map(json.loads, LABELLED.read_text(encoding="utf-8").splitlines())
            if r["label"] == "keep"]
    rng = random.Random(7)
    texts = []
    for k in range(n):
        if texts and rng.random() < 0.2:
            base = rng.choice(texts)
            texts.append(base.replace("。", "。\n", 1))
        else:
            texts.append("\n".join(rng.sample(keep, 4)))
    path.write_text("".join(json.dumps({"id": k, "text": t}, ensure_ascii=False) + "\n" for k, t in enumerate(texts)),
                    encoding="utf-8")


def _run_while_killing_two_workers(ray_cluster, job):
    """``job()`` in a thread while the main thread SIGKILLs up to two Ray workers caught running a task,
    a second apart; ``job``'s result once it has finished."""
    import os
    import signal

    outcome = {}

    def run():
        try:
            outcome["result"] = job()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = []
    deadline = time.time() + 120
    while thread.is_alive() and len(killed) < 2 and time.time() < deadline:
        busy = ray_cluster.task_workers()
        if busy and (not killed or time.time() - killed[-1][1] > 1.0):
            os.kill(busy[0], signal.SIGKILL)
            killed.append((busy[0], time.time()))
        time.sleep(0.05)
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert killed, "no worker was caught running a task: make the input bigger"
    return outcome["result"]


def test_a_sigkilled_worker_is_retried_and_the_output_is_unchanged(ray_cluster, tmp_path):
    src = tmp_path / "big.jsonl"
    _big_corpus(src)
    report = _run_while_killing_two_workers(ray_cluster, lambda: run_normalize(
        [str(src)], str(tmp_path / "r.jsonl"), rejects=str(tmp_path / "rr.jsonl"), engine="ray",
        ray_address=ray_cluster.address, workers=2, partition_bytes=64 << 10))
    local = run_normalize([str(src)], str(tmp_path / "l.jsonl"), rejects=str(tmp_path / "lr.jsonl"))
    assert (tmp_path / "r.jsonl").read_bytes() == (tmp_path / "l.jsonl").read_bytes()
    assert (tmp_path / "rr.jsonl").read_bytes() == (tmp_path / "lr.jsonl").read_bytes()
    assert report.docs_out == local.docs_out and local.steps[-1].docs_dropped > 100
    assert report.examples == local.examples  # the HTML report's examples per reason


def test_a_sigkilled_worker_during_binarize_is_retried_and_the_shards_are_unchanged(ray_cluster, tmp_path, big_corpus,
                                                                                     local_binarize):
    result = _run_while_killing_two_workers(ray_cluster, lambda: _binarize_big(
        big_corpus, tmp_path / "r", engine="ray", ray_address=ray_cluster.address, workers=2,
        partition_bytes=32 << 10))
    shards, counts = local_binarize
    assert _shard_files(tmp_path / "r") == shards
    assert _binarize_counts(result) == counts


def test_a_dataset_folder_reads_the_same_files_on_both_engines(ray_cluster, tmp_path):
    """A hub-style folder (part-0.parquet, README.md, .gitattributes): its 3 rows, the same shards on both engines."""
    pytest.importorskip("pyarrow")
    from test_parquet_input import _dataset_folder

    from jpcorpus.indexed_dataset import IndexedDataset

    folder = _dataset_folder(tmp_path)
    _invoke("binarize", "--quiet", folder, "-o", tmp_path / "l")
    _invoke("binarize", "--quiet", folder, "-o", tmp_path / "r", "--engine", "ray", "--ray-address",
            ray_cluster.address, "--workers", "2")
    assert IndexedDataset(tmp_path / "l").documents == 3
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"r{suffix}").read_bytes() == (tmp_path / f"l{suffix}").read_bytes()


@pytest.mark.parametrize("reason", ["missing_text_key", "text_not_string", "truncated_input"])
def test_bad_parquet_through_ray_is_the_local_engines_error(ray_cluster, tmp_path, reason):
    """After a good file, a bad one stops both commands on both engines: the same line, exit 2, nothing written."""
    pytest.importorskip("pyarrow")
    from test_parquet_input import _bad_files

    files = _bad_files(tmp_path)  # good.parquet beside them
    inputs = [tmp_path / "good.parquet", files[reason]]
    ray = ["--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "2", "--partition-size", "1"]
    for command, out in [("normalize", "o.jsonl"), ("binarize", "s")]:
        quiet = ["--quiet"] if command == "binarize" else []
        results = [CliRunner().invoke(main, [command, *quiet, *map(str, inputs), "-o", str(tmp_path / engine / out),
                                             *args])
                   for engine, args in (("local", []), ("ray", ray))]
        assert [r.exit_code for r in results] == [2, 2], results[1].output
        assert results[1].output == results[0].output
        assert results[0].output.startswith(f"error: {files[reason]}: ") and results[0].output.count("\n") == 1
        assert not [p for engine in ("local", "ray") for p in (tmp_path / engine).rglob("*")]  # no output, no work dir


def test_progress_names_the_stage_and_its_rates(ray_cluster, tmp_path):
    """The driver's bars on stderr: the stage, documents/s and MB/s (normalize --progress; binarize's by default)."""
    import re

    ray = ["--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "2", "--partition-size", "300"]
    normalize = _invoke("normalize", DATA / "golden_in.jsonl", "--skip-bad", "-o", tmp_path / "o.jsonl", "--progress",
                        *ray)
    binarize = _invoke("binarize", tmp_path / "o.jsonl", "-o", tmp_path / "s", *ray)
    bars = {line.split(":")[0]: line for text in (normalize.stderr, binarize.stderr)
            for line in re.split(r"[\r\n]+", text) if re.match(r"^[a-z_ :]+: ", line)}
    rate = r"[\d.]+ docs/s, [\d,.]+ MB, [\d.]+ MB/s"
    assert re.search(rf"^clean: +\d+ docs \[.*{rate}", bars["clean"]), bars
    assert re.search(rf"^tokenize: +\d+ docs \[.*{rate}, [\d,]+ tokens", bars["tokenize"]), bars
    assert re.search(r"^write: .* docs/s", bars["write"]), bars
    assert re.search(r"^near_dedup: buckets: .* tasks/s", bars["near_dedup"]), bars
