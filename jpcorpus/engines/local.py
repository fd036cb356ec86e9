"""The local engine: stage functions in this process, or in a pool of worker processes.

``workers=1`` runs every task inline, in order, with no pool. Otherwise one
``multiprocessing`` pool serves every stage of the run (a spawned worker pays
its imports and its Sudachi dictionary once, not once per stage) and at most
``2 x workers`` tasks are in flight. The pool is shut down the way
:mod:`jpcorpus.workers` explains (never ``terminate()``: the tasks already sent
finish, SIGINT is held while the pool's own code runs, workers ignore SIGINT),
so Ctrl-C cannot hang it.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from typing import Callable, Iterable, Iterator

from jpcorpus.engines import Done
from jpcorpus.workers import _DeferredSigint, ignore_sigint


class LocalEngine:
    """Runs tasks on this machine: inline (``workers=1``) or in ``workers`` processes."""

    name = "local"

    def __init__(self, workers: int, start_method: str = "spawn"):
        self.workers = workers
        self.parallelism = workers
        self.nodes = 1
        self.nodes_used = {"local"}
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
                yield item.result if isinstance(item, Done) else fn(item)
            return
        yield from self._pooled(fn, items, ahead or 2 * self.workers)

    def _pooled(self, fn: Callable, items: Iterable, ahead: int) -> Iterator:
        if self._pool is None:
            context = multiprocessing.get_context(self._start_method)
            self._pool = context.Pool(self.workers, ignore_sigint)
        pending: deque = deque()
        with _DeferredSigint() as interrupted:
            try:
                for item in items:
                    interrupted.raise_if_set()
                    pending.append(item if isinstance(item, Done) else self._pool.apply_async(fn, (item,)))
                    while len(pending) >= ahead or (pending and isinstance(pending[0], Done)):
                        yield self._take(pending, interrupted)
                while pending:
                    yield self._take(pending, interrupted)
            finally:
                for job in pending:  # already sent: let them finish so that the pool stays sound
                    if not isinstance(job, Done):
                        job.wait()

    @staticmethod
    def _take(pending: deque, interrupted):
        job = pending.popleft()
        result = job.result if isinstance(job, Done) else job.get()
        interrupted.raise_if_set()
        return result

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with _DeferredSigint():
                pool.close()
                pool.join()
