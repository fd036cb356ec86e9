"""The runner of ``jpcorpus normalize``: read, clean in parallel, deduplicate in order, write.

::

    read (main) -> batches -> [workers] formatters -> filters -> fingerprints
                -> (main, input order) exact_dedup -> near_dedup -> output / rejects

Each worker process builds the profile's steps once (Sudachi is created on
first use in that process) and handles whole batches: each step runs over a group of documents before the
next step starts (see :func:`process_docs`). The main process keeps
at most ``2 x workers`` batches in flight, so memory stays flat whatever the
input size. Results come back in input order and deduplication runs on them
in the main process, so the output is byte-identical for every ``--workers``.
With ``workers=1`` everything runs in the main process, no pool.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import Counter
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from jpcorpus.document import Document
from jpcorpus.errors import EmptyResult, empty_message
from jpcorpus.normalize import charstats, morphology
from jpcorpus.normalize.output import AtomicJsonlWriter
from jpcorpus.normalize.profiles import build_steps, load_profile
from jpcorpus.normalize.report import RunReport, StepCount
from jpcorpus.normalize.steps import Filter, Formatter
from jpcorpus.readers import InputError, ReadStats, expand_inputs, iter_documents
from jpcorpus.workers import ignore_sigint, ordered_map

BATCH_DOCS = morphology.CACHE_TEXTS  # the word-level steps see a whole batch back to back
BATCH_CHARS = 1 << 18  # ~0.75 MB of Japanese per batch: big enough to amortise pickling
CHUNK_DOCS = charstats.CACHE_TEXTS  # documents that go through the character-level steps together
CHUNK_CHARS = 1 << 14  # long documents go one at a time: their arrays fill the CPU caches alone

_STEPS: list = []
_DEDUPS: list = []


def _init_worker(profile: dict[str, Any]) -> None:
    global _STEPS, _DEDUPS
    _STEPS, _DEDUPS = build_steps(profile)


def _new_counts(steps: Iterable) -> list[StepCount]:
    return [StepCount(s.name, "formatter") if isinstance(s, Formatter) else
            StepCount(s.name, "filter", limits=s._limits() if _measures(s) else []) for s in steps]


def _measures(step) -> bool:
    """Whether ``step`` states its rules as measures and limits (a filter of one's own may only ``filter``)."""
    return type(step).measure is not Filter.measure


def process_document(doc: Document, steps: list, counts: list[StepCount]) -> tuple:
    """Run the per-document steps on ``doc``: ``("keep", doc)`` or ``("drop", doc, step, reason, measured)``
    (``measured``: the measure that decided and its value, or None)."""
    for step, count in zip(steps, counts):
        if dropped := _apply(step, count, doc):
            return dropped
    return ("keep", doc)


def _apply(step, count: StepCount, doc: Document) -> tuple | None:
    """One step on ``doc`` (a formatter rewrites ``doc.text``): None, or the drop record."""
    count.saw(doc.text)
    if isinstance(step, Formatter):
        text = step.format(doc.text)
        count.docs_changed += text != doc.text
        count.chars_out += len(text)
        doc.text = text
        return None
    measured = None
    if _measures(step):  # the runner keeps the values: histograms, and the value beside each drop
        values = step.measure(doc)
        verdict, limit = step.judge(values)
        count.measured(values, limit.measure if limit else None)
        if limit is not None:
            measured = (limit.measure, values[limit.measure])
    else:
        verdict = step.filter(doc)
    if verdict is True:
        return None
    reason = verdict[1] if isinstance(verdict, tuple) else step.name
    count.dropped(reason, len(doc.text))
    return ("drop", doc, step.name, reason, measured)


def process_docs(docs: list[Document], steps: list, counts: list[StepCount]) -> list[tuple]:
    """:func:`process_document` for each of ``docs`` (a batch), with the loops turned round.

    Each step runs over every document still alive in a group before the next
    step starts, so each piece of code runs on warm CPU caches:

    * character-level steps go a chunk at a time (:func:`_chunks`: at most
      CHUNK_DOCS documents and CHUNK_CHARS characters), so that the numpy
      arrays of one chunk stay in cache from one filter to the next;
    * word-level steps (Sudachi) run over every surviving document of the batch
      back to back: SudachiPy then tokenizes as fast as in a bare loop over
      texts, where between small chunks it had lost its dictionary's cached
      lines to the character filters and ran 7-16% slower.

    Verdicts, reasons and counts are those of :func:`process_document`
    (integer sums; a test compares the two). The per-text caches must hold a
    chunk (``charstats.CACHE_TEXTS``) and a batch (``morphology.CACHE_TEXTS``).
    """
    results: list = [None] * len(docs)
    alive = list(range(len(docs)))
    try:
        for stage in _stages(steps):
            groups = [alive] if stage.word_level else _chunks(docs, alive)
            alive = []
            for group in groups:
                for k in stage.steps:
                    step, count, still = steps[k], counts[k], []
                    step.prepare([docs[i] for i in group])
                    for i in group:
                        if dropped := _apply(step, count, docs[i]):
                            results[i] = dropped
                        else:
                            still.append(i)
                    group = still
                alive += group
                charstats.clear_caches()
    finally:
        charstats.clear_caches()
        morphology.clear_caches()
    for i in alive:
        results[i] = ("keep", docs[i])
    return results


@dataclass
class _Stage:
    word_level: bool
    steps: list[int]


def _stages(steps: list) -> list[_Stage]:
    """Consecutive steps grouped by whether they read Sudachi's words."""
    stages: list[_Stage] = []
    for k, step in enumerate(steps):
        if not stages or stages[-1].word_level != step.word_level:
            stages.append(_Stage(step.word_level, []))
        stages[-1].steps.append(k)
    return stages


def _chunks(docs: list[Document], indices: list[int]) -> Iterator[list[int]]:
    """Consecutive runs of ``indices``: at most CHUNK_DOCS documents and (unless one alone) CHUNK_CHARS characters."""
    chunk: list[int] = []
    chars = 0
    for i in indices:
        size = len(docs[i].text)
        if chunk and (len(chunk) >= CHUNK_DOCS or chars + size > CHUNK_CHARS):
            yield chunk
            chunk, chars = [], 0
        chunk.append(i)
        chars += size
    if chunk:
        yield chunk


def _process_batch(batch: list) -> tuple[list, list[StepCount]]:
    """Per-document steps on each document, then the dedup fingerprints of the kept ones, batch-wide.

    Kept documents come back as ``("keep", doc, fingerprints)``. Fingerprints are
    computed for the whole batch at once: MinHash over a few hundred short texts
    is then a handful of array operations instead of a few dozen per text.
    """
    counts = _new_counts(_STEPS)
    docs = [item for item in batch if not isinstance(item, tuple)]
    done = iter(process_docs(docs, _STEPS, counts))
    results = [item if isinstance(item, tuple) else next(done) for item in batch]
    kept = [i for i, item in enumerate(results) if item[0] == "keep"]
    texts = [results[i][1].text for i in kept]
    per_dedup = [d.fingerprints(texts) for d in _DEDUPS]
    for k, i in enumerate(kept):
        results[i] = ("keep", results[i][1], [fingerprints[k] for fingerprints in per_dedup])
    return results, counts


def _batches(paths: list[Path], read_options: dict, stats: ReadStats) -> Iterator[list]:
    """Documents and bad-input records (as ``("skip", source, reason, message)``), in input order."""
    skipped: list[tuple] = []

    def on_skip(error: InputError) -> None:
        skipped.append(("skip", error.source, error.reason, error.message))

    batch: list = []
    chars = 0
    for doc in iter_documents(paths, stats=stats, on_skip=on_skip, **read_options):
        batch.extend(skipped)
        skipped.clear()
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    batch.extend(skipped)
    if batch:
        yield batch


def _results(batches: Iterator[list], profile: dict, workers: int) -> Iterator[tuple[list, list[StepCount]]]:
    if workers == 1:
        _init_worker(profile)
        yield from map(_process_batch, batches)
        return
    context = multiprocessing.get_context("spawn")  # no forked Sudachi or file handles
    pool = context.Pool(workers, ignore_sigint, (_init_worker, profile))
    yield from ordered_map(pool, _process_batch, batches, ahead=2 * workers)


def run_normalize(
    inputs: list[str],
    output: str,
    *,
    profile: str = "default",
    text_key: str = "text",
    id_key: str = "id",
    encoding: str = "utf-8",
    skip_bad: bool = False,
    workers: int = 1,
    rejects: str | None = None,
    progress: bool = False,
    allow_empty: bool = False,
) -> RunReport:
    """Normalize and filter ``inputs`` into ``output``; return the counts.

    Raises :class:`~jpcorpus.readers.InputError` for bad input (unless
    ``skip_bad``) and ``ValueError`` for a bad option or profile; in both
    cases no output file is left behind. A run that keeps no document raises
    :class:`~jpcorpus.errors.EmptyResult` (unless ``allow_empty``): the output
    is not written, the rejects file is (it says where the documents went).
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    paths = expand_inputs(inputs)
    out_path = Path(output)
    if any(out_path.resolve() == p.resolve() for p in paths):
        raise ValueError(f"-o {output}: the output would overwrite an input file")
    loaded = load_profile(profile)
    steps, dedups = build_steps(loaded)  # validates the profile before any work
    counts = _new_counts(steps) + [StepCount(d.name, "dedup") for d in dedups]
    stats = ReadStats()
    report = RunReport(profile, workers, {}, counts)
    read_options = dict(text_key=text_key, id_key=id_key, encoding=encoding, skip_bad=skip_bad)
    started = time.perf_counter()
    with ExitStack() as stack:
        out = stack.enter_context(AtomicJsonlWriter(out_path))
        rej = stack.enter_context(AtomicJsonlWriter(rejects)) if rejects else None
        rej = _Rejects(rej, report)
        bar = stack.enter_context(_progress_bar(progress))
        for results, batch_counts in _results(_batches(paths, read_options, stats), loaded, workers):
            for total, part in zip(counts, batch_counts):
                total.merge(part)
            for item in results:
                _emit(item, dedups, counts[len(steps):], out, rej, report, text_key)
            if bar is not None:
                bar.update(len(results))
                bar.set_postfix_str(f"{stats.text_bytes / 1e6 / (time.perf_counter() - started):.2f} MB/s")
        if report.docs_out == 0 and not allow_empty:
            out.discard()
    report.read = stats.as_dict()
    report.seconds = time.perf_counter() - started
    report.dedup_memory_bytes = sum(d.memory_bytes() for d in dedups)
    if report.docs_out == 0 and not allow_empty:
        dropped = sum((c.reason_docs for c in counts), Counter())
        raise EmptyResult(empty_message(output, stats, dropped, rejects), report)
    return report


def _emit(item: tuple, dedups: list, dedup_counts: list[StepCount], out, rej, report: RunReport,
          text_key: str) -> None:
    kind = item[0]
    if kind == "skip":
        if rej is not None:
            rej.write({"filter": "read", "reason": item[2], "source": item[1], "message": item[3]})
        return
    doc = item[1]
    if kind == "keep":
        for dedup, count, fingerprint in zip(dedups, dedup_counts, item[2]):
            count.saw(doc.text)
            verdict = dedup.check(fingerprint)
            if verdict is not True:
                count.dropped(verdict[1], len(doc.text))
                kind, item = "drop", ("drop", doc, dedup.name, verdict[1], None)
                break
    if kind == "keep":
        out.write(doc.to_record(text_key))
        report.docs_out += 1
        report.chars_out += len(doc.text)
    elif rej is not None:
        line = {"filter": item[2], "reason": item[3]}
        if item[4] is not None:  # the measure that decided and its value (rounded: JSON stays short)
            line.update(measure=item[4][0], value=round(float(item[4][1]), 6))
        line.update(source=doc.source, record=doc.to_record(text_key))
        rej.write(line)


class _Rejects:
    """The rejects file (if any) and the report's capped examples per reason: every drop goes to both."""

    def __init__(self, writer, report: RunReport):
        self.writer, self.report = writer, report

    def write(self, line: dict) -> None:
        self.report.add_example(line)
        if self.writer is not None:
            self.writer.write(line)


class _progress_bar:
    """A tqdm bar on stderr with docs/s (and MB/s in the postfix), or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return None
        from tqdm import tqdm

        self.bar = tqdm(unit=" docs", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        return self.bar

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.close()
