"""``normalize`` as stages on an engine: clean partitions, deduplicate globally, write in input order.

::

    driver: cut the input into partitions ------------------------------+
    clean (a task per partition): per-document steps, fingerprints     | the engine's workers
    exact_dedup / near_dedup (map, reduce tasks; decision on driver)   |
    driver: write kept lines and rejects, in input order <-------------+

Every engine runs the same stage functions, partitions are cut from the input
alone, deduplication is global and the output is written by the driver in input
order, so the output, the rejects and the report's counts are the same bytes for
``--engine local`` at any ``--workers`` and ``--engine ray`` on any cluster.

Partitions finished by an interrupted run of the same command are reused (their
markers match the input and the settings); see :mod:`jpcorpus.workdir`.
"""

from __future__ import annotations

import codecs
import json
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from jpcorpus import dedup_run, dedup_stages, partitions, workdir
from jpcorpus.engines import check_workers, make_engine
from jpcorpus.engines.progress import StageProgress
from jpcorpus.errors import EmptyResult, empty_message
from jpcorpus.inputs import expand, is_url, size_of
from jpcorpus.normalize.clean_stage import CleanJob, CleanTask, clean_partition, counts_from_dicts
from jpcorpus.normalize.output import AtomicJsonlWriter, encode_record
from jpcorpus.normalize.profiles import build_steps, load_profile
from jpcorpus.normalize.report import EXAMPLES_PER_REASON, RunReport, StepCount
from jpcorpus.readers import InputError, ReadStats

WRITE_CHUNK = 1 << 20  # output handed to the compressor in pieces of this size, whatever the partitions


def run(inputs: list[str], output: str, *, profile: str = "default", text_key: str = "text", id_key: str = "id",
        encoding: str = "utf-8", skip_bad: bool = False, workers: int = 1, rejects: str | None = None,
        progress: bool = False, engine: str = "local", ray_address: str | None = None,
        work_dir: str | None = None, partition_bytes: int | None = None, keep_work: bool = False,
        dedup_task_bytes: int = dedup_stages.TASK_BYTES, allow_empty: bool = False) -> RunReport:
    """Normalize ``inputs`` into ``output`` (see :func:`jpcorpus.normalize.pipeline.run_normalize`)."""
    check_workers(engine, workers)
    paths = expand(inputs)
    if not is_url(output) and any(Path(output).resolve() == Path(p).resolve() for p in paths if not is_url(p)):
        raise ValueError(f"-o {output}: the output would overwrite an input file")
    loaded = load_profile(profile)
    steps, dedups = build_steps(loaded)  # validates the profile before any work
    specs = [dedup_stages.spec_of(d) for d in dedups]
    codecs.lookup(encoding)
    work = (Path(work_dir) if work_dir else workdir.default_work_dir(output)).resolve()  # workers: other cwd
    target = partition_bytes or partitions.default_target(sum(size_of(p) for p in paths))
    key = workdir.settings_key(stage="normalize-clean", profile=loaded, text_key=text_key, id_key=id_key,
                               encoding=encoding, skip_bad=skip_bad)
    job = CleanJob(loaded, text_key, id_key, encoding, skip_bad, str(work / "clean"), key)
    started = time.perf_counter()
    try:
        (work / "clean").mkdir(parents=True, exist_ok=True)
        with make_engine(engine, workers, ray_address=ray_address) as eng, StageProgress(progress) as bar:
            clock = {"engine_start": time.perf_counter() - started}
            stats = ReadStats()
            counts = _step_counts(steps)  # with each filter's limits, for the report
            done = _clean(eng, job, paths, target, text_key, stats, counts, bar)
            clock["clean"] = time.perf_counter() - started - sum(clock.values())
            dedup = dedup_run.run(eng, work / "clean", work / "dedup", [s["kept"] for s in done], specs,
                                     dedup_task_bytes, bar)
            clock["dedup"] = time.perf_counter() - started - sum(clock.values())
            report = RunReport(profile, workers, {}, counts + [StepCount(s.name, "dedup") for s in specs])
            bar.stage("write", sum(s["items"] for s in done), "docs")
            _write(work, done, specs, report, output, rejects, bar, allow_empty)
            clock["write"] = time.perf_counter() - started - sum(clock.values())
        clock["engine_stop"] = time.perf_counter() - started - sum(clock.values())  # Ray's shutdown: ~1.4 s
    except (InputError, ValueError, LookupError):
        if not work_dir:
            workdir.remove(work)
        raise
    except KeyboardInterrupt:
        workdir.note_kept(work)
        raise
    report.read = stats.as_dict()
    report.seconds = time.perf_counter() - started
    report.dedup_memory_bytes = dedup.peak_task_bytes
    report.engine = {"engine": engine, "parallelism": eng.parallelism, "nodes": eng.nodes,
                     "nodes_used": len(eng.nodes_used),
                     "partitions": len(done), "reused_partitions": sum(1 for s in done if s.get("reused")),
                     "partition_bytes": target, "seconds": {k: round(v, 3) for k, v in clock.items()},
                     "dedup": dedup.steps, "processes": eng.ledger.as_list()}
    if not keep_work:
        workdir.remove(work)
    if report.docs_out == 0 and not allow_empty:  # the output was not written; the counts say why
        dropped = sum((c.reason_docs for c in report.steps), Counter())
        raise EmptyResult(empty_message(output, stats, dropped, rejects), report)
    return report


