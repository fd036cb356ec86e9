"""The one log-likelihood primitive every measure uses.

A *scored sequence* is a list of token ids whose last ``n_scored`` tokens are
scored: their log-probabilities given everything before them are summed. The
perplexity of a document and the log-likelihood of a multiple-choice answer are
both this sum, so both go through :func:`score_sequences`.

Sequences are batched by length (longest first, so padding is small and an
out-of-memory error shows up on the first batch), right-padded with an attention
mask, and the results are returned in input order. The log-softmax is taken in
float32 whatever the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ScoredSequence:
    ids: Sequence[int]
    n_scored: int
    """How many trailing tokens are scored; the ones before are context only."""

    def __post_init__(self):
        if not 1 <= self.n_scored < len(self.ids):
            raise ValueError(
                f"n_scored={self.n_scored} must be at least 1 and leave at least one "
                f"context token in a sequence of {len(self.ids)}"
            )


def score_sequences(loaded, sequences: list[ScoredSequence], batch_size: int = 8,
                    progress: bool = True, desc: str = "scoring") -> list[float]:
    """Sum of log-probabilities (nats, <= 0) of each sequence's scored tokens."""
    import torch
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be at least 1")
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i].ids), i))
    results: list[float] = [0.0] * len(sequences)
    pad = loaded.context_token_id
    bar = tqdm(total=len(sequences), desc=desc, unit="seq", disable=not progress, leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = [sequences[i] for i in order[start: start + batch_size]]
            sums = _score_batch(loaded, chunk, pad)
            for i, value in zip(order[start: start + batch_size], sums):
                results[i] = value
            bar.update(len(chunk))
    bar.close()
    return results


def _score_batch(loaded, chunk: list[ScoredSequence], pad: int) -> list[float]:
    import torch
    import torch.nn.functional as F

    width = max(len(s.ids) for s in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, seq in enumerate(chunk):
        ids[row, : len(seq.ids)] = torch.as_tensor(list(seq.ids), dtype=torch.long)
        mask[row, : len(seq.ids)] = 1
    logits = loaded.model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device)).logits
    sums = []
    for row, seq in enumerate(chunk):
        n = len(seq.ids)
        # logits at position p predict token p + 1: the scored tokens are
        # ids[n - n_scored: n], predicted by positions n - n_scored - 1 .. n - 2.
        row_logits = logits[row, n - seq.n_scored - 1: n - 1].float()
        targets = ids[row, n - seq.n_scored: n].to(row_logits.device)
        sums.append(-float(F.cross_entropy(row_logits, targets, reduction="sum")))
    return sums
