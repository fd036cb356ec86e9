"""Lightning callbacks of a run: the plain metrics file and the preflight check.

``MetricsFile`` appends one JSON object per logged step to ``metrics.jsonl`` (the
schema ``trainer monitor`` reads: step, loss, val_loss, lr, grad_norm, step_time_s,
tokens_per_s, gpu_mem_gb). ``Preflight`` scores the first validation batches
before training (Lightning's sanity check) and stops a run that starts from a
base checkpoint yet scores like random weights. ``GradientCheck`` stops a run whose
gradient norm is not finite (``optim.sync_free_step``); ``Profile`` and ``SyncTrace``
(``logging.profile_steps``, ``logging.sync_trace_steps``) say where a step's time goes;
``FusedAdam`` hooks torch's fused AdamW in once training starts.
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
    """One JSON line per training step (and per validation) in ``metrics.jsonl``.

    ``deferred`` (``optim.sync_free_step``): the step's loss and gradient norm travel to the host
    without a wait (:class:`~trainer.run.deferred_values.DeferredValues`) and the line is written a
    step or two later, with the step time as the GPU measured it between the ends of consecutive
    steps; ``trainer.callback_metrics``, whose every read converts Lightning's progress-bar metrics
    with one ``.item()`` each, is not read during training."""

    def __init__(self, path: str | Path, seq_length: int, global_batch_size: int, deferred: bool = False):
        self.path = Path(path)
        self.tokens_per_step = seq_length * global_batch_size
        self.global_batch_size = global_batch_size
        self.deferred = deferred
        self._t0: float | None = None
        self._lr: float | None = None
        self._values = None

    def _write(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()
        if self.deferred:  # the rate this step runs at (NeMo logs the same value here)
            try:
                self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            except (AttributeError, IndexError, KeyError, TypeError):
                self._lr = None

    def _record(self, step: int, loss, lr, grad_norm, step_time: float, consumed) -> dict:
        record = {
            "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "step_time_s": round(step_time, 4),
            "tokens_per_s": round(self.tokens_per_step / step_time) if step_time > 0 else None,
            "consumed_samples": consumed,
        }
        import torch

        if torch.cuda.is_available():
            record["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return record

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not trainer.is_global_zero:  # one writer: the loss is already reduced over data parallel
            return
        now = time.perf_counter()
        step_time, self._t0 = now - (self._t0 or now), now
        if self.deferred:
            self._push(trainer, outputs, step_time)
            return
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
        self._write(self._record(int(trainer.global_step), metrics.get("reduced_train_loss", metrics.get("train_loss")),
                                 metrics.get("lr"), metrics.get("grad_norm"), step_time,
                                 metrics.get("consumed_samples")))

    def _push(self, trainer, outputs, host_step_time: float) -> None:
        from trainer.megatron import sync_free_step
        from trainer.run.deferred_values import DeferredValues

        if self._values is None:
            self._values = DeferredValues()
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = int(trainer.global_step)
        meta = {"step": step, "lr": self._lr, "host_s": host_step_time,
                "consumed": float(step * self.global_batch_size)}
        self._values.push(meta, [loss if hasattr(loss, "detach") else None, sync_free_step.peek_norm()])
        self._flush(wait=False)

    def _flush(self, wait: bool) -> None:
        if self._values is None:
            return
        for meta, (loss, grad_norm), gpu_s in (self._values.drain() if wait else self._values.ready()):
            self._write(self._record(meta["step"], loss, meta["lr"], grad_norm,
                                     gpu_s if gpu_s is not None else meta["host_s"], meta["consumed"]))

    def on_validation_start(self, trainer, pl_module):
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._flush(wait=True)
            if self._values is not None:
                self._values.reset_timing()

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self._flush(wait=True)

    def on_exception(self, trainer, pl_module, exception):
        if trainer.is_global_zero:
            try:
                self._flush(wait=True)  # the last steps' losses say what went wrong
            except Exception:  # noqa: BLE001  (a broken CUDA context: keep the original error)
                pass

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


class SyncTrace(Callback):
    """``logging.sync_trace_steps``: every host-device synchronisation of steps ``start``..``end-1``,
    with its Python stack and time in the step (:mod:`trainer.run.sync_trace`), written to
    ``sync_trace_steps{start}-{end}.txt`` under ``out_dir``. Without CUDA it writes that none was seen."""

    def __init__(self, start: int, end: int, out_dir: str | Path):
        from trainer.run.sync_trace import SyncLog

        self.start, self.end, self.out_dir = start, end, Path(out_dir)
        self.syncs, self._warnings, self._active = SyncLog(), None, False

    def _show(self, message, category, filename, lineno, file=None, line=None):
        from trainer.run.sync_trace import MESSAGE, short_stack

        if MESSAGE in str(message):
            import traceback

            self.syncs.add(short_stack(traceback.extract_stack()[:-1]), time.perf_counter())
        else:
            self._old_show(message, category, filename, lineno, file, line)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not trainer.is_global_zero or not self.start <= trainer.global_step < self.end:
            return
        if not self._active:
            import warnings

            import torch

            self._warnings = warnings.catch_warnings()
            self._warnings.__enter__()  # restores the filters and showwarning when the trace ends
            warnings.filterwarnings("always", message=".*synchronizing CUDA operation")
            self._old_show, warnings.showwarning = warnings.showwarning, self._show
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("warn")
            self._active = True
        self.syncs.begin_step(trainer.global_step, time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._active and trainer.global_step >= self.end:
            self._finish()

    def on_train_end(self, trainer, pl_module):
        if self._active:  # the run ended inside the traced steps
            self._finish()

    def _finish(self) -> None:
        import torch

        from trainer.run.sync_trace import format_trace

        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode(0)
        self._warnings.__exit__(None, None, None)
        self._active = False
        lines = format_trace(self.syncs)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"sync_trace_steps{self.start}-{self.end}.txt"
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"sync trace: {lines[0]} -> {out}", flush=True)


class GradientCheck(Callback):
    """``optim.sync_free_step``: stop the run after a step whose gradient norm is NaN or infinite,
    on every rank (:func:`trainer.megatron.sync_free_step.check_norm`). The norm is read without a
    wait, a step or two late, and all pending norms are read before validation (so before any
    checkpoint) and at the end of the run."""

    def __init__(self):
        self._values = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from trainer.megatron import sync_free_step
        from trainer.run.deferred_values import DeferredValues

        if self._values is None:
            self._values = DeferredValues()
        self._values.push({"step": int(trainer.global_step)}, [sync_free_step.peek_norm()])
        self._check(wait=False)

    def _check(self, wait: bool) -> None:
        from trainer.megatron.sync_free_step import check_norm

        if self._values is None:
            return
        for meta, (norm,), _ in (self._values.drain() if wait else self._values.ready()):
            check_norm(norm, meta["step"])

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._check(wait=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._check(wait=True)

    def on_train_end(self, trainer, pl_module):
        self._check(wait=True)


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
