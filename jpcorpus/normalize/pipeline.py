"""The per-document steps of ``jpcorpus normalize``, and its entry point.

::

    partitions -> [workers] formatters -> filters -> fingerprints      (clean stage)
               -> [workers + driver] exact_dedup -> near_dedup, global  (dedup stages)
               -> (driver, input order) output / rejects

:func:`run_normalize` runs the stages of :mod:`jpcorpus.normalize.staged` on an
engine (``local``: this process or a process pool; ``ray``: a Ray cluster). This
module holds what a clean task does with a batch of documents
(:func:`process_docs`): each step runs over a group of documents before the next
step starts. Each worker process builds the profile's steps once (Sudachi is
created on first use in that process). Results do not depend on the engine,
the number of workers or the partitions: deduplication is global and the output
is written in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from jpcorpus.document import Document
from jpcorpus.normalize import charstats, morphology
from jpcorpus.normalize.report import RunReport, StepCount
from jpcorpus.normalize.steps import Filter, Formatter

BATCH_DOCS = morphology.CACHE_TEXTS  # the word-level steps see a whole batch back to back
BATCH_CHARS = 1 << 18  # ~0.75 MB of Japanese per batch: big enough to amortise pickling
CHUNK_DOCS = charstats.CACHE_TEXTS  # documents that go through the character-level steps together
CHUNK_CHARS = 1 << 14  # long documents go one at a time: their arrays fill the CPU caches alone


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
    engine: str = "local",
    ray_address: str | None = None,
    work_dir: str | None = None,
    partition_bytes: int | None = None,
    keep_work: bool = False,
    dedup_task_bytes: int | None = None,
) -> RunReport:
    """Normalize and filter ``inputs`` into ``output``; return the counts.

    ``engine`` is ``local`` (``workers`` processes; 1: this process alone) or
    ``ray`` (``ray_address``: None starts Ray here with ``workers`` CPUs, ``auto``
    or ``HOST:PORT`` joins a cluster). ``work_dir`` (default ``.OUTPUT.work`` beside
    the output) holds the partitions; a rerun after an interruption reuses the
    finished ones. ``partition_bytes`` is the input per task (default: from the
    input's size) and ``dedup_task_bytes`` the records a deduplication task holds
    (default 512 MB); neither changes the result.

    Raises :class:`~jpcorpus.readers.InputError` for bad input (unless
    ``skip_bad``) and ``ValueError`` for a bad option or profile; in both
    cases no output file is left behind. A run that keeps no document raises
    :class:`~jpcorpus.errors.EmptyResult` (unless ``allow_empty``): the output
    is not written, the rejects file is (it says where the documents went).
    """
    from jpcorpus.normalize import staged

    return staged.run(inputs, output, profile=profile, text_key=text_key, id_key=id_key, encoding=encoding,
                      skip_bad=skip_bad, workers=workers, rejects=rejects, progress=progress, engine=engine,
                      ray_address=ray_address, work_dir=work_dir, partition_bytes=partition_bytes,
                      keep_work=keep_work, dedup_task_bytes=dedup_task_bytes or staged.dedup_stages.TASK_BYTES,
                      allow_empty=allow_empty)
