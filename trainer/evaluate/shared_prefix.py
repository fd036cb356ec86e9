"""Multiple-choice log-likelihoods with the shared context computed once (KV-cache reuse).

A multiple-choice question is a few token sequences (context + one choice each)
that start with the same context tokens. Scoring each sequence on its own, as
lm-evaluation-harness does, runs the few-shot context through the model once
per choice: for 3-shot JCommonsenseQA that is ~5x the work, because the context
is ~200 tokens and a choice 2-6. Here a batch of questions is scored in two
forwards:

1. the shared prefixes (right-padded, one row per question) fill a KV cache;
   no logits are computed for them;
2. the cache rows are repeated once per choice (``Cache.reorder_cache`` with an
   index, the call beam search uses), and the choice tails (right-padded, with
   explicit position ids after each row's own prefix length) run on top of it.

The prefix is the longest common prefix of a question's sequences, stopped one
token before the first scored token, so every scored position is in the tail
and the result does not depend on how a tokenizer split the context from the
choice. :func:`score_unshared` is the plain one-sequence-at-a-time computation
(``scoring.score_sequences``); the tests hold the two equal.

Each sequence also reports whether it is the greedy continuation (every scored
token is the argmax, the harness's ``is_greedy``), and each question the argmax
token after its context (the one-token greedy answer Swallow's llm-jp-eval
setting scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from trainer.evaluate.scoring import ScoredSequence, score_sequences


@dataclass(frozen=True)
class ChoiceSet:
    """One question: sequences that begin with the same context."""

    sequences: tuple[ScoredSequence, ...]

    @property
    def prefix_length(self) -> int:
        """Tokens the cache holds: the common prefix, ending before the first scored token's predictor."""
        seqs = self.sequences
        first_scored = min(len(s.ids) - s.n_scored for s in seqs)
        common = 0
        head = seqs[0].ids
        limit = min(len(s.ids) for s in seqs)
        while common < limit and all(s.ids[common] == head[common] for s in seqs):
            common += 1
        return max(min(common, first_scored) - 1, 0)


@dataclass(frozen=True)
class ChoiceScores:
    logprobs: list[float]
    """Summed log-probability (nats) of each sequence's scored tokens."""
    greedy: list[bool]
    """Each sequence's scored tokens are all the argmax of the model (harness ``is_greedy``)."""
    next_token: int
    """Argmax token id at the position that predicts the first sequence's first scored token."""


