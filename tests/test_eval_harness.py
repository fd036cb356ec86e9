"""Our JCommonsenseQA in ``lm-eval`` format against lm-evaluation-harness itself: the same predicted
choice for every question (and the same log-likelihoods) on a tiny Qwen2 with Qwen2.5's vocabulary,
the harness run offline on local JSON files through its own ``simple_evaluate``; and ``trainer eval
--tasks`` with ``--task-data`` giving the harness's own numbers."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_eval_fixtures import qwen_vocab_model  # noqa: F401

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (the eval-harness extra)")

DATA = Path(__file__).parent / "data" / "eval"
TRAIN, VALID = DATA / "jcqa_written_train.jsonl", DATA / "jcqa_written_valid.jsonl"
TASK = "ja_leaderboard_jcommonsenseqa"


def harness_samples(model_dir, train, valid, tmp_path, limit=None):
    """The harness's own run: its YAML included, only the dataset made local (written here, not ours)."""
    from lm_eval.tasks import TaskManager

    yaml_dir = tmp_path / "tasks"
    yaml_dir.mkdir()
    original = Path(lm_eval.__file__).parent / "tasks" / "japanese_leaderboard" / f"{TASK}.yaml"
    (yaml_dir / "local.yaml").write_text(textwrap.dedent(f"""\
        include: {original}
        task: {TASK}
        dataset_path: json
        dataset_name: null
        dataset_kwargs:
          data_files:
            train: {train}
            validation: {valid}
        """), encoding="utf-8")
    raw = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": model_dir, "dtype": "float32", "device": "cpu"},
        tasks=[TASK], task_manager=TaskManager(include_path=str(yaml_dir)), batch_size=1, limit=limit,
        log_samples=True)
    samples = sorted(raw["samples"][TASK], key=lambda s: s["doc_id"])
    return raw, [[float(r[0][0]) for r in s["resps"]] for s in samples]


def ours(model_dir, train, valid, max_questions=None):
    from trainer.evaluate.jcqa import evaluate_jcqa
    from trainer.evaluate.models import load_model

    loaded = load_model(model_dir, device="cpu", dtype="float32")
    return evaluate_jcqa(loaded, valid, fmt="lm-eval", fewshot=3, fewshot_path=train,
                         max_questions=max_questions, batch_size=4, progress=False, details=True)


def assert_same_predictions(mine, harness_lls):
    assert len(mine["per_question"]) == len(harness_lls)
    preds = []
    for row, lls in zip(mine["per_question"], harness_lls):
        harness_pred = max(range(len(lls)), key=lambda i: (lls[i], -i))  # np.argmax: first maximum
        assert row["pred"] == harness_pred, (row, lls)
        assert row["scores"] == pytest.approx(lls, rel=1e-4, abs=1e-3)
        preds.append(harness_pred)
    assert len(set(preds)) > 1, "every question got the same answer: the comparison would prove little"


def test_lm_eval_format_predicts_what_the_harness_predicts(qwen_vocab_model, tmp_path):
    raw, lls = harness_samples(qwen_vocab_model, TRAIN, VALID, tmp_path, limit=6)
    mine = ours(qwen_vocab_model, TRAIN, VALID, max_questions=6)
    assert_same_predictions(mine, lls)
    assert mine["acc"] == pytest.approx(raw["results"][TASK]["acc,none"])
    assert raw["n-shot"][TASK] == mine["fewshot"] == 3


def test_same_predictions_with_the_real_train_split_as_the_pool(qwen_vocab_model, tmp_path):
    """8,939 JGLUE questions as the few-shot pool: the sampler draws from the whole split."""
    from conftest import SHARED_CORPUS

    train = SHARED_CORPUS / "jcommonsenseqa-v1.3_train.jsonl.gz"
    if not train.is_file():
        pytest.skip(f"{train} not present (it lies beside the checkout only on the team's machines)")
    raw, lls = harness_samples(qwen_vocab_model, train, VALID, tmp_path, limit=6)
    assert_same_predictions(ours(qwen_vocab_model, train, VALID, max_questions=6), lls)
