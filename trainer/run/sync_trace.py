"""Every host-device synchronisation of a few training steps, where it came from, and when.

A step's GPU idles once the host stops to wait for it and then, with nothing queued, runs
the step's remaining Python one operation at a time. The profiler's timeline
(``logging.profile_steps``) shows such waits but inflates the host work between them about
4x (it records every operator). ``logging.sync_trace_steps`` instead turns on torch's sync
debug mode (``torch.cuda.set_sync_debug_mode("warn")``: a warning at every ``.item()``,
``bool()`` of a CUDA tensor, blocking copy to the host, ...) and records, for each warning,
the Python stack and the host clock since the step began. Nothing else is instrumented, so
the spacing of the syncs is close to that of an unprofiled step.

:class:`SyncLog` collects the records; :func:`format_trace` prints, per site, how many times
a step it synchronised and when (ms after the step's first batch started), in the order of
the step: which sync comes first after the last backward is what decides how much of the
step's end the GPU spends waiting.

>>> log = SyncLog()
>>> log.begin_step(10, now=0.0)
>>> log.add(("megatron/core/distributed/param_and_grad_buffer.py:200 check_grads",), now=0.150)
>>> log.add(("trainer/run/callbacks.py:49 _scalar",), now=0.155)
>>> log.add(("trainer/run/callbacks.py:49 _scalar",), now=0.156)
>>> print("\\n".join(format_trace(log)[:3]))
steps 10..10: 3 host-device syncs a step, the first at 150.0 ms, the last at 156.0 ms after the step began
<BLANKLINE>
  # | per step | first at ms | site (innermost frame first)
"""

from __future__ import annotations

import traceback
from collections import OrderedDict

# Frames of these packages are the machinery around a sync, not its cause.
SKIP_PARTS = ("/torch/", "/warnings.py", "/trainer/run/sync_trace.py", "/trainer/run/callbacks.py:SyncTrace")
KEEP_FRAMES = 4
MESSAGE = "called a synchronizing CUDA operation"


def short_stack(frames: list[traceback.FrameSummary], keep: int = KEEP_FRAMES) -> tuple[str, ...]:
    """The innermost ``keep`` frames outside torch, as ``path-from-package:line function``.

    >>> f = [traceback.FrameSummary("/x/site/lightning/loop.py", 9, "run"),
    ...      traceback.FrameSummary("/x/site/torch/_tensor.py", 5, "item")]
    >>> short_stack(f)
    ('lightning/loop.py:9 run',)
    """
    out = []
    for fr in reversed(frames):
        name = fr.filename.replace("\\", "/")
        if any(part in name for part in SKIP_PARTS):
            continue
        for root in ("/site-packages/", "/dist-packages/", "/site/"):
            if root in name:
                name = name.split(root, 1)[1]
                break
        else:
            for pkg in ("trainer/", "bench/", "megatron/", "nemo/", "lightning/"):
                if f"/{pkg}" in name:
                    name = pkg + name.split(f"/{pkg}", 1)[1]
                    break
        out.append(f"{name}:{fr.lineno} {fr.name}")
        if len(out) == keep:
            break
    return tuple(out)


class SyncLog:
    """Sync records of the traced steps: per site, the count and the times within its steps."""

    def __init__(self):
        self.steps: list[int] = []
        self.sites: "OrderedDict[tuple, list[float]]" = OrderedDict()
        self._t0 = 0.0

    def begin_step(self, step: int, now: float) -> None:
        self.steps.append(step)
        self._t0 = now

    def add(self, site: tuple[str, ...], now: float) -> None:
        if self.steps:  # syncs before the first traced step began are not the step's
            self.sites.setdefault(site, []).append(now - self._t0)


def format_trace(log: SyncLog) -> list[str]:
    """Lines of the report: a summary, then one row per site in the order of the step."""
    n = max(len(log.steps), 1)
    times = [t for ts in log.sites.values() for t in ts]
    if not times:
        return [f"steps {log.steps[0] if log.steps else '?'}..{log.steps[-1] if log.steps else '?'}: "
                "no host-device synchronisation recorded (no CUDA, or none happened)"]
    lines = [f"steps {log.steps[0]}..{log.steps[-1]}: {len(times) / n:.0f} host-device syncs a step, "
             f"the first at {min(times) * 1e3:.1f} ms, the last at {max(times) * 1e3:.1f} ms after the step began", "",
             "  # | per step | first at ms | site (innermost frame first)"]
    order = sorted(log.sites.items(), key=lambda kv: min(kv[1]))
    for i, (site, ts) in enumerate(order, 1):
        frames = list(site) or ["(no Python frame)"]
        lines.append(f"{i:3d} | {len(ts) / n:8.1f} | {min(ts) * 1e3:11.1f} | {frames[0]}")
        lines += [f"    |          |             |   <- {f}" for f in frames[1:]]
    return lines
