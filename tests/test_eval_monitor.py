"""trainer monitor: the recorded metrics file, each detector, a file being written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from click.testing import CliRunner

FIXTURE = Path(__file__).parent / "data" / "eval" / "metrics.jsonl"


def write_run(tmp_path, records, tail: str = "") -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return run


def kinds(summary) -> list[tuple[str, int, int]]:
    return [(a["kind"], a["step"], a["last_step"]) for a in summary["anomalies"]]


def test_recorded_run_plots_and_flags(tmp_path):
    from trainer.cli.evaluate import monitor

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(FIXTURE, run / "metrics.jsonl")
    result = CliRunner().invoke(monitor, [str(run), "--strict"])
    assert result.exit_code == 1, result.output  # NaN at step 75 is an error
    summary = json.loads((run / "monitor" / "summary.json").read_text())
    assert summary["records"] == 120 and summary["partial_last_line"] is True
    assert kinds(summary) == [("loss_spike", 60, 60), ("non_finite", 75, 75), ("non_finite", 75, 75),
                              ("throughput_collapse", 100, 108)]
    assert summary["metrics"]["val_loss"]["count"] == 6 and summary["metrics"]["val_loss"]["last"] == 2.411
    assert summary["status"] == "error"
    for name in ("loss.png", "lr.png", "grad_norm.png", "throughput.png", "memory.png"):
        data = (run / "monitor" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert "last line still being written" in result.output


def test_healthy_run_is_ok_and_partial_line_is_tolerated(tmp_path):
    from trainer.evaluate.monitor import monitor

    records = [{"step": s, "loss": 3.0 - s * 0.005, "lr": 1e-4 * min(1, s / 10), "tokens_per_s": 5e4}
               for s in range(1, 60)]
    run = write_run(tmp_path, records, tail='{"step": 60, "lo')
    summary = monitor(run, plots=False)
    assert summary["status"] == "ok" and summary["anomalies"] == []
    assert summary["last_step"] == 59 and summary["partial_last_line"]
    # The writer finishes the line: the next read sees it.
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('ss": 2.7, "lr": 1e-4}\n')
    assert monitor(run, plots=False)["last_step"] == 60


def test_random_weights_loss_near_ln_vocab(tmp_path):
    from trainer.evaluate.anomalies import Thresholds
    from trainer.evaluate.monitor import monitor

    records = [{"step": s, "loss": math.log(151665) - 0.01 * (s % 3), "lr": 1e-4} for s in range(1, 40)]
    summary = monitor(write_run(tmp_path, records), plots=False)
    assert [k for k, *_ in kinds(summary)] == ["loss_near_uniform", "loss_near_uniform"]
    # With a far larger vocabulary the same losses are far below ln(vocab): no flag.
    assert monitor(tmp_path / "run", t=Thresholds(vocab_size=10**9), plots=False)["anomalies"] == []


def test_learning_rate_zero_and_stalled(tmp_path):
    from trainer.evaluate.anomalies import Thresholds, detect
    from trainer.evaluate.metrics_log import read_metrics

    t = Thresholds(stall_steps=50)
    zero = [{"step": s, "loss": 2.5, "lr": 0.0} for s in range(0, 120)]
    (tmp_path / "a").mkdir()
    assert [a.kind for a in detect(read_metrics(write_run(tmp_path / "a", zero)), t)] == ["lr_zero"]
    frozen = [{"step": s, "loss": 2.5, "lr": 1e-4 * min(1, s / 20) if s < 40 else 1e-4} for s in range(1, 120)]
    (tmp_path / "b").mkdir()
    found = detect(read_metrics(write_run(tmp_path / "b", frozen)), t)
    assert [(a.kind, a.step, a.last_step) for a in found] == [("lr_stalled", 20, 119)]
    constant = [{"step": s, "loss": 2.5, "lr": 1e-4} for s in range(1, 200)]
    (tmp_path / "c").mkdir()
    assert detect(read_metrics(write_run(tmp_path / "c", constant)), t) == []  # a constant schedule is fine


def test_aliases_merging_and_bad_lines(tmp_path):
    from trainer.evaluate.metrics_log import read_metrics

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 3.0, "step_time": 0.5, "gpu_mem_gib": 40}\n'
        'not json\n'
        '{"step": 1, "val_loss": 3.2}\n'
        '{"step": 2, "loss": "NaN"}\n', encoding="utf-8")
    log = read_metrics(run)
    assert log.steps == [1, 2] and log.bad_lines == [2]
    assert log.series["val_loss"] == [3.2, None] and log.series["step_time_s"] == [0.5, None]
    assert log.series["gpu_mem_gb"][0] == 40.0 and math.isnan(log.series["loss"][1])


def test_missing_metrics_file_is_a_clear_error(tmp_path):
    from trainer.cli.evaluate import monitor

    result = CliRunner().invoke(monitor, [str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "no metrics file" in result.stderr
