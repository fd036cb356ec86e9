"""Processes that take turns on one GPU: they import in parallel, then run one at a time.

A NeMo process spends ~50 s importing and preparing on the CPU, an Unsloth process ~20 s;
run one after the other, the GPU would idle for minutes of a call. Each worker of
``bench/trainer_speed.py --stage speed`` starts at once, does its CPU work, then calls
:func:`wait_turn`: it writes ``NAME.ready`` and waits for ``NAME.go``. The orchestrator's
:class:`Turns` gives the GPU to one ready worker at a time, in a fixed priority, and to
the next when that one exits. Stdlib only: the peers run with another ``PYTHONPATH``.
"""

from __future__ import annotations

import time
from pathlib import Path


def wait_turn(turn_dir: str | Path, name: str, poll_s: float = 0.2) -> float:
    """Say this worker is ready; return once the GPU is its own (seconds waited)."""
    turn_dir = Path(turn_dir)
    turn_dir.mkdir(parents=True, exist_ok=True)
    (turn_dir / f"{name}.ready").write_text(str(time.time()))
    t0 = time.time()
    while not (turn_dir / f"{name}.go").exists():
        time.sleep(poll_s)
    return time.time() - t0


class Turns:
    """Orchestrator side: ``step(alive)`` grants the GPU to the first ready worker in ``order``
    once the worker holding it is no longer alive."""

    def __init__(self, turn_dir: str | Path, order: list[str]):
        self.dir = Path(turn_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.order = list(order)
        self.holder: str | None = None
        self.granted: list[tuple[str, float]] = []

    def add(self, name: str, first: bool = False) -> None:
        """A new worker (a restarted driver goes first: it holds the variants still to run)."""
        if first:
            self.order.insert(0, name)
        else:
            self.order.append(name)

    def step(self, alive: set[str]) -> str | None:
        """Grant the GPU if it is free; return the worker that got it, if any."""
        if self.holder is not None and self.holder in alive:
            return None
        self.holder = None
        for name in self.order:
            if name in alive and (self.dir / f"{name}.ready").exists() and not (self.dir / f"{name}.go").exists():
                (self.dir / f"{name}.go").write_text(str(time.time()))
                self.holder = name
                self.granted.append((name, time.time()))
                return name
        return None
