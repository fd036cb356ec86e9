"""Run every measure on a model (and on the baseline) and lay the results side by side.

The JSON written by ``trainer eval --json`` is :func:`run_eval`'s dictionary::

    {"models": {"model": {"path", "device", "dtype",
                          "text": {NAME: {perplexity, bits_per_char, bits_per_token,
                                          tokens, chars, documents, nll, source, decoded_with}},
                          "jcqa": {format, acc, acc_norm, [exact_match], questions, fewshot,
                                   fewshot_source, chance, source, [per_question]},
                          "harness": {lm_eval, task_data, limit, fewshot_seed,
                                      "tasks": {TASK: {metrics, stderr, shots, samples, higher_is_better}}}},
                "baseline": {...same keys...}},
     "settings": {max_length, batch_size, max_docs, max_questions, fewshot, jcqa_format, tasks, seed, ...}}

``per_question`` (with ``--json``) holds each question's five log-likelihoods,
the predicted choice (``pred``; ``pred_norm`` for ``acc_norm``) and its label.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field

from trainer.evaluate.harness import check_tasks, run_tasks
from trainer.evaluate.jcqa import evaluate_jcqa
from trainer.evaluate.models import load_model, set_determinism
from trainer.evaluate.perplexity import evaluate_perplexity


@dataclass
class EvalSettings:
    texts: dict[str, str] = field(default_factory=dict)
    """Held-out sets by name, e.g. ``{"ja": "valid_ja", "en": "en.jsonl"}``."""
    jcqa: str | None = None
    """JCommonsenseQA JSONL, or None to skip it."""
    jcqa_format: str = "native"
    """``lm-eval``, ``swallow`` or ``native`` (``jcqa_formats``)."""
    fewshot: int | None = None
    """JCQA examples per question; None: the format's own (3, 4, 0)."""
    fewshot_path: str | None = None
    tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks or groups, run through the harness."""
    task_data: str | None = None
    """Local copies of the tasks' datasets (``task_data``), for machines without the hub."""
    limit: int | None = None
    """Documents per harness task (the harness's ``--limit``)."""
    task_fewshot: int | None = None
    """Shots for every harness task instead of each task's own."""
    details: bool = False
    """Keep each JCQA question's scores (for ``--json``)."""
    max_docs: int | None = None
    max_questions: int | None = None
    max_length: int = 1024
    batch_size: int | None = None
    """Sequences (JCQA: questions) per batch; None: 8, and :func:`jcqa_batch_size` for JCQA."""
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    progress: bool = True


def jcqa_batch_size(device: str) -> int:
    """Questions per batch for the shared-context JCQA scorer when ``--batch-size`` is not given.

    On one NVIDIA H200 (bf16, 1,000 questions, ~320 tokens a choice) 128 questions a
    batch scored 269 questions/s, 3.2x the harness, against 98 (1.1x) at 32: the
    shared path's work per batch is small, so it wants wide batches. 128 needs a
    few GiB of logits and cache, so smaller GPUs (under 40 GiB) and the CPU keep 32 and 8.
    """
    if not device.startswith("cuda"):
        return 8
    import torch

    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return 128 if total >= 40 * 2**30 else 32


def evaluate_model(path: str, s: EvalSettings) -> dict:
    """All measures of ``s`` on the Hugging Face checkpoint directory ``path``."""
    set_determinism(s.seed)
    loaded = load_model(path, s.device, s.dtype)
    out: dict = {"path": path, "device": loaded.device, "dtype": loaded.dtype, "text": {}}
    for name, source in s.texts.items():
        out["text"][name] = evaluate_perplexity(
            loaded, source, max_docs=s.max_docs, max_length=s.max_length,
            batch_size=s.batch_size or 8, progress=s.progress).as_dict()
    if s.jcqa:
        out["jcqa"] = evaluate_jcqa(
            loaded, s.jcqa, fmt=s.jcqa_format, fewshot=s.fewshot, fewshot_path=s.fewshot_path,
            max_questions=s.max_questions, max_length=s.max_length,
            batch_size=s.batch_size or jcqa_batch_size(loaded.device), progress=s.progress, details=s.details)
    if s.tasks:
        out["harness"] = run_tasks(loaded, s.tasks, task_data=s.task_data, num_fewshot=s.task_fewshot,
                                   limit=s.limit, batch_size=s.batch_size or 8, seed=s.seed)
    del loaded
    gc.collect()
    return out


