"""Per-layer CUDA graphs without TransformerEngine (``model.cuda_graphs: true``).

A LoRA step of Qwen2.5-0.5B at micro batch 8 launches ~5,000 kernels per step; on one
H100 the host needed about as long to launch them (~0.45 s) as the GPU needed to run
them (~0.43 s), so the step ran at host speed and varied with the host's CPU
(0.49-0.58 s/step for the same command on different machines). A CUDA graph replays a
whole transformer layer's forward (or backward) as one launch.

megatron-core 0.15 has this built in (``cuda_graph_impl="local"``:
``megatron/core/transformer/cuda_graphs.py``): the first step runs eagerly and records
the order of the layers' forward and backward passes, then every layer's forward and
backward are captured once and replayed for every later micro batch. It needs no
TransformerEngine, only an RNG tracker whose states are graph-safe
(``CudaRNGStatesTracker(use_cudagraphable_rng=True)``); NeMo 2.7.3 creates the tracker
without that flag and only knows TransformerEngine's graphs (``enable_cuda_graph``
asserts TE). :func:`enable` sets the megatron option directly and
:func:`install_graph_safe_rng` makes NeMo's tracker graph-safe.

Limits (megatron's, checked by ``trainer.run.config.validate``): no activation recompute;
every micro batch must have the same shape (true for GPTDataset samples). Dropout
inside a layer draws from the graph-safe generator, so it stays random per replay.

Upstream (megatron-core 0.15.3 / nemo-toolkit 2.7.3): wraps ``tensor_parallel.random.initialize_rng_tracker``
and sets ``TransformerConfig.cuda_graph_impl``/``cuda_graph_scope`` directly (NeMo's ``enable_cuda_graph`` asserts TE).
Guard: ``tests/test_trainer_cuda_graphs.py``.
"""

from __future__ import annotations

import functools

_WRAPPED = "_trainer_graph_safe"


def enable(config) -> None:
    """Ask megatron-core for its own (non-TE) per-layer CUDA graphs on ``config``."""
    config.cuda_graph_impl = "local"
    config.cuda_graph_scope = "full"


def install_graph_safe_rng() -> None:
    """Make every later ``initialize_rng_tracker`` call build a graph-safe tracker.

    NeMo calls ``tensor_parallel.random.initialize_rng_tracker(use_te_rng_tracker=...)``
    while it sets up model parallelism, before any layer exists; megatron's
    ``CudaGraphManager`` then asserts the tracker is graph-safe. The first call wins
    (later ones return early), so this must run before the trainer starts.
    """
    from megatron.core.tensor_parallel import random as mp_random

    original = mp_random.initialize_rng_tracker
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def initialize_rng_tracker(use_te_rng_tracker=False, inference_rng_tracker=False,
                               use_cudagraphable_rng=False, force_reset=False):
        return original(use_te_rng_tracker, inference_rng_tracker, True, force_reset)

    setattr(initialize_rng_tracker, _WRAPPED, True)
    initialize_rng_tracker.original = original
    mp_random.initialize_rng_tracker = initialize_rng_tracker


def uninstall_graph_safe_rng() -> None:
    """Undo :func:`install_graph_safe_rng` (tests)."""
    from megatron.core.tensor_parallel import random as mp_random

    if getattr(mp_random.initialize_rng_tracker, _WRAPPED, False):
        mp_random.initialize_rng_tracker = mp_random.initialize_rng_tracker.original
