"""Tokenize documents into Megatron ``.bin/.idx`` shards with a provenance sidecar.

The pipeline, one stage per function::

    read (main process, streaming)  ->  batches of ~1 MB of text
    tokenize (N worker processes, or inline for N=1), end-of-document appended
    route each document to train/valid by a hash of its id (or text)
    write (main process, in input order) through IndexedDatasetWriter

Batches come back in input order whatever the worker count, and the split
depends only on each document, so the output is byte-identical for every
``workers``. At most ``2 * workers`` batches are in flight, which keeps memory
flat however large the input is (the per-document lengths stream to disk in the
writer). Outputs appear under their final names only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from jpcorpus import __version__
from jpcorpus.indexed_dataset import bin_path, idx_path, optimal_dtype
from jpcorpus.errors import EmptyResult, empty_message
from jpcorpus.partial import clean_stale
from jpcorpus.readers import InputError, ReadStats, expand_inputs, iter_documents
from jpcorpus.sidecar import SCHEMA, file_sha256, write_sidecar
from jpcorpus.split_writer import SplitWriter
from jpcorpus.workers import ignore_sigint, ordered_map

log = logging.getLogger(__name__)


@dataclass
class BinarizeOptions:
    """Everything ``jpcorpus binarize`` needs; the CLI flags map one to one."""

    inputs: list[str]
    output: str  # output prefix; PREFIX.bin/.idx/.json (or PREFIX_train / PREFIX_valid)
    tokenizer: str = "qwen2.5"
    text_key: str = "text"
    id_key: str = "id"
    encoding: str = "utf-8"
    valid_fraction: float = 0.0
    workers: int = 1
    max_shard_bytes: int | None = None  # split a split's .bin into shards of at most this size
    pack: int | None = None  # pack whole documents into samples of at most pack + 1 tokens (jpcorpus/packing.py)
    pack_buffer: int = 10_000  # documents held for best-fit packing: fill rate vs memory
    skip_bad: bool = False
    skip_log: str | None = None  # default: PREFIX.skipped.jsonl, written only if something is skipped
    eod_token: str | None = None
    allow_empty: bool = False  # write 0-document shards instead of failing (EmptyResult)
    batch_chars: int = 1 << 20
    progress: bool = True
    command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.max_shard_bytes is not None and self.max_shard_bytes < 10**6:
            raise ValueError(f"--max-shard-size must be at least 1MB, got {self.max_shard_bytes} bytes")
        if self.pack is not None and self.pack < 1:
            raise ValueError(f"--pack must be a positive sequence length, got {self.pack}")
        if self.pack_buffer < 1:
            raise ValueError(f"--pack-buffer must be at least 1 document, got {self.pack_buffer}")


@dataclass
class ShardInfo:
    prefix: str
    split: str | None
    documents: int
    tokens: int
    bin_sha256: str


@dataclass
class BinarizeResult:
    shards: list[ShardInfo]
    stats: ReadStats
    tokenizer: dict
    seconds: float
    workers: int
    skip_log: str | None
    packing: list[str] = field(default_factory=list)  # one summary line per packed split

    def summary(self) -> str:
        """One paragraph for the end of the run."""
        tokens = sum(s.tokens for s in self.shards)
        mb = self.stats.text_bytes / 1e6
        secs = max(self.seconds, 1e-9)
        lines = [
            f"Binarized {self.stats.documents:,} documents ({mb:,.2f} MB of input) into {tokens:,} tokens "
            f"with tokenizer {self.tokenizer['name']} ({self.tokenizer['fingerprint'][:20]}..., "
            f"eod {self.tokenizer['eod_id']}) in {self.seconds:.1f} s: {mb / secs:.2f} MB/s, "
            f"{tokens / secs:,.0f} tokens/s, {self.workers} worker(s)."
        ]
        for s in self.shards:
            lines.append(f"  {s.split or 'all'}: {s.prefix}.bin/.idx/.json  {s.documents:,} "
                         f"{'packed samples' if self.packing else 'documents'}, {s.tokens:,} tokens")
        lines += self.packing
        if self.stats.skipped:
            skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(self.stats.skipped.items()))
            lines.append(f"  Skipped {sum(self.stats.skipped.values()):,} bad records ({skipped}); see {self.skip_log}")
        return "\n".join(lines)


def split_of(doc_key: str, valid_fraction: float) -> int:
    """0 for train, 1 for valid: a stable hash of the document's id or text.

    >>> [split_of(str(i), 0.25) for i in range(8)]
    [0, 0, 0, 1, 0, 0, 0, 0]
    """
    if valid_fraction <= 0.0:
        return 0
    digest = hashlib.blake2b(doc_key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int(int.from_bytes(digest, "little") < valid_fraction * 2**64)


# ----------------------------------------------------------------- tokenizing

_WORKER_TOKENIZER = None
_WORKER_DTYPE = None


def _init_worker(spec: str, eod_token: str | None, dtype_name: str) -> None:
    global _WORKER_TOKENIZER, _WORKER_DTYPE
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from jpcorpus.tokenizer import load_tokenizer

    _WORKER_TOKENIZER = load_tokenizer(spec, eod_token=eod_token)
    _WORKER_DTYPE = np.dtype(dtype_name)


def _tokenize_batch(batch: tuple[list[str], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In a worker: (tokens, lengths) of a batch's texts, and its splits passed through."""
    texts, splits = batch
    return (*encode_with_eod(_WORKER_TOKENIZER, texts, _WORKER_DTYPE), splits)


