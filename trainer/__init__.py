"""trainer: NeMo 2 LoRA continual pretraining of Qwen2.5 on jpcorpus shards.

Subpackages, by concern; imports run one way, top to bottom (``tests/test_trainer_layout.py``):

- ``cli/``       the ``trainer`` command: thin click layers over ``run``, ``convert``, ``evaluate``
- ``run/``       one training run: config, presets, recipe, launch, data, callbacks, checkpoints
- ``convert/``   checkpoint conversion: Hugging Face import with parity check, export, mapping
- ``megatron/``  plug-ins for NeMo 2.7.3 / megatron-core 0.15.3 without TransformerEngine:
                 layer spec and core attention, fused loss, lean LoRA, gradient norm, CUDA graphs,
                 NeMo patches (each names the upstream symbol it replaces and its guard test)
- ``evaluate/``  evaluation on Hugging Face models: perplexity, JCommonsenseQA, generation, monitor,
                 check-env (no NeMo)

Light at import: NeMo, megatron-core and torch are imported inside the functions
that need them, so ``trainer --help`` is instant and ``jpcorpus`` never pulls NeMo.
Saved checkpoints name the old flat module paths; :mod:`trainer.legacy_names` keeps
them importable.
"""

from trainer import legacy_names as _legacy_names

__version__ = "0.1.0"

_legacy_names.install()
