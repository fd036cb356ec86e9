"""Compare two checkouts of this repository on ``jpcorpus normalize``, in fresh processes, interleaved.

    git worktree add /tmp/before <commit>
    python bench/normalize_ab.py --before /tmp/before --input /tmp/wn.jsonl --rounds 6 --workers 1,4

Each round runs the default profile (``run_normalize``, as ``bench/normalize.py``
does for one measurement: pool start and dictionary loads included) once per
tree and worker count, alternating which tree goes first, each in a new
process. It prints the median seconds of each tree and their ratio. Unlike
``--paired`` in ``bench/normalize.py`` (one process, so caches that a process
fills as it goes are warm after the first part), every run here starts cold,
as a user's command does. ``--input`` must be plain JSON Lines.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from normalize import REPO, measure  # bench/normalize.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--input", type=Path, required=True, help="plain JSON Lines")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--workers", default="1,4", help="comma-separated worker counts")
    args = parser.parse_args()
    trees = {"after (this tree)": REPO, "before": args.before.resolve()}
    seconds: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for workers in map(int, args.workers.split(",")):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                seconds.setdefault((name, workers), []).append(measure(args.input, workers, trees[name])["seconds"])
    print(f"input: {args.input.name}, {args.rounds} rounds, fresh process per run, trees alternating\n")
    print("| workers | after: median s (all) | before: median s (all) | before / after |")
    print("|---|---|---|---|")
    for workers in map(int, args.workers.split(",")):
        after, before = seconds[("after (this tree)", workers)], seconds[("before", workers)]
        print(f"| {workers} | {statistics.median(after):.2f} ({' '.join(f'{x:.2f}' for x in after)}) "
              f"| {statistics.median(before):.2f} ({' '.join(f'{x:.2f}' for x in before)}) "
              f"| {statistics.median(before) / statistics.median(after):.3f} |")


if __name__ == "__main__":
    main()
