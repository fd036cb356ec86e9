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

from jpcorpus.errors import DataProblem

from lightning.pytorch.callbacks import Callback


class PreflightError(DataProblem, RuntimeError):
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
        return (f"preflight: validation loss is {loss}: the model or the data is broken "
                "(see docs/troubleshooting.md#loss-near-ln-vocab)")
    if expect_trained and loss >= margin * uniform:
        return (f"preflight: validation loss {loss:.3f} is near ln(vocab)={uniform:.2f}, what an untrained model "
                "scores: the base checkpoint holds random weights (failed import?) or the shards were made with "
                "another tokenizer. Stopping before training (see docs/troubleshooting.md#loss-near-ln-vocab).")
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
        if trainer.world_size > 1:  # every rank must reach the same verdict, or the others hang in NCCL
            import torch

            loss = float(trainer.strategy.reduce(torch.tensor(loss, device=trainer.strategy.root_device),
                                                 reduce_op="mean"))
        if trainer.is_global_zero:
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

        if not trainer.is_global_zero:  # one writer: the loss is already reduced over data parallel
            return
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
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        val = _scalar(trainer.callback_metrics.get("val_loss"))
        if val is not None:
            self._write({"step": int(trainer.global_step), "val_loss": val})
        self._t0 = None  # validation time is not a training step's time


class Profile(Callback):
    """``torch.profiler`` over training steps ``start``..``end-1``: where the step's time goes.

    Writes ``profile_steps{start}-{end}.txt`` under ``out_dir``: wall time per step, GPU
    kernel time per step (busy fraction; the rest is the GPU waiting for the host), kernel
    time by category, where the GPU idled and what the host was doing then
    (:mod:`trainer.run.profile_gaps`), then the top operators by GPU time and by host time;
    and the timeline itself, ``profile_steps{start}-{end}.json.gz`` (Perfetto opens it).
    """

    def __init__(self, start: int, end: int, out_dir: str | Path):
        self.start, self.end, self.out_dir = start, end, Path(out_dir)
        self._prof = None
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import torch

        if self._prof is None and trainer.global_step == self.start and trainer.is_global_zero:  # one file
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            self._prof = torch.profiler.profile(activities=activities)
            self._prof.__enter__()
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import torch

        if self._prof is None or trainer.global_step < self.end:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self._t0
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        steps = self.end - self.start
        events = prof.key_averages()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu_us = sum(e.time_range.elapsed_us() for e in kernels)
        syncs = [e for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize")]
        sync_n = sum(e.count for e in syncs)
        sync_us = sum(e.self_cpu_time_total for e in syncs)
        host_us = sum(e.self_cpu_time_total for e in events)
        lines = [f"steps {self.start}..{self.end - 1}: wall {wall / steps:.4f} s/step, "
                 f"GPU kernels {gpu_us / 1e6 / steps:.4f} s/step ({gpu_us / 1e6 / wall:.0%} busy), "
                 f"host {host_us / 1e6 / steps:.4f} s/step, {sync_n / steps:.0f} host-device syncs/step "
                 f"waiting {sync_us / 1e3 / steps:.1f} ms/step", ""]
        from trainer.run.profile_breakdown import from_profiler

        lines += from_profiler(prof, steps) + [""]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines += self._timeline(prof, steps) + [""]
        for key in ("self_device_time_total", "self_cpu_time_total"):
            try:
                lines.append(events.table(sort_by=key, row_limit=40))
            except Exception as exc:  # an unknown sort key on another torch version
                lines.append(f"(no table by {key}: {exc})")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"profile_steps{self.start}-{self.end}.txt"
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"profile: {lines[0]} -> {out}", flush=True)


    def _timeline(self, prof, steps: int) -> list[str]:
        """Write the Chrome trace and return :func:`~trainer.run.profile_gaps.format_gaps` of it."""
        import gzip
        import json

        from trainer.run.profile_gaps import format_gaps, idle_gaps

        trace = self.out_dir / f"profile_steps{self.start}-{self.end}.json.gz"
        try:
            prof.export_chrome_trace(str(trace))
            with gzip.open(trace, "rt", encoding="utf-8") as f:
                return format_gaps(idle_gaps(json.load(f), steps))
        except (OSError, ValueError, RuntimeError) as exc:  # a profile without a timeline still has its tables
            return [f"(no timeline: {type(exc).__name__}: {exc})"]


class FusedAdam(Callback):
    """``optim.fused_adam``: hook torch's fused AdamW into megatron's optimizer once training
    starts (after a checkpoint has restored it; :mod:`trainer.megatron.fused_adam`)."""

    def __init__(self, echo=print):
        self.echo = echo

    def on_train_start(self, trainer, pl_module):
        from trainer.megatron import fused_adam

        hooked = sum(fused_adam.install(opt) for opt in trainer.optimizers)
        self.echo(f"optim.fused_adam: torch's fused AdamW in {hooked} optimizer(s)" if hooked else
                  "optim.fused_adam: no torch Adam/AdamW on one device found; the optimizer runs unchanged")
