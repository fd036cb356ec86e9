"""Benchmark `jpcorpus binarize` against a Megatron-style baseline, in one run.

    python bench/binarize.py ../shared/corpus/aozora_bench_100mb.jsonl.gz --limit-mb 100

Baseline: what megatron's ``tools/preprocess_data.py`` does: a multiprocessing
pool whose workers parse each JSON line and call the Hugging Face fast tokenizer
per document (``tokenizer(text).input_ids``), feeding megatron-core's
``IndexedDatasetBuilder`` in the main process (``add_item`` + ``end_document``,
end-of-document appended). Same tokenizer files, same input.

Each variant runs in its own subprocess so that its peak RSS (the process and
its workers) is measured alone. Prints a table and the speed-up at 2 workers;
``--json`` writes the numbers. Outputs of every variant must be byte-identical.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prepare_input(source: Path, limit_mb: float, out: Path) -> int:
    """Copy the first ``limit_mb`` MB of JSON lines to a plain .jsonl; returns bytes."""
    limit = int(limit_mb * 1e6)
    written = 0
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as src, open(out, "wb") as dst:
        for line in src:
            if written >= limit:
                break
            dst.write(line)
            written += len(line)
    return written


# ------------------------------------------------------------------ variants

_TOK = None


def _baseline_init(tokenizer_dir: str) -> None:
    global _TOK
    from transformers import AutoTokenizer

    _TOK = AutoTokenizer.from_pretrained(tokenizer_dir)


def _baseline_encode(line: str):
    text = json.loads(line)["text"]
    return _TOK(text).input_ids, len(line.encode("utf-8"))


def run_baseline(path: Path, prefix: Path, workers: int) -> dict:
    import multiprocessing

    import numpy as np
    import torch
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from jpcorpus.tokenizer import load_tokenizer

    tok = load_tokenizer("qwen2.5")
    started = time.perf_counter()
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(tok.vocab_size))
    tokens = 0
    with open(path, encoding="utf-8") as f, multiprocessing.Pool(workers, _baseline_init, (str(tok.hf_dir),)) as pool:
        for ids, _ in pool.imap(_baseline_encode, f, chunksize=4):
            ids.append(tok.eod_id)
            builder.add_item(torch.IntTensor(np.asarray(ids, dtype=np.int32)))
            builder.end_document()
            tokens += len(ids)
    builder.finalize(f"{prefix}.idx")
    return {"seconds": time.perf_counter() - started, "tokens": tokens}


def run_ours(path: Path, prefix: Path, workers: int) -> dict:
    from jpcorpus.binarize import BinarizeOptions, binarize

    started = time.perf_counter()
    result = binarize(BinarizeOptions([str(path)], str(prefix), workers=workers, progress=False))
    return {"seconds": time.perf_counter() - started, "tokens": sum(s.tokens for s in result.shards)}


def child(variant: str, path: Path, prefix: Path, workers: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if variant == "ours-hf":
        os.environ["JPCORPUS_NO_FAST_TOKENIZER"] = "1"
    runner = run_baseline if variant == "baseline" else run_ours
    result = runner(path, prefix, workers)
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result.update(peak_rss_mb=max(me, kids) / 1024, main_rss_mb=me / 1024, worker_rss_mb=kids / 1024)
    print(json.dumps(result))


# -------------------------------------------------------------------- driver

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, nargs="?")
    parser.add_argument("--limit-mb", type=float, default=20.0, help="use the first N MB of JSON lines")
    parser.add_argument("--variants", default="baseline:2,ours:1,ours:2",
                        help="comma list of variant:workers (variants: baseline, ours, ours-hf)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "PATH", "PREFIX", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, path, prefix, workers = args.child
        child(variant, Path(path), Path(prefix), int(workers))
        return

    if args.input is None:
        parser.error("the input JSONL file is required")
    work = Path(tempfile.mkdtemp(prefix="bench-binarize-"))
    data = work / "input.jsonl"
    size = prepare_input(args.input, args.limit_mb, data)
    rows = []
    for spec in args.variants.split(","):
        variant, workers = spec.split(":")
        prefix = work / f"{variant}-{workers}"
        out = subprocess.run([sys.executable, __file__, "--child", variant, str(data), str(prefix), workers],
                             check=True, capture_output=True, text=True, cwd=ROOT)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(variant=variant, workers=int(workers), mb_per_s=size / 1e6 / result["seconds"],
                      tokens_per_s=result["tokens"] / result["seconds"])
        rows.append(result)
        print(f"{variant:>9} x{workers}: {result['seconds']:7.1f} s  {result['mb_per_s']:6.2f} MB/s  "
              f"{result['tokens_per_s'] / 1e3:8.0f}k tok/s  peak RSS {result['peak_rss_mb']:6.0f} MB", flush=True)
    reference = None
    for row in rows:
        files = [(work / f"{row['variant']}-{row['workers']}{s}").read_bytes() for s in (".bin", ".idx")]
        reference = reference or files
        row["identical_to_first"] = files == reference
    base = next((r for r in rows if r["variant"] == "baseline"), None)
    print(f"\ninput: {size / 1e6:.1f} MB of JSON lines from {args.input.name}; CPU cores: {os.cpu_count()}")
    for row in rows:
        ratio = f"{row['mb_per_s'] / base['mb_per_s']:.2f}x baseline" if base else ""
        print(f"  {row['variant']} x{row['workers']}: {ratio}  byte-identical: {row['identical_to_first']}")
    if args.json:
        args.json.write_text(json.dumps({"input_mb": size / 1e6, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
