"""JCommonsenseQA accuracy by log-likelihood of each choice (JGLUE v1.3 JSON lines).

Each record has ``question``, ``choice0``..``choice4`` and ``label`` (0-4). The
model never generates: every choice is scored as a continuation of the prompt
and the most likely one is the prediction, as lm-evaluation-harness does for
multiple choice:

- ``acc``: the choice with the largest summed log-probability (favours short
  choices, which have fewer tokens to pay for);
- ``acc_norm``: the summed log-probability divided by the choice's length in
  characters (lm-evaluation-harness divides by ``len(choice)``).

The prompt, the few-shot examples and the tokenization follow one of three
settings (``--jcqa-format``, built in ``jcqa_formats``): ``lm-eval`` (the
harness's ``ja_leaderboard_jcommonsenseqa``), ``swallow`` (the Swallow
leaderboard's llm-jp-eval 4-shot) or ``native``, this module's own prompt::

    質問：{question}
    選択肢：{choice0}、{choice1}、{choice2}、{choice3}、{choice4}
    回答：{choice}

(``k`` solved examples in the same format, separated by a blank line, before
it). The five choices share their context, which is computed once per question
(``shared_prefix``).
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from trainer.evaluate.jcqa_formats import (  # noqa: F401  (context, fewshot_prefix: re-exported native prompt)
    DEFAULT_SHOTS, FORMATS, N_CHOICES, Question, build, context, fewshot_prefix, native_choice_set, read_questions,
    swallow_correct)
from trainer.evaluate.shared_prefix import score_choice_sets


def load_questions(path, fmt: str, fewshot: int | None, fewshot_path, max_questions: int | None):
    """``(questions, pool, k, exclude_self)``: what is scored and where its examples come from.

    ``native`` takes the first ``k`` records of ``fewshot_path`` (default: of
    ``path``, which are then not scored). ``lm-eval`` and ``swallow`` draw from
    the train split as their sources do, so they need ``fewshot_path`` when
    ``k > 0``; when it is ``path`` itself the harness's rule applies (a question
    is never its own example).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--jcqa-format {fmt!r}: choose one of {', '.join(FORMATS)}")
    k = DEFAULT_SHOTS[fmt] if fewshot is None else fewshot
    if k < 0:
        raise ValueError(f"--fewshot {k} must be 0 or more")
    records = read_questions(path)
    exclude_self = False
    if fmt == "native":
        pool = list(islice(records if fewshot_path is None else read_questions(fewshot_path), k))
    elif k == 0:
        pool = []
    elif fewshot_path is None:
        raise ValueError(f"--jcqa-format {fmt} draws its {k} examples from the train split: give "
                         "--fewshot-file jcommonsenseqa-v1.3_train.jsonl (or --fewshot 0)")
    else:
        pool = list(read_questions(fewshot_path))
        exclude_self = Path(fewshot_path).resolve() == Path(path).resolve()
    if len(pool) < k:
        raise ValueError(f"--fewshot {k}: only {len(pool)} examples available")
    questions = list(islice(records, max_questions))
    if not questions:
        raise ValueError(f"{path}: no questions to evaluate")
    return questions, pool, k, exclude_self


def evaluate_jcqa(loaded, path, *, fmt: str = "native", fewshot: int | None = 0, fewshot_path=None,
                  max_questions: int | None = None, max_length: int = 1024, batch_size: int = 8,
                  progress: bool = True, details: bool = False) -> dict:
    """Accuracy of ``loaded`` on the questions of ``path`` in format ``fmt`` (see ``jcqa_formats``).

    ``details`` adds ``per_question``: each question's five scores, the predicted
    choice (and for ``swallow`` the generated token).
    """
    questions, pool, k, exclude_self = load_questions(path, fmt, fewshot, fewshot_path, max_questions)
    prompted = build(fmt, loaded.tokenizer, questions, pool, k, max_length, exclude_self)
    scored = score_choice_sets(loaded, [p.choice_set for p in prompted], batch_size, progress,
                               desc=f"jcqa {Path(path).name}")
    scores = [s.logprobs for s in scored]
    out = {"source": str(path), "format": fmt, "questions": len(questions), "fewshot": k,
           "fewshot_source": str(fewshot_path) if fewshot_path else None, **accuracy(questions, scores),
           "chance": 1 / N_CHOICES}
    if fmt == "swallow":
        hits = [swallow_correct(loaded.tokenizer, s.next_token, q.label) for q, s in zip(questions, scored)]
        out["exact_match"] = sum(hits) / len(hits)
    if details:
        out["per_question"] = [_detail(i, q, s, fmt, loaded.tokenizer) for i, (q, s) in enumerate(zip(questions, scored))]
    return out


def _detail(index: int, q: Question, s, fmt: str, tokenizer) -> dict:
    row = {"index": index, "label": q.label, "scores": s.logprobs, "pred": _argmax(s.logprobs),
           "pred_norm": _argmax([v / len(c) for v, c in zip(s.logprobs, q.choices)])}
    if q.qid is not None:
        row["q_id"] = q.qid
    if fmt == "swallow":
        row["generated"] = tokenizer.decode([s.next_token], skip_special_tokens=True)
    return row


def choice_logprobs(loaded, questions: list[Question], prefix: str = "", max_length: int = 1024,
                    batch_size: int = 8, progress: bool = False, desc: str = "jcqa") -> list[list[float]]:
    """Summed log-probability (nats) of each choice of each question after ``prefix`` (``native`` format)."""
    sets = [native_choice_set(loaded.tokenizer, prefix + context(q), q, max_length) for q in questions]
    return [s.logprobs for s in score_choice_sets(loaded, sets, batch_size, progress, desc=desc)]


def accuracy(questions: list[Question], scores: list[list[float]]) -> dict:
    """``acc`` (raw sums) and ``acc_norm`` (sums per character of the choice).

    >>> q = Question("?", ("ab", "c", "d", "e", "f"), 0)
    >>> accuracy([q], [[-3.0, -2.0, -9.0, -9.0, -9.0]])
    {'acc': 0.0, 'acc_norm': 1.0}
    """
    correct = correct_norm = 0
    for q, s in zip(questions, scores, strict=True):
        correct += _argmax(s) == q.label
        correct_norm += _argmax([v / len(c) for v, c in zip(s, q.choices)]) == q.label
    return {"acc": correct / len(questions), "acc_norm": correct_norm / len(questions)}


def _argmax(values: list[float]) -> int:
    """First index of the largest value (ties go to the lower choice number)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))
