"""Which checkpoint a run resumes from, and which ones it must never load.

A checkpoint of ``trainer run`` is a directory ``RUN_DIR/run/v0/checkpoints/<name>``
(``<name>`` like ``val_loss=2.3141-step=200-consumed_samples=6400.0``, plus a
``<name>-last`` copy) laid out as NeMo 2.7.3 / megatron-core 0.15 write it::

    weights/.metadata        torch DCP metadata (pickled; megatron's MCoreMetadata): every
                             tensor -> (storage file, byte offset, byte length)
    weights/__0_0.distcp ... the tensor bytes (torch DCP storage files)
    weights/common.pt        non-sharded state (torch.save zip): step, loops, callbacks, lr schedulers
    weights/metadata.json    megatron's backend record, {"sharded_backend": "torch_dist", ...}
    weights/adapter_metadata.json   LoRA only: {"model_ckpt_path": base checkpoint}
    context/io.json, model.yaml, nemo_tokenizer/   what NeMo rebuilds the model/tokenizer from

What NeMo itself guards (read in ``nemo/lightning/resume.py`` and
``nemo/lightning/pytorch/callbacks/model_checkpoint.py``): before each save it touches a
sibling marker file ``<name>-unfinished`` and removes it when the save finished.
``AutoResume`` only considers ``*-last`` (and ``*-end``) directories, drops those with a
marker, and raises ``ValueError`` when every ``-last`` one has it; ``ModelCheckpoint.setup``
then deletes (rmtree) marked checkpoints. It checks nothing else: a ``-last`` directory
with missing or truncated files is handed to the loader as is, and when no ``-last``
directory is usable but older good checkpoints exist, NeMo starts again from the base.

``check_checkpoint`` adds the cheap checks (no tensor is read: file sizes against the DCP
metadata's byte ranges, small files parsed); ``find_resumable`` picks the newest good
checkpoint; ``quarantine`` moves a bad one out of NeMo's sight, never deleting it.
A bit flip inside a complete-length ``.distcp`` is not detected (DCP stores no checksum).
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

UNFINISHED_SUFFIX = "-unfinished"  # NeMo's ModelCheckpoint.UNFINISHED_CHECKPOINT_SUFFIX
_STEP = re.compile(r"(?:^|-)step=(\d+)")


def unfinished_marker(path: str | Path) -> Path:
    """NeMo's marker file for ``path`` (``format_checkpoint_unfinished_marker_path``).

    >>> unfinished_marker("ckpts/val_loss=2.1-step=20-last").name
    'val_loss=2.1-step=20-last-unfinished'
    """
    name = str(path).removesuffix(".ckpt").removesuffix("-EMA")
    return Path(name + UNFINISHED_SUFFIX)


def checkpoint_step(path: str | Path) -> int:
    """The ``step=N`` in a checkpoint's name, -1 without one.

    >>> checkpoint_step("val_loss=10.7723-step=39-consumed_samples=1280.0-last")
    39
    """
    m = _STEP.search(Path(path).name)
    return int(m.group(1)) if m else -1


def reason_code(problem: str) -> str:
    """The stable snake_case code a problem string starts with.

    >>> reason_code("truncated_storage_file: weights/__0_0.distcp has 10 of 1577 bytes")
    'truncated_storage_file'
    """
    return problem.split(":", 1)[0].strip()


def check_checkpoint(path: str | Path) -> list[str]:
    """Problems of one checkpoint directory, each ``"<code>: <detail>"``; [] when resumable."""
    path = Path(path)
    problems = []
    if unfinished_marker(path).exists():
        problems.append(f"unfinished: NeMo's marker {unfinished_marker(path).name} is there, the save was interrupted")
    if not path.is_dir():
        what = "a link to nothing" if path.is_symlink() else "not a directory"
        return problems + [f"not_a_directory: {path.name} is {what}"]
    weights = path / "weights"
    if not weights.is_dir():
        problems.append("missing_weights: no weights/ directory")
    else:
        problems += _check_weights(weights)
    problems += _check_context(path / "context")
    return problems


def _check_weights(weights: Path) -> list[str]:
    problems = []
    problems += _check_json(weights / "metadata.json", "metadata_json", required_key="sharded_backend")
    if (weights / "adapter_metadata.json").exists():
        problems += _check_json(weights / "adapter_metadata.json", "adapter_metadata", required_key="model_ckpt_path")
    common = weights / "common.pt"
    if not common.is_file():
        problems.append("missing_common_pt: weights/common.pt (step, loops, optimizer schedule) is absent")
    else:
        try:  # torch.save writes a zip; a truncated one has lost its central directory
            with zipfile.ZipFile(common):
                pass
        except (zipfile.BadZipFile, OSError) as e:
            problems.append(f"invalid_common_pt: weights/common.pt is not a readable torch.save file ({e})")
    if not (weights / ".metadata").is_file():
        return problems + ["missing_dcp_metadata: weights/.metadata (torch distributed checkpoint index) is absent"]
    try:
        storage = _storage_extents(weights)
    except ImportError:
        raise  # an environment problem (megatron not importable), never a reason to quarantine
    except Exception as e:  # a pickle cut short raises EOFError, UnpicklingError, ValueError, ...
        return problems + [f"invalid_dcp_metadata: weights/.metadata does not parse ({type(e).__name__}: {e})"]
    if not storage:
        problems.append("invalid_dcp_metadata: weights/.metadata lists no storage files")
    for name, needed in sorted(storage.items()):
        file = weights / name
        if not file.is_file():
            problems.append(f"missing_storage_file: weights/{name} is absent")
        elif (size := file.stat().st_size) < needed:
            problems.append(f"truncated_storage_file: weights/{name} has {size} of {needed} bytes")
    return problems


def _storage_extents(weights: Path) -> dict[str, int]:
    """Each storage file the DCP metadata references -> the bytes it must have at least."""
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(weights)).read_metadata()
    extents: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = int(info.offset) + int(info.length)
        extents[info.relative_path] = max(extents.get(info.relative_path, 0), end)
    return extents


def _check_json(file: Path, code: str, required_key: str) -> list[str]:
    where = f"{file.parent.name}/{file.name}"
    if not file.is_file():
        return [f"missing_{code}: {where} is absent"]
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        return [f"invalid_{code}: {where} is not JSON ({e})"]
    if not isinstance(data, dict) or required_key not in data:
        return [f"invalid_{code}: {where} has no {required_key!r}"]
    return []


def _check_context(context: Path) -> list[str]:
    if not context.is_dir():
        return ["missing_context: no context/ directory (NeMo rebuilds the model and tokenizer from it)"]
    if not any(context.iterdir()):
        return ["empty_context: context/ is empty"]
    io_json = context / "io.json"
    if not io_json.is_file():
        return ["missing_context_io: context/io.json is absent"]
    try:
        json.loads(io_json.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        return [f"invalid_context_io: context/io.json is not JSON ({e})"]
    problems = []
    for file in sorted(context.rglob("*.json")):  # the tokenizer NeMo saved beside it, and the like
        if file == io_json:
            continue
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            problems.append(f"invalid_context_file: context/{file.relative_to(context)} is not JSON ({e})")
    return problems


def find_resumable(checkpoint_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest good checkpoint (None without one) and every bad one with its problems.

    Newest = highest ``step=N``; at equal steps the ``-last`` copy first, then the newer
    mtime. Every checkpoint is checked, not only until the first good one, so no bad one
    stays where NeMo's top-k bookkeeping would look at it.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None, []
    entries = [p for p in checkpoint_dir.iterdir() if p.is_dir() or p.is_symlink()]
    entries.sort(key=lambda p: (checkpoint_step(p), p.name.endswith("-last"), p.lstat().st_mtime), reverse=True)
    chosen, skipped = None, []
    for path in entries:
        if problems := check_checkpoint(path):
            skipped.append((path, "; ".join(problems)))
        elif chosen is None:
            chosen = path
    return chosen, skipped


def quarantine(path: str | Path, reason: str, quarantine_dir: str | Path) -> Path:
    """Move a bad checkpoint (and its unfinished marker) to ``quarantine_dir/<name>.corrupt-<code>``.

    Outside the checkpoint directory on purpose: NeMo deletes marked checkpoints there and
    its top-k scan parses ``val_loss=`` out of every directory name it finds there.
    """
    path, quarantine_dir = Path(path), Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    base = f"{path.name}.corrupt-{reason_code(reason).replace('_', '-')}"
    target, n = quarantine_dir / base, 1
    while target.exists() or target.is_symlink():
        target, n = quarantine_dir / f"{base}.{n}", n + 1
    marker = unfinished_marker(path)
    shutil.move(str(path), str(target))
    if marker.is_file():
        shutil.move(str(marker), str(target) + UNFINISHED_SUFFIX)
    return target


def nemo_would_resume(checkpoint_dir: str | Path) -> Path | None:
    """What ``AutoResume(resume_if_exists=True)`` picks here: the newest-mtime unmarked ``*last`` dir."""
    lasts = [p for p in Path(checkpoint_dir).glob("*") if p.is_dir() and p.match("*last")
             and not unfinished_marker(p).exists()]
    return max(lasts, key=lambda p: p.lstat().st_mtime) if lasts else None


def prepare_resume(checkpoint_dir: str | Path, quarantine_dir: str | Path, *, move: bool = True,
                   echo=print) -> tuple[Path | None, Path | None]:
    """Move bad checkpoints aside (``move=False``: only report) -> (chosen, explicit path).

    The explicit path is what to pass as ``AutoResume.resume_from_path``: None when NeMo's
    own search lands on ``chosen`` anyway (the usual case: a good ``-last``), else
    ``chosen`` (the ``-last`` copy was bad and an older good checkpoint exists, where NeMo
    alone would restart from the base checkpoint).
    """
    chosen, skipped = find_resumable(checkpoint_dir)
    for path, reason in skipped:
        if move:
            where = quarantine(path, reason, quarantine_dir)
            echo(f"checkpoint {path.name}: skipped, never loaded: {reason}; moved to {where} "
                 "(see docs/troubleshooting.md#damaged-checkpoint)")
        else:
            echo(f"checkpoint {path.name}: would be skipped and moved to {quarantine_dir}: {reason}")
    if chosen is None:
        if skipped:
            echo(f"no good checkpoint in {checkpoint_dir}: the run starts from the base checkpoint")
        return None, None
    echo(f"{'resuming' if move else 'would resume'} from {chosen}")
    if move and nemo_would_resume(checkpoint_dir) == chosen:
        return chosen, None
    return chosen, chosen
