"""Evaluation, monitoring and environment checks behind ``trainer eval``, ``generate``,
``monitor`` and ``check-env``.

Evaluation runs on Hugging Face checkpoint directories with transformers (CPU or
GPU), never NeMo. Each module holds one measure; the click commands live in
``trainer/cli/evaluate.py``. torch, transformers and matplotlib are imported inside
functions.

May import: nothing else from ``trainer`` (``jpcorpus`` for shards and tokenizers).
"""