def run_eval(model: str, s: EvalSettings, baseline: str | None = None) -> dict:
    """Evaluate ``model`` and, when given, ``baseline`` on the same data and settings."""
    if not s.texts and not s.jcqa and not s.tasks:
        raise ValueError("nothing to evaluate: give --text NAME=PATH, --jcqa PATH and/or --tasks NAMES")
    if s.tasks:
        check_tasks(s.tasks, s.task_data)
    models = {"model": evaluate_model(model, s)}
    if baseline:
        models["baseline"] = evaluate_model(baseline, s)
    settings = {k: v for k, v in asdict(s).items() if k not in ("progress", "texts", "jcqa", "details")}
    return {"models": models, "settings": settings}


def _rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    """``(task, metric, shots, key path, direction)`` for every number in the table."""
    model = result["models"]["model"]
    rows = []
    for name in model["text"]:
        rows += [(f"{name} held-out text", "bits/char", "", f"text.{name}.bits_per_char", "lower"),
                 (f"{name} held-out text", "perplexity", "", f"text.{name}.perplexity", "lower")]
    if "jcqa" in model:
        j = model["jcqa"]
        task, shots = f"JCQA ({j['format']} format)", str(j["fewshot"])
        if "exact_match" in j:
            rows.append((task, "exact_match", shots, "jcqa.exact_match", "higher"))
        rows += [(task, "acc", shots, "jcqa.acc", "higher"), (task, "acc_norm", shots, "jcqa.acc_norm", "higher")]
    for task, t in model.get("harness", {}).get("tasks", {}).items():
        for metric in t["metrics"]:
            better = t["higher_is_better"].get(metric.split(" ")[0], True)
            rows.append((task, metric, "" if t["shots"] is None else str(t["shots"]),
                         ("harness", "tasks", task, "metrics", metric), "higher" if better else "lower"))
    return rows


def _get(model: dict, key) -> float:
    node = model
    for part in key.split(".") if isinstance(key, str) else key:
        node = node[part]
    return node


def format_table(result: dict) -> str:
    """A Markdown table: task, metric, shots, model, baseline and their difference."""
    models = result["models"]
    has_base = "baseline" in models
    head = "| task | metric | shots | model |" + (" baseline | change |" if has_base else "")
    sep = "|---|---|---:|---:|" + ("---:|---:|" if has_base else "")
    lines = [head, sep]
    for task, metric, shots, key, direction in _rows(result):
        value = _get(models["model"], key)
        line = f"| {task} | {metric} ({direction} is better) | {shots} | {value:.4f} |"
        if has_base:
            base = _get(models["baseline"], key)
            line += f" {base:.4f} | {value - base:+.4f} |"
        lines.append(line)
    notes = ["", "bits/char is comparable across tokenizers; perplexity only between models "
             "that share a tokenizer (it is per token)."]
    if "jcqa" in models["model"]:
        j = models["model"]["jcqa"]
        notes.append(f"JCQA: {j['questions']} questions, {j['fewshot']}-shot, {j['format']} format, chance "
                     f"{j['chance']:.2f}; acc_norm divides each choice's log-likelihood by its length in characters.")
    if "harness" in models["model"]:
        h = models["model"]["harness"]
        limit = f", at most {h['limit']} documents per task" if h.get("limit") else ""
        notes.append(f"Tasks: lm-evaluation-harness {h['lm_eval']}, its prompts and metrics{limit}.")
    return "\n".join(lines + notes)
