"""Every evaluation command has help with an example and is documented; module doctests run;
importing the commands stays light."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from childproc import default_sigint
from click.testing import CliRunner

DOCS = Path(__file__).resolve().parents[1] / "docs" / "evaluation.md"
MODULES = ["anomalies", "check_env", "generate", "harness", "jcqa", "jcqa_formats", "metrics_log", "perplexity",
           "report", "scoring", "shared_prefix", "task_data"]


def commands():
    from trainer.evaluate import cli

    return {"eval": cli.eval_command, "generate": cli.generate, "monitor": cli.monitor, "check-env": cli.check_env}


@pytest.mark.parametrize("name", ["eval", "generate", "monitor", "check-env"])
def test_help_has_an_example_and_docs_cover_it(name):
    command = commands()[name]
    assert command.name == name
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "Example" in result.output
    assert f"## `trainer {name}" in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(f"trainer.evaluate.{module}"))
    assert result.failed == 0


def test_importing_the_commands_is_light():
    code = ("import sys, trainer.cli.evaluate; "
            "heavy = [m for m in ('torch', 'transformers', 'matplotlib', 'nemo') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, preexec_fn=default_sigint)
