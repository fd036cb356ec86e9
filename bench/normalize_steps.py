"""Where the default profile's time goes: each step of one in-process run, beside raw SudachiPy.

    python bench/normalize_steps.py /tmp/wn.jsonl

Runs ``run_normalize`` at one worker on a plain JSON Lines file twice (the
first to warm up), timing each step's ``prepare``, ``filter``/``format`` and
the deduplication stages with wrappers, and Sudachi's ``tokenize`` inside
the analysis (``~tokenize``; ``~list`` is turning its results into morpheme
objects, ``~read_morphemes`` reading their ids and classes), after raw SudachiPy
on the same texts (``bench/normalize.py``'s ``raw_sudachi``). Percentages are of raw SudachiPy's time. The wrappers cost
~1 us a call, so the total is a little above a plain run's.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # measure this tree's jpcorpus

from jpcorpus.normalize import morphology, output, pipeline, profiles  # noqa: E402
from normalize import raw_sudachi  # noqa: E402  (bench/normalize.py, beside this script)

SECONDS: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - started
            CALLS[name] += 1
    return wrapper


class TimedTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def tokenize(self, text: str):
        started = time.perf_counter()
        morphemes = self.tokenizer.tokenize(text)
        listed = time.perf_counter()
        morphemes = list(morphemes)
        SECONDS["~tokenize"] += listed - started
        SECONDS["~list"] += time.perf_counter() - listed
        return morphemes


def instrument() -> None:
    plain_tokenizer, build = morphology._tokenizer, profiles.build_steps
    morphology._tokenizer = lambda mode: TimedTokenizer(plain_tokenizer(mode))
    morphology._read_morphemes = timed("~read_morphemes", morphology._read_morphemes)

    def build_timed(profile):
        steps, dedups = build(profile)
        for step in steps:
            for method in ("prepare", "filter", "format"):
                if hasattr(step, method):
                    setattr(step, method, timed(f"{step.name}.{method}", getattr(step, method)))
        for dedup in dedups:
            for method in ("fingerprints", "check"):
                setattr(dedup, method, timed(f"{dedup.name}.{method}", getattr(dedup, method)))
        return steps, dedups

    pipeline.build_steps = build_timed
    output.AtomicJsonlWriter.write = timed("write", output.AtomicJsonlWriter.write)


def main() -> None:
    path = sys.argv[1]
    raw_sudachi(Path(path))  # warm up; both before instrument(), which wraps the tokenizer
    raw = raw_sudachi(Path(path))
    instrument()
    pipeline.run_normalize([path], "/tmp/normalize_steps_out.jsonl")  # warm up
    SECONDS.clear()
    CALLS.clear()
    started = time.perf_counter()
    pipeline.run_normalize([path], "/tmp/normalize_steps_out.jsonl")
    total = time.perf_counter() - started
    print(f"default profile {total:.3f} s, raw SudachiPy {raw:.3f} s: {raw / total:.3f}x raw")
    for name, seconds in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
        print(f"{name:36s} {seconds * 1000:9.1f} ms {100 * seconds / raw:6.1f}%  calls {CALLS[name] or '-'}")


if __name__ == "__main__":
    main()
