"""bench/trainer_speed.py --stage speed, the parts that need no GPU: every variant is a valid
config, peer rows parse and group by framework, workers take the GPU one at a time in
priority order (real subprocesses), and the report computes the ratios and verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from childproc import default_sigint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_turns  # noqa: E402
import peer_rows  # noqa: E402
import rows_file  # noqa: E402
import speed_stage  # noqa: E402
import trainer_speed  # noqa: E402


@pytest.mark.parametrize("name", sorted(trainer_speed.VARIANTS))
def test_every_variant_is_a_valid_config(name):
    from trainer.run.config import load_config

    cfg = load_config(trainer_speed.CONFIG, trainer_speed.run_overrides(
        "out/x", "/tmp/r", 16, 16, trainer_speed.VARIANTS[name]))
    assert cfg.schedule.max_steps == 16 and cfg.model.from_scratch


def test_default_speed_variants_exist():
    assert set(trainer_speed.SPEED_VARIANTS.split(",")) <= set(trainer_speed.VARIANTS)


def test_a_repeated_variant_runs_the_same_overrides_and_a_typo_is_refused():
    assert trainer_speed.variant_overrides("full-fast-mb8@2") == trainer_speed.VARIANTS["full-fast-mb8"]
    for bad in ("full-fast-mb9", "full-fast-mb8@x"):
        with pytest.raises(KeyError, match="unknown variant"):
            trainer_speed.variant_overrides(bad)


def test_peer_rows_parse_and_group():
    assert [peer_rows.parse_row(r)["micro_batch"] for r in speed_stage.PEER_ROWS.split(",")] == [8, 16, 8, 8, 8, 8]
    with pytest.raises(ValueError, match="expected FRAMEWORK-lora"):
        peer_rows.parse_row("deepspeed-lora-mb8")
    names = [n for n, _ in speed_stage.peer_groups(speed_stage.PEER_ROWS.split(","))]
    assert names == ["peer-hf", "peer-liger", "peer-unsloth-lora-mb8", "peer-unsloth-lora-mb8-offload",
                     "peer-unsloth-full-mb8"]


WORKER = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from gpu_turns import wait_turn
    name, turn_dir, log, ready_after, hold = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
    time.sleep(ready_after)          # "importing"
    wait_turn(turn_dir, name, poll_s=0.02)
    with open(log, "a") as f:
        f.write(f"{name} start {time.time()}\\n")
    time.sleep(hold)                 # "on the GPU"
    with open(log, "a") as f:
        f.write(f"{name} end {time.time()}\\n")
''')


def test_workers_take_the_gpu_one_at_a_time_in_priority_order(tmp_path):
    log, turn_dir = tmp_path / "log", tmp_path / "turns"
    # nemo is ready last but has priority once ready; a peer goes first while it "imports"
    ready = {"nemo": (1.5, 0.2), "peer-a": (0.0, 3.0), "peer-b": (1.0, 0.2)}
    procs = {n: subprocess.Popen([sys.executable, "-c", WORKER, str(ROOT / "bench"), n, str(turn_dir), str(log),
                                  str(t), str(hold)], preexec_fn=default_sigint) for n, (t, hold) in ready.items()}
    turns = gpu_turns.Turns(turn_dir, ["nemo", "peer-a", "peer-b"])
    deadline = time.time() + 30
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        turns.step({n for n, p in procs.items() if p.poll() is None})
        time.sleep(0.02)
    events = [line.split() for line in log.read_text().splitlines()]
    starts = [e[0] for e in events if e[1] == "start"]
    assert starts == ["peer-a", "nemo", "peer-b"]
    for (n1, k1, _), (n2, k2, _) in zip(events[::2], events[1::2]):  # never two on the GPU at once
        assert (n1, k1) == (n2, "start") or (n1 == n2 and k1 == "start" and k2 == "end")


def test_report_ratios_goals_and_low_memory_verdict(tmp_path, capsys):
    rows = [
        {"row": "liger-lora-mb16", "kind": "peer", "full": False, "s_per_step": 0.52, "peak_gib": 34.6, "loss_last": 11.3},
        {"row": "unsloth-lora-mb8", "kind": "peer", "full": False, "s_per_step": 0.50, "peak_gib": 16.8, "loss_last": 11.3},
        {"row": "fast-mb8-c2048", "kind": "ours", "full": False, "s_per_step": 0.333, "peak_gib": 14.0, "loss_last": 11.1},
        {"row": "fast-mb16", "kind": "ours", "full": False, "s_per_step": 0.30, "peak_gib": 30.0, "loss_last": 11.1},
        {"row": "lowmem-mb2-c1024", "kind": "ours", "full": False, "s_per_step": 0.47, "peak_gib": 3.5},
        {"row": "liger-full-mb8", "kind": "peer", "full": True, "s_per_step": 0.70, "peak_gib": 40.0},
        {"row": "full-fast-mb4", "kind": "ours", "full": True, "s_per_step": 0.60, "peak_gib": 20.0},
        {"row": "fast-compiled-mb8-c2048", "kind": "ours", "error": "RuntimeError: boom"},
    ]
    verdict = speed_stage.print_report(rows, tmp_path, None, {})
    text = capsys.readouterr().out
    assert verdict["lora"] == {"best": "fast-mb8-c2048", "x_peer": round(0.50 / 0.333, 3), "goal": 1.5}
    assert verdict["low_memory"]["beats_every_peer"] is True
    assert verdict["full"]["best"] == "full-fast-mb4" and verdict["full"]["x_peer"] == round(0.7 / 0.6, 3)
    assert "FAILED fast-compiled-mb8-c2048: RuntimeError: boom" in text
    assert "* fast-mb8-c2048" in text and "1.50" in text  # ours marked, ratio to the fastest peer
    assert max(len(line) for line in text.splitlines() if line.startswith("*")) < 80


def test_breakdown_of_a_profile_file_is_printed(tmp_path, capsys):
    from trainer.run.profile_breakdown import breakdown, format_breakdown

    lines = ["steps 10..11: wall 0.3400 s/step", ""] + format_breakdown(
        breakdown([("sm90_xmma_gemm", 180000.0), ("cudnn_generated_fort_native_sdpa", 40000.0)], 1, 2000.0))
    (tmp_path / "v_profile_steps10-12.txt").write_text("\n".join(lines) + "\n\nrest\n")
    speed_stage.print_report([], tmp_path, "v", {})
    text = capsys.readouterr().out
    assert "matmul" in text and "180.0" in text and "host sync" in text and "rest" not in text
    assert json.dumps  # (the report only reads the file)


def test_rows_file_skips_a_row_still_being_written_and_keeps_appends_whole(tmp_path):
    """The stage reads rows.jsonl while the driver appends to it: half a row is not a row yet."""
    path = tmp_path / "rows.jsonl"
    rows_file.append_row(path, {"row": "a", "s_per_step": 0.5})
    with open(path, "a") as f:
        f.write('{"row": "b", "traceback": "Traceb')  # the driver is mid-write
    assert rows_file.read_rows(path) == [{"row": "a", "s_per_step": 0.5}]
    with open(path, "a") as f:
        f.write('ack"}\n')
    assert [r["row"] for r in rows_file.read_rows(path)] == ["a", "b"]
    big = {"row": "c", "traceback": "x" * 200_000}  # larger than any pipe or page buffer
    rows_file.append_row(path, big)
    assert rows_file.read_rows(path)[-1] == big
    assert rows_file.read_rows(tmp_path / "absent.jsonl") == []


def test_a_traced_rows_median_leaves_out_the_traced_steps():
    from speed_driver import median_without_observed

    times = [9.0] * 5 + [0.4] * 5 + [0.9, 0.9] + [0.5] * 4  # lines 11-12 traced (batches 10-11 of 16)
    assert median_without_observed(times, 16) == 0.4
    assert median_without_observed(times[:5], 16) is None
