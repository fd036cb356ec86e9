"""trainer.megatron.cuda_graphs: the CPU-checkable half of ``model.cuda_graphs`` (capture and
replay need a GPU; bench/trainer_speed.py measures them there)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("megatron.core", reason="needs megatron-core (dev or train extra)")

from megatron.core.tensor_parallel import random as mp_random  # noqa: E402

from trainer.megatron import cuda_graphs  # noqa: E402
from trainer.run.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/qwen25_05b_ja_lora.yaml")


@pytest.fixture
def fresh_rng_tracker():
    saved = (mp_random._CUDA_RNG_STATE_TRACKER, mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED,
             mp_random.initialize_rng_tracker)
    mp_random._CUDA_RNG_STATE_TRACKER, mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = None, False
    yield
    (mp_random._CUDA_RNG_STATE_TRACKER, mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED,
     mp_random.initialize_rng_tracker) = saved


def test_install_turns_on_graph_safe_rng_in_nemos_call(fresh_rng_tracker):
    calls = []
    mp_random.initialize_rng_tracker = lambda *args, **kwargs: calls.append((args, kwargs))  # stands in for megatron's
    cuda_graphs.install_graph_safe_rng()
    cuda_graphs.install_graph_safe_rng()  # idempotent: wraps once
    mp_random.initialize_rng_tracker(use_te_rng_tracker=False)  # what NeMo's megatron_init calls
    assert calls == [((False, False, True, False), {})]  # (te, inference, use_cudagraphable_rng, force_reset)
    cuda_graphs.uninstall_graph_safe_rng()
    mp_random.initialize_rng_tracker(use_te_rng_tracker=False)
    assert calls[-1] == ((), {"use_te_rng_tracker": False})


GRAPH_SAFE_RNG = hasattr(getattr(__import__("torch").cuda, "CUDAGraph", None), "register_generator_state")


@pytest.mark.skipif(not GRAPH_SAFE_RNG, reason="this torch build has no graph-safe CUDA generators (CPU build)")
def test_real_tracker_is_graph_safe_once_installed(fresh_rng_tracker):
    cuda_graphs.install_graph_safe_rng()
    mp_random.initialize_rng_tracker(use_te_rng_tracker=False)
    tracker = mp_random.get_cuda_rng_tracker()
    assert isinstance(tracker, mp_random.CudaRNGStatesTracker) and tracker.use_cudagraphable_rng is True


def test_upstream_graph_manager_accepts_a_graph_safe_local_tracker():
    """If this fails, megatron-core changed what its local CUDA graphs require: re-check cuda_graphs.py."""
    from megatron.core.transformer.cuda_graphs import CudaGraphManager
    from megatron.core.transformer.module import GraphableMegatronModule

    source = inspect.getsource(CudaGraphManager.__init__)
    assert "isinstance(rng_tracker, CudaRNGStatesTracker) and rng_tracker.use_cudagraphable_rng" in source
    assert 'config.cuda_graph_impl == "local"' in inspect.getsource(GraphableMegatronModule.__init__)


def test_nemo_creates_its_tracker_through_the_module_attribute():
    """If this fails, NeMo calls megatron's tracker another way and install_graph_safe_rng misses it."""
    megatron_init = pytest.importorskip("nemo.lightning.megatron_init", reason="needs the train extra")
    source = inspect.getsource(megatron_init.initialize_model_parallel_for_nemo)
    assert "tensor_parallel.random.initialize_rng_tracker(" in source


def test_cuda_graphs_and_recompute_exclude_each_other():
    with pytest.raises(ValueError, match=r"model.cuda_graphs: CUDA graphs exclude activation recompute"):
        load_config(CONFIG, ["model.base=null", "model.from_scratch=true", "model.recompute=[mlp]"])
    cfg = load_config(CONFIG, ["model.base=null", "model.from_scratch=true", "model.recompute=[mlp]",
                               "model.cuda_graphs=false"])
    assert cfg.model.recompute == ["mlp"] and cfg.model.cuda_graphs is False


def test_model_config_asks_megatron_for_local_graphs():
    pytest.importorskip("nemo.collections.llm", reason="needs the train extra")
    from trainer.run.presets import get_preset
    from trainer.run.recipe import nemo_model_config

    on = load_config(CONFIG, ["model.base=null", "model.from_scratch=true", "model.cuda_graphs=true"])
    off = load_config(CONFIG, ["model.base=null", "model.from_scratch=true", "model.cuda_graphs=false"])
    assert nemo_model_config(get_preset("tiny"), on).cuda_graph_impl == "local"
    assert nemo_model_config(get_preset("tiny"), off).cuda_graph_impl == "none"
