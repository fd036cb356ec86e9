"""Where the GPU waits for the host: the idle gaps of a profiled step, and what the host was doing.

The operator tables of ``logging.profile_steps`` say how long the kernels take and that the
GPU is, say, 94% busy; they do not say why it idles the other 6%. :func:`idle_gaps` reads the
Chrome trace torch.profiler writes beside them (``profile_steps{a}-{b}.json.gz``, which
Perfetto and ``chrome://tracing`` also open) and, for every stretch with no kernel, copy or
memset on any stream, looks at the host thread that launched the next GPU work: the
innermost host operator it was in, sampled across the gap, and the outermost annotation
around it (Lightning's ``[LightningModule]...``, our ``record_function`` ranges). A gap
whose next work was launched before the gap began was waiting on something else (an event,
another stream), and is counted as "queued", not as host time.

>>> trace = {"traceEvents": [
...     {"ph": "X", "cat": "kernel", "name": "k1", "pid": 0, "tid": 7, "ts": 0, "dur": 100, "args": {"correlation": 1}},
...     {"ph": "X", "cat": "kernel", "name": "k2", "pid": 0, "tid": 7, "ts": 300, "dur": 100, "args": {"correlation": 2}},
...     {"ph": "X", "cat": "cpu_op", "name": "aten::item", "pid": 1, "tid": 5, "ts": 90, "dur": 200, "args": {}},
...     {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 5, "ts": 295, "dur": 4,
...      "args": {"correlation": 2}}]}
>>> g = idle_gaps(trace, steps=1)
>>> g["idle_ms"], g["gaps"], g["host_ops"][0][0]
(0.2, 1, 'aten::item')
"""

from __future__ import annotations

from collections import defaultdict

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
HOST_CATS = ("cpu_op", "user_annotation", "python_function", "cuda_runtime", "cuda_driver")
SAMPLE_US = 5.0


def _host_stacks(events: list[dict]) -> dict:
    """Per host thread: events sorted by start (outer before inner on equal starts)."""
    threads: dict = defaultdict(list)
    for e in events:
        if e.get("cat") in HOST_CATS and e.get("ph") == "X":
            threads[(e.get("pid"), e.get("tid"))].append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)),
                                                          e.get("cat"), e.get("name", "?")))
    for evs in threads.values():
        evs.sort(key=lambda t: (t[0], -t[1]))
    return threads


class _Sweep:
    """The events of one host thread open at increasing times (one pass; a thread's events nest)."""

    def __init__(self, evs: list[tuple]):
        self.evs, self.next, self.stack = evs, 0, []

    def open_at(self, t: float) -> list[tuple]:
        """Events open at ``t``, outermost first; ``t`` must not decrease between calls."""
        while self.next < len(self.evs) and self.evs[self.next][0] <= t:
            e = self.evs[self.next]
            while self.stack and self.stack[-1][1] < e[0]:
                self.stack.pop()
            self.stack.append(e)
            self.next += 1
        while self.stack and self.stack[-1][1] < t:
            self.stack.pop()
        return [e for e in self.stack if e[1] >= t]


def idle_gaps(trace: dict, steps: int, min_gap_us: float = 10.0, top: int = 15) -> dict:
    """Idle time of the GPU per step and the host operators it waited on (ms per step)."""
    events = trace.get("traceEvents", trace) if isinstance(trace, dict) else trace
    gpu = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), (e.get("args") or {}).get("correlation"))
                 for e in events if e.get("cat") in GPU_CATS and e.get("ph") == "X")
    launches = {(e.get("args") or {}).get("correlation"): e for e in events
                if e.get("cat") in LAUNCH_CATS and (e.get("args") or {}).get("correlation") is not None}
    sweeps = {k: _Sweep(v) for k, v in _host_stacks(events).items()}
    host_ops: dict = defaultdict(float)
    annotations: dict = defaultdict(float)
    idle = queued = 0.0
    n = 0
    busy_end = gpu[0][1] if gpu else 0.0
    for start, end, corr in gpu[1:]:
        if start - busy_end >= min_gap_us:
            gap = start - busy_end
            n += 1
            idle += gap
            launch = launches.get(corr)
            if launch is None or float(launch["ts"]) <= busy_end:
                queued += gap
            else:
                sweep = sweeps.get((launch.get("pid"), launch.get("tid"))) or _Sweep([])
                t, stop = busy_end, min(start, float(launch["ts"]))
                while t < stop:
                    w = min(SAMPLE_US, stop - t)
                    open_ = sweep.open_at(t + w / 2)
                    inner = open_[-1][3] if open_ else "(no host operator)"
                    host_ops[inner] += w
                    notes = [e[3] for e in open_ if e[2] == "user_annotation" and not e[3].startswith("ProfilerStep")]
                    annotations[notes[-1] if notes else "(none)"] += w
                    t += w
        busy_end = max(busy_end, end)

    def rows(d):
        return [(k, v / 1e3 / steps) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"idle_ms": round(idle / 1e3 / steps, 3), "gaps": round(n / steps), "queued_ms": round(queued / 1e3 / steps, 3),
            "host_ops": rows(host_ops), "annotations": rows(annotations)}


def format_gaps(g: dict) -> list[str]:
    """Lines for the profile file: the idle total and the two tables."""
    lines = [f"GPU idle (gaps >= 10 us, all streams): {g['idle_ms']:.1f} ms/step in {g['gaps']} gaps; "
             f"{g['queued_ms']:.1f} ms of it with the next work already launched (waiting on the device)",
             "host operator the launching thread was in, sampled across the gaps (ms/step):"]
    lines += [f"  {ms:8.2f}  {name[:110]}" for name, ms in g["host_ops"]]
    lines.append("innermost annotation around it (ms/step):")
    lines += [f"  {ms:8.2f}  {name[:110]}" for name, ms in g["annotations"]]
    return lines
