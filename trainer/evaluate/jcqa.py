"""JCommonsenseQA accuracy by log-likelihood of each choice (JGLUE v1.3 JSON lines).

Each record has ``question``, ``choice0``..``choice4`` and ``label`` (0-4). The
model never generates: for every choice we score the choice text as a
continuation of the prompt and pick the most likely one, as lm-evaluation-harness
does for multiple choice:

- ``acc``: the choice with the largest summed log-probability (favours short
  choices, which have fewer tokens to pay for);
- ``acc_norm``: the summed log-probability divided by the choice's length in
  characters (lm-evaluation-harness divides by ``len(continuation)``).

Prompt (zero-shot; ``k`` solved examples in the same format, separated by a
blank line, come before it in k-shot; written down in docs/evaluation.md)::

    質問：{question}
    選択肢：{choice0}、{choice1}、{choice2}、{choice3}、{choice4}
    回答：{choice}

Context and continuation are tokenized separately and concatenated (as the
harness does), so every choice is scored after exactly the same context tokens.
A prompt longer than ``max_length`` is cut from the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

from trainer.evaluate.scoring import ScoredSequence, score_sequences

N_CHOICES = 5


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    label: int


def read_questions(path) -> Iterator[Question]:
    """JGLUE v1.3 JSONL (optionally ``.gz``/``.zst``); a broken record names its line."""
    from jpcorpus.jsonline import loads_record
    from jpcorpus.readers import open_binary

    with open_binary(Path(path)) as raw:
        for lineno, line in enumerate(raw, 1):
            if not line.strip():
                continue
            try:
                rec = loads_record(line.decode("utf-8"))  # hostile JSON and lone surrogates: a ValueError
                choices = tuple(str(rec[f"choice{i}"]) for i in range(N_CHOICES))
                label = int(rec["label"])
                question = str(rec["question"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a JCommonsenseQA record ({exc!r})") from None
            if not 0 <= label < N_CHOICES:
                raise ValueError(f"{path}:{lineno}: label {label} is not 0-{N_CHOICES - 1}")
            yield Question(question, choices, label)


def context(q: Question) -> str:
    """The prompt a choice continues (ends right before the answer).

    >>> print(context(Question("空は何色？", ("青", "赤", "緑", "黒", "白"), 0)))
    質問：空は何色？
    選択肢：青、赤、緑、黒、白
    回答：
    """
    return f"質問：{q.question}\n選択肢：{'、'.join(q.choices)}\n回答："


def fewshot_prefix(shots: list[Question]) -> str:
    """Solved examples, each followed by a blank line."""
    return "".join(f"{context(s)}{s.choices[s.label]}\n\n" for s in shots)


def choice_sequences(tokenizer, prefix: str, q: Question, max_length: int) -> list[ScoredSequence]:
    ctx = tokenizer(prefix + context(q), add_special_tokens=False)["input_ids"]
    seqs = []
    for choice in q.choices:
        cont = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if not cont:
            raise ValueError(f"empty choice in question {q.question!r}")
        keep = max(max_length - len(cont), 1)
        seqs.append(ScoredSequence([*ctx[-keep:], *cont], len(cont)))
    return seqs


def evaluate_jcqa(loaded, path, *, fewshot: int = 0, fewshot_path=None, max_questions: int | None = None,
                  max_length: int = 1024, batch_size: int = 8, progress: bool = True) -> dict:
    """Accuracy (``acc``, ``acc_norm``) of ``loaded`` on the questions of ``path``.

    The ``fewshot`` examples are the first records of ``fewshot_path`` (default:
    ``path`` itself, and then they are left out of the scored questions).
    """
    if fewshot < 0:
        raise ValueError(f"--fewshot {fewshot} must be 0 or more")
    questions = read_questions(path)
    if fewshot_path is None:
        shots = list(islice(questions, fewshot))
    else:
        shots = list(islice(read_questions(fewshot_path), fewshot))
    if len(shots) < fewshot:
        raise ValueError(f"--fewshot {fewshot}: only {len(shots)} examples available")
    questions = list(islice(questions, max_questions))
    if not questions:
        raise ValueError(f"{path}: no questions to evaluate")
    scores = choice_logprobs(loaded, questions, fewshot_prefix(shots), max_length, batch_size, progress,
                             desc=f"jcqa {Path(path).name}")
    return {"source": str(path), "questions": len(questions), "fewshot": fewshot,
            **accuracy(questions, scores), "chance": 1 / N_CHOICES}


def choice_logprobs(loaded, questions: list[Question], prefix: str = "", max_length: int = 1024,
                    batch_size: int = 8, progress: bool = False, desc: str = "jcqa") -> list[list[float]]:
    """Summed log-probability (nats) of each choice of each question, after ``prefix``."""
    seqs = [s for q in questions for s in choice_sequences(loaded.tokenizer, prefix, q, max_length)]
    flat = score_sequences(loaded, seqs, batch_size, progress, desc=desc)
    return [flat[i * N_CHOICES: (i + 1) * N_CHOICES] for i in range(len(questions))]


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
