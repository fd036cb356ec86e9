"""trainer: NeMo 2 LoRA continual pretraining of Qwen2.5 on jpcorpus shards.

Light at import: NeMo, megatron-core and torch are imported inside the functions
that need them, so ``trainer --help`` is instant and ``jpcorpus`` never pulls NeMo.
"""

__version__ = "0.1.0"
