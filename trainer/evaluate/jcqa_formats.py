"""The three JCommonsenseQA settings ``trainer eval --jcqa-format`` knows, each as its source builds it.

- ``lm-eval``: lm-evaluation-harness 0.4.x ``ja_leaderboard_jcommonsenseqa``
  (``lm_eval/tasks/japanese_leaderboard/ja_leaderboard_jcommonsenseqa.yaml``):
  the Alpaca-style description, the ``### 指示：`` prompt listing the choices,
  3 examples drawn by the harness's default ``ContextSampler`` (one
  ``random.Random(1234)`` for the whole run, ``sample(pool, 3)`` per question in
  question order; the question itself removed only when the few-shot pool is the
  evaluated file), ``target_delimiter`` ``"\\n"``, ``fewshot_delimiter``
  ``"\\n\\n"``; the choice is scored as ``"\\n" + choice`` after the context, tokens
  split as ``HFLM._encode_pair`` splits them (encode context+continuation, encode
  context, the continuation is what is left); metric ``acc`` (``acc_norm`` too).
- ``swallow``: the Swallow leaderboard's JComQA (swallow-llm/swallow-evaluation,
  llm-jp-eval v1.3.0, 4-shot): the llm-jp-eval prompt, the answer is the choice
  *number*, one greedy token (``max_new_tokens`` = 1), exact match after NFKC and
  strip; the examples are the first 4 of the train split shuffled with
  ``random.seed(42)``. ``exact_match`` is that figure; ``acc`` is the most likely
  of the five digits.
- ``native``: this project's own short prompt (``jcqa.context``), the first K
  records as examples; kept for comparing runs made before the other two.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from trainer.evaluate.scoring import ScoredSequence
from trainer.evaluate.shared_prefix import ChoiceSet

N_CHOICES = 5


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    label: int
    qid: str | int | None = None
    """JGLUE's ``q_id`` when the record has one (two records are the same question only if it matches too)."""


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
            yield Question(question, choices, label, rec.get("q_id"))


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


FORMATS = ("lm-eval", "swallow", "native")
DEFAULT_SHOTS = {"lm-eval": 3, "swallow": 4, "native": 0}
HARNESS_FEWSHOT_SEED = 1234
"""lm-evaluation-harness's default ``fewshot_random_seed`` (``simple_evaluate``)."""

ALPACA_DESCRIPTION = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
LLMJP_INSTRUCTION = ("質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。なお、回答は選択肢の番号（例：0）"
                     "でするものとします。 回答となる数値をint型で返し、他には何も含めないことを厳守してください。")
LLMJP_SHUFFLE_SEED = 42


@dataclass(frozen=True)
class Prompted:
    """One question as a format scores it."""

    question: Question
    context: str
    """The prompt text every choice continues."""
    choice_set: ChoiceSet


def harness_doc_to_text(q: Question) -> str:
    """``doc_to_text`` of ``ja_leaderboard_jcommonsenseqa`` (its Jinja template, rendered).

    >>> print(harness_doc_to_text(Question("空は何色？", ("青", "赤", "緑", "黒", "白"), 0)))
    ### 指示：
    出力は以下から選択してください：
    - 青
    - 赤
    - 緑
    - 黒
    - 白
    <BLANKLINE>
    ### 入力：
    空は何色？
    <BLANKLINE>
    ### 応答：
    """
    listed = "".join(f"- {c}\n" for c in q.choices)
    return f"### 指示：\n出力は以下から選択してください：\n{listed}\n### 入力：\n{q.question}\n\n### 応答："


def harness_context(q: Question, shots: list[Question]) -> str:
    """Description, then each example as text + ``"\\n"`` + answer + ``"\\n\\n"``, then the question."""
    examples = "".join(f"{harness_doc_to_text(s)}\n{s.choices[s.label]}\n\n" for s in shots)
    return ALPACA_DESCRIPTION + examples + harness_doc_to_text(q)


def harness_shots(questions: list[Question], pool: list[Question], k: int, seed: int = HARNESS_FEWSHOT_SEED,
                  exclude_self: bool = False) -> list[list[Question]]:
    """The examples lm-evaluation-harness's default sampler gives each question, in order.

    One generator for the run; ``exclude_self`` is the harness's ``eval_doc`` path
    (draw k + 1, drop copies of the question, keep k; redraw from the pool without
    it when duplicates left too few).
    """
    rnd = random.Random(seed)
    out = []
    for q in questions:
        if k == 0:
            out.append([])
        elif not exclude_self:
            out.append(rnd.sample(pool, k))
        else:
            picked = [x for x in rnd.sample(pool, k + 1) if x != q][:k]
            if len(picked) < k:
                picked = rnd.sample([x for x in pool if x != q], k)
            out.append(picked)
    return out


