"""Run every measure on a model (and on the baseline) and lay the results side by side.

The JSON written by ``trainer eval --json`` is :func:`run_eval`'s dictionary::

    {"models": {"model": {"path", "device", "dtype",
                          "text": {NAME: {perplexity, bits_per_char, bits_per_token,
                                          tokens, chars, documents, nll, source, decoded_with}},
                          "jcqa": {acc, acc_norm, questions, fewshot, chance, source}},
                "baseline": {...same keys...}},
     "settings": {max_length, batch_size, max_docs, max_questions, fewshot, seed}}
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field

from trainer.evaluate.jcqa import evaluate_jcqa
from trainer.evaluate.models import load_model, set_determinism
from trainer.evaluate.perplexity import evaluate_perplexity


@dataclass
class EvalSettings:
    texts: dict[str, str] = field(default_factory=dict)
    """Held-out sets by name, e.g. ``{"ja": "valid_ja", "en": "en.jsonl"}``."""
    jcqa: str | None = None
    """JCommonsenseQA JSONL, or None to skip it."""
    fewshot: int = 0
    fewshot_path: str | None = None
    max_docs: int | None = None
    max_questions: int | None = None
    max_length: int = 1024
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    progress: bool = True


def evaluate_model(path: str, s: EvalSettings) -> dict:
    """All measures of ``s`` on the Hugging Face checkpoint directory ``path``."""
    set_determinism(s.seed)
    loaded = load_model(path, s.device, s.dtype)
    out: dict = {"path": path, "device": loaded.device, "dtype": loaded.dtype, "text": {}}
    for name, source in s.texts.items():
        out["text"][name] = evaluate_perplexity(
            loaded, source, max_docs=s.max_docs, max_length=s.max_length,
            batch_size=s.batch_size, progress=s.progress).as_dict()
    if s.jcqa:
        out["jcqa"] = evaluate_jcqa(
            loaded, s.jcqa, fewshot=s.fewshot, fewshot_path=s.fewshot_path, max_questions=s.max_questions,
            max_length=s.max_length, batch_size=s.batch_size, progress=s.progress)
    del loaded
    gc.collect()
    return out


def run_eval(model: str, s: EvalSettings, baseline: str | None = None) -> dict:
    """Evaluate ``model`` and, when given, ``baseline`` on the same data and settings."""
    if not s.texts and not s.jcqa:
        raise ValueError("nothing to evaluate: give --text NAME=PATH and/or --jcqa PATH")
    models = {"model": evaluate_model(model, s)}
    if baseline:
        models["baseline"] = evaluate_model(baseline, s)
    settings = {k: v for k, v in asdict(s).items() if k not in ("progress", "texts", "jcqa")}
    return {"models": models, "settings": settings}


def _rows(result: dict) -> list[tuple[str, str, str]]:
    """``(measure, key path, direction)`` for every number in the table."""
    model = result["models"]["model"]
    rows = []
    for name in model["text"]:
        rows += [(f"{name} bits/char", f"text.{name}.bits_per_char", "lower"),
                 (f"{name} perplexity", f"text.{name}.perplexity", "lower")]
    if "jcqa" in model:
        rows += [("JCQA acc", "jcqa.acc", "higher"), ("JCQA acc_norm", "jcqa.acc_norm", "higher")]
    return rows


def _get(model: dict, key: str) -> float:
    node = model
    for part in key.split("."):
        node = node[part]
    return node


def format_table(result: dict) -> str:
    """A Markdown table: model, baseline and their difference for each measure."""
    models = result["models"]
    has_base = "baseline" in models
    head = "| measure | model |" + (" baseline | change |" if has_base else "")
    sep = "|---|---:|" + ("---:|---:|" if has_base else "")
    lines = [head, sep]
    for label, key, direction in _rows(result):
        value = _get(models["model"], key)
        line = f"| {label} ({direction} is better) | {value:.4f} |"
        if has_base:
            base = _get(models["baseline"], key)
            line += f" {base:.4f} | {value - base:+.4f} |"
        lines.append(line)
    notes = ["", "bits/char is comparable across tokenizers; perplexity only between models "
             "that share a tokenizer (it is per token)."]
    if "jcqa" in models["model"]:
        j = models["model"]["jcqa"]
        notes.append(f"JCQA: {j['questions']} questions, {j['fewshot']}-shot, chance {j['chance']:.2f}; "
                     "acc_norm divides each choice's log-likelihood by its length in characters.")
    return "\n".join(lines + notes)