def encode_with_eod(tokenizer, texts: list[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    encoded = tokenizer.encode_batch(texts)
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    if lengths.size and lengths.max() > np.iinfo(np.int32).max:
        raise ValueError("a document has more than 2**31 tokens; split it before binarizing")
    tokens = np.empty(int(lengths.sum()), dtype=dtype)
    start = 0
    for ids in encoded:
        tokens[start: start + len(ids)] = ids
        start += len(ids)
        tokens[start] = tokenizer.eod_id
        start += 1
    return tokens, lengths.astype(np.int32)


def _batches(docs: Iterable, batch_chars: int, valid_fraction: float) -> Iterator[tuple[list[str], np.ndarray]]:
    texts: list[str] = []
    splits: list[int] = []
    size = 0
    for doc in docs:
        texts.append(doc.text)
        splits.append(split_of(doc.id if doc.id is not None else doc.text, valid_fraction))
        size += len(doc.text)
        if size >= batch_chars:
            yield texts, np.array(splits, dtype=np.int8)
            texts, splits, size = [], [], 0
    if texts:
        yield texts, np.array(splits, dtype=np.int8)


def _tokenized(batches: Iterator, opts: BinarizeOptions, tokenizer, dtype: np.dtype):
    """Yield (tokens, lengths, splits) per batch, in input order."""
    if opts.workers == 1:
        for texts, splits in batches:
            yield (*encode_with_eod(tokenizer, texts, dtype), splits)
        return
    # At most 2 batches a worker in flight: bounded memory, workers never idle.
    yield from ordered_map(_worker_pool(opts, tokenizer, dtype), _tokenize_batch, batches, ahead=2 * opts.workers)


def _worker_pool(opts: BinarizeOptions, tokenizer, dtype: np.dtype):
    """Worker processes holding the tokenizer.

    Where the platform can fork (Linux), workers inherit the tokenizer already
    loaded here (no second load, pages shared); elsewhere each loads its own.
    ``TOKENIZERS_PARALLELISM=false`` (set in :func:`binarize`) keeps each
    worker on one core, so ``--workers`` is the number of cores used.
    """
    global _WORKER_TOKENIZER, _WORKER_DTYPE
    if "fork" in multiprocessing.get_all_start_methods():
        _WORKER_TOKENIZER, _WORKER_DTYPE = tokenizer, dtype
        return multiprocessing.get_context("fork").Pool(opts.workers, ignore_sigint)
    return multiprocessing.get_context("spawn").Pool(
        opts.workers, ignore_sigint, (_init_worker, opts.tokenizer, opts.eod_token, dtype.name))


def binarize(opts: BinarizeOptions) -> BinarizeResult:
    """Run the whole pipeline; raises InputError/ValueError for user errors."""
    from jpcorpus.tokenizer import load_tokenizer

    started = time.perf_counter()
    paths = expand_inputs(opts.inputs)
    clean_stale(opts.output, family=True)  # temporaries a killed earlier run of this output left
    # One core per process: parallelism comes from --workers, not from the
    # tokenizers library's thread pool (see docs/tokenizer.md).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = load_tokenizer(opts.tokenizer, eod_token=opts.eod_token)
    described = tokenizer.describe()
    dtype = np.dtype(optimal_dtype(tokenizer.vocab_size))
    split_names = ["train", "valid"] if opts.valid_fraction > 0 else [None]
    writers = [
        SplitWriter(opts.output if name is None else f"{opts.output}_{name}", dtype, opts.max_shard_bytes)
        for name in split_names
    ]
    if opts.pack is not None:  # same interface: add(tokens, lengths), close(), abort()
        from jpcorpus.packing import PackingWriter

        writers = [PackingWriter(w, opts.pack, opts.pack_buffer) for w in writers]
    stats = ReadStats()
    skip_log = _SkipLog(opts.skip_log or f"{opts.output}.skipped.jsonl")
    docs = iter_documents(
        paths, text_key=opts.text_key, id_key=opts.id_key, encoding=opts.encoding,
        skip_bad=opts.skip_bad, stats=stats, on_skip=skip_log.write,
    )
    progress = _Progress(opts.progress, stats)
    try:
        for tokens, lengths, splits in _tokenized(_batches(docs, opts.batch_chars, opts.valid_fraction), opts, tokenizer, dtype):
            if len(writers) == 1:
                writers[0].add(tokens, lengths)
            else:
                token_split = np.repeat(splits, lengths)
                for k, writer in enumerate(writers):
                    if (splits == k).any():
                        writer.add(tokens[token_split == k], lengths[splits == k])
            progress.update(len(lengths), int(tokens.size))
        if stats.documents == 0 and not opts.allow_empty:
            raise EmptyResult(empty_message(opts.output, stats, {}, skip_log.path if skip_log.count else None,
                                            "the input"))
        if len(writers) == 2 and writers[1].documents == 0 and stats.documents:
            raise ValueError(
                f"the validation split received no documents out of {stats.documents:,} "
                f"(--valid-fraction {opts.valid_fraction}); raise --valid-fraction or give more input"
            )
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    finally:
        progress.close()
        skip_log.close()
    inputs = [{"path": str(p), "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in paths]
    shards = _write_sidecars(writers, split_names, opts, described, dtype, inputs, stats)
    return BinarizeResult(shards, stats, described, time.perf_counter() - started, opts.workers,
                          skip_log.path if skip_log.count else None,
                          [w.summary(n) for w, n in zip(writers, split_names) if opts.pack is not None])


def _write_sidecars(writers, split_names, opts, described, dtype, inputs, stats) -> list[ShardInfo]:
    shards = []
    for writer, name in zip(writers, split_names):
        for number, (prefix, documents, tokens, sha) in enumerate(writer.finished):
            write_sidecar(prefix, {
                "format": "megatron-indexed-dataset",
                "format_version": 1,
                "schema": SCHEMA,
                "dtype": dtype.name,
                "documents": documents,
                "sequences": documents,
                "tokens": tokens,
                "bin_sha256": sha,
                "idx_sha256": file_sha256(idx_path(prefix)),
                "bin_bytes": bin_path(prefix).stat().st_size,
                "idx_bytes": idx_path(prefix).stat().st_size,
                "tokenizer": described,
                "split": name,
                "valid_fraction": opts.valid_fraction,
                "split_key": f"blake2b-64 of the {opts.id_key!r} field, else of the text",
                "shard": number,
                "shards": len(writer.finished),
                "inputs": inputs,
                "text_key": opts.text_key,
                "skipped": dict(sorted(stats.skipped.items())),
                "jpcorpus_version": __version__,
                "command": opts.command,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **(writer.sidecar_fields(prefix) if opts.pack is not None else {}),
            })
            shards.append(ShardInfo(prefix, name, documents, tokens, sha))
    return shards


class _SkipLog:
    """JSON Lines of skipped records, created on the first skip."""

    def __init__(self, path: str):
        self.path, self.count, self._file = path, 0, None

    def write(self, error: InputError) -> None:
        if self._file is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
        self.count += 1
        self._file.write(json.dumps({"source": error.source, "reason": error.reason, "message": error.message},
                                    ensure_ascii=False) + "\n")
        log.warning("skipped %s", error)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Progress:
    """A tqdm bar on stderr: documents, MB/s and tokens/s."""

    def __init__(self, enabled: bool, stats: ReadStats):
        self.stats, self.tokens, self.started = stats, 0, time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(unit=" docs", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def update(self, docs: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            secs = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(
                f"{self.stats.text_bytes / 1e6:,.1f} MB, {self.stats.text_bytes / 1e6 / secs:.2f} MB/s, "
                f"{self.tokens / secs / 1e3:,.0f}k tok/s", refresh=False)
            self.bar.update(docs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
