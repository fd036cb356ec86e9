"""Our shards, checked before NeMo sees them, and NeMo's data module built on them.

Every shard prefix must have ``PREFIX.bin``, ``PREFIX.idx`` and the ``PREFIX.json``
sidecar written by ``jpcorpus binarize``; the sidecar's tokenizer (fingerprint,
vocabulary size, end-of-document id) must equal the model's, else the run is
refused with both values shown: a shard tokenized differently trains the model on
garbage while every loss curve still looks plausible.

A ``jpcorpus binarize --pack`` shard says so in its sidecar (``packing``): its samples
are whole megatron documents, read one per sample by
:class:`trainer.megatron.gpt_datasets.PackedGPTDataset`, and attention is confined to
each document (:mod:`trainer.megatron.document_masking`). ``data.document_masking``
gives ordinary shards the same confinement, with boundaries at the end-of-document
token. docs/packing.md explains both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jpcorpus.errors import DataProblem

SIDECAR_FORMAT = "megatron-indexed-dataset"
MISMATCH = "see docs/troubleshooting.md#tokenizer-mismatch"


class ShardMismatch(DataProblem, ValueError):
    """A shard that this model must not train on (a refusal: exit status 1)."""


@dataclass(frozen=True)
class ShardInfo:
    prefix: str
    weight: float
    documents: int
    tokens: int
    tokenizer: dict
    packing: dict | None = None  # the sidecar's record of binarize --pack; None: an ordinary shard


@dataclass(frozen=True)
class SampleLayout:
    """How samples are cut and what attention may see, decided once for the whole run."""

    packed: bool  # one packed megatron document per sample (binarize --pack shards)
    document_masking: bool  # attention and position ids confined to each document


def read_shard(prefix: str, weight: float = 1.0) -> ShardInfo:
    """Check the files of one shard and read its sidecar."""
    for suffix in (".bin", ".idx", ".json"):
        if not Path(prefix + suffix).is_file():
            what = "sidecar (written by jpcorpus binarize)" if suffix == ".json" else "file"
            raise ShardMismatch(f"shard {prefix}: missing {what} {prefix}{suffix}; check the prefix or re-run "
                                "jpcorpus binarize (see docs/troubleshooting.md#missing-shard)")
    try:
        meta = json.loads(Path(prefix + ".json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardMismatch(f"shard {prefix}: sidecar {prefix}.json is not valid JSON ({exc}); re-run jpcorpus "
                            "binarize (see docs/troubleshooting.md#sidecar-mismatch)") from None
    if meta.get("format") != SIDECAR_FORMAT or meta.get("format_version") != 1:
        raise ShardMismatch(
            f"shard {prefix}: sidecar format {meta.get('format')!r} v{meta.get('format_version')}, "
            f"expected {SIDECAR_FORMAT!r} v1; re-run jpcorpus binarize (see docs/troubleshooting.md#sidecar-mismatch)"
        )
    tok = meta.get("tokenizer")
    if not isinstance(tok, dict) or not {"fingerprint", "vocab_size", "eod_id"} <= set(tok):
        raise ShardMismatch(f"shard {prefix}: sidecar has no tokenizer fingerprint/vocab_size/eod_id; re-run "
                            "jpcorpus binarize (see docs/troubleshooting.md#sidecar-mismatch)")
    packing = meta.get("packing")
    if packing is not None and not (isinstance(packing, dict) and isinstance(packing.get("seq_length"), int)):
        raise ShardMismatch(f"shard {prefix}: sidecar's 'packing' has no seq_length; re-run jpcorpus binarize --pack")
    return ShardInfo(prefix, weight, int(meta.get("documents", 0)), int(meta.get("tokens", 0)), tok, packing)


def sample_layout(shards: list[ShardInfo], seq_length: int, document_masking: bool | None) -> SampleLayout:
    """Packed or not (every shard alike, packed for ``seq_length``), and the masking.

    ``document_masking`` None (the default) means: on for packed shards, off otherwise.
    """
    packed = [s for s in shards if s.packing]
    if packed and len(packed) != len(shards):
        plain = next(s for s in shards if not s.packing)
        raise ShardMismatch(f"shard {packed[0].prefix} is packed (binarize --pack) but {plain.prefix} is not: "
                            "use packed shards for data.train and data.valid alike, or none "
                            "(see docs/troubleshooting.md#packed-shard)")
    for s in packed:
        if s.packing["seq_length"] != seq_length:
            raise ShardMismatch(f"shard {s.prefix} was packed for seq_length {s.packing['seq_length']}, but "
                                f"data.seq_length is {seq_length}: set data.seq_length={s.packing['seq_length']} "
                                f"or re-binarize with --pack {seq_length} (see docs/troubleshooting.md#packed-shard)")
    return SampleLayout(bool(packed), bool(packed) if document_masking is None else document_masking)


def tokenizer_mismatches(shard: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """What differs between the shard's tokenizer and the model's, both values shown.

    >>> tokenizer_mismatches({"fingerprint": "tokfp1:aa", "vocab_size": 151665, "eod_id": 151643},
    ...                      {"fingerprint": "tokfp1:aa", "vocab_size": 151665, "eod_id": 50256})
    ['eod_id: shard 151643, model 50256']
    """
    return [
        f"{key}: shard {shard.get(key)}, model {model.get(key)}"
        for key in ("fingerprint", "vocab_size", "eod_id")
        if shard.get(key) != model.get(key)
    ]


def check_shards(blend: list[tuple[str, float]], model_tokenizer: dict, model_vocab: int, part: str) -> list[ShardInfo]:
    """Read and check every shard of one split; raise ShardMismatch on the first bad one."""
    if not blend:
        raise ShardMismatch(f"data.{part}: no shard prefixes given")
    shards = []
    for prefix, weight in blend:
        info = read_shard(prefix, weight)
        problems = tokenizer_mismatches(info.tokenizer, model_tokenizer)
        if problems:
            raise ShardMismatch(
                f"shard {prefix} was tokenized with {info.tokenizer.get('name')!r}, not the model's tokenizer "
                f"{model_tokenizer.get('name')!r}: " + "; ".join(problems)
                + f". Re-binarize it with the model's tokenizer (jpcorpus binarize --tokenizer ...; {MISMATCH})."
            )
        if int(info.tokenizer["vocab_size"]) > model_vocab:
            raise ShardMismatch(
                f"shard {prefix}: tokenizer vocab_size {info.tokenizer['vocab_size']} exceeds the model's "
                f"embedding rows {model_vocab}; re-binarize with the model's tokenizer ({MISMATCH})"
            )
        if info.tokens == 0:
            raise ShardMismatch(f"shard {prefix}: sidecar says it holds no tokens (GPTDataset would loop forever on "
                                "it); give binarize more input or drop the shard (see "
                                "docs/troubleshooting.md#empty-split)")
        shards.append(info)
    return shards


def nemo_paths(shards: list[ShardInfo]) -> list[str]:
    """NeMo/megatron blend list: ``[weight, prefix, weight, prefix, ...]`` (or plain prefix)."""
    if len(shards) == 1:
        return [shards[0].prefix]
    return [x for s in shards for x in (str(s.weight), s.prefix)]


def build_data_module(train: list[ShardInfo], valid: list[ShardInfo], tokenizer, *, seq_length: int,
                      micro_batch_size: int, global_batch_size: int, num_workers: int, seed: int,
                      index_dir: str, causal_mask: bool, layout: SampleLayout = SampleLayout(False, False)):
    """NeMo's PreTrainingDataModule on our shards, always with the model's tokenizer.

    ``causal_mask=False`` drops the explicit s x s mask NeMo builds when
    TransformerEngine is absent: our SDPA core attention is causal by itself; with
    ``layout.document_masking`` and ``causal_mask`` that mask is megatron's dense
    per-document one (``reset_attention_mask``, for megatron's local attention).
    The datasets are :mod:`trainer.megatron.gpt_datasets`'s: end-of-document tokens
    are never taken for padding, and packed shards give one sample per document.
    """
    from nemo.collections.llm.gpt.data import PreTrainingDataModule

    from trainer.megatron.gpt_datasets import EodSafeGPTDataset, PackedGPTDataset

    if tokenizer is None:  # never let NeMo fall back to its GPT-2 tokenizer
        raise ValueError("build_data_module: a tokenizer is required")
    paths = {"train": nemo_paths(train), "validation": nemo_paths(valid), "test": nemo_paths(valid)}
    module = PreTrainingDataModule(
        paths=paths, seq_length=seq_length, tokenizer=tokenizer, micro_batch_size=micro_batch_size,
        global_batch_size=global_batch_size, num_workers=num_workers, seed=seed, split=None,
        index_mapping_dir=index_dir, persistent_workers=num_workers > 0, pin_memory=True,
        dataset_cls=PackedGPTDataset if layout.packed else EodSafeGPTDataset,
        # at each end-of-document token (and each packed document): position ids restart,
        # the prediction across the boundary is not scored
        reset_position_ids=layout.document_masking, eod_mask_loss=layout.document_masking,
        reset_attention_mask=layout.document_masking and causal_mask,
    )
    module.create_attention_mask = causal_mask
    return module


def nemo_tokenizer(hf_dir: str):
    """NeMo's AutoTokenizer on a local Hugging Face tokenizer directory (no hub)."""
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    from jpcorpus.tokenizer.regex_alarm import regex_alarm_checked

    with regex_alarm_checked(hf_dir):  # transformers 4.57's false Mistral-regex warning, checked
        return AutoTokenizer(str(hf_dir), use_fast=True)
