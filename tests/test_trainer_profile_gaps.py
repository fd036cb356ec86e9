"""trainer.run.profile_gaps on constructed timelines: idle time, host attribution, queued gaps."""

from __future__ import annotations

import pytest

from trainer.run.profile_gaps import format_gaps, idle_gaps


def _x(cat, name, ts, dur, pid=1, tid=5, corr=None):
    args = {"correlation": corr} if corr is not None else {}
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def _timeline():
    return [
        _x("user_annotation", "ProfilerStep#10", 0, 2000),
        _x("user_annotation", "[LightningModule]training_step", 0, 2000),
        # GPU: busy 0-100, idle 100-400 (host in aten::item), busy 400-500, idle 500-600 (queued), busy 600-700
        _x("kernel", "gemm", 0, 100, pid=0, tid=7, corr=1),
        _x("kernel", "flash_fwd", 400, 100, pid=0, tid=7, corr=2),
        _x("kernel", "copy", 600, 100, pid=0, tid=8, corr=3),
        _x("cpu_op", "aten::item", 50, 250),                    # 50-300: the host waits here
        _x("cpu_op", "aten::_local_scalar_dense", 60, 230),     # inside aten::item, innermost
        _x("cpu_op", "aten::empty", 300, 90),                   # 300-390
        _x("cuda_runtime", "cudaLaunchKernel", 395, 5, corr=2),
        _x("cuda_runtime", "cudaLaunchKernel", 450, 5, corr=3),  # launched before the GPU went idle at 500
        _x("kernel", "tiny", 705, 2, pid=0, tid=7, corr=4),       # a 5 us gap: under the threshold
        _x("cuda_runtime", "cudaLaunchKernel", 460, 5, corr=4),
    ]


def test_idle_time_and_what_the_host_was_doing():
    g = idle_gaps({"traceEvents": _timeline()}, steps=1)
    assert g["gaps"] == 2
    assert g["idle_ms"] == pytest.approx(0.4)
    assert g["queued_ms"] == pytest.approx(0.1)
    ops = dict(g["host_ops"])
    # 100-290: inside _local_scalar_dense (innermost), 290-300 aten::item, 300-390 aten::empty, 390-395 nothing
    assert ops["aten::_local_scalar_dense"] == pytest.approx(0.19)
    assert ops["aten::item"] == pytest.approx(0.01)
    assert ops["aten::empty"] == pytest.approx(0.09)
    assert g["host_ops"][0][0] == "aten::_local_scalar_dense"
    assert dict(g["annotations"]) == pytest.approx({"[LightningModule]training_step": 0.295})


def test_per_step_and_formatting():
    g = idle_gaps(_timeline(), steps=2)
    assert g["idle_ms"] == pytest.approx(0.2)
    lines = format_gaps(g)
    assert lines[0].startswith("GPU idle (gaps >= 10 us, all streams): 0.2 ms/step in 1 gaps")
    assert any("aten::_local_scalar_dense" in line for line in lines)


def test_empty_and_cpu_only_timelines():
    assert idle_gaps({"traceEvents": []}, steps=1)["idle_ms"] == 0
    cpu_only = [_x("cpu_op", "aten::addmm", 0, 10)]
    assert idle_gaps({"traceEvents": cpu_only}, steps=3) == {
        "idle_ms": 0.0, "gaps": 0, "queued_ms": 0.0, "host_ops": [], "annotations": []}
