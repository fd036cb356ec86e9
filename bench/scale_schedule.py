"""How long the clean stage would take on N workers if every worker kept its one-worker speed.

    python bench/scale_schedule.py ../shared/corpus/aozora_bench_100mb.jsonl.gz --rate 1.06 --workers 1,4,8,16

Cuts the input into the partitions the engines would run (``jpcorpus.partitions.plan``,
``--partition-size`` MB), gives each a cost of its bytes at ``--rate`` MB/s (a measured
one-worker rate), and schedules them as both engines do: tasks handed out in input order,
at most ``--ahead`` times the worker count not yet taken back, each to the first free
worker. Prints, per worker count, the finish time with that window, with an unlimited
window, and the ideal (total cost / workers). Against a measured stage time, the
difference between the schedule and the measurement is what the host costs (workers
slower when all CPUs are busy), not what the partitioning or the window costs.
"""

from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jpcorpus import partitions  # noqa: E402
from jpcorpus.readers import ReadStats  # noqa: E402


def finish_time(costs: list[float], workers: int, ahead: int) -> float:
    """Seconds until the last task ends; task k starts once task k - ahead was taken back (in order)."""
    free = [0.0] * workers
    taken: list[float] = []  # when each task's result was taken back (in input order)
    last = 0.0
    for k, cost in enumerate(costs):
        allowed = taken[k - ahead] if k >= ahead else 0.0
        end = max(heapq.heappop(free), allowed) + cost
        heapq.heappush(free, end)
        last = max(last, end)
        taken.append(max(end, taken[-1] if taken else 0.0))
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--rate", type=float, required=True, help="MB/s of one worker (measured)")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--partition-size", type=float, default=1.0, help="MB per partition [1, the bench's default]")
    ap.add_argument("--ahead", type=int, default=2, help="tasks in flight per worker [2, as both engines]")
    ap.add_argument("--text-key", default="text")
    args = ap.parse_args()
    parts = list(partitions.plan(args.inputs, int(args.partition_size * 1e6), args.text_key, ReadStats()))
    sizes = [len(p.data) if p.data else p.size for p in parts]
    costs = [size / (args.rate * 1e6) for size in sizes]
    print(f"{len(parts)} partitions, {sum(sizes) / 1e6:.1f} MB, largest {max(sizes) / 1e6:.2f} MB")
    print(f"{'workers':>8}{'window':>10}{'unlimited':>11}{'ideal':>8}")
    for w in (int(x) for x in args.workers.split(",")):
        print(f"{w:>8}{finish_time(costs, w, args.ahead * w):>10.1f}{finish_time(costs, w, len(costs) + 1):>11.1f}"
              f"{sum(costs) / w:>8.1f}")


if __name__ == "__main__":
    main()
