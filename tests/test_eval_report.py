"""The side-by-side table: perplexity, JCQA and harness rows share the task | metric | shots columns;
the harness's result dictionary is reshaped without losing a metric or its direction."""

from __future__ import annotations


def test_summarize_keeps_metrics_stderr_shots_and_direction():
    from trainer.evaluate.harness import summarize

    raw = {"results": {"japanese_leaderboard": {"alias": "japanese_leaderboard"},
                       "ja_leaderboard_jsquad": {"alias": "jsquad", "exact_match,whitespaces": 0.25,
                                                 "exact_match_stderr,whitespaces": 0.01},
                       "hellaswag": {"acc,none": 0.4, "acc_stderr,none": 0.005, "acc_norm,none": 0.5,
                                     "acc_norm_stderr,none": 0.005}},
           "n-shot": {"ja_leaderboard_jsquad": 2, "hellaswag": 0},
           "n-samples": {"hellaswag": {"original": 10042, "effective": 100}},
           "higher_is_better": {"hellaswag": {"acc": True, "acc_norm": True}}}
    out = summarize(raw)
    assert set(out) == {"ja_leaderboard_jsquad", "hellaswag"}  # a group without its own metrics has no row
    assert out["hellaswag"] == {"metrics": {"acc": 0.4, "acc_norm": 0.5}, "stderr": {"acc": 0.005, "acc_norm": 0.005},
                                "shots": 0, "samples": 100, "higher_is_better": {"acc": True, "acc_norm": True}}
    assert out["ja_leaderboard_jsquad"]["metrics"] == {"exact_match (whitespaces)": 0.25}
    assert out["ja_leaderboard_jsquad"]["stderr"] == {"exact_match (whitespaces)": 0.01}


def test_table_rows_for_every_measure_with_baseline_change():
    from trainer.evaluate.report import format_table

    def model(acc, em, hs):
        return {"text": {"ja": {"bits_per_char": 1.5, "perplexity": 9.0}},
                "jcqa": {"format": "swallow", "fewshot": 4, "questions": 10, "chance": 0.2, "acc": acc,
                         "acc_norm": acc, "exact_match": em},
                "harness": {"lm_eval": "0.4.13", "limit": None, "tasks": {"hellaswag": {
                    "metrics": {"acc_norm": hs}, "stderr": {}, "shots": 0, "samples": 5,
                    "higher_is_better": {"acc_norm": True}}}}}

    table = format_table({"models": {"model": model(0.5, 0.4, 0.3), "baseline": model(0.4, 0.3, 0.35)}})
    lines = table.splitlines()
    assert lines[0] == "| task | metric | shots | model | baseline | change |"
    assert "| ja held-out text | bits/char (lower is better) |  | 1.5000 | 1.5000 | +0.0000 |" in lines
    assert "| JCQA (swallow format) | exact_match (higher is better) | 4 | 0.4000 | 0.3000 | +0.1000 |" in lines
    assert "| hellaswag | acc_norm (higher is better) | 0 | 0.3000 | 0.3500 | -0.0500 |" in lines
    assert "lm-evaluation-harness 0.4.13" in table


def test_jcqa_batch_default_follows_the_device():
    """Without --batch-size: 8 questions a batch on the CPU; on CUDA the rule of jcqa_batch_size (128 from 40 GiB)."""
    import pytest

    from trainer.evaluate.report import EvalSettings, jcqa_batch_size

    assert EvalSettings().batch_size is None
    assert jcqa_batch_size("cpu") == 8
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        assert jcqa_batch_size("cuda:0") == (128 if total >= 40 * 2**30 else 32)
