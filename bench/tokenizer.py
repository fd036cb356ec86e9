"""Tokenizer throughput on real Japanese text, single process.

    TOKENIZERS_PARALLELISM=false python bench/tokenizer.py \
        ../shared/corpus/aozora_bench_100mb.jsonl.gz --mb 10

Measures MB/s (UTF-8 bytes of the text field) for: HF ``encode_batch_fast``,
HF per document ``tokenizer(text)["input_ids"]``, and the jpcorpus fast path,
and checks that all three give the same ids. Reads the corpus; writes nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time


def read_texts(path: str, mb: float) -> list[str]:
    texts, size = [], 0
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1].encode("utf-8"))
            if size >= mb * 1e6:
                break
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jsonl_gz")
    parser.add_argument("--mb", type=float, default=10.0, help="MB of text to read from the start")
    parser.add_argument("--tokenizer", default="qwen2.5")
    args = parser.parse_args()

    from jpcorpus.tokenizer import load_tokenizer

    texts = read_texts(args.jsonl_gz, args.mb)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    fast = load_tokenizer(args.tokenizer, fast_path=True)
    slow = load_tokenizer(args.tokenizer, fast_path=False)
    print(f"{len(texts)} documents, {mb:.1f} MB")

    results = {}
    for name, run in (
        ("hf encode_batch_fast", lambda: slow.encode_batch(texts)),
        ("hf tokenizer(text) per doc", lambda: [slow.hf(t, add_special_tokens=False)["input_ids"] for t in texts]),
        ("jpcorpus fast path (tiktoken)", lambda: fast.encode_batch(texts)),
    ):
        start = time.perf_counter()
        results[name] = run()
        secs = time.perf_counter() - start
        print(f"{name:32s} {secs:6.2f} s  {mb / secs:6.2f} MB/s")
    ids = [[list(map(int, doc)) for doc in out] for out in results.values()]
    print("identical ids:", ids[0] == ids[1] == ids[2], f"({sum(map(len, ids[0]))} tokens)")


if __name__ == "__main__":
    main()
