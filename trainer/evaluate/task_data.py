"""Local copies of lm-evaluation-harness task datasets, for machines without the Hugging Face hub.

A task's YAML names a hub dataset (``dataset_path``, ``dataset_name``); offline,
``trainer eval --task-data DIR`` points every task that has a folder
``DIR/<task name>/`` at the files in it instead: a YAML is written per task
that ``include``s the harness's own (so prompts, metrics and ``process_docs``
stay the harness's) and sets ``dataset_path`` to the ``json``/``parquet``/``csv``
builder with ``data_files``; the harness reads it through ``TaskManager(include_path=...)``,
where a task of the same name overrides the built-in one.

Split files are found by name: ``<split>.jsonl`` (``.json``, ``.parquet``,
``.csv``, optionally ``.gz``), ``valid``/``dev`` also standing for
``validation``, and JGLUE's own ``train-v1.3.json`` / ``valid-v1.3.json``.

``python -m trainer.evaluate.task_data TASKS -o DIR`` (on a machine with the
hub) writes every split of each task's dataset as ``DIR/<task>/<split>.jsonl``
with the same ``datasets.load_dataset`` call the harness makes, so the copy has
exactly the fields the task's templates expect.
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ALIASES = {"validation": ("validation", "valid", "dev"), "test": ("test",), "train": ("train",)}


def split_file(folder: Path, split: str) -> Path | None:
    """The file of ``split`` in ``folder`` (see the module docstring for the names accepted)."""
    names = ALIASES.get(split, (split,))
    for path in sorted(folder.iterdir()):
        stem = path.name[:-3] if path.name.endswith(".gz") else path.name
        base, ext = stem.rsplit(".", 1)[0] if "." in stem else stem, Path(stem).suffix
        if ext in BUILDERS and (base in names or any(base.startswith(f"{n}-v") for n in names)):
            return path
    return None


def leaf_tasks(manager, names: list[str]) -> list[str]:
    """Task names behind ``names`` (groups expanded through the index, no dataset loaded)."""
    out: list[str] = []
    for name in names:
        entry = manager.task_index.get(name)
        if entry is None:
            raise ValueError(f"--tasks {name}: not an lm-evaluation-harness task or group "
                             f"(`lm_eval ls tasks` lists them)")
        members = (entry.cfg or {}).get("task") if entry.kind.name.lower() in ("group", "tag") else None
        if entry.kind.name.lower() == "tag":
            members = [n for n, e in manager.task_index.items() if name in e.tags]
        if isinstance(members, list):
            out += leaf_tasks(manager, [m if isinstance(m, str) else m["task"] for m in members])
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def _needed_splits(cfg: dict) -> list[str]:
    evaluated = cfg.get("test_split") or cfg.get("validation_split")
    shots = cfg.get("fewshot_split") or cfg.get("training_split")
    wanted = [evaluated] + ([shots] if shots and (cfg.get("num_fewshot") or 0) > 0 else [])
    return [s for s in dict.fromkeys(wanted) if s]


def override_yaml(task: str, entry, folder: Path) -> str:
    """The YAML that runs ``task`` (the harness's config, ``entry``) on the files in ``folder``."""
    import yaml

    cfg = entry.cfg or {}
    files, builder = {}, None
    declared = [cfg.get(k) for k in ("training_split", "validation_split", "test_split", "fewshot_split")]
    for split in dict.fromkeys(s for s in declared if s):
        path = split_file(folder, split)
        if path is not None:
            files[split] = str(path.resolve())
            builder = BUILDERS[Path(path.name[:-3] if path.name.endswith(".gz") else path.name).suffix]
    missing = [s for s in _needed_splits(cfg) if s not in files]
    if missing:
        raise ValueError(f"--task-data: {folder} has no file for split(s) {', '.join(missing)} of {task} "
                         f"(expected e.g. {folder / (missing[0] + '.jsonl')})")
    body = {"include": str(Path(entry.yaml_path).resolve()), "task": task, "dataset_path": builder,
            "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    return yaml.safe_dump(body, allow_unicode=True, sort_keys=False)


@lru_cache(maxsize=1)
def default_manager():
    """The harness's task index (built once per process: it reads every task YAML, ~5 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


@contextmanager
def local_task_configs(data_dir: str | None, tasks: list[str]) -> Iterator[tuple[object, list[str]]]:
    """``(TaskManager, leaf task names)``; with ``data_dir``, a manager holding only the leaf tasks,
    each reading its local files (every leaf needs its folder, so groups are run as their tasks)."""
    from lm_eval.tasks import TaskManager

    manager = default_manager()
    leaves = leaf_tasks(manager, tasks)
    if data_dir is None:
        yield manager, leaves
        return
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"--task-data {data_dir}: not a directory")
    absent = [t for t in leaves if not (root / t).is_dir()]
    if absent:
        raise ValueError(f"--task-data {data_dir}: no folder for {', '.join(absent)}; download them with "
                         f"`python -m trainer.evaluate.task_data {' '.join(absent)} -o {data_dir}` on a machine "
                         "with the Hugging Face hub, or leave them out of --tasks")
    with tempfile.TemporaryDirectory(prefix="trainer-tasks-") as tmp:
        for task in leaves:
            text = override_yaml(task, manager.task_index[task], root / task)
            (Path(tmp) / f"{task}.yaml").write_text(text, encoding="utf-8")
        yield TaskManager(include_path=tmp, include_defaults=False), leaves


def download(tasks: list[str], out_dir: str, include_path: str | None = None) -> list[Path]:
    """Write every split of each task's dataset under ``out_dir/<task>/<split>.jsonl``."""
    import datasets
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path)
    written = []
    for task in leaf_tasks(manager, tasks):
        cfg = manager.task_index[task].cfg or {}
        loaded = datasets.load_dataset(cfg["dataset_path"], cfg.get("dataset_name"), **(cfg.get("dataset_kwargs") or {}))
        folder = Path(out_dir) / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, ds in loaded.items():
            path = folder / f"{split}.jsonl"
            ds.to_json(str(path), force_ascii=False)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Download lm-evaluation-harness task datasets once, for `trainer eval --task-data DIR`.",
        epilog="Example: python -m trainer.evaluate.task_data japanese_leaderboard hellaswag -o task-data/")
    parser.add_argument("tasks", nargs="+", help="task or group names")
    parser.add_argument("-o", "--out", required=True, help="directory; one folder per task")
    parser.add_argument("--include-path", help="extra task YAML directory (as lm_eval --include_path)")
    args = parser.parse_args(argv)
    for path in download(args.tasks, args.out, args.include_path):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
