"""The ``jpcorpus`` command line: thin click wrappers around the library."""

from __future__ import annotations

import json
import logging
import sys

import click

from jpcorpus import __version__
from jpcorpus.errors import EXIT_STATUS_HELP, ConventionGroup
from jpcorpus.engines.cli_options import engine_kwargs, engine_options


def _parse_size(value: str | None) -> int | None:
    """'512MB', '2GB', '1.5GiB' or plain bytes -> bytes."""
    if value is None:
        return None
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1, "": 1}
    text = value.strip().lower()
    number = text.rstrip("kmgtib")
    try:
        return int(float(number) * units[text[len(number):]])
    except (ValueError, KeyError):
        raise click.BadParameter(f"{value!r} is not a size like 512MB or 2GB") from None


@click.group(cls=ConventionGroup, epilog=EXIT_STATUS_HELP)
@click.version_option(__version__, prog_name="jpcorpus")
def main() -> None:
    """Turn raw Japanese text into training shards for Qwen2.5 (and other HF tokenizers).

    \b
    Example, on the bundled sample:
      jpcorpus binarize data/sample/ja_sample.jsonl -o out/sample --valid-fraction 0.1
      jpcorpus inspect-idx out/sample_train --verify --decode 1
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("jpcorpus").setLevel(logging.INFO)  # one-time builds say what they are doing


@main.command(epilog=EXIT_STATUS_HELP)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output prefix: writes PREFIX.bin/.idx/.json (PREFIX_train/_valid with --valid-fraction).")
@click.option("--tokenizer", default="qwen2.5", show_default=True,
              help="'qwen2.5' (built in, offline), a Hugging Face tokenizer directory, or a hub id (online only).")
@click.option("--text-key", default="text", show_default=True, help="JSON field holding the text.")
@click.option("--id-key", default="id", show_default=True, help="JSON field holding the document id (used for the split).")
@click.option("--encoding", default="utf-8", show_default=True, help="Input encoding, e.g. cp932 (Shift_JIS) or euc_jp.")
@click.option("--valid-fraction", type=float, default=0.0, show_default=True,
              help="Fraction of documents for a separate validation prefix, chosen by a hash of the id (or text).")
@click.option("--workers", type=int, default=1, show_default=True, help="Tokenizer processes; output is identical for any number.")
@click.option("--max-shard-size", default=None, help="Split each output into shards of at most this .bin size (e.g. 2GB).")
@click.option("--pack", type=int, default=None, metavar="SEQ_LENGTH",
              help="Pack whole documents into samples of at most SEQ_LENGTH+1 tokens (best-fit decreasing; "
                   "longer documents are cut into sample-sized pieces, counted). See docs/packing.md.")
@click.option("--pack-buffer", type=int, default=10_000, show_default=True,
              help="Documents held for --pack: a larger buffer fills samples better and holds more tokens in memory.")
@click.option("--skip-bad", is_flag=True, help="Skip bad records (counted, logged to --skip-log) instead of stopping at the first.")
@click.option("--skip-log", default=None, help="Where skipped records are listed [default: PREFIX.skipped.jsonl].")
@click.option("--eod-token", default=None, help="End-of-document token [default: <|endoftext|>, else the tokenizer's eos].")
@click.option("--allow-empty", is_flag=True,
              help="Write 0-document shards when no document is left (else an error, exit 1).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@engine_options
def binarize(inputs, output, tokenizer, text_key, id_key, encoding, valid_fraction, workers,
             max_shard_size, pack, pack_buffer, skip_bad, skip_log, eod_token, allow_empty, quiet,
             **engine) -> None:
    """Tokenize JSONL/text INPUTS into Megatron .bin/.idx shards with a provenance sidecar.

    INPUTS are .jsonl/.jsonl.gz/.jsonl.zst (one JSON object per line), Parquet
    (the --text-key column) or plain text files (one document per file); globs,
    directories (their data files only, never a README) and fsspec URLs are expanded.
    Each document gets the end-of-document token appended.

    \b
    Example:
      jpcorpus binarize 'corpus/*.jsonl.gz' -o shards/ja --valid-fraction 0.005 --workers 2
      jpcorpus binarize 'corpus/*.jsonl.gz' -o shards/ja_packed --pack 2048 --valid-fraction 0.005
      jpcorpus binarize clean/ -o shards/ja --engine ray --ray-address auto --workers 0
    """
    from jpcorpus.binarize import BinarizeOptions, binarize as run

    opts = BinarizeOptions(
        inputs=list(inputs), output=output, tokenizer=tokenizer, text_key=text_key, id_key=id_key,
        encoding=encoding, valid_fraction=valid_fraction, workers=workers,
        max_shard_bytes=_parse_size(max_shard_size), pack=pack, pack_buffer=pack_buffer,
        skip_bad=skip_bad, skip_log=skip_log,
        eod_token=eod_token, allow_empty=allow_empty, progress=not quiet, command=["jpcorpus", *sys.argv[1:]],
        **engine_kwargs(engine),
    )
    click.echo(run(opts).summary())


@main.command("inspect-idx", epilog=EXIT_STATUS_HELP)
@click.argument("prefixes", nargs=-1, required=True)
@click.option("--verify", is_flag=True, help="Check sizes, pointers, token ids and the sidecar's counts and hashes; exit 1 on any problem.")
@click.option("--decode", "decode_n", type=int, default=0, help="Print the first N documents decoded with the sidecar's tokenizer.")
@click.option("--tokenizer", default=None, help="Tokenizer for --decode when the shard has no sidecar.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_idx(prefixes, verify, decode_n, tokenizer, as_json) -> None:
    """Summarise (and optionally verify and decode) .bin/.idx shards.

    PREFIXES are shard prefixes (PREFIX.bin/.idx) or directories of them.

    \b
    Example:
      jpcorpus inspect-idx shards/ja_train --verify --decode 2
    """
    from jpcorpus import inspect_idx as lib
    from jpcorpus.indexed_dataset import FormatError

    prefixes = [p for arg in prefixes for p in lib.find_prefixes(arg)]
    if not prefixes:
        raise click.ClickException("no .idx files found")
    reports, failed = [], False
    for prefix in prefixes:
        try:
            report = lib.summarize(prefix)
        except (FormatError, ValueError) as exc:  # damaged files or sidecar: a problem in the data (exit 1)
            report, failed = {"prefix": prefix, "error": str(exc)}, True
        if verify:
            report["problems"] = lib.verify(prefix)
            failed |= bool(report["problems"])
        if decode_n and "error" not in report:
            report["decoded"] = lib.decode_documents(prefix, decode_n, tokenizer)
        reports.append(report)
    if as_json:
        click.echo(json.dumps(reports if len(reports) > 1 else reports[0], ensure_ascii=False, indent=2))
    else:
        for report in reports:
            click.echo(_format_report(report))
    if failed:
        sys.exit(1)


def _format_report(r: dict) -> str:
    lines = [f"{r['prefix']}"]
    if "error" in r and "problems" not in r:
        lines.append(f"  PROBLEM: {r['error']}")
    if "dtype" in r:
        lines.append(f"  format v{r['format_version']}, {r['dtype']}, {r['sequences']:,} sequences, "
                     f"{r['documents']:,} documents, {r['tokens']:,} tokens")
    if "length" in r:
        n = r["length"]
        lines.append(f"  length min {n['min']:,} / median {n['median']:,.0f} / mean {n['mean']:,} / max {n['max']:,}")
        top = max(row["count"] for row in r["histogram"])
        for row in r["histogram"]:
            bar = "#" * max(1, round(40 * row["count"] / top))
            lines.append(f"  {row['from']:>9,}-{row['to']:<9,} {row['count']:>9,} {bar}")
    if "packing" in r:
        lines.append(_format_packing(r["packing"]))
    side = r.get("sidecar")
    if side:
        tok = side.get("tokenizer") or {}
        lines.append(f"  tokenizer {tok.get('name')} {tok.get('fingerprint')} vocab {tok.get('vocab_size')} eod {tok.get('eod_id')}")
        lines.append(f"  split {side.get('split')}, shard {side.get('shard')} of {side.get('shards')}; "
                     f"made by jpcorpus {side.get('jpcorpus_version')} on {side.get('created')}")
        for item in side.get("inputs") or []:
            lines.append(f"  input {item['path']} ({item['bytes']:,} bytes, sha256 {item['sha256'][:12]}...)")
    elif "dtype" in r:
        lines.append("  no sidecar: the tokenizer that made this shard is unknown")
    if "problems" in r:
        lines += [f"  PROBLEM: {p}" for p in r["problems"]] or ["  verify: OK"]
    for i, text in enumerate(r.get("decoded", [])):
        lines.append(f"  --- document {i} ---\n{text}")
    return "\n".join(lines)


def _format_packing(p: dict) -> str:
    length, per = p.get("sample_length") or {}, p.get("sequences_per_sample") or {}
    split = p.get("split") or {}
    return (f"  packed for seq_length {p['seq_length']} ({p['algorithm']}, buffer {p['buffer_documents']:,} documents): "
            f"{p['samples']:,} samples, fill rate {100 * p['fill_rate']:.2f}%, {p['over_length_samples']:,} over length\n"
            f"  sample tokens min {length.get('min', 0):,} / mean {length.get('mean', 0):,} / max {length.get('max', 0):,}; "
            f"sequences per sample min {per.get('min', 0)} / mean {per.get('mean', 0)} / max {per.get('max', 0)}; "
            f"split: {split.get('cut_documents', 0):,} documents cut into {split.get('pieces', 0):,} pieces")


from jpcorpus.normalize.cli import normalize, report  # noqa: E402  (its heavy imports are lazy)

main.add_command(normalize)
main.add_command(report)


if __name__ == "__main__":
    main()
