"""trainer check-env on this CPU machine, and the version judgements on their own."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
from childproc import default_sigint
from click.testing import CliRunner


def installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def rows():
    from trainer.cli.evaluate import check_env

    result = CliRunner().invoke(check_env, ["--json"])
    report = json.loads(result.output)
    return result.exit_code, {r["name"]: r for r in report["checks"]}, {v["key"]: v for v in report["commands"]}


def test_rows_on_this_machine(rows):
    import torch

    exit_code, by_name, _ = rows
    status = {name: r["status"] for name, r in by_name.items()}
    assert status["python"] == "OK" and status["torch"] == "OK"
    if not torch.cuda.is_available():  # the CPU machines of the team
        assert status["cuda"] == "FAIL" and "gpu" not in status and "bf16" not in status
    assert status["nemo"] == ("OK" if installed("nemo_toolkit") else "FAIL")
    assert status["megatron-core"] == "OK"  # the dev extra pins 0.15.3
    assert status["transformer-engine"] == ("OK" if installed("transformer_engine") else "WARN")
    assert status["nvidia-modelopt"] == ("OK" if installed("nvidia-modelopt") and installed("torchprofile") else "FAIL")
    assert status["sudachi"] == "OK" and "東京都" in by_name["sudachi"]["found"]
    assert status["tokenizer"] in ("OK", "FAIL")
    assert exit_code == (1 if "FAIL" in status.values() else 0)  # every check here is needed by some command
    assert all(r["fix"] for r in by_name.values() if r["status"] != "OK")


def test_allow_cpu_turns_no_gpu_into_a_warning(rows):
    import torch

    from trainer.evaluate.check_env import check_torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert [r.status for r in check_torch(allow_cpu=True)] == ["OK", "WARN"]


@pytest.mark.parametrize("version,status", [
    (None, "FAIL"), ("0.15.3", "OK"), ("0.15.0rc2", "OK"), ("0.16.0", "FAIL"), ("0.14.0", "WARN")])
def test_megatron_versions(version, status):
    from trainer.evaluate.check_env import judge_megatron

    assert judge_megatron(version).status == status


@pytest.mark.parametrize("version,status", [(None, "FAIL"), ("2.7.3", "OK"), ("2.6.0", "WARN"), ("3.0.0", "FAIL")])
def test_nemo_versions(version, status):
    from trainer.evaluate.check_env import judge_nemo

    row = judge_nemo(version)
    assert row.status == status
    if version == "3.0.0":
        assert "no nemo.collections.llm" in row.fix


def test_other_judgements():
    from trainer.evaluate.check_env import judge_lightning, judge_modelopt, judge_python, judge_transformer_engine

    assert judge_lightning("2.4.0").status == "OK" and judge_lightning("2.6.6").status == "FAIL"
    assert judge_modelopt("0.37.0", None).status == "FAIL" and judge_modelopt("0.37.0", "0.1.0").status == "OK"
    assert judge_python((3, 9)).status == "FAIL" and judge_python((3, 13)).status == "WARN"
    assert "local layer spec" in judge_transformer_engine(None).fix


def test_check_env_never_imports_nemo():
    import subprocess
    import sys

    code = ("import sys; from trainer.cli.evaluate import check_env; "
            "from trainer.evaluate import check_env as m; m.judge_nemo(m.version_of('nemo_toolkit')); "
            "assert not any(k == 'nemo' or k.startswith('nemo.') for k in sys.modules), 'nemo imported'")
    subprocess.run([sys.executable, "-c", code], check=True, preexec_fn=default_sigint)


def test_verdicts_per_command_on_this_machine(rows):
    _, by_name, commands = rows
    assert set(commands) == {"normalize", "binarize", "run", "export", "eval", "monitor"}
    assert commands["normalize"]["status"] == "OK"  # Sudachi is installed here
    if by_name["cuda"]["status"] == "FAIL":
        assert commands["run"]["status"] == "FAIL" and "cuda" in commands["run"]["because"]
    assert commands["eval"]["status"] in ("OK", "WARN")  # torch and transformers are installed here


def test_a_missing_piece_fails_only_the_commands_that_need_it():
    """The GPU machine of issue 12: everything but SudachiPy; only jpcorpus normalize fails."""
    from trainer.evaluate.check_env import COMMANDS, FAIL, NEEDS, OK, Check, format_table, verdicts

    names = sorted({name for needs in NEEDS.values() for name in needs})
    rows = [Check(name, FAIL if name == "sudachi" else OK, "-", "fix" if name == "sudachi" else "") for name in names]
    judged = {v.command: v for v in verdicts(rows)}
    assert [c for c, v in judged.items() if v.status == FAIL] == ["normalize"]
    assert judged["normalize"].because == ["sudachi"]
    last = format_table(rows).splitlines()[-1]
    assert last.startswith("Can run here: ") and last.endswith("Cannot: jpcorpus normalize (sudachi).")
    assert COMMANDS["run"] in last.split("Cannot:")[0]


def test_for_limits_the_exit_status_to_those_commands():
    from trainer.cli.evaluate import check_env
    from trainer.evaluate import check_env as lib

    report = json.loads(CliRunner().invoke(check_env, ["--json"]).output)
    status = {v["key"]: v["status"] for v in report["commands"]}
    for key in ("normalize", "run"):
        result = CliRunner().invoke(check_env, ["--for", key])
        assert result.exit_code == (1 if status[key] == lib.FAIL else 0), (key, result.output)
