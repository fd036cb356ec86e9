"""``binarize`` as stages on an engine: tokenize partitions into partial shards, merge them in order.

::

    driver: cut the input into partitions
    tokenize (a task per partition): end-of-document appended, train/valid by the
        document's hash, one partial .bin/.idx per split in the work directory
    driver, as each partition's result comes back (in partition order), while later
        partitions are still being tokenized: its partial shards through the same
        SplitWriter as ever (behind the PackingWriter with --pack)
        -> PREFIX(_train/_valid)[_NNNNN].bin/.idx, then sidecars

The split of a document depends only on its id (or text), and the merge streams
whole documents into :class:`~jpcorpus.split_writer.SplitWriter`, whose shard
boundaries depend only on document sizes (and best-fit packing only on the
documents in order); so the final files are the same bytes whatever the engine,
the workers or the partitions, with or without ``--max-shard-size`` and ``--pack``.
The merge is a sequential copy (disk speed, no tokenizing) done by the driver while
it would otherwise wait for the workers, so only the last partition's copy is left
after the stage (on 1 GB of books and 16 workers the merge took 2.1 s, a tenth of the
run, when it waited for the whole stage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from jpcorpus import partitions, workdir
from jpcorpus.engines import cached
from jpcorpus.indexed_dataset import IndexedDataset, IndexedDatasetWriter, bin_path
from jpcorpus.readers import InputError, ReadStats

MERGE_TOKENS = 1 << 24  # tokens copied at a time by the merge (64 MB of int32)


@dataclass
class TokenizeJob:
    """What every tokenize task of a run shares."""

    tokenizer: str
    eod_token: str | None
    dtype: str
    splits: list[str]  # ["all"] or ["train", "valid"]
    valid_fraction: float
    text_key: str
    id_key: str
    encoding: str
    skip_bad: bool
    batch_chars: int
    folder: str
    key: str


@dataclass
class TokenizeTask:
    job: TokenizeJob
    part: partitions.Partition



def load_worker_tokenizer(spec: str, eod_token: str | None):
    """The tokenizer, once per process (a forked local worker finds the driver's)."""
    from jpcorpus.tokenizer import load_tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per process: --workers is the parallelism
    return cached(("tokenizer", spec, eod_token), lambda: load_tokenizer(spec, eod_token=eod_token))


def tokenize_partition(task: TokenizeTask) -> dict:
    """Tokenize one partition into one partial shard per split; returns its summary."""
    from jpcorpus.binarize import encode_with_eod, split_of

    job, part = task.job, task.part
    tokenizer = load_worker_tokenizer(job.tokenizer, job.eod_token)
    dtype = np.dtype(job.dtype)
    folder, name = Path(job.folder), workdir.partition_name(part.index)
    writers = [IndexedDatasetWriter(folder / f"{name}.{split}", dtype) for split in job.splits]
    stats, skips = ReadStats(), []
    try:
        texts, splits, size = [], [], 0
        for item in partitions.read(part, job.text_key, job.id_key, job.encoding, stats):
            if isinstance(item, InputError):
                if not job.skip_bad:
                    for writer in writers:
                        writer.abort()
                    return {"index": part.index, "error": [item.source, item.reason, item.message]}
                stats.skipped[item.reason] += 1
                skips.append([item.source, item.reason, item.message])
                continue
            texts.append(item.text)
            splits.append(split_of(item.id if item.id is not None else item.text, job.valid_fraction))
            size += len(item.text)
            if size >= job.batch_chars:
                _add(writers, *encode_with_eod(tokenizer, texts, dtype), np.array(splits, dtype=np.int8))
                texts, splits, size = [], [], 0
        if texts:
            _add(writers, *encode_with_eod(tokenizer, texts, dtype), np.array(splits, dtype=np.int8))
        for writer in writers:
            writer.finalize()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    summary = {"index": part.index, "error": None, "documents": [w.documents for w in writers],
               "tokens": [w.tokens for w in writers], "read": stats.as_dict(), "skips": skips}
    workdir.mark_done(folder, name, workdir.partition_marker_key(job.key, part), summary)
    return summary


def _add(writers: list[IndexedDatasetWriter], tokens: np.ndarray, lengths: np.ndarray, splits: np.ndarray) -> None:
    if len(writers) == 1:
        writers[0].add_documents(tokens, lengths)
        return
    token_split = np.repeat(splits, lengths)
    for k, writer in enumerate(writers):
        if (splits == k).any():
            writer.add_documents(tokens[token_split == k], lengths[splits == k])


def tokenized(engine, job: TokenizeJob, paths: list[str], target: int, stats: ReadStats, progress) -> Iterator[dict]:
    """The tokenize stage over every partition (finished ones reused): each summary, in input order, as it is done."""
    tasks = workdir.tasks_or_reused(partitions.plan(paths, target, job.text_key, stats), Path(job.folder), job,
                                    TokenizeTask)
    progress.stage("tokenize", None, "docs")
    for summary in engine.map(tokenize_partition, tasks):
        if summary["error"] is not None:
            raise InputError(*summary["error"])
        read = summary["read"]
        stats.documents += read["documents"]
        stats.text_bytes += read["text_bytes"]
        stats.skipped.update(read["skipped"])
        progress.advance(read["documents"], read["text_bytes"], f"{sum(summary['tokens']):,} tokens")
        yield summary


def merge_partition(job: TokenizeJob, summary: dict, writers: list) -> None:
    """Stream one partition's partial shards into the final writers (one per split), in MERGE_TOKENS pieces."""
    for split, writer in zip(job.splits, writers):
        prefix = Path(job.folder) / f"{workdir.partition_name(summary['index'])}.{split}"
        lengths = np.asarray(IndexedDataset(prefix).lengths)
        data = np.memmap(bin_path(prefix), dtype=np.dtype(job.dtype), mode="r") if len(lengths) else None
        ends = np.cumsum(lengths, dtype=np.int64)
        start_doc, start_tok = 0, 0
        while start_doc < len(lengths):
            stop = max(start_doc + 1, int(np.searchsorted(ends, start_tok + MERGE_TOKENS, side="right")))
            stop_tok = int(ends[stop - 1])
            writer.add(np.asarray(data[start_tok:stop_tok]), lengths[start_doc:stop])
            start_doc, start_tok = stop, stop_tok
