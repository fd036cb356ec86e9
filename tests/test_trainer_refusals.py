"""``trainer run --dry-run`` refuses damaged shards and a missing base, before NeMo is imported.

Real files: shards that ``jpcorpus binarize`` made from the bundled sample,
damaged one way per test, through the real ``trainer`` command line. Each
refusal exits 1 and names the shard, the problem, the fix and its section of
docs/troubleshooting.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from childproc import default_sigint
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "qwen25_05b_ja_lora.yaml"


@pytest.fixture(scope="module")
def made(tmp_path_factory, sample_path):
    from jpcorpus.cli import main

    folder = tmp_path_factory.mktemp("shards")
    result = CliRunner().invoke(main, ["binarize", "--quiet", str(sample_path), "-o", str(folder / "ja"),
                                       "--valid-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def shards(made, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(made, folder)
    return folder / "ja_train", folder / "ja_valid"


def dry_run(tmp_path, train, valid, *overrides):
    from trainer.cli import main

    args = ["run", str(CONFIG), "--dry-run", f"data.train=[{train}]", f"data.valid=[{valid}]",
            f"run_dir={tmp_path}/run", *overrides]
    if not any(o.startswith("model.base=") for o in overrides):
        args += ["model.base=null", "model.from_scratch=true"]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError))
    return result


def refusal(result) -> list[str]:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: refused: ") for line in lines), result.stderr
    return lines


def _flip(path: Path, offset: int, mask: int = 0x01) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= mask
    path.write_bytes(bytes(raw))


def test_truncated_bin(tmp_path, shards):
    train, valid = shards
    data = train.with_suffix(".bin")
    data.write_bytes(data.read_bytes()[:-1])
    (line,) = refusal(dry_run(tmp_path, train, valid))
    assert f"shard {train} (data.train[0]): {data}: " in line and "the .bin is truncated" in line
    assert "re-run jpcorpus binarize" in line and "docs/troubleshooting.md#damaged-shard" in line


def test_flipped_pointer(tmp_path, shards):
    train, valid = shards
    index = train.with_suffix(".idx")
    sequences = json.loads(train.with_suffix(".json").read_text())["sequences"]
    _flip(index, 34 + 4 * sequences + 8 * 3)  # low byte of the 4th sequence's pointer
    (line,) = refusal(dry_run(tmp_path, train, valid))
    assert "sequence 3 starts at byte" in line and "the pointer array is corrupted" in line and str(index) in line


def test_bad_header(tmp_path, shards):
    train, valid = shards
    _flip(valid.with_suffix(".idx"), 0, 0xFF)  # the magic
    (line,) = refusal(dry_run(tmp_path, train, valid))
    assert f"shard {valid} (data.valid[0])" in line and "bad magic" in line and "#damaged-shard" in line


def test_sidecar_mismatch(tmp_path, shards):
    train, valid = shards
    side = json.loads(train.with_suffix(".json").read_text())
    train.with_suffix(".json").write_text(json.dumps(dict(side, tokens=side["tokens"] + 7)))
    (line,) = refusal(dry_run(tmp_path, train, valid))
    assert f"tokens is {side['tokens'] + 7} but the files have {side['tokens']}" in line
    assert "docs/troubleshooting.md#sidecar-mismatch" in line


def test_flipped_token_bytes_need_data_verify_full(tmp_path, shards):
    train, valid = shards
    _flip(train.with_suffix(".bin"), 8)
    (line,) = refusal(dry_run(tmp_path, train, valid, "data.verify=full"))
    assert "sha256 differs from the sidecar's bin_sha256" in line and "#shard-changed" in line


def test_every_problem_of_every_shard_is_listed(tmp_path, shards):
    train, valid = shards
    train.with_suffix(".json").unlink()
    valid.with_suffix(".bin").unlink()
    lines = refusal(dry_run(tmp_path, train, valid))
    assert len(lines) == 2
    assert "no sidecar" in lines[0] and "#missing-sidecar" in lines[0]
    assert f"{valid}.bin: missing" in lines[1] and "#missing-shard" in lines[1]


@pytest.mark.parametrize("make", ["nothing", "empty dir", "config only"])
def test_missing_or_unusable_base(tmp_path, shards, make):
    train, valid = shards
    base = tmp_path / "Qwen2.5-0.5B"
    if make != "nothing":
        base.mkdir()
    if make == "config only":
        (base / "config.json").write_text("{}")
    (line,) = refusal(dry_run(tmp_path, train, valid, f"model.base={base}", "model.from_scratch=false"))
    expected = {"nothing": "does not exist", "empty dir": "is neither a Hugging Face checkpoint",
                "config only": "has config.json but no weights"}[make]
    assert f"model.base {base} {expected}" in line and "docs/troubleshooting.md#missing-base" in line


def test_refusal_comes_before_nemo_is_imported(tmp_path, shards):
    train, valid = shards
    train.with_suffix(".bin").write_bytes(b"")
    code = (
        "import sys, time\n"
        "from trainer.cli import main\n"
        "started = time.perf_counter()\n"
        f"args = ['run', {str(CONFIG)!r}, '--dry-run', 'model.base=null', 'model.from_scratch=true',\n"
        f"        'data.train=[{train}]', 'data.valid=[{valid}]', 'run_dir={tmp_path}/run']\n"
        "try:\n"
        "    main(args)\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'nemo' in sys.modules, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          preexec_fn=default_sigint)
    assert proc.stdout.split() == ["exit", "1", "False", "False"], proc.stdout + proc.stderr
    assert "the .bin is truncated" in proc.stderr
