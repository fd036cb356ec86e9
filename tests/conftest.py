"""Shared fixtures: the real built-in tokenizer, the bundled sample, the shared corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "ja_sample.jsonl"
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"

# Never reach for the hub in tests: the built-in tokenizer must work offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen():
    from jpcorpus.tokenizer import load_tokenizer

    return load_tokenizer("qwen2.5")


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def aozora_path() -> Path:
    path = SHARED_CORPUS / "aozora_bench_100mb.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not present (it lies beside the checkout only on the team's machines)")
    return path


@pytest.fixture(scope="module")
def model_parallel():
    """A one-process gloo group and megatron-core's parallel state (TP = PP = 1), torn down after."""
    import socket

    import torch.distributed as dist
    from megatron.core import parallel_state

    made_group = not dist.is_initialized()
    if made_group:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", world_size=1, rank=0)
    made_mp = not parallel_state.model_parallel_is_initialized()
    if made_mp:
        parallel_state.initialize_model_parallel(1, 1)
    yield
    if made_mp:
        parallel_state.destroy_model_parallel()
    if made_group:
        dist.destroy_process_group()


@pytest.fixture
def on_cpu(model_parallel):
    """megatron-core's DDP and optimizer on the CPU (``tests/megatron_cpu.py``) inside the test."""
    import megatron_cpu

    with megatron_cpu.cuda_on_cpu():
        yield


@pytest.fixture
def tiny_transformer_config():
    """``make(**overrides)`` -> a 2-layer Qwen2-like megatron ``TransformerConfig`` in float32 on CPU,
    with every fusion that needs a GPU kernel off."""
    import torch
    from megatron.core.transformer.transformer_config import TransformerConfig

    def make(**overrides):
        base = dict(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=64,
                    use_cpu_initialization=True, params_dtype=torch.float32, normalization="RMSNorm",
                    gated_linear_unit=True, add_bias_linear=False, add_qkv_bias=True,
                    activation_func=torch.nn.functional.silu, hidden_dropout=0.0, attention_dropout=0.0,
                    masked_softmax_fusion=False, bias_activation_fusion=False, bias_dropout_fusion=False,
                    apply_rope_fusion=False, gradient_accumulation_fusion=False, cross_entropy_loss_fusion=False)
        return TransformerConfig(**(base | overrides))

    return make


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on this machine (1 CPU each), joined by this process; torn down at the end."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'jpcorpus[ray]')")
    from ray_cluster import local_cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster's nodes (tests/ray_cluster.py)
    with local_cluster(nodes=2, cpus=1) as cluster:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        try:
            yield cluster
        finally:
            ray.shutdown()
