"""A tiny Lightning module and trainer on CPU, for the scripts that test our callbacks in a fresh
interpreter (not a test module). NeMo, imported by other tests, changes Lightning's data-fetcher
selection for the whole process, hence the fresh interpreter; a script puts ``tests/`` on its path
and imports this.

``Tiny`` is one 16x16 linear layer trained with SGD on 64 random rows, 4 a batch; subclasses
override ``training_step`` or add hooks. ``fit(module, callbacks)`` runs 6 steps with no logger,
checkpoint, progress bar or summary.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch


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


def fit(module: pl.LightningModule, callbacks: list, max_steps: int = 6) -> None:
    pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks).fit(module)
