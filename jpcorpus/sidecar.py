"""The provenance sidecar ``PREFIX.json`` written beside every ``.bin/.idx`` pair.

It records which tokenizer made the shard (name, fingerprint, vocabulary size,
end-of-document id), the counts and the sha256 of both files, the inputs with
their sizes and hashes, the tool version and the command line. The trainer
refuses shards whose tokenizer does not match the model's
(:func:`tokenizer_mismatches`); ``jpcorpus inspect-idx --verify`` checks the
counts and hashes against the files.

Keys (``schema`` 1)::

    format, format_version      "megatron-indexed-dataset", 1
    schema                      1 (this layout)
    dtype                       "int32" | "uint16"
    documents, sequences, tokens
    bin_sha256, idx_sha256, bin_bytes, idx_bytes
    tokenizer                   {name, fingerprint, vocab_size, eod_id, eod_token, files?}
    split                       "train" | "valid" | null, with valid_fraction and split_key
    shard                       0-based shard number within its split, shards: total
    inputs                      [{path, bytes, sha256}]
    skipped                     {reason: count} over the whole run
    jpcorpus_version, command, created
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jpcorpus.partial import partial_path, remove

SCHEMA = 1


def sidecar_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.json")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(prefix: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write the sidecar atomically (temporary name, then rename)."""
    path = sidecar_path(prefix)
    tmp = partial_path(path)
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        remove(tmp)
    return path


def read_sidecar(prefix: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``prefix``, or None when there is none."""
    path = sidecar_path(prefix)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid sidecar ({exc})") from None
    if not isinstance(data, dict) or "tokenizer" not in data:
        raise ValueError(f"{path}: not a jpcorpus sidecar (no 'tokenizer' entry)")
    return data


def tokenizer_mismatches(shard_tokenizer: dict[str, Any], model_tokenizer: dict[str, Any]) -> list[str]:
    """What differs between the tokenizer that made a shard and the model's.

    Both arguments are ``Tokenizer.describe()`` dictionaries (the shard's from
    its sidecar). An empty list means they match.

    >>> shard = {"name": "qwen2.5", "fingerprint": "tokfp1:aa", "vocab_size": 151665, "eod_id": 151643}
    >>> tokenizer_mismatches(shard, dict(shard, fingerprint="tokfp1:bb", eod_id=50256))
    ['fingerprint: shard tokfp1:aa, model tokfp1:bb', 'eod_id: shard 151643, model 50256']
    """
    problems = []
    for key in ("fingerprint", "vocab_size", "eod_id"):
        ours, theirs = shard_tokenizer.get(key), model_tokenizer.get(key)
        if ours != theirs:
            problems.append(f"{key}: shard {ours}, model {theirs}")
    return problems
