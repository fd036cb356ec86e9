"""JCommonsenseQA questions/s: our scorer (shared context, KV cache) against lm-evaluation-harness.

    python bench/eval.py --questions 16                       # CPU, 2 cores
    python bench/eval.py --device cuda --questions 1000       # one NVIDIA H200

Same questions, same prompts (``--jcqa-format lm-eval``: the harness's
``ja_leaderboard_jcommonsenseqa`` 3-shot contexts, checked equal to the
harness's own in tests/test_eval_harness.py), same model, in one process:

1. ours: ``shared_prefix.score_choice_sets`` (each context once, five choice tails on its cache);
2. ours unshared: the same sequences one by one (``score_unshared``, the context five times);
3. the harness: ``HFLM.loglikelihood`` on the five ``(context, "\\n" + choice)`` requests per
   question, at ``--harness-batch`` requests per batch.

Prints questions/s of each, the ratios against the harness, and how many
predicted choices agree with the harness's (with the largest log-likelihood
difference). The model is ``--model DIR`` or, by default, a randomly initialised
model with Qwen2.5-0.5B's exact shape (24 layers, hidden 896, vocabulary
151,936; speed does not depend on the weights) with the built-in ``qwen2.5``
tokenizer, so no download is needed. Questions: ``--jcqa FILE`` (default the
JGLUE train split in ../shared/corpus when present: the first 8,000 are the
few-shot pool, questions come from the rest; else the questions written for the
tests, repeated with their choices rotated).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "corpus" / "jcommonsenseqa-v1.3_train.jsonl.gz"
"""Where the team keeps the JGLUE train split beside the checkout (never in the repository)."""
WRITTEN = ROOT / "tests" / "data" / "eval"

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, eos_token_id=151643)
"""Qwen2.5-0.5B's config.json (the published one), written out so the bench needs no download."""


def load(args):
    import torch

    from trainer.evaluate.models import LoadedModel, load_model, pick_device, pick_dtype, set_determinism

    set_determinism(0)
    if args.model:
        return load_model(args.model, args.device, args.dtype)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from jpcorpus.tokenizer import load_tokenizer

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(getattr(torch, dtype))
    return LoadedModel("random Qwen2.5-0.5B shape", model.to(device).eval(), load_tokenizer("qwen2.5").hf, device, dtype)


def questions(args):
    from trainer.evaluate.jcqa_formats import Question, read_questions

    if args.jcqa or CORPUS.is_file():
        records = list(read_questions(args.jcqa or CORPUS))
        pool, rest = records[:8000], records[8000:]
        return pool, (rest * (1 + args.questions // max(len(rest), 1)))[: args.questions], str(args.jcqa or CORPUS)
    pool = list(read_questions(WRITTEN / "jcqa_written_train.jsonl"))
    base = list(read_questions(WRITTEN / "jcqa_written_valid.jsonl"))
    out = []
    for i in range(args.questions):
        q, r = base[i % len(base)], (i // len(base)) % 5
        out.append(Question(q.question, q.choices[r:] + q.choices[:r], (q.label - r) % 5))
    return pool, out, "questions written for the tests, choices rotated"


def timed(fn):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def harness_lls(loaded, prompted, batch):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch)
    reqs = [Instance("loglikelihood", {}, (p.context, "\n" + c), i) for p in prompted for i, c in
            enumerate(p.question.choices)]
    lls, secs = timed(lambda: [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)])
    return [lls[i * 5: (i + 1) * 5] for i in range(len(prompted))], secs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hugging Face model directory (default: random weights, Qwen2.5-0.5B shape)")
    parser.add_argument("--jcqa", help="JGLUE JCommonsenseQA JSONL (first 8,000 records: few-shot pool)")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--batch-size", type=int, help="questions per batch for ours (default: trainer eval's, 8 on CPU, 128 on a GPU of 40 GiB or more)")
    parser.add_argument("--harness-batch", type=int, help="sequences per batch for the harness and ours unshared "
                        "(default 8 on CPU: 8 x 323 tokens x 151,936 float32 logits is already 1.6 GB; 160 on a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--skip-unshared", action="store_true")
    args = parser.parse_args()

    from trainer.evaluate.jcqa_formats import build
    from trainer.evaluate.report import jcqa_batch_size
    from trainer.evaluate.shared_prefix import score_choice_sets, score_unshared

    loaded = load(args)
    args.batch_size = args.batch_size or jcqa_batch_size(loaded.device)  # trainer eval's own default
    args.harness_batch = args.harness_batch or (160 if loaded.device.startswith("cuda") else 8)
    pool, qs, source = questions(args)
    prompted = build("lm-eval", loaded.tokenizer, qs, pool, 3, 2048)
    sets = [p.choice_set for p in prompted]
    tokens = sum(len(s.ids) for cs in sets for s in cs.sequences)
    print(f"{loaded.path} on {loaded.device} ({loaded.dtype}); {len(qs)} questions from {source}; "
          f"{tokens / len(qs) / 5:.0f} tokens per choice sequence")
    score_choice_sets(loaded, sets[: args.batch_size], args.batch_size, progress=False)  # warm-up
    ours, secs = timed(lambda: score_choice_sets(loaded, sets, args.batch_size, progress=False))
    rates = {"ours (shared context)": len(qs) / secs}
    if not args.skip_unshared:
        plain, secs = timed(lambda: score_unshared(loaded, sets, args.harness_batch))
        rates["ours unshared"] = len(qs) / secs
        gap = max(abs(x - y) for a, b in zip(ours, plain) for x, y in zip(a.logprobs, b))
        print(f"shared vs unshared: largest |log-likelihood difference| {gap:.2e}")
    agree = None
    try:
        lls, secs = harness_lls(loaded, prompted, args.harness_batch)
        rates["lm-evaluation-harness HFLM"] = len(qs) / secs
        pick = lambda v: max(range(len(v)), key=lambda i: (v[i], -i))  # noqa: E731
        agree = sum(pick(a.logprobs) == pick(b) for a, b in zip(ours, lls))
        diff = max(abs(x - y) for a, b in zip(ours, lls) for x, y in zip(a.logprobs, b))
    except Exception as exc:  # noqa: BLE001 - a missing or incompatible harness must not hide our figures
        print(f"harness not measured: {type(exc).__name__}: {exc} (needs lm_eval==0.4.13: "
              "pipelines/gpu_eval_wheels.txt)")
    base = rates.get("lm-evaluation-harness HFLM")
    for name, rate in rates.items():
        ratio = f"  {rate / base:5.2f}x the harness" if base else ""
        print(f"{name:28s} {rate:8.2f} questions/s{ratio}")
    if agree is not None:
        print(f"predicted choice equal to the harness's: {agree}/{len(qs)}; largest |log-likelihood difference| {diff:.2e}")
    print(json.dumps({"device": loaded.device, "dtype": loaded.dtype, "questions": len(qs), "rates": rates,
                      "agree": agree}))


if __name__ == "__main__":
    main()
