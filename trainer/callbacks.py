"""Lightning callbacks of a run: the plain metrics file and the preflight check.

``MetricsFile`` appends one JSON object per logged step to ``metrics.jsonl`` (the
schema ``trainer monitor`` reads: step, loss, val_loss, lr, grad_norm, step_time_s,
tokens_per_s, gpu_mem_gb). ``Preflight`` scores the first validation batches
before training (Lightning's sanity check) and stops a run that starts from a
base checkpoint yet scores like random weights.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PreflightError(RuntimeError):
    """The starting point of the run is not what the config says it is."""


def preflight_verdict(loss: float, vocab_size: int, expect_trained: bool, margin: float = 0.9) -> str | None:
    """A diagnosis when the loss says 'random weights or wrong tokenizer', else None.

    >>> preflight_verdict(11.92, 151936, expect_trained=True)[:40]
    'preflight: validation loss 11.920 is nea'
    >>> preflight_verdict(2.9, 151936, expect_trained=True) is None
    True
    >>> preflight_verdict(11.92, 151936, expect_trained=False) is None
    True
    """
    uniform = math.log(vocab_size)
    if not math.isfinite(loss):
        return f"preflight: validation loss is {loss}: the model or the data is broken"
    if expect_trained and loss >= margin * uniform:
        return (f"preflight: validation loss {loss:.3f} is near ln(vocab)={uniform:.2f}, what an untrained model "
                "scores: the base checkpoint holds random weights (failed import?) or the shards were made with "
                "another tokenizer. Stopping before training.")
    return None


def _scalar(value) -> float | None:
    try:
        return float(value.detach().float().mean().item() if hasattr(value, "detach") else value)
    except (TypeError, ValueError):
        return None


class Preflight(Callback):
    def __init__(self, batches: int, vocab_size: int, expect_trained: bool):
        self.batches, self.vocab_size, self.expect_trained = batches, vocab_size, expect_trained
        self.losses: list[float] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            value = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if (loss := _scalar(value)) is not None:
                self.losses.append(loss)

    def on_sanity_check_end(self, trainer, pl_module):
        if not self.losses:
            return
        loss = sum(self.losses) / len(self.losses)
        print(f"preflight: validation loss {loss:.4f} on {len(self.losses)} batches "
              f"(ln(vocab) = {math.log(self.vocab_size):.2f})", flush=True)
        if verdict := preflight_verdict(loss, self.vocab_size, self.expect_trained):
            raise PreflightError(verdict)


class MetricsFile(Callback):
    def __init__(self, path: str | Path, seq_length: int, global_batch_size: int):
        self.path = Path(path)
        self.tokens_per_step = seq_length * global_batch_size
        self._t0: float | None = None

    def _write(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import torch

        now = time.perf_counter()
        step_time, self._t0 = now - (self._t0 or now), now
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
        record = {
            "step": int(trainer.global_step),
            "loss": metrics.get("reduced_train_loss", metrics.get("train_loss")),
            "lr": metrics.get("lr"),
            "grad_norm": metrics.get("grad_norm"),
            "step_time_s": round(step_time, 4),
            "tokens_per_s": round(self.tokens_per_step / step_time) if step_time > 0 else None,
            "consumed_samples": metrics.get("consumed_samples"),
        }
        if torch.cuda.is_available():
            record["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self._write(record)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        val = _scalar(trainer.callback_metrics.get("val_loss"))
        if val is not None:
            self._write({"step": int(trainer.global_step), "val_loss": val})
        self._t0 = None  # validation time is not a training step's time
