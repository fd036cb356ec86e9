"""trainer.run.callbacks.SyncTrace under a real Lightning trainer on CPU.

A CPU has no host-device synchronisation, so the tiny module raises torch's own warning text
itself, once per step inside its training step and once in a hook of its own: the trace must
count exactly the warnings of the traced steps (2..4), name the frames that raised them,
order them as they happen in a step, and let every other warning through unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from childproc import default_sigint

pytest.importorskip("lightning.pytorch", reason="needs the train extra")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys, warnings
    sys.path.insert(0, "tests")
    from lightning_tiny import Tiny, fit
    from trainer.run.callbacks import SyncTrace

    SYNC = "called a synchronizing CUDA operation"

    class Warns(Tiny):
        def training_step(self, batch, batch_idx):
            for _ in range(2):
                warnings.warn(SYNC)
            return super().training_step(batch, batch_idx)

        def on_before_optimizer_step(self, optimizer):
            warnings.warn(SYNC)
            warnings.warn("an unrelated warning", UserWarning)

    fit(Warns(), [SyncTrace(2, 5, sys.argv[1])])
''')


def test_sync_trace_counts_the_traced_steps_and_names_the_sites(tmp_path):
    result = subprocess.run([sys.executable, "-W", "default", "-c", SCRIPT, str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, preexec_fn=default_sigint)
    assert result.returncode == 0, result.stderr[-3000:]
    files = list(tmp_path.glob("sync_trace_steps*.txt"))
    assert [f.name for f in files] == ["sync_trace_steps2-5.txt"]
    lines = files[0].read_text().splitlines()
    assert lines[0].startswith("steps 2..4: 3 host-device syncs a step, the first at "), lines[0]
    rows = [line for line in lines if line[:4].strip().isdigit()]
    assert len(rows) == 2, lines  # two sites: the training step's line (twice a step) and the hook's
    per_step = [float(r.split("|")[1]) for r in rows]
    sites = [r.split("|")[3].strip() for r in rows]
    assert per_step == [2.0, 1.0], rows
    assert sites[0].startswith("<string>:") and sites[0].endswith(" training_step"), sites
    assert sites[1].endswith(" on_before_optimizer_step"), sites
    assert "<-" in "\n".join(lines)  # the callers of each site are listed under it
    assert "an unrelated warning" in result.stderr  # other warnings still reach the user
    assert "synchronizing CUDA operation" in result.stderr  # ... and so do the untraced steps' sync warnings
    assert "sync trace: steps 2..4" in result.stdout


def test_docstring_examples():
    import doctest

    from trainer.run import sync_trace

    assert doctest.testmod(sync_trace).failed == 0
