"""What each worker process of a run spent inside its tasks, so that the rest can be told apart.

Every task an engine runs goes through :func:`measured`: the result, plus the
process that ran it, the CPU seconds of that process while the task ran
(``time.process_time``: every thread of the process, so a runtime's own
threads count while a task runs) and the heavy state that :func:`cached`
had to build for it. The engine adds these up per process in a
:class:`Ledger`; a benchmark that also reads each process's total CPU time
(``psutil``) gets what a worker spent *outside* its tasks: its start
(interpreter, imports, a Ray worker's connection), idle polling, dispatch.

The figures ride along with results that travel back anyway; they never
change a result, and their cost is two clock reads and a dict per task.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any, Callable

from jpcorpus.engines import built


def measured(fn: Callable, item) -> tuple[Any, dict]:
    """``fn(item)`` and what it cost here: ``{"pid", "cpu_s", "built": {cache name: builds}}``."""
    before_cpu, before_built = time.process_time(), dict(built())
    result = fn(item)
    cpu = time.process_time() - before_cpu
    new = {name: n - before_built.get(name, 0) for name, n in built().items() if n != before_built.get(name, 0)}
    return result, {"pid": os.getpid(), "cpu_s": cpu, "built": new}


class Ledger:
    """Per worker process: tasks run, CPU seconds inside them, cache builds (see :func:`measured`)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], dict] = {}

    def add(self, cost: dict, node: str = "local") -> None:
        row = self._rows.setdefault((node, cost["pid"]), {"node": node, "pid": cost["pid"], "tasks": 0,
                                                          "cpu_s": 0.0, "built": Counter()})
        row["tasks"] += 1
        row["cpu_s"] += cost["cpu_s"]
        row["built"].update(cost["built"])

    def as_list(self) -> list[dict]:
        """One row per process, in the order they first reported (JSON-ready)."""
        return [dict(row, cpu_s=round(row["cpu_s"], 3), built=dict(row["built"])) for row in self._rows.values()]
