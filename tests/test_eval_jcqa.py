"""JCommonsenseQA: choice log-likelihoods against an independent forward pass,
acc/acc_norm, few-shot prompts, the CLI with --baseline, and the real train split."""

from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner

from test_eval_fixtures import heldout_jsonl, tiny_models  # noqa: F401

# Questions written for these tests (not from JGLUE).
QUESTIONS = [
    {"question": "雨の日に使う道具は？", "choice0": "傘", "choice1": "鉛筆", "choice2": "時計",
     "choice3": "お皿", "choice4": "靴下", "label": 0},
    {"question": "本を借りる場所は？", "choice0": "駅", "choice1": "公園", "choice2": "図書館",
     "choice3": "海", "choice4": "台所", "label": 2},
    {"question": "朝に飲むことが多いものは？", "choice0": "ガソリン", "choice1": "インク", "choice2": "砂",
     "choice3": "コーヒー", "choice4": "石", "label": 3},
]


@pytest.fixture(scope="module")
def jcqa_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("jcqa") / "q.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for q in QUESTIONS:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def loaded(tiny_models):
    from trainer.evaluate.models import load_model

    return load_model(tiny_models[0], device="cpu", dtype="float32")


def reference_logprob(loaded, context: str, choice: str) -> float:
    """Independent: one unpadded forward over context+choice, log_softmax, sum."""
    import torch

    tok = loaded.tokenizer
    ctx, cont = tok.encode(context, add_special_tokens=False), tok.encode(choice, add_special_tokens=False)
    ids = torch.tensor([ctx + cont])
    with torch.inference_mode():
        logp = torch.log_softmax(loaded.model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(logp[len(ctx) + k - 1, t].item() for k, t in enumerate(cont))


def test_choice_logprobs_match_independent_computation(loaded, jcqa_file):
    from trainer.evaluate.jcqa import accuracy, choice_logprobs, context, fewshot_prefix, read_questions

    questions = list(read_questions(jcqa_file))
    prefix = fewshot_prefix(questions[:1])
    scores = choice_logprobs(loaded, questions[1:], prefix, batch_size=4)
    for q, row in zip(questions[1:], scores):
        expected = [reference_logprob(loaded, prefix + context(q), c) for c in q.choices]
        assert row == pytest.approx(expected, rel=1e-5, abs=1e-4)
    # acc and acc_norm recomputed by hand.
    best = [max(range(5), key=lambda i: row[i]) for row in scores]
    best_norm = [max(range(5), key=lambda i: row[i] / len(q.choices[i])) for q, row in zip(questions[1:], scores)]
    acc = accuracy(questions[1:], scores)
    assert acc["acc"] == sum(b == q.label for b, q in zip(best, questions[1:])) / 2
    assert acc["acc_norm"] == sum(b == q.label for b, q in zip(best_norm, questions[1:])) / 2


def test_fewshot_prompt_format():
    from trainer.evaluate.jcqa import Question, context, fewshot_prefix

    shot = Question("空の色は？", ("青", "赤", "緑", "黒", "白"), 0)
    q = Question("海の水の味は？", ("甘い", "しょっぱい", "苦い", "辛い", "無味"), 1)
    assert fewshot_prefix([shot]) + context(q) == (
        "質問：空の色は？\n選択肢：青、赤、緑、黒、白\n回答：青\n\n"
        "質問：海の水の味は？\n選択肢：甘い、しょっぱい、苦い、辛い、無味\n回答：")


def test_bad_record_names_its_line(tmp_path):
    from trainer.evaluate.jcqa import read_questions

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(QUESTIONS[0], ensure_ascii=False) + "\n" + '{"question": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JCommonsenseQA record"):
        list(read_questions(path))


def test_eval_cli_with_baseline(tiny_models, heldout_jsonl, jcqa_file, tmp_path):
    from trainer.cli.evaluate import eval_command

    out = tmp_path / "eval.json"
    args = [tiny_models[0], "--baseline", tiny_models[1], "--text", f"ja={heldout_jsonl}", "--jcqa",
            str(jcqa_file), "--fewshot", "1", "--max-length", "64", "--json", str(out), "--no-progress"]
    result = CliRunner().invoke(eval_command, args)
    assert result.exit_code == 0, result.output
    assert "| ja held-out text | bits/char (lower is better) |  |" in result.output
    assert "| JCQA (native format) | acc_norm (higher is better) | 1 |" in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    model, base = data["models"]["model"], data["models"]["baseline"]
    assert model["jcqa"]["questions"] == 2 and model["jcqa"]["fewshot"] == 1
    rows = model["jcqa"]["per_question"]  # --json lists each question's scores and predicted choice
    assert [r["index"] for r in rows] == [0, 1] and all(len(r["scores"]) == 5 for r in rows)
    assert all(r["pred"] == max(range(5), key=lambda i: r["scores"][i]) for r in rows)
    assert model["text"]["ja"]["tokens"] == base["text"]["ja"]["tokens"]
    assert model["text"]["ja"]["nll"] != base["text"]["ja"]["nll"]  # different weights
    again = CliRunner().invoke(eval_command, args[:1] + args[3:])  # deterministic, no baseline
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text(encoding="utf-8"))["models"]["model"] == model


def test_eval_cli_rejects_bad_text_option(tiny_models):
    from trainer.cli.evaluate import eval_command

    result = CliRunner().invoke(eval_command, [tiny_models[0], "--text", "no-equals-sign"])
    assert result.exit_code != 0 and "NAME=PATH" in result.output


def test_real_jcqa_train_split_reads(loaded):
    from conftest import SHARED_CORPUS
    from trainer.evaluate.jcqa import evaluate_jcqa, read_questions

    path = SHARED_CORPUS / "jcommonsenseqa-v1.3_train.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present (it lies beside the checkout only on the team's machines)")
    questions = list(read_questions(path))
    assert len(questions) == 8939
    labels = {q.label for q in questions}
    assert labels == {0, 1, 2, 3, 4}
    result = evaluate_jcqa(loaded, path, fewshot=1, max_questions=4, progress=False)
    assert result["questions"] == 4 and 0 <= result["acc"] <= 1


@pytest.mark.parametrize("line,expected", [
    (r'{"text": "後半だけ\ude00"}', "escaped lone surrogate \\ude00 at column 15"),
    ('{"text": "x", "m": ' + "[" * 3000 + "]" * 3000 + "}", "nested more than 100 levels"),
    ('{"text": "x", "n": ' + "9" * 5000 + "}", "a number is too long to read"),
])
def test_eval_reads_hostile_jsonl_as_bad_input(tiny_models, tmp_path, line, expected):
    """trainer eval's held-out JSONL goes through jpcorpus's reader: file:line, exit 2, no traceback."""
    from trainer.cli.evaluate import eval_command

    path = tmp_path / "held_out.jsonl"
    path.write_text('{"text": "今日は雨です。"}\n' + line + "\n", encoding="utf-8")
    result = CliRunner().invoke(eval_command, [tiny_models[0], "--text", f"ja={path}", "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.startswith(f"error: {path}:2: ") and expected in result.stderr


def test_jcqa_reader_refuses_hostile_json(tmp_path):
    from trainer.evaluate.jcqa import read_questions

    path = tmp_path / "jcqa.jsonl"
    path.write_text("[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"jcqa.jsonl:1: not a JCommonsenseQA record"):
        list(read_questions(path))
