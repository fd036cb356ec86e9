"""How far N independent copies of one worker's work scale on this host: the ceiling of any engine.

    python bench/host_ceiling.py ../shared/corpus/aozora_bench_100mb.jsonl.gz --procs 1,2,4,8,16

N processes, each on its own and waiting on nobody, run the same work: the clean stage of
``normalize`` (default profile; ``clean_partition``, exactly an engine's task) over the first
``--mb`` MB of the corpus, the tokenize stage of ``binarize`` (built-in Qwen2.5) over the first
``--binarize-mb`` MB, or a pure-Python loop that touches almost no memory. Each process builds
its caches on a warm-up partition first (the Sudachi dictionary, the tokenizer), then all start
together; each times its own work. One process's time over the N processes' mean time is the
efficiency a perfect engine would reach at N workers on this host: no dispatch, no driver, no
imbalance, no shared state. Where it is well under 100%, the host's cores are shared
(hyperthreads, a loaded host) or memory and caches are; the ``python`` row tells those apart
(shared cores slow it, memory traffic does not).

Prints a Markdown table; writes every figure to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scale import slice_corpus  # noqa: E402  (the same whole-line slice of a plain or .gz corpus)


def _stage_work(stage: str, path: str, folder: Path, partition_bytes: int):
    """Callables that run every partition of ``path`` through ``stage``'s task, as an engine would, and a warm-up
    over the first partition; and the bytes of input they cover."""
    from jpcorpus import partitions, workdir
    from jpcorpus.readers import ReadStats

    key = workdir.settings_key(stage="ceiling")
    if stage == "normalize":
        from jpcorpus.normalize.clean_stage import CleanJob, CleanTask, clean_partition as task_fn
        from jpcorpus.normalize.profiles import load_profile

        job, make = CleanJob(load_profile("default"), "text", "id", "utf-8", False, str(folder), key), CleanTask
    else:
        from jpcorpus.binarize_stages import TokenizeJob, TokenizeTask, tokenize_partition as task_fn

        job = TokenizeJob("qwen2.5", None, "int32", ["all"], 0.0, "text", "id", "utf-8", False, 1 << 20,
                          str(folder), key)
        make = TokenizeTask
    parts = list(partitions.plan([path], partition_bytes, "text", ReadStats()))

    def run(items):
        for part in items:
            task_fn(make(job, part))

    return (lambda: run(parts[:1])), (lambda: run(parts)), sum(p.size() for p in parts)


def _python_work(loops: int):
    def run(n):
        total = 0
        for k in range(n):
            total = (total + k * k) % 1_000_003
        return total

    return (lambda: run(loops // 20)), (lambda: run(loops)), 0


def child(spec: dict) -> None:
    """One process: build, warm up, say ready, wait for the common start, time the work."""
    folder = Path(tempfile.mkdtemp(prefix="ceiling", dir=spec["tmp"]))
    if spec["work"] in ("normalize", "binarize"):
        warm, work, size = _stage_work(spec["work"], spec["input"], folder, spec["partition_bytes"])
    else:
        warm, work, size = _python_work(spec["loops"])
    warm()
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = time.process_time(), time.perf_counter()
    work()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "bytes": size}), flush=True)


def measure(spec: dict, procs: int) -> dict:
    """``procs`` copies of the child started together; each one's seconds."""
    children = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    for c in children:
        if c.stdout.readline().strip() != "ready":
            raise SystemExit(f"a {spec['work']} child failed before its work (see its error above)")
    start_at = time.time() + 0.5
    for c in children:
        c.stdin.write(f"{start_at}\n")
        c.stdin.flush()
    rows = [json.loads(c.stdout.readline()) for c in children]
    for c in children:
        c.wait()
    seconds = [r["seconds"] for r in rows]
    return {"work": spec["work"], "procs": procs, "seconds": seconds, "mean_s": sum(seconds) / procs,
            "slowest_s": max(seconds), "cpu_s": sum(r["cpu_s"] for r in rows), "bytes": rows[0]["bytes"]}


def table(rows: list[dict]) -> str:
    lines = ["| work | processes | mean s | slowest s | efficiency (1 process's s / mean s) | "
             "throughput vs 1 (from the slowest) |", "|---|---|---|---|---|---|"]
    for r in rows:
        one = next(x for x in rows if x["work"] == r["work"] and x["procs"] == 1)
        lines.append(f"| {r['work']} | {r['procs']} | {r['mean_s']:.2f} | {r['slowest_s']:.2f} | "
                     f"{one['mean_s'] / r['mean_s']:.0%} | {r['procs'] * one['mean_s'] / r['slowest_s']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", type=Path, help="JSON lines (.gz) with a 'text' field")
    ap.add_argument("--procs", default="1,2,4,8,16", help="process counts [1,2,4,8,16]")
    ap.add_argument("--works", default="python,normalize,binarize", help="which work [python,normalize,binarize]")
    ap.add_argument("--mb", type=float, default=4.0, help="MB of the corpus each normalize process cleans [4]")
    ap.add_argument("--binarize-mb", type=float, default=12.0, help="MB each binarize process tokenizes [12]")
    ap.add_argument("--partition-size", type=float, default=1.0, help="MB per partition [1]")
    ap.add_argument("--loops", type=int, default=30_000_000, help="iterations of the python loop [30M, ~3 s]")
    ap.add_argument("--tmp", default=None, help="scratch directory [the system's]")
    ap.add_argument("--out", type=Path, default=Path("host_ceiling.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    works = args.works.split(",")
    if any(w != "python" for w in works) and args.corpus is None:
        ap.error("normalize and binarize need the corpus (a JSON lines file)")
    tmp = Path(tempfile.mkdtemp(prefix="jpceiling", dir=args.tmp))
    results = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "load_before": os.getloadavg(), "rows": []}
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
    for work in works:
        spec = {"work": work, "tmp": str(tmp), "partition_bytes": int(args.partition_size * 1e6), "loops": args.loops}
        if work != "python":
            spec["input"] = str(tmp / f"{work}.jsonl")
            slice_corpus(args.corpus, args.mb if work == "normalize" else args.binarize_mb, Path(spec["input"]))
        for n in (int(x) for x in args.procs.split(",")):
            row = measure(spec, n)
            results["rows"].append(row)
            print(f"{work} x{n}: mean {row['mean_s']:.2f} s, slowest {row['slowest_s']:.2f} s", flush=True)
            args.out.write_text(json.dumps(results, indent=1))
    results["load_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results["rows"]))


if __name__ == "__main__":
    main()
