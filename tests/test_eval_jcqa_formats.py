"""JCommonsenseQA formats and the shared-context scorer: the KV-cached scores equal the unshared
ones, the swallow and lm-eval prompts are their sources' strings, the few-shot draws are the
harness's sampler's (compared with lm-evaluation-harness's own ContextSampler where installed)."""

from __future__ import annotations

import json
import random

import pytest

from test_eval_fixtures import tiny_models  # noqa: F401

Q = [("空の色は？", ("青", "赤", "緑", "黒", "白"), 0), ("海の水の味は？", ("甘い", "しょっぱい", "苦い", "辛い", "無味"), 1),
     ("犬の鳴き声は？", ("ワン", "ニャー", "モー", "メー", "コケコッコー"), 0)]


def questions():
    from trainer.evaluate.jcqa_formats import Question

    return [Question(q, c, label, qid=i) for i, (q, c, label) in enumerate(Q)]


@pytest.fixture(scope="module")
def loaded(tiny_models):
    from trainer.evaluate.models import load_model

    return load_model(tiny_models[0], device="cpu", dtype="float32")


def test_shared_context_scores_equal_the_unshared_computation(loaded):
    """Random sequences sharing prefixes of different lengths, some sharing none, one-token and
    longer tails, batch sizes that split questions unevenly."""
    from trainer.evaluate.scoring import ScoredSequence
    from trainer.evaluate.shared_prefix import ChoiceSet, score_choice_sets, score_unshared

    rng = random.Random(0)
    vocab = loaded.model.get_input_embeddings().num_embeddings
    sets = []
    for i in range(9):
        ctx = [rng.randrange(vocab) for _ in range(rng.randrange(1, 40))]
        seqs = []
        for _ in range(5):
            tail = [rng.randrange(vocab) for _ in range(rng.randrange(1, 6))]
            head = ctx if i % 4 else [rng.randrange(vocab)]  # every 4th set: no common prefix
            extra = min(2, len(head) - 1) if i % 3 == 0 else 0  # scoring reaches into the context
            seqs.append(ScoredSequence(head + tail, len(tail) + extra))
        sets.append(ChoiceSet(tuple(seqs)))
    reference = score_unshared(loaded, sets, batch_size=3)
    for batch in (1, 4, 9):
        shared = score_choice_sets(loaded, sets, batch_size=batch, progress=False)
        for got, want in zip(shared, reference):
            assert got.logprobs == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_greedy_flags_and_next_token_are_the_argmax(loaded):
    import torch

    from trainer.evaluate.scoring import ScoredSequence
    from trainer.evaluate.shared_prefix import ChoiceSet, score_choice_sets

    ctx = loaded.tokenizer("今日は朝から雨が降っていた", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        best = int(loaded.model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())
    other = (best + 1) % loaded.model.get_input_embeddings().num_embeddings
    [scores] = score_choice_sets(loaded, [ChoiceSet((ScoredSequence(ctx + [best], 1), ScoredSequence(ctx + [other], 1)))],
                                 progress=False)
    assert scores.next_token == best and scores.greedy == [True, False]


def test_lm_eval_prompt_is_the_task_yaml_rendered():
    from trainer.evaluate.jcqa_formats import harness_context

    q, shot = questions()[1], questions()[0]
    assert harness_context(q, [shot]) == (
        "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
        "### 指示：\n出力は以下から選択してください：\n- 青\n- 赤\n- 緑\n- 黒\n- 白\n\n### 入力：\n空の色は？\n\n### 応答：\n青\n\n"
        "### 指示：\n出力は以下から選択してください：\n- 甘い\n- しょっぱい\n- 苦い\n- 辛い\n- 無味\n\n### 入力：\n海の水の味は？\n\n"
        "### 応答：")


def test_swallow_prompt_and_examples_follow_llm_jp_eval():
    from trainer.evaluate.jcqa_formats import swallow_context, swallow_shots

    pool = questions()
    expected = list(pool)
    random.seed(42)
    random.shuffle(expected)  # llm-jp-eval: random.seed(42); random.shuffle(train samples)
    assert swallow_shots(pool, 2) == expected[:2]
    assert swallow_context(pool[2], [pool[0]]) == (
        "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n### 指示:\n"
        "質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。なお、回答は選択肢の番号（例：0）でするものとします。 "
        "回答となる数値をint型で返し、他には何も含めないことを厳守してください。\n\n### 入力:\n質問：空の色は？\n"
        "選択肢：0.青,1.赤,2.緑,3.黒,4.白\n\n### 応答:\n0\n\n### 入力:\n質問：犬の鳴き声は？\n"
        "選択肢：0.ワン,1.ニャー,2.モー,3.メー,4.コケコッコー\n\n### 応答:\n")


def test_swallow_exact_match_normalises_the_generated_token(loaded):
    from trainer.evaluate.jcqa_formats import swallow_correct

    tok = loaded.tokenizer
    three = tok("3", add_special_tokens=False)["input_ids"]
    assert len(three) == 1 and swallow_correct(tok, three[0], 3) and not swallow_correct(tok, three[0], 2)


def test_harness_sampler_draws_match_lm_eval_context_sampler():
    """Both paths of the harness's default sampler, against its own class: plain draws, and the
    eval_doc path that drops the question itself (pool == evaluated set)."""
    samplers = pytest.importorskip("lm_eval.api.samplers")
    from trainer.evaluate.jcqa_formats import Question, harness_shots

    pool = [Question(f"問{i}", tuple(f"{i}-{j}" for j in range(5)), i % 5, qid=i) for i in range(12)]
    as_doc = lambda q: {"q_id": q.qid, "question": q.question, "label": q.label}  # noqa: E731
    for exclude in (False, True):
        sampler = samplers.ContextSampler([as_doc(q) for q in pool], rnd=None).set_rnd(1234)
        theirs = [[d["q_id"] for d in sampler.sample(3, eval_doc=as_doc(q) if exclude else None)] for q in pool]
        mine = [[s.qid for s in shots] for shots in harness_shots(pool, pool, 3, 1234, exclude_self=exclude)]
        assert mine == theirs
        if exclude:
            assert all(q.qid not in ids for q, ids in zip(pool, mine))


def test_formats_that_draw_from_the_train_split_need_it(tmp_path):
    from trainer.evaluate.jcqa import load_questions

    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": q, **{f"choice{i}": c[i] for i in range(5)}, "label": label},
                                       ensure_ascii=False) + "\n" for q, c, label in Q), encoding="utf-8")
    with pytest.raises(ValueError, match="--fewshot-file"):
        load_questions(path, "lm-eval", None, None, None)
    questions_, pool, k, exclude = load_questions(path, "swallow", 2, path, None)
    assert (len(questions_), len(pool), k, exclude) == (3, 3, 2, True)
    assert load_questions(path, "native", None, None, None)[2] == 0
    with pytest.raises(ValueError, match="--jcqa-format"):
        load_questions(path, "mine", None, None, None)