def _step_counts(steps) -> list[StepCount]:
    from jpcorpus.normalize.pipeline import _new_counts

    return _new_counts(steps)


def _clean(eng, job: CleanJob, paths, target, text_key, stats: ReadStats, counts, bar) -> list[dict]:
    """The clean stage: one task per partition (finished ones reused); counts merged in input order."""
    tasks = workdir.tasks_or_reused(partitions.plan(paths, target, text_key, stats), Path(job.folder), job, CleanTask)
    bar.stage("clean", None, "docs")
    done = []
    for summary in eng.map(clean_partition, tasks):
        if summary["error"] is not None:
            raise InputError(*summary["error"])
        for total, part in zip(counts, counts_from_dicts(summary["counts"])):
            total.merge(part)
        read = summary["read"]
        stats.documents += read["documents"]
        stats.text_bytes += read["text_bytes"]
        stats.skipped.update(read["skipped"])
        done.append({k: summary[k] for k in ("index", "items", "kept")} | {"reused": summary.get("reused", False)})
        bar.advance(read["documents"], read["text_bytes"])
    return done


def _write(work: Path, done: list[dict], specs, report: RunReport, output: str, rejects: str | None, bar,
           allow_empty: bool) -> None:
    """The kept lines and the rejects of every partition, in input order, with the deduplication verdicts.

    With no document kept the output is not written (unless ``allow_empty``); the rejects are.
    """
    status = np.memmap(dedup_run.status_path(work / "dedup"), dtype=np.uint8, mode="r") \
        if sum(s["kept"] for s in done) else np.zeros(0, np.uint8)
    dedup_counts = report.steps[len(report.steps) - len(specs):]
    with ExitStack() as stack:
        out = _Chunked(stack.enter_context(AtomicJsonlWriter(output)))
        rej = _Chunked(stack.enter_context(AtomicJsonlWriter(rejects))) if rejects else None
        start = 0
        for summary in done:
            verdicts = np.asarray(status[start:start + summary["kept"]])
            start += summary["kept"]
            _write_partition(work / "clean", workdir.partition_name(summary["index"]), verdicts, specs, dedup_counts,
                             out, rej, report)
            bar.advance(summary["items"])
        out.flush()
        if rej is not None:
            rej.flush()
        if report.docs_out == 0 and not allow_empty:
            out.writer.discard()


