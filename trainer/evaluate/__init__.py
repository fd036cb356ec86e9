"""Evaluation, monitoring and environment checks: ``trainer eval``, ``generate``,
``monitor`` and ``check-env``.

Evaluation runs on Hugging Face checkpoint directories with transformers (CPU or
GPU), never NeMo. Each module holds one measure; ``cli.py`` holds the thin click
commands. torch, transformers and matplotlib are imported inside functions.
"""
