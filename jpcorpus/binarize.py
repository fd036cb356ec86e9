"""Tokenize documents into Megatron ``.bin/.idx`` shards with a provenance sidecar.

The pipeline (stages of :mod:`jpcorpus.binarize_stages`, on an engine)::

    read (driver, streaming)  ->  partitions cut from the input alone
    tokenize (a task per partition, in workers or Ray tasks), end-of-document appended,
        each document routed to train/valid by a hash of its id (or text),
        written as a partial shard per split
    merge (driver, in input order) through SplitWriter, then the sidecars

The split depends only on each document and the merge only on document sizes,
so the output is byte-identical for every engine, ``workers`` and partitioning.
Memory stays flat however large the input is (a task holds one partition; the
per-document lengths stream to disk in the writer). Outputs appear under their
final names only when complete; an interrupted run reuses its finished
partitions when rerun.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jpcorpus import __version__
from jpcorpus.indexed_dataset import bin_path, idx_path, optimal_dtype
from jpcorpus.errors import EmptyResult, empty_message
from jpcorpus.partial import clean_stale
from jpcorpus.readers import InputError, ReadStats
from jpcorpus.sidecar import SCHEMA, file_sha256, write_sidecar
from jpcorpus.split_writer import SplitWriter

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
    engine: str = "local"  # "local" (processes) or "ray"
    ray_address: str | None = None  # None: a Ray instance on this machine; "auto" or HOST:PORT: a cluster
    work_dir: str | None = None  # partial shards and markers [default: .PREFIX.work beside the output]
    partition_bytes: int | None = None  # input per task [default: from the input's size]
    keep_work: bool = False

    def __post_init__(self) -> None:
        from jpcorpus.engines import check_workers

        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        check_workers(self.engine, self.workers)
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
    engine: dict = field(default_factory=dict)  # engine, nodes, partitions, reused, seconds per stage

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
        if self.engine:
            e = self.engine
            lines.append(f"  engine {e['engine']} on {e['nodes_used']} node(s), {e['partitions']:,} partitions "
                         f"({e['reused_partitions']:,} reused from an earlier run); tokenize {e['tokenize_s']:.1f} s "
                         f"(merged as partitions finished: {e['merge_s']:.1f} s of it)")
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


def binarize(opts: BinarizeOptions) -> BinarizeResult:
    """Run the whole pipeline; raises InputError/ValueError for user errors."""
    from jpcorpus import binarize_stages as stages, partitions, workdir
    from jpcorpus.engines import make_engine
    from jpcorpus.engines.progress import StageProgress
    from jpcorpus.inputs import absolute, describe, expand, size_of

    started = time.perf_counter()
    paths = expand(opts.inputs)
    clean_stale(opts.output, family=True)  # temporaries a killed earlier run of this output left
    tokenizer = stages.load_worker_tokenizer(opts.tokenizer, opts.eod_token)  # forked workers share it
    described = tokenizer.describe()
    dtype = np.dtype(optimal_dtype(tokenizer.vocab_size))
    split_names = ["train", "valid"] if opts.valid_fraction > 0 else [None]
    work = (Path(opts.work_dir) if opts.work_dir else workdir.default_work_dir(opts.output)).resolve()
    key = workdir.settings_key(stage="binarize-tokenize", tokenizer=described, dtype=dtype.name,
                               valid_fraction=opts.valid_fraction, text_key=opts.text_key, id_key=opts.id_key,
                               encoding=opts.encoding, skip_bad=opts.skip_bad)
    job = stages.TokenizeJob(opts.tokenizer, opts.eod_token, dtype.name, [n or "all" for n in split_names],
                             opts.valid_fraction, opts.text_key, opts.id_key, opts.encoding, opts.skip_bad,
                             opts.batch_chars, str(work / "tokenize"), key)
    target = opts.partition_bytes or partitions.default_target(sum(size_of(p) for p in paths))
    stats = ReadStats()
    skip_log = _SkipLog(opts.skip_log or f"{opts.output}.skipped.jsonl")
    writers = []
    try:
        (work / "tokenize").mkdir(parents=True, exist_ok=True)
        writers = [SplitWriter(opts.output if name is None else f"{opts.output}_{name}", dtype, opts.max_shard_bytes)
                   for name in split_names]  # files appear at the first document, under temporary names
        if opts.pack is not None:  # same interface: add(tokens, lengths), close(), abort()
            from jpcorpus.packing import PackingWriter

            writers = [PackingWriter(w, opts.pack, opts.pack_buffer) for w in writers]
        done, merge_s = [], 0.0
        with make_engine(opts.engine, opts.workers, ray_address=opts.ray_address, start_method=_start_method()) \
                as engine, StageProgress(opts.progress) as progress:
            engine_started = time.perf_counter()
            for summary in stages.tokenized(engine, job, paths, target, stats, progress):
                merging = time.perf_counter()  # while the workers tokenize the partitions after it
                stages.merge_partition(job, summary, writers)
                merge_s += time.perf_counter() - merging
                done.append(summary)
            inputs = list(engine.map(describe, [(p, absolute(p)) for p in paths]))
            stopping = time.perf_counter()
        tokenized = time.perf_counter()
        for summary in done:
            for source, reason, message in summary["skips"]:
                skip_log.write(InputError(source, reason, message))
        if stats.documents == 0 and not opts.allow_empty:
            raise EmptyResult(empty_message(opts.output, stats, {}, skip_log.path if skip_log.count else None,
                                            "the input"))
        if len(split_names) == 2 and sum(s["documents"][1] for s in done) == 0 and stats.documents:
            raise ValueError(
                f"the validation split received no documents out of {stats.documents:,} "
                f"(--valid-fraction {opts.valid_fraction}); raise --valid-fraction or give more input"
            )
        for writer in writers:
            writer.close()
    except BaseException as exc:
        for writer in writers:
            writer.abort()
        if isinstance(exc, (InputError, ValueError, LookupError)) and not opts.work_dir:
            workdir.remove(work)
        elif isinstance(exc, KeyboardInterrupt):
            workdir.note_kept(work)
        raise
    finally:
        skip_log.close()
    shards = _write_sidecars(writers, split_names, opts, described, dtype, inputs, stats)
    if not opts.keep_work:
        workdir.remove(work)
    info = {"engine": opts.engine, "nodes_used": len(engine.nodes_used), "partitions": len(done),
            "reused_partitions": sum(1 for s in done if s.get("reused")), "partition_bytes": target,
            "engine_start_s": engine_started - started, "tokenize_s": stopping - engine_started,
            "merge_s": merge_s,  # inside tokenize_s: the driver's copies, while later partitions were tokenized
            "engine_stop_s": tokenized - stopping,  # Ray's shutdown (~1.4 s), apart like its start
            "close_s": time.perf_counter() - tokenized, "processes": engine.ledger.as_list()}
    return BinarizeResult(shards, stats, described, time.perf_counter() - started, opts.workers,
                          skip_log.path if skip_log.count else None,
                          [w.summary(n) for w, n in zip(writers, split_names) if opts.pack is not None], info)


def _start_method() -> str:
    """Fork where the platform can: workers inherit the tokenizer already loaded (pages shared)."""
    import multiprocessing

    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


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
