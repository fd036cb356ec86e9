"""Checkpoint conversion between Hugging Face and NeMo, each direction parity-checked.

``importer`` (HF -> NeMo, upstream's importer with the local layer-norm names and tying),
``parity`` (both models score one fixed batch), ``export`` (NeMo -> HF directory and PEFT
adapter), ``export_nemo`` (load a NeMo checkpoint on the CPU), ``export_mapping`` (names
and fused layouts, pure torch).

May import: ``trainer.megatron``. Not ``trainer.run`` or ``trainer.cli``.
"""
