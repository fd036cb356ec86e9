"""Parquet input (a text column, metadata columns, row groups) and bad Parquet, through both commands."""

import datetime
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from jpcorpus.cli import main
from jpcorpus.indexed_dataset import IndexedDataset

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

DATA = Path(__file__).parent / "data" / "normalize"
RECORDS = [json.loads(line) for line in (DATA / "golden_in.jsonl").read_text(encoding="utf-8").splitlines()
           if line.startswith('{"id"') and '"text"' in line and "閉じていない" not in line]


def _table(records):
    return pa.table({
        "id": [r["id"] if isinstance(r["id"], int) else None for r in records],
        "text": [r["text"] for r in records],
        "url": [r.get("url") for r in records],
        "fetched": [datetime.datetime(2024, 4, 1, 12, 0, k) for k in range(len(records))],
        "tags": [["ja", str(k)] for k in range(len(records))],
    })


def _write(path: Path, records, row_group_size=3):
    pq.write_table(_table(records), path, row_group_size=row_group_size)
    return path


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_parquet_normalize_matches_the_same_records_as_json_lines(tmp_path):
    """Row groups of 3 rows, cut into partitions of 1 row group: the same documents survive as from JSON Lines."""
    folder = tmp_path / "ds"
    folder.mkdir()
    _write(folder / "part-0.parquet", RECORDS[:6])
    _write(folder / "part-1.parquet", RECORDS[6:])
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    out_pq, out_js = tmp_path / "pq.jsonl", tmp_path / "js.jsonl"
    result = _invoke("normalize", folder, "-o", out_pq, "--partition-size", "1", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert _invoke("normalize", jsonl, "-o", out_js).exit_code == 0
    got = [json.loads(line) for line in out_pq.read_text(encoding="utf-8").splitlines()]
    want = [json.loads(line) for line in out_js.read_text(encoding="utf-8").splitlines()]
    assert [g["text"] for g in got] == [w["text"] for w in want] and len(got) == 3
    assert got[0]["fetched"] == "2024-04-01T12:00:00" and got[0]["tags"] == ["ja", "0"]
    assert got[0]["url"] == "https://example.jp/a" and got[0]["id"] == 1
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["engine"]["partitions"] == 4 and report["read"]["files"] == 2  # 2 + 2 row groups


def test_parquet_binarize_equals_json_lines(tmp_path):
    path = _write(tmp_path / "in.parquet", RECORDS, row_group_size=2)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    assert _invoke("binarize", "--quiet", path, "-o", tmp_path / "p", "--partition-size", "1").exit_code == 0
    assert _invoke("binarize", "--quiet", jsonl, "-o", tmp_path / "j").exit_code == 0
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"p{suffix}").read_bytes() == (tmp_path / f"j{suffix}").read_bytes()
    assert IndexedDataset(tmp_path / "p").documents == len(RECORDS)


def test_glob_of_parquet_files_with_an_other_text_column(tmp_path):
    table = pa.table({"body": ["吾輩は猫である。名前はまだ無い。" * 5, "どこで生れたかとんと見当がつかぬ。" * 5]})
    for k in range(2):
        pq.write_table(table, tmp_path / f"x{k}.parquet")
    result = _invoke("binarize", "--quiet", tmp_path / "x*.parquet", "-o", tmp_path / "s", "--text-key", "body")
    assert result.exit_code == 0, result.output
    assert IndexedDataset(tmp_path / "s").documents == 4


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = _write(tmp_path / "good.parquet", RECORDS[:4])
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"body": ["本文です。"]}), missing)
    number = tmp_path / "number.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), number)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-30])
    return {"missing_text_key": missing, "text_not_string": number, "truncated_input": truncated}


@pytest.mark.parametrize("reason,expected", [
    ("missing_text_key", "has no column 'text' (columns: body); choose it with --text-key"),
    ("text_not_string", "column 'text' is int64, not a string column"),
    ("truncated_input", "not a readable Parquet file"),
])
def test_bad_parquet_is_a_one_line_error(tmp_path, reason, expected):
    path = _bad_files(tmp_path)[reason]
    result = _invoke("binarize", "--quiet", path, "-o", tmp_path / "s")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}: ") and expected in result.output
    assert "Traceback" not in result.output
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".bin", ".idx") or p.name.startswith(".s.")]


def test_bad_parquet_is_skipped_and_counted_with_skip_bad(tmp_path):
    files = _bad_files(tmp_path)
    rows = pa.table({"text": ["猫が好きです。" * 10, None, "", "犬\x00です"]})
    pq.write_table(rows, tmp_path / "rows.parquet")
    paths = [tmp_path / "good.parquet", *files.values(), tmp_path / "rows.parquet"]
    result = _invoke("normalize", *paths, "--skip-bad", "-o", tmp_path / "o.jsonl", "--rejects", tmp_path / "r.jsonl",
                     "--report", tmp_path / "rep.json", "--profile", _profile(tmp_path))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep.json").read_text(encoding="utf-8"))
    assert report["read"]["skipped"] == {"missing_text_key": 1, "text_not_string": 2, "truncated_input": 1,
                                         "empty_text": 1, "nul_byte": 1}
    rejects = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in rejects if r["filter"] == "read"] == [
        str(files["missing_text_key"]), str(files["text_not_string"]), str(files["truncated_input"]),
        f"{tmp_path / 'rows.parquet'}:2", f"{tmp_path / 'rows.parquet'}:3", f"{tmp_path / 'rows.parquet'}:4"]
    assert report["docs_out"] == 5  # 4 good rows + the one good row of rows.parquet


