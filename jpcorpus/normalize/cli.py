"""``jpcorpus normalize``: a thin click layer over :func:`run_normalize`."""

from __future__ import annotations

import json
import sys

import click

from jpcorpus.engines.cli_options import engine_kwargs, engine_options
from jpcorpus.errors import EXIT_STATUS_HELP, ConventionCommand, EmptyResult


@click.command("normalize", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output JSON Lines file (.jsonl, .jsonl.gz or .jsonl.zst).")
@click.option("--profile", default="default", show_default=True,
              help="Shipped profile (default, web) or a YAML/TOML file of your own.")
@click.option("--text-key", default="text", show_default=True, help="JSON field holding the text.")
@click.option("--id-key", default="id", show_default=True, help="JSON field holding the document id.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Input encoding: utf-8, cp932 (Shift_JIS) or euc_jp.")
@click.option("--skip-bad", is_flag=True,
              help="Count bad input records (and write them to --rejects) instead of stopping.")
@click.option("--workers", default=1, show_default=True, type=int,
              help="Worker processes; the output is identical for every value.")
@click.option("--rejects", default=None, help="Write every dropped document with its filter and reason here.")
@click.option("--report", default=None, help="Write the counts per step as JSON here.")
@click.option("--report-html", default=None,
              help="Write a self-contained HTML page: counts, a histogram per measure, examples per reason.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@click.option("--allow-empty", is_flag=True,
              help="Write the output even when no document is left (else that is an error, exit 1).")
@click.option("--dedup-task-size", default="512MB", show_default=True,
              help="Memory a deduplication task uses at most (its records, sorted); a node needs about "
                   "this x the tasks it runs at once. Never changes the output.")
@engine_options
def normalize(inputs, output, profile, text_key, id_key, encoding, skip_bad, workers, rejects, report, report_html,
              progress, allow_empty, dedup_task_size, **engine):
    """Clean Japanese text: NFKC, whitespace, quality filters, deduplication.

    INPUT is JSON Lines (.jsonl, .gz, .zst), Parquet or plain text files, globs,
    folders (their data files only, never a README) or fsspec URLs.

    \b
    Example:
      jpcorpus normalize raw/*.jsonl.gz -o clean.jsonl.zst --workers 8 \\
          --rejects rejects.jsonl --report report.json --report-html report.html
      jpcorpus normalize old_sjis/*.txt -o clean.jsonl --encoding cp932 --profile web
      jpcorpus normalize hf_dump/ -o clean.jsonl.zst --engine ray --ray-address auto --workers 0
    """
    from jpcorpus.cli import _parse_size
    from jpcorpus.normalize.pipeline import run_normalize

    if progress is None:
        progress = sys.stderr.isatty()
    try:
        result = run_normalize(list(inputs), output, profile=profile, text_key=text_key, id_key=id_key,
                               encoding=encoding, skip_bad=skip_bad, workers=workers, rejects=rejects,
                               progress=progress, allow_empty=allow_empty,
                               dedup_task_bytes=_parse_size(dedup_task_size), **engine_kwargs(engine))
    except EmptyResult as exc:  # the counts still say where every document went
        if exc.report is not None:
            _write_report(exc.report, report, report_html)
        raise
    _write_report(result, report, report_html)
    click.echo(f"wrote {result.docs_out:,} documents to {output}", err=True)


def _write_report(result, path: str | None, report_html: str | None) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result.as_dict(), f, ensure_ascii=False, indent=2)
            f.write("\n")
    if report_html:
        from jpcorpus.normalize.report_html import render, write_html

        write_html(report_html, render(result.as_dict(), result.examples))
    click.echo(result.table(), err=True)


@click.command("report", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.argument("rejects")
@click.option("--report", "report_json", required=True, help="The --report JSON file of the same normalize run.")
@click.option("-o", "--output", required=True, help="HTML file to write.")
def report(rejects, report_json, output):
    """Write the HTML report of a finished normalize run from its --rejects and --report files.

    \b
    Example:
      jpcorpus normalize raw.jsonl -o clean.jsonl --rejects rejects.jsonl --report report.json
      jpcorpus report rejects.jsonl --report report.json -o report.html
    """
    from jpcorpus.normalize.report_html import examples_from_rejects, read_jsonl, render, write_html

    try:
        with open(report_json, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"--report {report_json}: cannot read the run's JSON report ({exc})") from None
    try:
        examples = examples_from_rejects(read_jsonl(rejects))
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    write_html(output, render(summary, examples))
    click.echo(f"wrote {output}", err=True)
