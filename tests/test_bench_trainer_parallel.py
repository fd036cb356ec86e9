"""bench/trainer_parallel.py on the CPU: arguments, the trainer commands it would run (each a
valid config), and its verdict on runs imitated here (metrics rows and checkpoints' common.pt)."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

from trainer.run.config import load_config

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("trainer_parallel_bench", ROOT / "bench" / "trainer_parallel.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "1", "--stage", "scaling"], "needs --gpus 2 or more"),
    (["--gpus", "2", "--stage", "single"], "use --gpus 1"),
    (["--gpus", "16", "--stage", "scaling"], "must divide the global batch 32"),
    (["--modes", "lora,qlora"], "not in"),
    (["--gpus", "0"], "must be >= 1"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        bench.parse_args(["--out", "x", *argv])
    assert err.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, count", [
    (["--gpus", "1"], 1), (["--gpus", "1", "--modes", "lora,full"], 2),
    (["--gpus", "2", "--stage", "scaling"], 3), (["--gpus", "8", "--stage", "resume"], 3),
    (["--gpus", "4", "--stage", "memory"], 2), (["--gpus", "2", "--stage", "tp"], 2), (["--gpus", "8"], 10),
])
def test_every_command_it_would_run_is_a_valid_config(argv, count, capsys):
    assert bench.main(["--out", "x", "--print-commands", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == count
    for line in lines:
        words = shlex.split(line)
        assert words[:4] == ["-m", "trainer.cli", "run", "configs/qwen25_05b_ja_lora.yaml"]
        load_config(ROOT / words[3], words[4:])  # raises ValueError naming the key if a run would refuse


def test_resume_on_another_gpu_count_keeps_the_global_batch(capsys):
    bench.main(["--out", "x", "--print-commands", "--gpus", "8", "--stage", "resume"])
    cfgs = [load_config(ROOT / "configs/qwen25_05b_ja_lora.yaml", shlex.split(line)[4:])
            for line in capsys.readouterr().out.splitlines()]
    assert [c.parallel.devices for c in cfgs] == [8, 8, 4]
    assert {c.schedule.global_batch_size for c in cfgs} == {32} and {c.run_dir for c in cfgs} == {cfgs[0].run_dir}


def _fake_runs(tmp_path, monkeypatch, adam_after_resume):
    """trainer_run imitated: run 1 logs steps 1-32 and saves step 20; run 2 logs 21-40 and saves 40."""
    import torch

    calls = []

    def fake(cmd, log, metrics, timeout, kill_after):
        run_dir = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("run_dir=")))
        first = not metrics.is_file()
        steps = range(1, 33) if first else range(21, 41)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        with open(metrics, "a") as f:
            for s in steps:
                f.write(json.dumps({"step": s, "loss": 10 - s / 100 + (0 if first else 1e-4), "lr": 1e-4 * s,
                                    "step_time_s": 0.5, "tokens_per_s": 131072, "gpu_mem_gb": 10.0}) + "\n")
        step, adam = (20, 20.0) if first else (40, adam_after_resume)
        ckpt = run_dir / "run" / "v0" / "checkpoints" / f"val_loss=10.5-step={step - 1}-consumed_samples=0.0"
        (ckpt / "weights").mkdir(parents=True)
        torch.save({"global_step": step, "optimizer": [{"optimizer": {"param_groups": [{"step": adam}] * 2}}]},
                   ckpt / "weights" / "common.pt")
        log.write_text("resuming from ..." if not first else "")
        calls.append(kill_after)
        return {"returncode": -9 if first else 0, "killed": first, "seconds": 1.0, "last_step": max(steps)}

    monkeypatch.setattr(bench, "trainer_run", fake)
    return calls


def test_single_gpu_verdict_pass(tmp_path, monkeypatch, capsys):
    calls = _fake_runs(tmp_path, monkeypatch, adam_after_resume=40.0)
    rc = bench.main(["--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[-1] == "PASS single on 1 GPU(s): resume_lora ok", out
    assert calls == [30, None]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["resume_lora"]["checks"]["losses_equal"]
    assert set(summary["resume_lora"]["loss_diffs"]) == {str(s) for s in range(21, 33)}


def test_single_gpu_verdict_fails_on_a_runaway_step_count(tmp_path, monkeypatch, capsys):
    _fake_runs(tmp_path, monkeypatch, adam_after_resume=20.0 + 20 * 96)  # upstream's shared step tensor
    rc = bench.main(["--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 1 and out.splitlines()[-1].startswith("FAIL single")
    assert "failed: adam_step_equals_global_step" in out
