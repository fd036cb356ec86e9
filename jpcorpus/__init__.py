"""jpcorpus: turn raw Japanese text into training shards for a multilingual LLM.

Commands (see ``jpcorpus --help``):

- ``jpcorpus normalize``   clean, filter and deduplicate raw text into JSON Lines;
- ``jpcorpus binarize``    tokenize with the model's own tokenizer into Megatron
  ``.bin/.idx`` shards with a provenance sidecar ``.json``;
- ``jpcorpus inspect-idx`` summarise, verify and decode shards.

Heavy dependencies (sudachipy, transformers) are imported lazily, inside the
functions that need them, so ``--help`` is instant.
"""

__version__ = "0.1.0"