def score_choice_sets(loaded, sets: list[ChoiceSet], batch_size: int = 8, progress: bool = True,
                      desc: str = "choices") -> list[ChoiceScores]:
    """Scores of every set, prefixes computed once per question; results in input order."""
    import torch
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be at least 1")
    order = sorted(range(len(sets)), key=lambda i: (-max(len(s.ids) for s in sets[i].sequences), i))
    results: list[ChoiceScores | None] = [None] * len(sets)
    bar = tqdm(total=len(sets), desc=desc, unit="q", disable=not progress, leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            for i, scored in zip(idx, _score_chunk(loaded, [sets[i] for i in idx])):
                results[i] = scored
            bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def _score_chunk(loaded, chunk: list[ChoiceSet]) -> list[ChoiceScores]:
    prefixes = [s.prefix_length for s in chunk]
    if 0 in prefixes and any(prefixes):
        # A row of padding only would attend to nothing in the prefix forward (NaN keys
        # under some attention kernels): score sets without a shared prefix apart.
        bare = [i for i, p in enumerate(prefixes) if not p]
        rest = [i for i, p in enumerate(prefixes) if p]
        merged = dict(zip(bare, _score_chunk(loaded, [chunk[i] for i in bare])))
        merged.update(zip(rest, _score_chunk(loaded, [chunk[i] for i in rest])))
        return [merged[i] for i in range(len(chunk))]
    return _score_uniform(loaded, chunk, prefixes)


def _score_uniform(loaded, chunk: list[ChoiceSet], prefixes: list[int]) -> list[ChoiceScores]:
    import torch

    device, pad = loaded.device, loaded.context_token_id
    width = max(prefixes)
    cache, prefix_mask = None, None
    if width:
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        prefix_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (s, p) in enumerate(zip(chunk, prefixes)):
            ids[row, :p] = torch.as_tensor(list(s.sequences[0].ids[:p]), dtype=torch.long)
            prefix_mask[row, :p] = 1
        out = loaded.model(input_ids=ids.to(device), attention_mask=prefix_mask.to(device), use_cache=True,
                           logits_to_keep=1)
        cache = out.past_key_values
    rows = [(q, j) for q, s in enumerate(chunk) for j in range(len(s.sequences))]
    if cache is not None:
        _select_rows(cache, torch.tensor([q for q, _ in rows], device=device))
        prefix_mask = prefix_mask[[q for q, _ in rows]]
    tails = [chunk[q].sequences[j].ids[prefixes[q]:-1] for q, j in rows]
    tail_width = max(len(t) for t in tails)
    tail_ids = torch.full((len(rows), tail_width), pad, dtype=torch.long)
    tail_mask = torch.zeros((len(rows), tail_width), dtype=torch.long)
    positions = torch.zeros((len(rows), tail_width), dtype=torch.long)
    for r, ((q, _), tail) in enumerate(zip(rows, tails)):
        tail_ids[r, : len(tail)] = torch.as_tensor(list(tail), dtype=torch.long)
        tail_mask[r, : len(tail)] = 1
        positions[r] = prefixes[q] + torch.arange(tail_width)
    mask = tail_mask if prefix_mask is None else torch.cat([prefix_mask, tail_mask], dim=1)
    logits = loaded.model(input_ids=tail_ids.to(device), attention_mask=mask.to(device),
                          position_ids=positions.to(device), past_key_values=cache, use_cache=cache is not None).logits
    return _collect(chunk, rows, prefixes, logits)


def _collect(chunk, rows, prefixes, logits) -> list[ChoiceScores]:
    import torch

    per_q: list[dict] = [{"lp": [], "greedy": [], "next": None} for _ in chunk]
    for r, (q, j) in enumerate(rows):
        seq = chunk[q].sequences[j]
        n, p = len(seq.ids), prefixes[q]
        # tail position k holds absolute position p + k, which predicts token p + k + 1.
        first = n - seq.n_scored - 1 - p
        row_logits = logits[r, first: first + seq.n_scored].float()
        logp = torch.log_softmax(row_logits, dim=-1)
        targets = torch.as_tensor(list(seq.ids[n - seq.n_scored:]), dtype=torch.long, device=logp.device)
        per_q[q]["lp"].append(float(logp.gather(1, targets[:, None]).sum()))
        argmax = row_logits.argmax(dim=-1)
        per_q[q]["greedy"].append(bool((argmax == targets).all()))
        if j == 0:
            per_q[q]["next"] = int(argmax[0])
    return [ChoiceScores(d["lp"], d["greedy"], d["next"]) for d in per_q]


def _select_rows(cache, index) -> None:
    """Rows ``index`` of the batch dimension of a transformers KV cache, in place."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(index)
        return
    for layer in getattr(cache, "layers", []):  # pragma: no cover - cache classes without reorder_cache
        layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)


def score_unshared(loaded, sets: Sequence[ChoiceSet], batch_size: int = 8, progress: bool = False) -> list[list[float]]:
    """The reference: every sequence on its own through ``score_sequences`` (the context recomputed per choice)."""
    flat = [s for cs in sets for s in cs.sequences]
    sums = score_sequences(loaded, flat, batch_size, progress, desc="choices (unshared)")
    out, at = [], 0
    for cs in sets:
        out.append(sums[at: at + len(cs.sequences)])
        at += len(cs.sequences)
    return out
