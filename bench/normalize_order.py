"""Per-document steps of the default profile: one document at a time vs step by step over a batch.

    python bench/normalize_order.py --input ../shared/corpus/wikinews_ja.jsonl.gz --docs 300 --pairs 15
    python bench/normalize_order.py --input ../shared/corpus/aozora_bench_100mb.jsonl.gz --docs 12 --pairs 9

Runs the same documents through ``pipeline.process_document`` (each document through
every step, the order before chunking) and through the pipeline's order
(``pipeline.process_docs``: each step over a chunk, the Sudachi steps over the
whole batch), alternating A/B, B/A in the same
process, and prints the CPU seconds of each pair and the median of the per-pair
ratios. On a machine whose speed drifts from minute to minute (a shared VM),
adjacent short rounds compare better than whole runs minutes apart. Deduplication,
reading and writing are the same in both and left out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jpcorpus.document import Document  # noqa: E402
from jpcorpus.normalize import charstats, morphology, pipeline  # noqa: E402
from jpcorpus.normalize.profiles import build_steps, load_profile  # noqa: E402


def read_texts(path: Path, docs: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == docs:
                break
    return texts


def one_at_a_time(texts: list[str], steps: list) -> list:
    counts = pipeline._new_counts(steps)
    return [pipeline.process_document(Document(t), steps, counts) for t in texts]


def chunked(texts: list[str], steps: list) -> list:
    """The pipeline's order, on batches cut as ``pipeline._batches`` cuts them."""
    counts = pipeline._new_counts(steps)
    out, batch, chars = [], [], 0
    for text in texts:
        batch.append(Document(text))
        chars += len(text)
        if len(batch) >= pipeline.BATCH_DOCS or chars >= pipeline.BATCH_CHARS:
            out += pipeline.process_docs(batch, steps, counts)
            batch, chars = [], 0
    return out + (pipeline.process_docs(batch, steps, counts) if batch else [])


def cpu(fn, *args) -> float:
    charstats.clear_caches()  # nothing carried over from the previous round
    morphology.clear_caches()
    t = time.process_time()
    fn(*args)
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=15)
    args = ap.parse_args()
    texts = read_texts(args.input, args.docs)
    steps, _ = build_steps(load_profile("default"))
    plain = lambda results: [(r[0], r[1].text, *r[2:]) for r in results]  # noqa: E731
    assert plain(one_at_a_time(texts, steps)) == plain(chunked(texts, steps)), "chunking changed a verdict"
    ratios = []
    print(f"{len(texts)} documents, {sum(len(t) for t in texts):,} characters; CPU seconds per round")
    for i in range(args.pairs):
        order = (one_at_a_time, chunked) if i % 2 == 0 else (chunked, one_at_a_time)
        t = {fn.__name__: cpu(fn, texts, steps) for fn in order}
        ratios.append(t["one_at_a_time"] / t["chunked"])
        print(f"pair {i + 1:2d}: one at a time {t['one_at_a_time']:.3f} s, chunked {t['chunked']:.3f} s, "
              f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"median ratio (one at a time / chunked): {statistics.median(ratios):.3f}; "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
