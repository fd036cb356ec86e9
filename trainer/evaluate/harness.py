"""lm-evaluation-harness tasks on a loaded Hugging Face model, through the harness's own Python API.

``trainer eval --tasks japanese_leaderboard,hellaswag`` hands the model that
``models.load_model`` loaded (same device, dtype and determinism as the
perplexity rows) to the harness's ``HFLM`` and runs ``lm_eval.simple_evaluate``:
prompts, few-shot sampling (``fewshot_random_seed`` 1234, the harness's
default), metrics and their standard errors are all the harness's. Only the
result is reshaped: one row per task and metric, with the number of shots and
of documents.

lm-evaluation-harness is an optional extra (``pip install 'jpcorpus[eval-harness]'``,
which pins ``lm_eval[japanese_leaderboard]==0.4.13``); :func:`require` says so
when it is missing. Offline, ``task_data`` points the tasks at local dataset
files (``task_data.local_task_configs``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

INSTALL = ("lm-evaluation-harness is not installed; --tasks needs it: pip install 'jpcorpus[eval-harness]' "
           "(lm_eval[japanese_leaderboard]==0.4.13)")


def require() -> str:
    """The installed lm-eval version, or a ``ValueError`` saying what to install."""
    try:
        from importlib.metadata import version

        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError(INSTALL) from None
    return version("lm_eval")


def parse_tasks(value: str) -> list[str]:
    """``"a,b c"`` -> ``["a", "b", "c"]`` (commas or spaces, duplicates dropped).

    >>> parse_tasks("japanese_leaderboard, hellaswag")
    ['japanese_leaderboard', 'hellaswag']
    """
    names = [n for part in value.replace(",", " ").split() if (n := part.strip())]
    return list(dict.fromkeys(names))


def check_tasks(tasks: list[str], task_data: str | None = None) -> list[str]:
    """The leaf task names, or a ``ValueError`` for an unknown name or missing local data (before any model loads)."""
    require()
    from trainer.evaluate.task_data import local_task_configs

    with local_task_configs(task_data, tasks) as (_manager, leaves):
        return leaves


def run_tasks(loaded, tasks: list[str], *, task_data: str | None = None, num_fewshot: int | None = None,
              limit: int | None = None, batch_size: int = 8, seed: int = 0) -> dict:
    """Run ``tasks`` (names or groups) on ``loaded``; ``{"tasks": {name: {...}}, "lm_eval": version, ...}``."""
    lm_eval_version = require()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from trainer.evaluate.task_data import local_task_configs

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    with _offline(bool(task_data)), local_task_configs(task_data, tasks) as (manager, leaves):
        try:
            raw = lm_eval.simple_evaluate(
                model=lm, tasks=leaves if task_data else tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed)
        except (ConnectionError, OSError) as exc:
            raise ValueError(f"--tasks: a dataset could not be loaded ({exc}); offline, download the task "
                             "data once and pass --task-data DIR (docs/evaluation.md)") from None
    return {"tasks": summarize(raw), "lm_eval": lm_eval_version, "task_data": task_data,
            "fewshot_seed": raw.get("config", {}).get("fewshot_seed"), "limit": limit}


@contextmanager
def _offline(on: bool):
    """With local task data nothing may reach for the hub (a missing file must fail, not download)."""
    saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    if on:
        os.environ.update(dict.fromkeys(saved, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def summarize(raw: dict) -> dict:
    """``{task: {"metrics": {m: v}, "stderr": {m: se}, "shots": n, "samples": n, "higher_is_better": {...}}}``."""
    out = {}
    for task, values in raw.get("results", {}).items():
        metrics, stderr = {}, {}
        for key, value in values.items():
            name, comma, filt = key.partition(",")  # the harness names results "metric,filter"
            if not comma or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            label = name if filt in ("none", "") else f"{name} ({filt})"
            if name.endswith("_stderr"):
                stderr[label.replace("_stderr", "", 1)] = value
            else:
                metrics[label] = value
        if not metrics:
            continue  # a group without aggregate metrics: its tasks have their own rows
        samples = raw.get("n-samples", {}).get(task, {})
        out[task] = {"metrics": metrics, "stderr": stderr, "shots": raw.get("n-shot", {}).get(task),
                     "samples": samples.get("effective") if isinstance(samples, dict) else samples,
                     "higher_is_better": raw.get("higher_is_better", {}).get(task, {})}
    return out
