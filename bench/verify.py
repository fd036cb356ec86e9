"""How long the shard checks take on a large shard, against reading its index once.

    python bench/verify.py --documents 10000000 --tokens-per-doc 1000

Writes a synthetic shard into a temporary folder: a real ``.idx`` of
``--documents`` documents (20 bytes each: 200 MB for 10 million) and a sparse
``.bin`` of the size the index describes (no disk blocks: the structural
checks read only its size), plus a sidecar with the counts. Then times, each
on a cold-ish page cache (the files were just written, so mostly warm):

- baseline: reading the ``.idx`` bytes once (``np.fromfile`` + a sum), the
  floor any check of every index row must pay;
- ``verify_structure``: every structural check of ``jpcorpus.verify``;
- ``verify_content`` on a real 64 MB ``.bin`` (sha256 + token range, one read),
  reported as MB/s, because its cost grows with the tokens.

Prints seconds and the ratio of the structural check to the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jpcorpus.indexed_dataset import IndexedDatasetWriter, bin_path, idx_path  # noqa: E402
from jpcorpus.sidecar import file_sha256, write_sidecar  # noqa: E402
from jpcorpus.verify import verify_content, verify_structure  # noqa: E402


def write_synthetic(prefix: Path, documents: int, tokens_per_doc: int) -> None:
    """An index of ``documents`` equal-length documents, int32, and a sparse .bin."""
    chunk = 1 << 22
    header = (b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + bytes([4]) + documents.to_bytes(8, "little")
              + (documents + 1).to_bytes(8, "little"))
    with open(idx_path(prefix), "wb") as f:
        f.write(header)
        for start in range(0, documents, chunk):
            f.write(np.full(min(chunk, documents - start), tokens_per_doc, np.int32).tobytes())
        for start in range(0, documents, chunk):
            f.write((np.arange(start, min(start + chunk, documents), dtype=np.int64) * tokens_per_doc * 4).tobytes())
        for start in range(0, documents + 1, chunk):
            f.write(np.arange(start, min(start + chunk, documents + 1), dtype=np.int64).tobytes())
    with open(bin_path(prefix), "wb") as f:
        f.truncate(documents * tokens_per_doc * 4)
    write_sidecar(prefix, {"format": "megatron-indexed-dataset", "format_version": 1, "dtype": "int32",
                           "documents": documents, "sequences": documents, "tokens": documents * tokens_per_doc,
                           "bin_bytes": bin_path(prefix).stat().st_size, "idx_bytes": idx_path(prefix).stat().st_size,
                           "tokenizer": {"name": "synthetic", "fingerprint": "-", "vocab_size": 151665,
                                         "eod_id": 151643}})


def write_real(prefix: Path, mb: int) -> None:
    rng = np.random.default_rng(0)
    with IndexedDatasetWriter(prefix, np.int32) as writer:
        for _ in range(mb):
            tokens = rng.integers(0, 151665, size=(1 << 20) // 4, dtype=np.int32)
            writer.add_documents(tokens, np.full(256, tokens.size // 256, np.int32))
        sha = writer.finalize()
    write_sidecar(prefix, {"format": "megatron-indexed-dataset", "format_version": 1, "bin_sha256": sha,
                           "idx_sha256": file_sha256(idx_path(prefix)),
                           "tokenizer": {"name": "synthetic", "fingerprint": "-", "vocab_size": 151665,
                                         "eod_id": 151643}})


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=10_000_000)
    parser.add_argument("--tokens-per-doc", type=int, default=1000)
    parser.add_argument("--content-mb", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big"
        write_synthetic(big, args.documents, args.tokens_per_doc)
        assert verify_structure(big) == [], verify_structure(big)
        baseline = best_of(lambda: int(np.fromfile(idx_path(big), dtype=np.uint8).sum()), args.repeat)
        structure = best_of(lambda: verify_structure(big), args.repeat)
        real = Path(tmp) / "real"
        write_real(real, args.content_mb)
        assert verify_content(real) == []
        content = best_of(lambda: verify_content(real), args.repeat)
    result = {
        "documents": args.documents, "idx_mb": round(idx_path_size(args.documents) / 1e6, 1),
        "bin_gb": round(args.documents * args.tokens_per_doc * 4 / 1e9, 1),
        "read_idx_once_s": round(baseline, 4), "verify_structure_s": round(structure, 4),
        "ratio_to_read_once": round(structure / baseline, 2),
        "verify_content_mb_per_s": round(args.content_mb * 1.048576 / content, 1),
    }
    print(json.dumps(result, indent=2))


def idx_path_size(documents: int) -> int:
    return 34 + 12 * documents + 8 * (documents + 1)


if __name__ == "__main__":
    main()
