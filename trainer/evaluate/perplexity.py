"""Perplexity and bits per character on held-out text (JSONL or ``.bin/.idx`` shards).

Every token of a document is scored once: the document is preceded by the
end-of-text token (as in packed pretraining sequences, and because Qwen2.5 has
no BOS token), then cut into windows of ``max_length`` scored tokens; window
*k* sees only its own tokens plus the last token of window *k-1* as context
(non-overlapping windows; a sliding window would give a slightly lower
perplexity at several times the cost). The end-of-document token itself is not
scored: the measure is about the text.

- ``perplexity = exp(total NLL / scored tokens)``: depends on the tokenizer,
  comparable only between models that share one (base vs adapted Qwen2.5).
- ``bits_per_char = total NLL / ln 2 / characters``: the same text costs the
  same number of characters under any tokenizer, so this one is comparable
  across tokenizers (and across languages only loosely: a kanji carries more
  than a letter).

Characters are Unicode code points of the text as given (JSONL) or as decoded
from the shard with the tokenizer named in its sidecar.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

from trainer.evaluate.scoring import ScoredSequence, score_sequences

DOCS_PER_CHUNK = 512
"""Documents scored together: bounds memory; batches are sorted by length within a chunk."""


@dataclass(frozen=True)
class HeldoutDoc:
    ids: list[int]
    """Token ids of the text, without any end-of-document token."""
    chars: int
    context_id: int
    """The token placed before the document (end-of-text)."""


@dataclass
class PerplexityResult:
    source: str
    documents: int
    tokens: int
    chars: int
    nll: float
    """Summed negative log-likelihood in nats."""
    decoded_with: str

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_char(self) -> float:
        return self.nll / math.log(2) / self.chars if self.chars else float("nan")

    @property
    def bits_per_token(self) -> float:
        return self.nll / math.log(2) / self.tokens if self.tokens else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "perplexity": self.perplexity, "bits_per_char": self.bits_per_char,
                "bits_per_token": self.bits_per_token}


def is_shard(path: str | os.PathLike) -> bool:
    """A shard is given by its prefix, or by its ``.bin``/``.idx`` path."""
    p = Path(path)
    return p.suffix in (".bin", ".idx") or Path(f"{p}.idx").is_file()


def _shard_prefix(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".bin", ".idx") else p


def iter_jsonl_docs(path, loaded, text_key: str = "text") -> Iterator[HeldoutDoc]:
    """Documents of a JSONL file (``.gz``/``.zst`` too), tokenized with the model's tokenizer."""
    from jpcorpus.readers import iter_documents

    for doc in iter_documents([Path(path)], text_key=text_key):
        ids = loaded.tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        yield HeldoutDoc(list(ids), len(doc.text), loaded.context_token_id)


def shard_decoder(prefix, loaded) -> tuple[object, int | None, str]:
    """``(decode, eod_id, name)`` for a shard: the sidecar's tokenizer when
    ``jpcorpus.tokenizer`` can load it offline, else the model's own tokenizer."""
    from jpcorpus.sidecar import read_sidecar

    sidecar = read_sidecar(prefix) or {}
    info = sidecar.get("tokenizer", {})
    name, eod = info.get("name"), info.get("eod_id")
    if name:
        try:
            from jpcorpus.tokenizer import load_tokenizer

            tok = load_tokenizer(name, eod_token=info.get("eod_token"))
            return tok.decode, eod if eod is not None else tok.eod_id, f"jpcorpus:{name}"
        except Exception:  # unknown name, module absent: the model's tokenizer is the fallback
            pass
    decode = lambda ids: loaded.tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    return decode, eod, f"model:{loaded.path}"


def iter_shard_docs(prefix, loaded, decode, eod_id: int | None) -> Iterator[HeldoutDoc]:
    """Documents of a shard; the end-of-document token (sidecar's ``eod_id``) is stripped.

    The ``.bin``/``.idx`` pair gets ``inspect-idx --verify``'s structural checks first (as in
    ``trainer run``), so a truncated or damaged shard is a clear refusal (exit 1), not numpy's
    error or a held-out loss over garbage; the sidecar is optional here (only the decoder
    comes from it).
    """
    from jpcorpus.errors import DataProblem
    from jpcorpus.indexed_dataset import IndexedDataset
    from jpcorpus.verify import verify_structure

    problems = verify_structure(prefix, sidecar=None)
    if problems:  # exit 1, as trainer run's refusal of the same shard
        raise DataProblem("\n".join(str(p) for p in problems))
    ds = IndexedDataset(prefix)
    vocab = loaded.model.get_input_embeddings().num_embeddings
    for i in range(ds.documents):
        ids = [int(t) for t in ds.document(i)]
        if not ids:
            continue
        eod = ids[-1] if eod_id is None else eod_id
        if ids[-1] == eod:
            ids = ids[:-1]
        if ids and max(ids) >= vocab:
            raise ValueError(f"{prefix}: document {i} has token id {max(ids)} but the model has "
                             f"{vocab} embeddings: the shard was made with another tokenizer")
        if ids:
            yield HeldoutDoc(ids, len(decode(ids)), int(eod))


def windows(doc: HeldoutDoc, max_length: int) -> list[ScoredSequence]:
    """Cut ``[context] + ids`` so that every id is scored exactly once.

    >>> [(list(w.ids), w.n_scored) for w in windows(HeldoutDoc([5, 6, 7, 8, 9], 5, 0), 2)]
    [([0, 5, 6], 2), ([6, 7, 8], 2), ([8, 9], 1)]
    """
    full = [doc.context_id, *doc.ids]
    out = []
    for start in range(0, len(doc.ids), max_length):
        piece = full[start: start + max_length + 1]
        out.append(ScoredSequence(piece, len(piece) - 1))
    return out


def evaluate_perplexity(loaded, source: str, *, max_docs: int | None = None, max_length: int = 1024,
                        batch_size: int = 8, text_key: str = "text", progress: bool = True) -> PerplexityResult:
    """Perplexity and bits per character of ``loaded`` on the held-out ``source``."""
    if max_length < 1:
        raise ValueError(f"--max-length {max_length} must be at least 1")
    if is_shard(source):
        prefix = _shard_prefix(source)
        decode, eod, decoded_with = shard_decoder(prefix, loaded)
        docs = iter_shard_docs(prefix, loaded, decode, eod)
    else:
        docs, decoded_with = iter_jsonl_docs(source, loaded, text_key), "text"
    result = PerplexityResult(str(source), 0, 0, 0, 0.0, decoded_with)
    docs = islice(docs, max_docs)
    while chunk := list(islice(docs, DOCS_PER_CHUNK)):  # memory stays flat on a large held-out shard
        seqs = [w for d in chunk for w in windows(d, max_length)]
        logprobs = score_sequences(loaded, seqs, batch_size, progress,
                                   desc=f"perplexity {Path(source).name} docs {result.documents}+")
        result.documents += len(chunk)
        result.tokens += sum(len(d.ids) for d in chunk)
        result.chars += sum(d.chars for d in chunk)
        result.nll -= sum(logprobs)
    if not result.documents:
        raise ValueError(f"{source}: no documents to evaluate")
    return result