def _profile(tmp_path: Path) -> Path:
    path = tmp_path / "nfkc.yaml"
    path.write_text("steps:\n  - unicode_nfkc: {}\n", encoding="utf-8")
    return path


def test_a_damaged_row_group_keeps_the_rows_before(tmp_path):
    texts = [f"{k}番目の文書です。" * 30 for k in range(40)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=10, compression="none")
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    column = meta.row_group(2).column(0)
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    data[start:start + column.total_compressed_size] = bytes(column.total_compressed_size)  # zero the pages
    path.write_bytes(bytes(data))
    out = tmp_path / "s"
    result = _invoke("binarize", "--quiet", path, "-o", out, "--skip-bad", "--partition-size", "1")
    assert result.exit_code == 0, result.output
    assert IndexedDataset(out).documents == 30  # row group 2's ten rows are lost, the others read
    logged = [json.loads(line) for line in (tmp_path / "s.skipped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["source"], r["reason"]) for r in logged] == [(f"{path}:21", "truncated_input")]


def test_fsspec_url_reads_the_same(tmp_path):
    pytest.importorskip("fsspec")
    _write(tmp_path / "in.parquet", RECORDS)
    shutil.copy(DATA / "golden_in.jsonl", tmp_path / "g.jsonl")
    for name in ("in.parquet", "g.jsonl"):
        url = f"file://{tmp_path / name}"
        assert _invoke("binarize", "--quiet", url, "-o", tmp_path / "u", "--skip-bad").exit_code == 0
        assert _invoke("binarize", "--quiet", tmp_path / name, "-o", tmp_path / "l", "--skip-bad").exit_code == 0
        assert np.array_equal(IndexedDataset(tmp_path / "u")[0], IndexedDataset(tmp_path / "l")[0])
        assert (tmp_path / "u.bin").read_bytes() == (tmp_path / "l.bin").read_bytes()


def _dataset_folder(root: Path) -> Path:
    """A Hugging Face-style dataset folder: one Parquet file of 3 rows beside the files a hub clone has."""
    folder = root / "ds"
    (folder / "data").mkdir(parents=True)
    (folder / ".cache").mkdir()
    _write(folder / "data" / "part-0.parquet", RECORDS[:3])
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# 日本語コーパス\n", encoding="utf-8")
    (folder / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
    (folder / ".cache" / "state.json").write_text('{"text": "隠しフォルダの中は入力ではない"}\n', encoding="utf-8")
    return folder


def test_a_dataset_folder_gives_only_its_data_files(tmp_path, caplog):
    """README.md, .gitattributes and hidden folders are not documents; the skip is logged once, with its count."""
    folder = _dataset_folder(tmp_path)
    caplog.set_level("WARNING", logger="jpcorpus.input_folders")
    result = _invoke("normalize", folder, "-o", tmp_path / "o.jsonl", "--report", tmp_path / "r.json",
                     "--profile", _profile(tmp_path))
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["text"] for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS[:3]), encoding="utf-8")
    assert _invoke("normalize", jsonl, "-o", tmp_path / "j.jsonl", "--profile", _profile(tmp_path)).exit_code == 0
    want = [json.loads(line)["text"] for line in (tmp_path / "j.jsonl").read_text(encoding="utf-8").splitlines()]
    assert got == want and len(got) == 3
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["read"]["files"] == 1 and report["read"]["documents"] == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "jpcorpus.input_folders"]
    assert warnings == [f"{folder}: skipped 3 files that are not data (.cache/state.json, .gitattributes, README.md); "
                        "a folder contributes only *.jsonl, *.ndjson, *.json, *.txt (each also .gz or .zst), "
                        "*.parquet, *.pq files"]
    from jpcorpus.inputs import expand

    assert expand([str(folder)]) == [str(folder / "data" / "part-0.parquet")]
    if importlib.util.find_spec("fsspec"):  # the same files through a file:// URL
        assert expand([f"file://{folder}"]) == [f"file://{folder / 'data' / 'part-0.parquet'}"]
    assert expand([str(folder / "README.md")]) == [str(folder / "README.md")]  # named explicitly: read


def test_a_folder_without_data_files_is_a_one_line_error(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("README.md", "LICENSE", "notes.csv", "x.tar.gz"):
        (folder / name).write_text("本文ではない\n", encoding="utf-8")
    result = _invoke("binarize", "--quiet", folder, "-o", tmp_path / "s")
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: {folder}: no data file in this folder (4 other files: LICENSE, README.md, "
                             "notes.csv, ...); a folder contributes only *.jsonl, *.ndjson, *.json, *.txt (each also "
                             ".gz or .zst), *.parquet, *.pq files: name any other file explicitly\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
