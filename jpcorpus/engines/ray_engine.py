"""The Ray engine: each task of a stage is one Ray task; results are collected in submission order.

``ray_address=None`` starts a Ray instance on this machine with ``workers`` CPUs
(``0``: all of them; stopped at the end); ``"auto"`` joins the cluster this machine is a node
of; ``"HOST:PORT"`` joins that cluster. On a cluster the tasks run on every
node's CPUs; ``workers`` bounds the tasks in flight (2 per worker; ``0``: twice
the cluster's CPUs). Every node must have the same jpcorpus installed and see
the run's work directory (a shared filesystem): the tasks read and write their
partitions there.

A task whose worker process dies (killed, out of memory, a lost node) is run
again by Ray, up to ``MAX_RETRIES`` times; stage functions write their files
under temporary names and rename them last, so a half-finished attempt leaves
nothing a retry or a later stage would take for a result. Errors in the data are
returned by the stage functions as values, never raised, so they are not retried.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Callable, Iterable, Iterator

from jpcorpus.engines import Done
from jpcorpus.engines.ledger import Ledger, measured

MAX_RETRIES = 4


def _invoke(fn: Callable, item):
    """In a Ray worker: ``fn(item)``, the node that ran it, the task's cost (:mod:`jpcorpus.engines.ledger`)."""
    import ray

    result, cost = measured(fn, item)
    return result, ray.get_runtime_context().get_node_id(), cost


_JOIN_HINT = ("start its head first (ray start --head --port PORT) and pass --ray-address HEAD:PORT, "
              "or leave --ray-address out to start Ray on this machine (see docs/troubleshooting.md#ray-cluster)")
PROBE_SECONDS = 5.0


def _check_reachable(address: str) -> None:
    """Fail in seconds, with the fix, where Ray would retry an address nobody answers at for minutes.

    Only ``HOST:PORT`` is probed (a TCP connection to the head's port); ``auto`` and
    ``ray://`` addresses are Ray's to resolve.
    """
    import socket

    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--ray-address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379), auto, or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise ValueError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); {_JOIN_HINT}") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'jpcorpus[ray]'") from None
    return ray


class RayEngine:
    """Runs tasks as Ray tasks (one CPU each)."""

    name = "ray"

    def __init__(self, workers: int, address: str | None = None):
        ray = self._ray = _import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._owns = False
        if not ray.is_initialized():
            options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            if address is None:
                ray.init(num_cpus=workers or os.cpu_count(), **options)
            else:
                _check_reachable(address)
                try:
                    ray.init(address=address, **options)
                except ConnectionError as exc:  # "auto" with no cluster on this machine, a head gone away
                    raise ValueError(f"--ray-address {address}: no Ray cluster to join ({exc}); {_JOIN_HINT}") from None
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers
        self.parallelism = max(1, workers if workers > 0 else cpus)
        self.nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        self.nodes_used: set[str] = set()  # the nodes that ran at least one task
        self.ledger = Ledger()  # per worker process: tasks, CPU inside them, cache builds
        # SPREAD: tasks go round the nodes instead of filling the driver's node first (the data of a
        # task is its partition's bytes or a file on the shared work directory, not a local object)
        self._remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False,
                                  scheduling_strategy="SPREAD")(_invoke)

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, fn: Callable, items: Iterable, ahead: int | None = None) -> Iterator:
        """``fn(item)`` for every item, in order (a :class:`Done` item yields its result unchanged)."""
        ray, ahead = self._ray, ahead or 2 * self.parallelism
        pending: deque = deque()
        try:
            for item in items:
                pending.append(item if isinstance(item, Done) else self._remote.remote(fn, item))
                while len(pending) >= ahead or (pending and isinstance(pending[0], Done)):
                    yield self._take(pending)
            while pending:
                yield self._take(pending)
        finally:
            for ref in pending:  # the run stops early (an error, Ctrl-C): tasks still queued are dropped
                if not isinstance(ref, Done):
                    try:
                        ray.cancel(ref)
                    except Exception:  # noqa: BLE001 - already finished or gone: nothing to cancel
                        pass

    def _take(self, pending: deque):
        ref = pending.popleft()
        if isinstance(ref, Done):
            return ref.result
        result, node, cost = self._ray.get(ref)
        self.nodes_used.add(node)
        self.ledger.add(cost, node)
        return result

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False
