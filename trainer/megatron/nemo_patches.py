"""What NeMo 2.7.3 / megatron-core 0.15.3 get wrong without TransformerEngine, fixed here.

Each fix is a subclass or a narrowly scoped attribute swap, documented with the
upstream behaviour it corrects; ``tests/test_trainer_nemo_patches.py`` fails if
upstream changes under it (so the fix can be dropped or re-checked).

1. ``HFQwen2Importer`` maps ``input_layernorm``/``post_attention_layernorm`` to the
   TE-fused names ``linear_qkv.layer_norm_weight``/``linear_fc1.layer_norm_weight``.
   With megatron-core's local layers those keys do not exist, the norms silently
   keep their initial ones (HF loss 6.981 vs NeMo 6.921 on a tiny model). It also
   hard-codes untied embeddings, so Qwen2.5-0.5B becomes ~630M parameters.
   :class:`Qwen2LocalImporter` (registered for :class:`JaQwen2Model`) maps them
   to the local names and keeps the checkpoint's ``tie_word_embeddings``.
2. ``nemo.collections.llm.peft.lora`` compares modules with ``te.Linear`` where ``te``
   is a placeholder that raises on attribute access: :func:`patch_lora_without_te`
   swaps in a namespace whose classes match nothing.
3. megatron-core's local ``DotProductAttention`` materialises the s x s scores:
   ``trainer/layers.py`` has :class:`SDPACoreAttention` and :func:`sdpa_layer_spec`
   (re-exported here, where older checkpoint contexts look for them).
4. With transformers 5 NeMo never registers its AutoTokenizer for checkpoint
   serialisation: :func:`track_nemo_auto_tokenizer` does (at import of this module).
"""

from __future__ import annotations

import types

import torch
from nemo.collections.llm.gpt.model.qwen2 import HFQwen2Importer, Qwen2Config, Qwen2Model
from nemo.lightning import io

# Checkpoint contexts written before trainer/layers.py existed name these by this module.
from trainer.layers import SDPACoreAttention, local_layer_spec, sdpa_layer_spec  # noqa: F401

# Upstream's TE-fused targets that our importer replaces (checked by the tests).
UPSTREAM_NORM_TARGETS = {
    "model.layers.*.input_layernorm.weight": "decoder.layers.*.self_attention.linear_qkv.layer_norm_weight",
    "model.layers.*.post_attention_layernorm.weight": "decoder.layers.*.mlp.linear_fc1.layer_norm_weight",
}
LOCAL_NORM_TARGETS = {
    "model.layers.*.input_layernorm.weight": "decoder.layers.*.input_layernorm.weight",
    "model.layers.*.post_attention_layernorm.weight": "decoder.layers.*.pre_mlp_layernorm.weight",
}


class JaQwen2Model(Qwen2Model):
    """Qwen2Model whose ``hf`` importer is :class:`Qwen2LocalImporter`.

    ``fused_loss_chunk_tokens`` (set by ``trainer.recipe.build``; not an init argument,
    so not part of a checkpoint's context): when set, the megatron model's training
    loss goes through :mod:`trainer.fused_loss`.
    """

    fused_loss_chunk_tokens: int | None = None

    def configure_model(self, *args, **kwargs) -> None:
        fresh = not hasattr(self, "module")
        super().configure_model(*args, **kwargs)
        if fresh and self.fused_loss_chunk_tokens:
            from trainer import fused_loss
            from trainer.importer import _mcore_module

            fused_loss.install(_mcore_module(self.module), self.fused_loss_chunk_tokens)


@io.model_importer(JaQwen2Model, "hf")
class Qwen2LocalImporter(HFQwen2Importer):
    """HFQwen2Importer with non-TE layer-norm names and the checkpoint's embedding tying.

    ``layer_spec`` is set by :func:`trainer.importer.import_hf` before ``apply``.
    """

    layer_spec = staticmethod(sdpa_layer_spec)
    parity_tolerance = 1e-3
    parity_losses: tuple[float, float] | None = None

    def apply(self, output_path, trust_remote_code=None):
        """Upstream's apply with the parity check between conversion and saving."""
        from nemo.lightning import teardown
        from transformers import AutoModelForCausalLM

        from trainer.cpu_shims import megatron_on_cpu
        from trainer.importer import check_parity

        self.trust_remote_code = trust_remote_code
        source = AutoModelForCausalLM.from_pretrained(str(self), dtype=torch.float32)
        target = self.init()
        trainer = self.nemo_setup(target, ckpt_async_save=False)  # async save needs CUDA
        self.convert_state(source, target)
        type(self).parity_losses = check_parity(source, target, self.parity_tolerance)
        if torch.cuda.is_available():
            self.nemo_save(output_path, trainer)
        else:
            with megatron_on_cpu():  # the writer calls torch.cuda.synchronize()
                self.nemo_save(output_path, trainer)
        teardown(trainer, target)
        return output_path

    def init(self) -> JaQwen2Model:
        return JaQwen2Model(self.config, tokenizer=self.tokenizer)

    def convert_state(self, source, target):
        tied = target.config.share_embeddings_and_output_weights
        original = io.apply_transforms

        def apply_transforms(src, tgt, mapping, transforms=(), **kwargs):
            mapping = {k: LOCAL_NORM_TARGETS.get(k, v) for k, v in mapping.items()}
            if tied:
                mapping.pop("lm_head.weight", None)
            return original(src, tgt, mapping=mapping, transforms=transforms, **kwargs)

        io.apply_transforms = apply_transforms  # scoped to the upstream call below
        try:
            return super().convert_state(source, target)
        finally:
            io.apply_transforms = original

    @property
    def config(self) -> Qwen2Config:
        """Built here rather than by upstream: keeps ``tie_word_embeddings`` and reads
        the HF config's dtype under either name (transformers 4 ``torch_dtype``, 5 ``dtype``)."""
        from transformers import AutoConfig, GenerationConfig

        hf = AutoConfig.from_pretrained(str(self))
        try:
            generation_config = GenerationConfig.from_pretrained(str(self))
        except OSError:
            generation_config = None
        config = Qwen2Config(
            num_layers=hf.num_hidden_layers, hidden_size=hf.hidden_size, ffn_hidden_size=hf.intermediate_size,
            num_attention_heads=hf.num_attention_heads, num_query_groups=hf.num_key_value_heads,
            init_method_std=hf.initializer_range, layernorm_epsilon=hf.rms_norm_eps, gated_linear_unit=True,
            make_vocab_size_divisible_by=128, rotary_base=getattr(hf, "rope_theta", 1_000_000.0),
            share_embeddings_and_output_weights=bool(getattr(hf, "tie_word_embeddings", False)),
            vocab_size=hf.vocab_size, seq_length=hf.max_position_embeddings,
            # float32 throughout: the local layer norms are created in float32 whatever
            # params_dtype says, and NeMo's apply_transforms refuses a dtype change.
            params_dtype=torch.float32, bf16=False, fp16=False,
            generation_config=generation_config, transformer_layer_spec=type(self).layer_spec,
        )
        apply_no_te_settings(config)
        return config


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
