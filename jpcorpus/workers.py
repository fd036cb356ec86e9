"""Ordered parallel map over a ``multiprocessing`` pool that Ctrl-C cannot hang.

``binarize`` and ``normalize`` both stream batches through a pool of worker
processes and need the results back in input order, with a bounded number of
batches in flight. :func:`ordered_map` does that. It exists as one helper
because the obvious version::

    with ctx.Pool(n) as pool:
        for batch in batches:
            pending.append(pool.apply_async(fn, (batch,)))
            ...

can hang forever when interrupted. Leaving the ``with`` block calls
``Pool.terminate()``, which stops draining the task pipe while the pool's task
thread may still be writing a multi-megabyte batch into it; the write never
finishes, ``terminate()`` joins that thread, and the process never exits (seen
once in CI on ``binarize --workers 2`` after SIGINT). A ``KeyboardInterrupt``
raised inside ``Pool.apply_async`` can also leave a job in the pool's cache
that no worker will ever run, which makes ``Pool.join()`` wait forever.

So the helper:

* never calls ``terminate()`` on the way out: it closes the pool, lets the
  batches already sent finish (at most ``ahead`` of them) and joins;
* holds SIGINT while it runs: the signal only sets a flag, and the
  interruption is raised between batches, never inside the pool's own code;
* makes workers ignore SIGINT (:func:`ignore_sigint`), so a Ctrl-C typed in a
  terminal, which reaches the whole process group, stops only the main
  process and does not kill workers half-way through a message.
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator


def ignore_sigint(initializer: Callable[..., None] | None = None, *args: Any) -> None:
    """Worker initializer: ignore SIGINT, then run ``initializer(*args)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*args)


def ordered_map(pool, fn: Callable, items: Iterable, ahead: int, close: bool = True) -> Iterator:
    """Yield ``fn(item)`` for every item, in order, computed by ``pool``.

    At most ``ahead`` items are in flight. The pool is closed and joined when
    the generator ends, raises or is closed; the caller must not use it after.
    With ``close=False`` the items already sent are waited for and the pool is
    left open for the next call (the caller closes it, as :meth:`close_pool`).
    """
    pending: deque = deque()
    with _DeferredSigint() as interrupted:
        try:
            for item in items:
                interrupted.raise_if_set()
                pending.append(pool.apply_async(fn, (item,)))
                if len(pending) >= ahead:
                    result = pending.popleft().get()
                    interrupted.raise_if_set()
                    yield result
            while pending:
                result = pending.popleft().get()
                interrupted.raise_if_set()
                yield result
        finally:
            if close:
                pool.close()
            for job in pending:  # already sent: let them finish so the pool shuts down cleanly
                job.wait()
            if close:
                pool.join()


def close_pool(pool) -> None:
    """Close and join a pool left open by ``ordered_map(..., close=False)``, SIGINT held meanwhile."""
    with _DeferredSigint():
        pool.close()
        pool.join()


class _DeferredSigint:
    """While active (main thread only), SIGINT sets a flag instead of raising.

    :meth:`raise_if_set` then runs the handler that was installed before,
    normally Python's, which raises ``KeyboardInterrupt`` at that safe point;
    one still pending on exit is re-raised once the old handler is back.
    A signal that arrives while a blocking call waits does not cut it short
    (PEP 475 retries the wait); it is acted on when the call returns.
    """

    def __init__(self) -> None:
        self._active = False
        self._previous: Any = None
        self._frame = None
        self._set = False

    def __enter__(self) -> "_DeferredSigint":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._active = True
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._active:
            return
        signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
        self._active = False
        if self._set:  # arrived while shutting down: deliver it now, as if just typed
            self._set = False
            signal.raise_signal(signal.SIGINT)

    def _handle(self, signum, frame) -> None:
        self._set, self._frame = True, frame

    def raise_if_set(self) -> None:
        if not self._set:
            return
        self._set = False
        if callable(self._previous):  # normally signal.default_int_handler: raises KeyboardInterrupt
            self._previous(signal.SIGINT, self._frame)
        elif self._previous != signal.SIG_IGN:
            raise KeyboardInterrupt