def _write_partition(folder: Path, name: str, verdicts: np.ndarray, specs, dedup_counts, out, rej,
                     report: RunReport) -> None:
    import zstandard

    arrays = workdir.load_arrays(folder / f"{name}.npz")
    kept = zstandard.ZstdDecompressor().decompress((folder / f"{name}.kept.zst").read_bytes())
    chars = arrays["kept_chars"]
    for d, (spec, count) in enumerate(zip(specs, dedup_counts)):
        reached = (verdicts == 0) | (verdicts > d)
        dropped = verdicts == d + 1
        count.docs_in += int(reached.sum())
        count.chars_in += int(chars[reached].sum())
        if dropped.any():
            count.reason_docs[spec.reason] += int(dropped.sum())
            count.reason_chars[spec.reason] += int(chars[dropped].sum())
    lengths = arrays["kept_len"]
    ends = np.cumsum(lengths)
    keep = verdicts == 0
    if keep.all():
        out.write(kept, len(verdicts))
    else:  # the kept lines' bytes, selected at once
        out.write(np.frombuffer(kept, dtype=np.uint8)[np.repeat(keep, lengths)].tobytes(), int(keep.sum()))
    report.docs_out += int(np.count_nonzero(keep))
    report.chars_out += int(chars[verdicts == 0].sum())
    dropped = np.flatnonzero(verdicts)
    reasons = set(arrays["rej_reason"].tolist()) | {specs[v - 1].reason for v in np.unique(verdicts[dropped]).tolist()}
    wanted = {r for r in reasons if len(report.examples.get(r, ())) < EXAMPLES_PER_REASON}
    if rej is None and not wanted:
        return
    lines = zstandard.ZstdDecompressor().decompress((folder / f"{name}.rejects.zst").read_bytes())
    if not len(dropped) and not wanted:  # the partition's rejects are already in order
        rej.write(lines, len(arrays["rej_len"]))
        return
    rej_ends = np.cumsum(arrays["rej_len"]).tolist()
    pieces = [lines[e - n:e] for e, n in zip(rej_ends, arrays["rej_len"].tolist())]
    heads = [encode_record({"filter": spec.name, "reason": spec.reason})[:-2] + b', "source": ' for spec in specs]
    for k in dropped.tolist():  # the rejects line of json.dumps({filter, reason, source, record}), spliced
        source = json.dumps(str(arrays["kept_src"][k]), ensure_ascii=False).encode("utf-8")
        pieces.append(heads[verdicts[k] - 1] + source + b', "record": ' + kept[ends[k] - lengths[k]:ends[k] - 1] + b"}\n")
    line_reasons = arrays["rej_reason"].tolist() + [specs[verdicts[k] - 1].reason for k in dropped.tolist()]
    order = np.argsort(np.concatenate([arrays["rej_pos"], arrays["kept_pos"][dropped]]), kind="stable").tolist()
    for i in order:  # the report's first examples of each reason, in input order
        if line_reasons[i] in wanted and len(report.examples.get(line_reasons[i], ())) < EXAMPLES_PER_REASON:
            report.add_example(json.loads(pieces[i]))
    if rej is not None:
        rej.write(b"".join(pieces[i] for i in order), len(pieces))


class _Chunked:
    """Hands the writer fixed-size pieces, so compressed bytes never depend on partition boundaries."""

    def __init__(self, writer: AtomicJsonlWriter):
        self.writer, self.buffer, self.lines = writer, bytearray(), 0

    def write(self, data: bytes, lines: int) -> None:
        self.buffer += data
        self.lines += lines
        if len(self.buffer) >= WRITE_CHUNK:
            cut = len(self.buffer) - len(self.buffer) % WRITE_CHUNK
            self.writer.write_lines(bytes(self.buffer[:cut]), 0)
            del self.buffer[:cut]

    def flush(self) -> None:
        self.writer.write_lines(bytes(self.buffer), self.lines)
        self.buffer.clear()
