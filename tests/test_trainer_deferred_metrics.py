"""``optim.sync_free_step``'s logging under a real Lightning trainer on CPU: ``MetricsFile(deferred=True)``
writes the same steps, losses, learning rates and sample counts as the ordinary path without reading
``trainer.callback_metrics``, with the gradient norm of :mod:`trainer.megatron.sync_free_step`; and
``GradientCheck`` stops the run at the step whose norm is NaN. (The GPU path, pinned copies and CUDA
events, runs in the benchmark of record; on a CPU the values are read at once.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from childproc import default_sigint

pytest.importorskip("lightning.pytorch", reason="needs the train extra")
pytest.importorskip("nemo.lightning", reason="needs the train extra")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, "tests")
    import torch
    from lightning_tiny import Tiny, fit
    from trainer.megatron import sync_free_step
    from trainer.run.callbacks import GradientCheck, MetricsFile

    mode, out, nan_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Logs(Tiny):
        def __init__(self):
            torch.manual_seed(0)
            super().__init__()

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("reduced_train_loss", loss.detach(), prog_bar=True)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log("consumed_samples", float((self.trainer.global_step + 1) * 4))
            norm = float("nan") if batch_idx == nan_at else 0.5 + batch_idx
            self.log("grad_norm", norm)
            sync_free_step._last_norm[:] = [torch.tensor(norm, dtype=torch.float64)]
            return loss

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(64, 16, generator=torch.Generator().manual_seed(1)),
                                               batch_size=4)

    callbacks = [MetricsFile(out, seq_length=1, global_batch_size=4, deferred=mode == "deferred")]
    if mode == "deferred":
        callbacks.append(GradientCheck())
    try:
        fit(Logs(), callbacks)
    except sync_free_step.NonFiniteGradient as exc:
        print("STOPPED:", exc)
        sys.exit(5)
''')


def _run(mode: str, out: Path, nan_at: int = -1):
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, str(out), str(nan_at)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, preexec_fn=default_sigint)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deferred_metrics_equal_the_ordinary_ones(tmp_path):
    plain, deferred = _run("plain", tmp_path / "plain.jsonl"), _run("deferred", tmp_path / "deferred.jsonl")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert deferred.returncode == 0, deferred.stderr[-3000:]
    a, b = _rows(tmp_path / "plain.jsonl"), _rows(tmp_path / "deferred.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "consumed_samples"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-6), key
    assert [r["grad_norm"] for r in b] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert all(r["step_time_s"] >= 0 for r in b)


def test_a_nan_gradient_norm_stops_the_run_at_its_step(tmp_path):
    result = _run("deferred", tmp_path / "m.jsonl", nan_at=2)
    assert result.returncode == 5, result.stderr[-3000:]
    assert "STOPPED: step 3: the gradient norm is nan" in result.stdout
    rows = _rows(tmp_path / "m.jsonl")
    assert rows[-1]["step"] == 3 and rows[-1]["grad_norm"] != rows[-1]["grad_norm"]  # NaN, written before the stop


def test_docstring_examples():
    import doctest

    from trainer.run import deferred_values

    assert doctest.testmod(deferred_values).failed == 0
