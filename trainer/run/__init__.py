"""One training run: config -> checked inputs -> NeMo objects -> train -> checkpoints.

``config`` (typed dataclasses), ``presets`` (model numbers), ``preflight`` (the base and every
shard checked before NeMo is imported), ``data`` (our shards against the model's tokenizer,
NeMo's data module), ``recipe`` (the NeMo objects), ``launch`` (``trainer run``),
``callbacks`` (metrics file, preflight, profile), ``checkpoints`` (resume, quarantine).

May import: ``trainer.megatron``, ``trainer.convert``, ``jpcorpus``. Not ``trainer.cli``.
"""
