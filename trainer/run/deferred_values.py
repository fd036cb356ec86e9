"""Values of a training step read on the host without waiting for the GPU (``optim.sync_free_step``).

Reading a CUDA scalar with ``.item()`` waits for everything queued before it; at the end of a
step that is the step itself, and the GPU then idles while the host runs the next step's first
Python. :class:`DeferredValues` instead copies a step's scalars into pinned host memory on the
stream (``non_blocking``) and records a CUDA event behind them; :meth:`ready` hands back, in
order, the steps whose event has completed (``Event.query()``, which never waits), with the GPU
time between consecutive steps' events, i.e. the step time as the GPU saw it, idle included.
:meth:`drain` waits for the rest (before validation, a checkpoint or the end of the run).
At most ``max_pending`` steps wait at once: a host further ahead waits for the oldest, which
bounds both the lead and the pinned memory in flight.
Without CUDA the values are read at once.

>>> d = DeferredValues()
>>> d.push({"step": 1}, [torch.tensor(2.5), None])
>>> [(meta["step"], values) for meta, values, _ in d.ready()]
[(1, [2.5, None])]
"""

from __future__ import annotations

from collections import deque

import torch


class DeferredValues:
    """A queue of steps whose scalars are still on their way to the host."""

    def __init__(self, max_pending: int = 4):
        self._queue: deque = deque()
        self._last_event = None
        self.max_pending = max_pending

    def push(self, meta: dict, tensors: list) -> None:
        """Queue one step: ``tensors`` (0-d or one-element tensors, or None) and ``meta`` (host values)."""
        present = [i for i, t in enumerate(tensors) if t is not None]
        if not present or not tensors[present[0]].is_cuda:
            values = [None if t is None else float(t.detach().reshape(-1)[0]) for t in tensors]
            self._queue.append((meta, values, None, None, None))
            return
        device = tensors[present[0]].device
        stacked = torch.stack([tensors[i].detach().reshape(-1)[0].double().to(device) for i in present])
        host = torch.empty(stacked.shape, dtype=torch.float64, pin_memory=True)
        host.copy_(stacked, non_blocking=True)
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._queue.append((meta, (len(tensors), present, host), event, self._last_event, stacked))
        self._last_event = event
        if len(self._queue) > self.max_pending:  # the host may lead by this many steps, no more
            self._queue[0][2].synchronize()

    def ready(self, wait: bool = False):
        """Yield ``(meta, values, gpu_s_since_previous_step or None)`` of every completed step, oldest first."""
        while self._queue:
            meta, values, event, previous, _keep = self._queue[0]
            if event is not None and not (wait or event.query()):
                return
            self._queue.popleft()
            if event is None:
                yield meta, values, None
                continue
            event.synchronize()
            n, present, host = values
            out = [None] * n
            for i, v in zip(present, host.tolist()):
                out[i] = v
            gpu_s = previous.elapsed_time(event) / 1e3 if previous is not None else None
            yield meta, out, gpu_s

    def drain(self):
        """Every queued step, waiting for the GPU as needed."""
        yield from self.ready(wait=True)

    def reset_timing(self) -> None:
        """The next step's GPU time is not measured from the last one (validation ran in between)."""
        self._last_event = None

    def __len__(self) -> int:
        return len(self._queue)
