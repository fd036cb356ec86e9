"""Hugging Face Qwen2 checkpoint -> NeMo checkpoint, refused unless the losses agree.

Replaces (upstream nemo-toolkit 2.7.3) ``nemo.collections.llm.gpt.model.qwen2.HFQwen2Importer``
for :class:`trainer.megatron.model.JaQwen2Model`, with two fixes:

- upstream maps ``input_layernorm``/``post_attention_layernorm`` to the TE-fused names
  ``linear_qkv.layer_norm_weight``/``linear_fc1.layer_norm_weight``; with megatron-core's
  local layers those keys do not exist and the norms silently keep their initial values
  (HF loss 6.981 vs NeMo 6.921 on a tiny model). :class:`Qwen2LocalImporter` maps them to
  the local names;
- upstream hard-codes untied embeddings (Qwen2.5-0.5B would become ~630M parameters); here
  the checkpoint's ``tie_word_embeddings`` is kept.

Between converting the weights and saving, :func:`trainer.convert.parity.check_parity`
scores both models on a fixed batch; if the losses differ by more than 1e-3 nothing is
saved. ``tests/test_trainer_nemo.py`` fails if upstream's mapping changes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from nemo.collections.llm.gpt.model.qwen2 import HFQwen2Importer, Qwen2Config
from nemo.lightning import io

from trainer.convert.parity import ImportParityError, check_parity  # noqa: F401  (ImportParityError: raised through here)
from trainer.megatron.cpu_shims import megatron_on_cpu
from trainer.megatron.layers import local_layer_spec, sdpa_layer_spec
from trainer.megatron.model import JaQwen2Model
from trainer.megatron.nemo_patches import apply_no_te_settings

# Upstream's TE-fused targets that our importer replaces (checked by the tests).
UPSTREAM_NORM_TARGETS = {
    "model.layers.*.input_layernorm.weight": "decoder.layers.*.self_attention.linear_qkv.layer_norm_weight",
    "model.layers.*.post_attention_layernorm.weight": "decoder.layers.*.mlp.linear_fc1.layer_norm_weight",
}
LOCAL_NORM_TARGETS = {
    "model.layers.*.input_layernorm.weight": "decoder.layers.*.input_layernorm.weight",
    "model.layers.*.post_attention_layernorm.weight": "decoder.layers.*.pre_mlp_layernorm.weight",
}


@io.model_importer(JaQwen2Model, "hf")
class Qwen2LocalImporter(HFQwen2Importer):
    """HFQwen2Importer with non-TE layer-norm names and the checkpoint's embedding tying.

    ``layer_spec`` is set by :func:`import_hf` before ``apply``.
    """

    layer_spec = staticmethod(sdpa_layer_spec)
    parity_tolerance = 1e-3
    parity_losses: tuple[float, float] | None = None

    def apply(self, output_path, trust_remote_code=None):
        """Upstream's apply with the parity check between conversion and saving."""
        from nemo.lightning import teardown
        from transformers import AutoModelForCausalLM

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



def import_hf(hf_dir: str | Path, output_path: str | Path, *, attention: str = "sdpa",
              tolerance: float = 1e-3, overwrite: bool = False) -> Path:
    """Import a local HF Qwen2 directory into a NeMo checkpoint at ``output_path``."""
    from nemo.collections import llm
    from nemo.collections.llm.gpt.model.qwen2 import Qwen2Config500M

    Qwen2LocalImporter.layer_spec = staticmethod(sdpa_layer_spec if attention == "sdpa" else local_layer_spec)
    Qwen2LocalImporter.parity_tolerance = tolerance
    return Path(llm.import_ckpt(
        model=JaQwen2Model(Qwen2Config500M()), source=f"hf://{Path(hf_dir).resolve()}",
        output_path=Path(output_path), overwrite=overwrite,
    ))
