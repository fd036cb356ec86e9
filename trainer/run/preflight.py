"""What ``trainer run`` refuses before NeMo is imported (a dry run and a real run alike).

NeMo's import takes 10-50 s, and what it does with a damaged shard is worse than
slow: megatron-core trains on a ``.bin`` cut short or an ``.idx`` with a flipped
pointer without a word (it reads whatever bytes the pointers name), and a
corrupted header surfaces as a bare ``AssertionError``. So, first:

1. ``model.base`` (unless ``from_scratch``) exists and is a Hugging Face
   checkpoint directory (``config.json`` and weights) or a NeMo one
   (``context/`` and ``weights/``), or the run already imported it;
2. every prefix of ``data.train`` and ``data.valid`` passes
   :func:`jpcorpus.verify.verify_shard`: the structural checks always
   (milliseconds a shard whatever its size), the sha256 of every byte too with
   ``data.verify: full``.

The tokenizer comparison (``trainer.run.data.check_shards``) follows, still
before NeMo. Every refusal is a :class:`Refusal` (exit status 1) listing each
problem with the file, what is wrong, what to do and its section of
``docs/troubleshooting.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from jpcorpus.errors import DataProblem
from trainer.run.config import TrainConfig, shard_blend

DOCS = "docs/troubleshooting.md"
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class Refusal(DataProblem, ValueError):
    """A run that must not start; the message says why and what to do (one problem a line)."""


@dataclass
class Checked:
    """What was checked, for the plan: how the base was found, which shard checks ran, how long they took."""

    base: str
    verify: str
    shards: int
    seconds: float

    def summary(self) -> str:
        what = ("structure (header, sizes, pointers, document indices, sidecar counts)" if self.verify == "structure"
                else "full (structure, then the sha256 of every byte and every token id)")
        return (f"checked before NeMo: model.base {self.base}; {self.shards} shard(s) verified, "
                f"data.verify={self.verify}: {what}, in {self.seconds:.2f} s")


def describe_base(cfg: TrainConfig) -> str:
    """What ``model.base`` is, or :class:`Refusal` when no run can start from it."""
    if cfg.model.from_scratch:
        return "none (from_scratch: random weights)"
    from trainer.run.recipe import base_checkpoint

    base, imported = Path(cfg.model.base), base_checkpoint(cfg)
    if (imported / "context").is_dir() and (imported / "weights").is_dir() and imported != base:
        return f"{base} (already imported to {imported})"
    fix = ("download it (huggingface-cli download Qwen/Qwen2.5-0.5B --local-dir checkpoints/Qwen2.5-0.5B) or set "
           f"model.base to a Hugging Face or NeMo checkpoint directory (see {DOCS}#missing-base)")
    if not base.exists():
        raise Refusal(f"refused: model.base {base} does not exist; {fix}")
    if (base / "context").is_dir() and (base / "weights").is_dir():
        return f"{base} (NeMo checkpoint)"
    if not (base / "config.json").is_file():
        raise Refusal(f"refused: model.base {base} is neither a Hugging Face checkpoint (config.json) nor a NeMo "
                      f"checkpoint (context/ and weights/); {fix}")
    if not any((base / name).is_file() for name in HF_WEIGHTS):
        raise Refusal(f"refused: model.base {base} has config.json but no weights ({', '.join(HF_WEIGHTS[::2])}): "
                      f"an interrupted download? {fix}")
    return f"{base} (Hugging Face checkpoint)"


def verify_shards(cfg: TrainConfig) -> int:
    """Every train and valid prefix through jpcorpus.verify; :class:`Refusal` listing all problems found."""
    from jpcorpus.verify import verify_shard

    lines, count = [], 0
    for part in ("train", "valid"):
        for i, (prefix, _) in enumerate(shard_blend(getattr(cfg.data, part))):
            count += 1
            for problem in verify_shard(prefix, full=cfg.data.verify == "full"):
                lines.append(f"refused: shard {prefix} (data.{part}[{i}]): {problem}")
    if lines:
        raise Refusal("\n".join(lines))
    return count


def preflight(cfg: TrainConfig) -> Checked:
    """Base and shards, in that order; nothing here imports torch or NeMo."""
    started = time.perf_counter()
    base = describe_base(cfg)
    shards = verify_shards(cfg)
    return Checked(base, cfg.data.verify, shards, time.perf_counter() - started)
