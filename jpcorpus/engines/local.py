"""The local engine: stage functions in this process, or in a pool of worker processes.

``workers=1`` runs every task inline, in order, with no pool. Otherwise one
``multiprocessing`` pool serves every stage of the run (a spawned worker pays
its imports and its Sudachi dictionary once, not once per stage) through
:func:`jpcorpus.workers.ordered_map`, at most ``2 x workers`` tasks in flight,
and is shut down the way that module explains (never ``terminate()``: the
tasks already sent finish, SIGINT is held while the pool's own code runs,
workers ignore SIGINT), so Ctrl-C cannot hang it.
"""

from __future__ import annotations

import multiprocessing
from functools import partial
from typing import Callable, Iterable, Iterator

from jpcorpus.engines import Done
from jpcorpus.engines.ledger import Ledger, measured
from jpcorpus.workers import close_pool, ignore_sigint, ordered_map


class LocalEngine:
    """Runs tasks on this machine: inline (``workers=1``) or in ``workers`` processes."""

    name = "local"

    def __init__(self, workers: int, start_method: str = "spawn"):
        self.workers = workers
        self.parallelism = workers
        self.nodes = 1
        self.nodes_used = {"local"}
        self.ledger = Ledger()  # per process: tasks, CPU inside them, cache builds
        self._start_method = start_method
        self._pool = None

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, fn: Callable, items: Iterable, ahead: int | None = None) -> Iterator:
        """``fn(item)`` for every item, in order (a :class:`Done` item yields its result unchanged)."""
        if self.workers == 1:
            for item in items:
                yield item.result if isinstance(item, Done) else self._booked(measured(fn, item))
            return
        if self._pool is None:
            context = multiprocessing.get_context(self._start_method)
            self._pool = context.Pool(self.workers, ignore_sigint)
        for result in ordered_map(self._pool, partial(_call, fn), items, ahead or 2 * self.workers, close=False):
            yield self._booked(result)

    def _booked(self, result_and_cost):
        result, cost = result_and_cost
        if cost is not None:
            self.ledger.add(cost)
        return result

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            close_pool(pool)


def _call(fn: Callable, item):
    """In a worker: ``fn(item)`` and its cost, or a finished partition's result sent along to keep the order."""
    return (item.result, None) if isinstance(item, Done) else measured(fn, item)
