"""Property-based fuzzing of the real ``normalize`` and ``binarize`` command lines.

Each example writes a JSON Lines file of arbitrary records (strings with
surrogate escapes and control characters, random nesting, numbers beyond
Python's limits, missing and extra fields, non-objects, garbage and truncated
lines, blank lines), with CRLF or LF, an optional BOM, and optionally gzip or
zstd compression cut short. It runs the CLI in this process (its ``main``,
through click, as a shell would) with and without ``--skip-bad`` and checks:

- never a traceback: the exit status is 0, 1 or 2 and every failure is one
  ``error: ...`` line on stderr (naming ``FILE:LINE`` for a bad record);
- a success holds exactly the valid documents, in order (binarize: token for
  token against the tokenizer; normalize: the counts of its report);
- a failure leaves nothing that looks complete: no output, no temporary file.

An oracle written from the documented rules (not from the reader's code)
says which lines are valid. ``JPCORPUS_FUZZ_EXAMPLES`` sets the examples per
command (default 150: about a minute for both on a 2-core VM).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jpcorpus.cli import main

EXAMPLES = int(os.environ.get("JPCORPUS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.data_too_large])

# ------------------------------------------------------------------ strategies

JAPANESE = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ、カタカナ漢字ＡＢＣ１２３"
CONTROL = "".join(map(chr, range(0x20))) + "\x7f\x85\u2028\u2029\ufeff\ufffe"
chars = st.one_of(
    st.sampled_from(JAPANESE), st.sampled_from(CONTROL), st.characters(max_codepoint=0x7F),
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates (json.dumps escapes them as \\udXXX)
    st.sampled_from(["😀", "🇯🇵", "𠮷"]),  # astral characters: escaped as valid surrogate pairs
    st.characters(),
)
texts = st.lists(chars, max_size=40).map("".join)
japanese_texts = st.lists(st.sampled_from(JAPANESE), min_size=1, max_size=120).map("".join)
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "ja_sample.jsonl"
# texts that normalize's default profile keeps, so that its successes are exercised too
sample_texts = st.sampled_from([json.loads(line)["text"] for line in SAMPLE.read_text(encoding="utf-8").splitlines()])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(texts, inner, max_size=3)), max_leaves=8)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def records(draw):
    """One line of the file, as bytes (no newline)."""
    kind = draw(st.sampled_from(["good", "good", "good", "object", "value", "deep", "bignum", "garbage",
                                 "cut", "blank"]))
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"  \t "]))
    if kind == "garbage":
        return draw(st.binary(max_size=30)).replace(b"\n", b"")
    record = {"text": draw(st.one_of(sample_texts, japanese_texts, texts))}
    if draw(st.booleans()):
        record["id"] = draw(st.one_of(st.integers(), texts))
    record.update(draw(st.dictionaries(st.sampled_from(["meta", "url", "n", "tags"]), values, max_size=2)))
    if kind == "object":
        record = draw(st.dictionaries(texts, values, max_size=3))
    elif kind == "value":
        record = draw(values)
    elif kind == "deep":
        record["meta"] = nested(draw(st.integers(50, 1500)))
    line = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if kind == "bignum":
        line = line[:-1] + ', "n": ' + "9" * draw(st.integers(4000, 4500)) + "}" if line.endswith("}") else line
    if kind == "cut":
        line = line[: draw(st.integers(0, max(len(line) - 1, 0)))]
    return line.encode("utf-8", "surrogatepass")  # a raw surrogate becomes invalid UTF-8


@st.composite
def files(draw):
    lines = draw(st.lists(records(), max_size=8))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = b"".join(line + newline for line in lines)
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    compression = draw(st.sampled_from(["", "", ".gz", ".zst"]))
    data = body
    if compression == ".gz":
        data = gzip.compress(body, mtime=0)
    elif compression == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(body)
    truncated = bool(compression) and draw(st.integers(0, 3)) == 0
    if truncated:
        data = data[: draw(st.integers(0, len(data) - 1))]
    return lines, data, compression, truncated


# ---------------------------------------------------------------------- oracle

def _strings(value):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())


def _depth(value) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return depth


def expected_text(raw: bytes, first: bool):
    """The document text of one line, None if the line is not a record, False if it is a bad record."""
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return False
    text = record["text"]
    if not text.strip() or "\x00" in text or _depth(record) > 100:  # the documented limits
        return False
    if any(0xD800 <= ord(c) <= 0xDFFF for s in _strings(record) for c in s):
        return False
    return text


def oracle(lines: list[bytes]) -> tuple[list[str], int, int | None]:
    """(valid texts in order, number of bad records, line number of the first bad record)."""
    good, bad, first_bad = [], 0, None
    for number, line in enumerate(lines, start=1):
        text = expected_text(line, number == 1)
        if text is False:
            bad += 1
            first_bad = first_bad or number
        elif text is not None:
            good.append(text)
    return good, bad, first_bad


# ----------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def qwen_once(qwen):
    """The real built-in tokenizer, loaded once: binarize is otherwise run exactly as from a shell."""
    import jpcorpus.tokenizer

    original = jpcorpus.tokenizer.load_tokenizer
    jpcorpus.tokenizer.load_tokenizer = lambda spec, **kw: qwen if spec == "qwen2.5" and not kw.get("eod_token") \
        else original(spec, **kw)
    yield qwen
    jpcorpus.tokenizer.load_tokenizer = original


def _run(args: list[str]):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), result.output
    event(f"exit {result.exit_code}")
    if result.exit_code:
        assert result.stderr.rstrip("\n").splitlines()[-1].startswith("error: "), result.stderr
    return result


def _check_failure_message(result, path: Path, first_bad: int | None, truncated: bool) -> None:
    error = result.stderr.rstrip("\n").splitlines()[-1]
    if result.exit_code == 1:
        assert "nothing written" in error and "--allow-empty" in error, error
    elif not truncated:
        assert error.startswith(f"error: {path}:{first_bad}: "), (error, first_bad)
    else:
        assert re.match(rf"error: {re.escape(str(path))}(:\d+)?: ", error), error


def _expectations(lines, truncated: bool, skip_bad: bool):
    good, bad, first_bad = oracle(lines)
    if truncated:
        return good, bad, first_bad, None  # how much was read before the damage is not known
    status = 2 if bad and not skip_bad else (0 if good else 1)
    return good, bad, first_bad, status


@FUZZ
@given(case=files(), skip_bad=st.booleans())
def test_binarize_cli_on_arbitrary_jsonl(qwen_once, case, skip_bad):
    lines, data, compression, truncated = case
    folder = Path(tempfile.mkdtemp(prefix="fuzz-binarize-"))
    try:
        path = folder / f"in.jsonl{compression}"
        path.write_bytes(data)
        out = folder / "out" / "s"
        result = _run(["binarize", "--quiet", str(path), "-o", str(out), *(["--skip-bad"] if skip_bad else [])])
        good, bad, first_bad, status = _expectations(lines, truncated, skip_bad)
        if status is not None:
            assert result.exit_code == status, (result.output, good, bad)
        written = sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []
        if result.exit_code:
            _check_failure_message(result, path, first_bad, truncated)
            assert [n for n in written if n.endswith((".bin", ".idx", ".json")) or ".partial" in n] == []
            return
        from jpcorpus.indexed_dataset import IndexedDataset

        assert not [n for n in written if ".partial" in n]
        ds = IndexedDataset(out)
        got = [ds[i][:-1].tolist() for i in range(len(ds))]
        want = [qwen_once.hf(text, add_special_tokens=False)["input_ids"] for text in good]
        assert got == want[: len(got)] and (truncated or len(got) == len(want))
    finally:
        shutil.rmtree(folder)


@FUZZ
@given(case=files(), skip_bad=st.booleans())
def test_normalize_cli_on_arbitrary_jsonl(case, skip_bad):
    lines, data, compression, truncated = case
    folder = Path(tempfile.mkdtemp(prefix="fuzz-normalize-"))
    try:
        path = folder / f"in.jsonl{compression}"
        path.write_bytes(data)
        out, report_path = folder / "out" / "o.jsonl", folder / "report.json"
        result = _run(["normalize", str(path), "-o", str(out), "--report", str(report_path),
                       *(["--skip-bad"] if skip_bad else [])])
        good, bad, first_bad, status = _expectations(lines, truncated, skip_bad)
        if status is not None and not (status == 0 and result.exit_code == 1):  # filters may drop every document
            assert result.exit_code == status, (result.output, good, bad)
        leftovers = [p.name for p in out.parent.iterdir() if ".partial" in p.name] if out.parent.exists() else []
        assert leftovers == []
        if result.exit_code:
            _check_failure_message(result, path, first_bad, truncated)
            assert not out.exists()
            return
        report = json.loads(report_path.read_text(encoding="utf-8"))
        # JSON Lines ends a record at "\n" only: a raw U+0085 or U+2028 inside a string is valid JSON,
        # which str.splitlines() would cut
        kept = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
        assert report["docs_out"] == len(kept) > 0
        if not truncated:
            assert report["read"]["documents"] == len(good)
            assert sum(report["read"]["skipped"].values()) == bad
        assert all(isinstance(r, dict) and isinstance(r["text"], str) and r["text"] for r in kept)
    finally:
        shutil.rmtree(folder)
