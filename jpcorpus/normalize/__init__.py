"""``jpcorpus normalize``: Unicode normalization, Japanese quality filters, deduplication.

Modules: ``normalizers`` (text -> text), ``filters`` and ``web_filters``
(character level), ``morphology`` (Sudachi), ``dedup`` (exact and MinHash/LSH),
``profiles`` (which steps, which thresholds), ``pipeline`` (the runner),
``cli`` (the click command).
"""
