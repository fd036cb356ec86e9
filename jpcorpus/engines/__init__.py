"""Executors: one pipeline, several ways to run its stage functions over partitions.

A staged command (``normalize``, ``binarize``) is a sequence of stages; a stage
is a plain top-level function applied to a list of tasks (a partition to clean,
a bucket to deduplicate), each result coming back *in task order*. An engine
only runs those functions, it never implements any step, so every engine gives
the same results by construction:

- :class:`~jpcorpus.engines.local.LocalEngine` (``--engine local``, the default):
  the calling process alone (``--workers 1``) or a pool of worker processes.
- :class:`~jpcorpus.engines.ray_engine.RayEngine` (``--engine ray``): Ray tasks on
  a local Ray instance or on a cluster (``--ray-address``), ``pip install 'jpcorpus[ray]'``.

Why Ray tasks rather than Ray Data: the stages need a fixed partition identity
(completion markers, reuse after an interruption), results in input order for
byte-identical output, their own bounded shuffle files and a retry of exactly
one partition when a worker dies. Tasks give each of these directly (one task
per partition, ``ray.get`` in submission order, ``max_retries``); Ray Data
decides block boundaries and order itself (``preserve_order`` costs it its
streaming), and its all-to-all shuffle holds blocks in the object store rather
than in files we can bound and reuse.

Workers keep what is costly to build (the profile's steps and their Sudachi
tokenizer, a Hugging Face tokenizer) in :func:`cached`, once per process,
whichever engine started the process; :func:`built` counts those builds, and
every engine records per worker process the tasks it ran, their CPU time and
the builds they caused (:mod:`jpcorpus.engines.ledger`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

_CACHE: dict = {}
_BUILT: Counter = Counter()  # builds in this process, by cache name (the key's first element)


def cached(key: Any, build: Callable[[], Any]) -> Any:
    """``build()`` once per process and key: steps, tokenizers."""
    if key not in _CACHE:
        _CACHE[key] = build()
        _BUILT[key[0] if isinstance(key, tuple) else key] += 1
    return _CACHE[key]


def built() -> Counter:
    """How many times :func:`cached` built each kind of state in this process (``"tokenizer"``: 1)."""
    return _BUILT


@dataclass
class Done:
    """A result already known (a partition finished by an earlier run): passed through in order, not run."""

    result: Any


ENGINES = ("local", "ray")


def make_engine(name: str, workers: int, *, ray_address: str | None = None, start_method: str = "spawn"):
    """The engine called ``name`` with ``workers`` (see the classes for what it means there)."""
    if name == "local":
        from jpcorpus.engines.local import LocalEngine

        if ray_address is not None:
            raise ValueError("--ray-address needs --engine ray")
        return LocalEngine(workers, start_method)
    if name == "ray":
        from jpcorpus.engines.ray_engine import RayEngine

        return RayEngine(workers, ray_address)
    raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")


def check_workers(engine: str, workers: int) -> None:
    low = 0 if engine == "ray" else 1
    if workers < low:
        raise ValueError(f"--workers must be at least {low}{' with --engine ray' if low == 0 else ''}, got {workers}")
