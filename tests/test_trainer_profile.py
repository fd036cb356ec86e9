"""trainer.run.callbacks.Profile under a real Lightning trainer on CPU: the requested steps are
profiled and the summary (wall, GPU-busy, host, syncs) and operator tables are written.

The trainer runs in a fresh interpreter: NeMo, imported by other tests in the same
session, changes Lightning's data-fetcher selection for the whole process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from childproc import default_sigint

pytest.importorskip("lightning.pytorch", reason="needs the train extra")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys
    import lightning.pytorch as pl
    import torch
    from trainer.run.callbacks import Profile

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(16, 16)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(64, 16), batch_size=4)

    pl.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False,
               callbacks=[Profile(2, 5, sys.argv[1])]).fit(Tiny())
''')


def test_profile_writes_the_requested_steps(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, preexec_fn=default_sigint)
    assert result.returncode == 0, result.stderr[-3000:]
    files = list(tmp_path.glob("profile_steps*.txt"))
    assert [f.name for f in files] == ["profile_steps2-5.txt"]
    text = files[0].read_text()
    header = text.splitlines()[0]
    assert re.match(r"steps 2\.\.4: wall [0-9.]+ s/step, GPU kernels 0\.0000 s/step \(0% busy\), host [0-9.]+ s/step, "
                    r"0 host-device syncs/step waiting 0\.0 ms/step$", header), header
    assert "aten::addmm" in text or "aten::linear" in text  # the operator table of the profiled steps
    # the timeline beside it (Perfetto opens it) and the idle-gap summary read from it: no GPU, no gaps
    assert (tmp_path / "profile_steps2-5.json.gz").stat().st_size > 0
    assert "GPU idle (gaps >= 10 us, all streams): 0.0 ms/step in 0 gaps" in text
