"""The NeMo model class every run and checkpoint of this project uses.

Upstream (nemo-toolkit 2.7.3): subclasses ``nemo.collections.llm.gpt.model.qwen2.Qwen2Model``
and extends its ``configure_model`` with one hook: the training loss through :mod:`trainer.megatron.fused_loss` when
``fused_loss_chunk_tokens`` is set. Its Hugging Face importer is registered by
:mod:`trainer.convert.importer`. Checkpoint contexts name this class by its module path,
so moving it needs an entry in :mod:`trainer.legacy_names`.
Guard: ``tests/test_trainer_fused_loss.py`` (fails if upstream's ``configure_model`` stops
building ``self.module``).
"""

from __future__ import annotations

from nemo.collections.llm.gpt.model.qwen2 import Qwen2Model

from trainer.megatron import nemo_patches  # noqa: F401  (registers NeMo's AutoTokenizer for checkpoints)
from trainer.megatron.unwrap import mcore_module


class JaQwen2Model(Qwen2Model):
    """Qwen2Model whose ``hf`` importer is :class:`trainer.convert.importer.Qwen2LocalImporter`.

    ``fused_loss_chunk_tokens`` (set by ``trainer.run.recipe.build``; not an init argument,
    so not part of a checkpoint's context): when set, the megatron model's training
    loss goes through :mod:`trainer.megatron.fused_loss`.
    """

    fused_loss_chunk_tokens: int | None = None

    def configure_model(self, *args, **kwargs) -> None:
        fresh = not hasattr(self, "module")
        super().configure_model(*args, **kwargs)
        if fresh and self.fused_loss_chunk_tokens:
            from trainer.megatron import fused_loss

            fused_loss.install(mcore_module(self.module), self.fused_loss_chunk_tokens)
