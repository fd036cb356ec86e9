"""Benchmark ``jpcorpus normalize`` (default profile) against raw SudachiPy on the same text.

    python bench/normalize.py --input ../shared/corpus/aozora_bench_100mb.jsonl.gz --limit-mb 20
    python bench/normalize.py --input ../shared/corpus/wikinews_ja.jsonl.gz --limit-mb 8
    python bench/normalize.py --input ../shared/corpus/wikinews_ja.jsonl.gz --limit-mb 8 --repeat 0 --paired 8

Takes the first ``--limit-mb`` MB of text from the input (whole records),
writes them to a temporary uncompressed JSONL, then in this one run measures:

- raw SudachiPy: one tokenizer (mode C), every document tokenized in pieces
  under Sudachi's 49,149-byte limit, nothing else (dictionary load not timed);
- the same plus reading every morpheme's part-of-speech id and word id through
  SudachiPy's Python objects: the ceiling of any profile whose filters look at
  every word (the default one does);
- the whole default profile through ``run_normalize`` at each ``--workers``
  value, each in a fresh process (pool start and dictionary loads included),
  with the peak RSS of the main process and of the largest worker;
- the same at a quarter of the slice, to show that memory stays flat.

``--repeat N`` (default 3) measures raw SudachiPy and each profile run N times,
interleaved, and reports the best of each (as ``timeit`` does): on a shared
machine single runs of the same code vary by +-30%, and the best run is the one
least disturbed. The table also gives the spread, and the header the load
average before and after.

``--paired K`` adds a measurement that drift cannot bias: the slice is cut
into K parts, and for each part (three times over, alternating which goes first)
raw SudachiPy and the whole default profile at one worker (``run_normalize``
in this process: reading, every step, dedup, writing, and building the
profile's steps each time) run back to back; it prints the median and
quartiles of the per-part ratios. A machine whose speed changes from minute
to minute slows both sides of a pair alike.

Prints a Markdown table for docs/benchmarks.md. The text never leaves /tmp.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # measure the jpcorpus of this tree, whatever is installed (children run this file too)
DEFAULT_INPUT = REPO.parent / "shared" / "corpus" / "aozora_bench_100mb.jsonl.gz"


def make_slice(source: Path, limit_mb: float, dest: Path) -> tuple[int, int]:
    """Copy whole records from ``source`` until ``limit_mb`` MB of text; return (docs, text bytes)."""
    docs = size = 0
    opener = gzip.open if source.name.endswith(".gz") else open
    with opener(source, "rt", encoding="utf-8") as f, open(dest, "w", encoding="utf-8") as out:
        for line in f:
            if size >= limit_mb * 1e6:
                break
            out.write(line)
            docs += 1
            size += len(json.loads(line)["text"].encode("utf-8"))
    return docs, size


def raw_sudachi(path: Path, read_ids: bool = False) -> float:
    """Seconds for SudachiPy (mode C) alone to tokenize every text of ``path``.

    ``read_ids``: also read each morpheme's part-of-speech id and word id, as
    ``morphology.analyze_many`` does: the least any filter that looks at every word pays.
    """
    import numpy as np
    from sudachipy import Morpheme

    from jpcorpus.normalize.morphology import _tokenizer, split_for_sudachi

    tokenizer = _tokenizer("C")
    pos_id, word_id = Morpheme.part_of_speech_id, Morpheme.word_id
    texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    started = time.perf_counter()
    for text in texts:
        for piece in split_for_sudachi(text):
            morphemes = tokenizer.tokenize(piece)
            if read_ids:
                ms = list(morphemes)
                np.fromiter(map(pos_id, ms), dtype=np.int64, count=len(ms))
                np.fromiter(map(word_id, ms), dtype=np.int64, count=len(ms))
    return time.perf_counter() - started


def one_run(path: str, workers: int) -> None:
    """Child process: run the default profile and print seconds, counts and peak RSS as JSON."""
    from jpcorpus.normalize.pipeline import run_normalize

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = run_normalize([path], f"{tmp}/out.jsonl", workers=workers)
        seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds, "docs_in": report.docs_in, "docs_out": report.docs_out,
        "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def paired(path: Path, parts: int, rounds: int = 3) -> None:
    """Child process: raw SudachiPy vs the default profile (1 worker) on each part, back to back."""
    from jpcorpus.normalize.pipeline import run_normalize

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    total, cut, files = sum(map(len, lines)), [], []
    size = 0
    with tempfile.TemporaryDirectory() as tmp:
        for line in lines:
            cut.append(line)
            size += len(line)
            if size >= total / parts or line is lines[-1]:
                files.append(Path(tmp) / f"part{len(files)}.jsonl")
                files[-1].write_text("".join(cut), encoding="utf-8")
                cut, size = [], 0
        raw_sudachi(files[0])  # load the dictionary and warm up both sides once
        run_normalize([str(files[0])], f"{tmp}/out.jsonl")
        ratios = []
        for r in range(rounds):
            for k, part in enumerate(files):
                t = {}
                for side in (("raw", "profile") if (r + k) % 2 == 0 else ("profile", "raw")):
                    if side == "raw":
                        t[side] = raw_sudachi(part)  # as in the table: reading the file not timed
                    else:
                        started = time.perf_counter()
                        run_normalize([str(part)], f"{tmp}/out.jsonl")
                        t[side] = time.perf_counter() - started
                ratios.append(t["raw"] / t["profile"])
    q = statistics.quantiles(ratios, n=4)
    print(json.dumps({"median": statistics.median(ratios), "q1": q[0], "q3": q[2], "pairs": len(ratios),
                      "parts": len(files)}))


def measure(path: Path, workers: int, tree: Path = REPO) -> dict:
    """:func:`one_run` in a fresh process, for the jpcorpus of ``tree`` (a checkout with this bench)."""
    out = subprocess.run([sys.executable, str(tree / "bench" / "normalize.py"), "--_one", str(path), str(workers)],
                         check=True, capture_output=True, text=True, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--limit-mb", type=float, default=20.0)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each measurement; the best is reported (0: only the paired measurement)")
    parser.add_argument("--paired", type=int, default=0, metavar="K",
                        help="also the paired measurement over K parts of the slice (see above)")
    parser.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_paired", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        return one_run(args._one[0], int(args._one[1]))
    if args._paired:
        return paired(Path(args._paired[0]), int(args._paired[1]))

    with tempfile.TemporaryDirectory() as tmp:
        full, quarter = Path(tmp) / "slice.jsonl", Path(tmp) / "quarter.jsonl"
        docs, size = make_slice(args.input, args.limit_mb, full)
        make_slice(args.input, args.limit_mb / 4, quarter)
        mb = size / 1e6
        load_before = os.getloadavg()
        worker_counts = list(map(int, args.workers.split(",")))
        raws, with_ids, runs = [], [], {w: [] for w in worker_counts}
        for _ in range(args.repeat):  # interleaved, so that a busy minute hits every measurement alike
            raws.append(mb / raw_sudachi(full))
            with_ids.append(mb / raw_sudachi(full, read_ids=True))
            for workers in worker_counts:
                runs[workers].append(measure(full, workers))
        if args.repeat:
            _table(args, docs, mb, raws, with_ids, runs, worker_counts, quarter, load_before)
        if args.paired:
            if not args.repeat:
                print(f"input: {args.input.name}, first {docs} records, {mb:.1f} MB of text; {os.cpu_count()} CPUs, "
                      f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
            out = subprocess.run([sys.executable, __file__, "--_paired", str(full), str(args.paired)],
                                 check=True, capture_output=True, text=True, cwd=REPO)
            p = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"\nPaired, {p['pairs']} pairs over {p['parts']} parts: default profile (1 worker) / raw SudachiPy "
                  f"= {p['median']:.3f} median (quartiles {p['q1']:.3f}-{p['q3']:.3f})")


def _table(args, docs, mb, raws, with_ids, runs, worker_counts, quarter, load_before) -> None:
    raw = max(raws)
    print(f"input: {args.input.name}, first {docs} records, {mb:.1f} MB of text; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"best of {args.repeat}; load average (1/5/15 min) before {_load(load_before)}, "
          f"after {_load(os.getloadavg())}")
    print("\n| run | MB/s (best; all runs) | x raw Sudachi (1 proc) | docs kept | peak RSS main / worker (MB) "
          "| peak RSS at 1/4 slice (MB) |")
    print("|---|---|---|---|---|---|")
    print(f"| raw SudachiPy, mode C, 1 process | {raw:.2f}; {_all(raws)} | 1.00 | - | - | - |")
    print(f"| raw SudachiPy + reading every morpheme's POS and word id | {max(with_ids):.2f}; {_all(with_ids)} "
          f"| {max(with_ids) / raw:.2f} | - | - | - |")
    for workers in worker_counts:
        rates = [mb / r["seconds"] for r in runs[workers]]
        r = runs[workers][rates.index(max(rates))]
        q = measure(quarter, workers)
        print(f"| default profile, --workers {workers} | {max(rates):.2f}; {_all(rates)} | {max(rates) / raw:.2f} "
              f"| {r['docs_out']}/{r['docs_in']} | {r['main_rss_mb']:.0f} / {r['worker_rss_mb']:.0f} "
              f"| {q['main_rss_mb']:.0f} / {q['worker_rss_mb']:.0f} |")


def _all(rates: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in rates)


def _load(load: tuple) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
