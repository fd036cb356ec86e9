"""What NeMo 2.7.3 gets wrong without TransformerEngine or with transformers 5, fixed here.

Replaces or patches (upstream nemo-toolkit 2.7.3):

1. ``nemo.collections.llm.peft.lora.te`` / ``peft.utils.HAVE_TE``: LoRA compares modules
   with ``te.Linear`` where ``te`` is a placeholder that raises on attribute access;
   :func:`patch_lora_without_te` swaps in a namespace whose classes match nothing.
2. ``nemo.lightning.io.registry``'s AutoTokenizer registration, skipped under
   transformers 5: :func:`track_nemo_auto_tokenizer` does it (at import of this module).
3. ``Qwen2Config``'s TE/apex fusions: :func:`apply_no_te_settings` turns off those whose
   kernels are absent (NEMO-NOTES).

The importer's fixes (layer-norm names, embedding tying) live in
:mod:`trainer.convert.importer`, the model class in :mod:`trainer.megatron.model`.
``tests/test_trainer_nemo.py`` fails if upstream changes under these patches.
"""

from __future__ import annotations

import types


def apply_no_te_settings(config) -> None:
    """Turn off fusions whose kernels are absent without TE/apex (NEMO-NOTES)."""
    config.masked_softmax_fusion = False
    config.gradient_accumulation_fusion = False
    config.apply_rope_fusion = False
    config.bias_activation_fusion = False
    config.bias_dropout_fusion = False
    config.persist_layer_norm = False


def track_nemo_auto_tokenizer() -> None:
    """Register NeMo's AutoTokenizer for checkpoint context serialisation (idempotent).

    ``nemo/lightning/io/registry.py`` registers it only if
    ``transformers.models.llama.tokenization_llama_fast`` imports; transformers 5
    removed that module, the registration is skipped, and saving any checkpoint fails
    with "Unserializable value <...AutoTokenizer...> at '<root>.model.tokenizer'".
    """
    from nemo.collections.common.tokenizers import AutoTokenizer
    from nemo.lightning.io.artifact import DirOrStringArtifact, FileArtifact
    from nemo.lightning.io.mixin import track_io

    try:
        track_io(AutoTokenizer, artifacts=[
            FileArtifact("vocab_file", required=False), FileArtifact("merges_file", required=False),
            DirOrStringArtifact("pretrained_model_name", required=False),
        ])
    except ValueError:  # "already been registered": upstream did it (transformers 4)
        pass


track_nemo_auto_tokenizer()


class _NeverMatched:
    """Stands in for TE classes: no module is an instance of it."""


def patch_lora_without_te() -> None:
    """Let ``llm.peft.LoRA`` run when TransformerEngine is absent (idempotent)."""
    import importlib.util

    from nemo.collections.llm.peft import lora, utils

    if importlib.util.find_spec("transformer_engine") is None:
        lora.te = types.SimpleNamespace(Linear=_NeverMatched, LayerNormLinear=_NeverMatched)
        # peft/utils.py decides HAVE_TE from megatron's TE wrapper module, which imports
        # without TE and leaves its classes None: isinstance(m, None) then fails.
        utils.HAVE_TE = False
