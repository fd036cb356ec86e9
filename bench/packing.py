"""binarize --pack on real corpora: fill rate and memory against the buffer size, and
what concatenation (megatron-core's GPTDataset) does to the same documents.

    python bench/packing.py --corpus ../shared/corpus            # news and books, seq 2048
    python bench/packing.py --corpus ../shared/corpus --seq-length 4096 --buffers 100,1000

Each corpus is tokenized once (``jpcorpus binarize``, unpacked, into a temporary
directory); then the real :class:`jpcorpus.packing.Packer` runs over its documents
for every buffer size, timed, with Python's peak allocation (tracemalloc) beside
the largest number of tokens the buffer held. Concatenation is simulated the way
``GPTDataset`` builds samples: documents in a seeded random order, one stream, a
sample every ``seq_length`` tokens. Per layout it prints:

* fill: tokens over the room of the samples (concatenation: 1 by construction);
* cut: documents that do not lie whole inside one sample;
* late-start tokens: tokens whose document began in an earlier sample (their
  context is gone);
* cross-attending tokens: tokens whose causal context holds another document
  (none with document masking).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jpcorpus.indexed_dataset import IndexedDataset  # noqa: E402
from jpcorpus.packing import Packer  # noqa: E402

CORPORA = {"news": "wikinews_ja.jsonl.gz", "books": "aozora_bench_100mb.jsonl.gz"}


def tokenize(corpus: Path, out: Path, workers: int) -> IndexedDataset:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "jpcorpus.cli", "binarize", str(corpus), "-o", str(out), "--quiet",
                    "--workers", str(workers)], check=True, env=env, stdout=subprocess.DEVNULL)
    return IndexedDataset(out)


def _run_packer(ds: IndexedDataset, seq_length: int, buffer: int) -> tuple[Packer, list[list[int]]]:
    packer = Packer(seq_length, buffer)
    samples: list[list[int]] = []
    for i in range(len(ds)):
        samples += [[len(x) for x in s] for s in packer.add(ds[i])]
    samples += [[len(x) for x in s] for s in packer.flush()]
    return packer, samples


def pack(ds: IndexedDataset, seq_length: int, buffer: int) -> dict:
    """The real packer over the shard's documents, timed; then again under tracemalloc for memory."""
    started = time.perf_counter()
    packer, samples = _run_packer(ds, seq_length, buffer)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    _run_packer(ds, seq_length, buffer)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    s = packer.stats
    # causal attention on packed samples without document masking: every input position
    # after the first sequence of its sample sees another document
    cross = sum(max(sum(seqs) - 1 - seqs[0], 0) for seqs in samples if len(seqs) > 1)
    late = s.tokens - sum(min(int(n), s.sample_tokens) for n in ds.lengths)  # pieces after a document's first
    return {"fill": s.fill_rate, "samples": s.samples, "cut": s.cut_documents, "pieces": s.pieces,
            "late": late, "cross_causal": cross, "seconds": seconds, "peak_mb": peak / 1e6,
            "buffer_mb": s.peak_buffer_tokens * ds.dtype.itemsize / 1e6, "tokens": s.tokens}


def concatenation(lengths: np.ndarray, seq_length: int, seed: int = 1234) -> dict:
    """GPTDataset: shuffled documents, one stream, samples of seq_length inputs (+1 label)."""
    order = np.random.RandomState(seed).permutation(len(lengths))
    ends = np.cumsum(lengths[order].astype(np.int64))
    starts = ends - lengths[order]
    samples = int((ends[-1] - 1) // seq_length)
    sample_of_start, sample_of_last = starts // seq_length, (ends - 1) // seq_length
    cut = int((sample_of_start != sample_of_last).sum())
    # late-start tokens: input positions whose document began before the sample did
    late = int(sum(min(e, samples * seq_length) - max(s, (s // seq_length + 1) * seq_length)
                   for s, e in zip(starts, ends) if e > (s // seq_length + 1) * seq_length))
    # cross-attending: in each sample, every position from the first document start after position 0
    first_start = np.full(samples, seq_length, dtype=np.int64)
    inside = starts[(starts % seq_length != 0) & (starts < samples * seq_length)]
    np.minimum.at(first_start, inside // seq_length, inside % seq_length)
    cross = int((seq_length - first_start).sum())
    return {"fill": 1.0, "samples": samples, "cut": cut, "late": late, "cross_causal": cross,
            "tokens": int(ends[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--buffers", default="10,100,1000,10000,100000")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    L = args.seq_length
    with tempfile.TemporaryDirectory() as tmp:
        for name, file in CORPORA.items():
            path = Path(args.corpus) / file
            if not path.is_file():
                print(f"{name}: {path} missing, skipped")
                continue
            t = time.perf_counter()
            ds = tokenize(path, Path(tmp) / name, args.workers)
            tok_s = time.perf_counter() - t
            lengths = np.asarray(ds.lengths)
            print(f"\n{name}: {len(ds):,} documents, {ds.tokens:,} tokens (median {np.median(lengths):.0f}, "
                  f"{(lengths > L + 1).mean():.1%} longer than a sample); tokenized in {tok_s:.1f} s")
            c = concatenation(lengths, L)
            n_in = c["samples"] * L
            print(f"  concatenation: {c['samples']:,} samples, cut {c['cut']:,} documents "
                  f"({c['cut'] / len(ds):.1%}), late-start {c['late'] / n_in:.1%} of input tokens, "
                  f"cross-attending {c['cross_causal'] / n_in:.1%}")
            print(f"  {'buffer':>8} {'fill':>7} {'samples':>8} {'cut':>5} {'pieces':>6} {'late-start':>10} "
                  f"{'cross (causal)':>14} {'buffer MB':>9} {'peak MB':>8} {'s':>6} {'Mtok/s':>6}")
            for buffer in map(int, args.buffers.split(",")):
                p = pack(ds, L, buffer)
                n_in = p["samples"] * L
                print(f"  {buffer:>8,} {p['fill']:>7.2%} {p['samples']:>8,} {p['cut']:>5,} {p['pieces']:>6,} "
                      f"{p['late'] / n_in:>10.1%} {p['cross_causal'] / n_in:>14.1%} {p['buffer_mb']:>9.1f} "
                      f"{p['peak_mb']:>8.1f} {p['seconds']:>6.2f} {p['tokens'] / p['seconds'] / 1e6:>6.1f}")
            print("  with document masking (data.document_masking / packed shards): cross-attending 0")


if __name__ == "__main__":
    main()
