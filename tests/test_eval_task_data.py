"""``--task-data``: local task datasets found by name, the override YAMLs, the download helper
(offline, from a task whose dataset is a local file), the errors; and ``trainer eval --tasks``
end to end on a tiny model: the harness's accuracy equals our lm-eval-format JCQA accuracy."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_eval_fixtures import tiny_models  # noqa: F401

DATA = Path(__file__).parent / "data" / "eval"
TASK = "ja_leaderboard_jcommonsenseqa"


def test_split_files_are_found_by_name(tmp_path):
    from trainer.evaluate.task_data import split_file

    for name in ("train-v1.3.json", "valid-v1.3.json", "test.parquet", "notes.txt"):
        (tmp_path / name).write_text("")
    assert split_file(tmp_path, "train").name == "train-v1.3.json"
    assert split_file(tmp_path, "validation").name == "valid-v1.3.json"
    assert split_file(tmp_path, "test").name == "test.parquet"
    assert split_file(tmp_path, "dev_extra") is None


def test_without_lm_eval_tasks_says_what_to_install(monkeypatch):
    from trainer.cli.evaluate import eval_command
    from trainer.evaluate import harness

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(ValueError, match=r"pip install 'jpcorpus\[eval-harness\]'"):
        harness.require()
    result = CliRunner().invoke(eval_command, [str(DATA), "--tasks", "hellaswag"])
    assert result.exit_code == 2 and "jpcorpus[eval-harness]" in result.output


lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (the eval-harness extra)")


@pytest.fixture
def task_data(tmp_path):
    """JGLUE's own file names, as a user who downloaded them from the JGLUE repository has them."""
    folder = tmp_path / "task-data" / TASK
    folder.mkdir(parents=True)
    shutil.copy(DATA / "jcqa_written_train.jsonl", folder / "train-v1.3.json")
    shutil.copy(DATA / "jcqa_written_valid.jsonl", folder / "valid-v1.3.json")
    return folder.parent


def test_unknown_task_and_missing_data_are_named(task_data, tmp_path):
    from trainer.evaluate.harness import check_tasks

    with pytest.raises(ValueError, match="no_such_task: not an lm-evaluation-harness task"):
        check_tasks(["no_such_task"])
    with pytest.raises(ValueError, match="no folder for ja_leaderboard_jnli"):
        check_tasks(["ja_leaderboard_jcommonsenseqa", "ja_leaderboard_jnli"], str(task_data))
    (task_data / TASK / "valid-v1.3.json").unlink()
    with pytest.raises(ValueError, match="no file for split.*validation"):
        check_tasks([TASK], str(task_data))


def test_download_writes_what_the_harness_loads(task_data, tmp_path):
    """The helper's load_dataset call on a task whose dataset is local: one file per split, same records."""
    from trainer.evaluate.task_data import main

    yaml_dir = tmp_path / "yaml"
    yaml_dir.mkdir()
    original = Path(lm_eval.__file__).parent / "tasks" / "japanese_leaderboard" / f"{TASK}.yaml"
    (yaml_dir / "t.yaml").write_text(
        f"include: {original}\ntask: {TASK}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {DATA / 'jcqa_written_train.jsonl'}\n"
        f"    validation: {DATA / 'jcqa_written_valid.jsonl'}\n", encoding="utf-8")
    out = tmp_path / "downloaded"
    main([TASK, "-o", str(out), "--include-path", str(yaml_dir)])
    got = [json.loads(line) for line in (out / TASK / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    want = [json.loads(line) for line in (DATA / "jcqa_written_valid.jsonl").read_text(encoding="utf-8").splitlines()]
    assert got == want and (out / TASK / "train.jsonl").is_file()


def test_eval_tasks_offline_equals_our_lm_eval_format(tiny_models, task_data, tmp_path):
    from trainer.cli.evaluate import eval_command

    out = tmp_path / "eval.json"
    args = [tiny_models[0], "--jcqa", str(DATA / "jcqa_written_valid.jsonl"), "--jcqa-format", "lm-eval",
            "--fewshot-file", str(DATA / "jcqa_written_train.jsonl"), "--tasks", TASK, "--task-data", str(task_data),
            "--limit", "6", "--max-questions", "6", "--batch-size", "4", "--json", str(out), "--no-progress"]
    result = CliRunner().invoke(eval_command, args)
    assert result.exit_code == 0, result.output
    assert f"| {TASK} | acc (higher is better) | 3 |" in result.output
    model = json.loads(out.read_text(encoding="utf-8"))["models"]["model"]
    harness = model["harness"]["tasks"][TASK]
    assert harness["samples"] == 6 and harness["shots"] == 3 and model["harness"]["lm_eval"].startswith("0.4")
    assert harness["metrics"]["acc"] == pytest.approx(model["jcqa"]["acc"])