def llmjp_input(q: Question) -> str:
    """llm-jp-eval's JCommonsenseQA input: the question and the numbered choices.

    >>> llmjp_input(Question("空は何色？", ("青", "赤", "緑", "黒", "白"), 0))
    '質問：空は何色？\\n選択肢：0.青,1.赤,2.緑,3.黒,4.白'
    """
    numbered = ",".join(f"{i}.{c}" for i, c in enumerate(q.choices))
    return f"質問：{q.question}\n選択肢：{numbered}"


def swallow_context(q: Question, shots: list[Question]) -> str:
    """llm-jp-eval v1.3.0 ``get_evaluation_prompt`` with its default template (no custom template)."""
    text = f"{ALPACA_DESCRIPTION}### 指示:\n{LLMJP_INSTRUCTION}"
    for s in shots:
        text += f"\n\n### 入力:\n{llmjp_input(s)}\n\n### 応答:\n{s.label}"
    return text + f"\n\n### 入力:\n{llmjp_input(q)}\n\n### 応答:\n"


def swallow_shots(pool: list[Question], k: int) -> list[Question]:
    """llm-jp-eval's few-shot examples: the train split shuffled with ``random.seed(42)``, the first k."""
    shuffled = list(pool)
    random.Random(LLMJP_SHUFFLE_SEED).shuffle(shuffled)
    return shuffled[:k]


def swallow_correct(tokenizer, next_token: int, label: int) -> bool:
    """llm-jp-eval's exact match on the one generated token: NFKC, strip, equal to the label's digits."""
    text = tokenizer.decode([next_token], skip_special_tokens=True)
    return unicodedata.normalize("NFKC", text.split("\n\n")[0].strip()) == str(label)


def harness_pair(tokenizer, ctx: str, continuation: str) -> tuple[list[int], list[int]]:
    """``HFLM._encode_pair``: trailing whitespace moves to the continuation, the whole string is encoded
    and the context's own encoding length splits it (default special tokens, as ``tok_encode``)."""
    n_spaces = len(ctx) - len(ctx.rstrip())
    if n_spaces:
        ctx, continuation = ctx[:-n_spaces], ctx[-n_spaces:] + continuation
    whole = tokenizer.encode(ctx + continuation)
    ctx_ids = tokenizer.encode(ctx)
    return list(ctx_ids), list(whole[len(ctx_ids):])


def build(fmt: str, tokenizer, questions: list[Question], pool: list[Question], k: int, max_length: int,
          exclude_self: bool = False, seed: int = HARNESS_FEWSHOT_SEED) -> list[Prompted]:
    """Every question of ``questions`` as ``fmt`` prompts and tokenizes it (examples drawn from ``pool``)."""
    if fmt not in FORMATS:
        raise ValueError(f"--jcqa-format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if k > len(pool):
        raise ValueError(f"--fewshot {k}: only {len(pool)} examples available")
    if fmt == "lm-eval":
        all_shots = harness_shots(questions, pool, k, seed, exclude_self)
        out = []
        for q, shots in zip(questions, all_shots):
            ctx = harness_context(q, shots)
            seqs = []
            for choice in q.choices:
                ctx_ids, cont = harness_pair(tokenizer, ctx, "\n" + choice)
                seqs.append(_scored([*ctx_ids, *cont][-(max_length + 1):], len(cont), q))
            out.append(Prompted(q, ctx, ChoiceSet(tuple(seqs))))
        return out
    if fmt == "swallow":
        shots = swallow_shots(pool, k)
        digits = [tokenizer(str(i), add_special_tokens=False)["input_ids"] for i in range(len(questions[0].choices))]
        out = []
        for q in questions:
            ctx = swallow_context(q, shots)
            ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
            seqs = [_scored([*ids[-max(max_length - len(d), 1):], *d], len(d), q) for d in digits]
            out.append(Prompted(q, ctx, ChoiceSet(tuple(seqs))))
        return out
    prefix = fewshot_prefix(pool[:k])
    return [Prompted(q, prefix + context(q), native_choice_set(tokenizer, prefix + context(q), q, max_length))
            for q in questions]


def native_choice_set(tokenizer, ctx: str, q: Question, max_length: int) -> ChoiceSet:
    """Context and choice tokenized separately and concatenated; a long prompt is cut from the left."""
    ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
    seqs = []
    for choice in q.choices:
        cont = tokenizer(choice, add_special_tokens=False)["input_ids"]
        seqs.append(_scored([*ids[-max(max_length - len(cont), 1):], *cont], len(cont), q))
    return ChoiceSet(tuple(seqs))


def _scored(ids: list[int], n: int, q: Question) -> ScoredSequence:
    if n < 1:
        raise ValueError(f"empty choice in question {q.question!r}")
    return ScoredSequence(ids, n)
