"""The speed plug-ins that change the layer spec (trainer.megatron.fast_spec, sdpa_backend,
mlp_recompute, compiled_layer) on a real megatron-core GPTModel (CPU): each gives the loss and
every gradient of today's sdpa layers, and the upstream pieces they rely on are still there."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core", reason="needs megatron-core (dev or train extra)")

from trainer.megatron import fast_spec, layers  # noqa: E402


def _gpt(config, seed=0, frozen=False):
    from megatron.core.models.gpt import GPTModel

    from trainer.megatron.cpu_shims import megatron_on_cpu

    torch.manual_seed(seed)
    with megatron_on_cpu():
        model = GPTModel(config=config, transformer_layer_spec=config.transformer_layer_spec(config), vocab_size=128,
                         max_sequence_length=64, position_embedding_type="rope", rotary_base=10000)
    if frozen:  # as under LoRA
        for name, p in model.named_parameters():
            if "decoder.layers" in name:
                p.requires_grad_(False)
    return model


def _config(make, **choices):
    config = make()
    config.transformer_layer_spec = layers.sdpa_layer_spec
    swapped = fast_spec.configure(config, **choices)
    assert swapped == any(v not in ("default", False) for v in choices.values())
    return config


def _run(model, ids):
    from trainer.megatron.cpu_shims import megatron_on_cpu

    model.zero_grad(set_to_none=True)
    pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    with megatron_on_cpu():
        loss = model(ids, pos, None, labels=ids)
    loss.mean().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_same(model, ref_model, ids, rtol=1e-5, atol=1e-6):
    assert sorted(model.state_dict()) == sorted(ref_model.state_dict())
    ref_loss, ref_grads = _run(ref_model, ids)
    loss, grads = _run(model, ids)
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=atol)
    assert abs(loss.mean().item() - ref_loss.mean().item()) < 1e-3
    assert grads.keys() == ref_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=rtol, atol=atol, msg=name)


IDS = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("backend", ["auto", "math"])
def test_grouped_heads_sdpa_matches_the_expanded_heads(model_parallel, tiny_transformer_config, backend):
    from trainer.megatron.sdpa_backend import USED, BackendSDPACoreAttention

    ref = _gpt(_config(tiny_transformer_config))
    model = _gpt(_config(tiny_transformer_config, sdpa_backend=backend))
    core = model.decoder.layers[0].self_attention.core_attention
    assert isinstance(core, BackendSDPACoreAttention) and core.num_query_groups_per_partition == 2
    USED.clear()
    _assert_same(model, ref, IDS)
    assert sum(USED.values()) == 2 and all("+gqa" in tag for tag in USED)  # 2 layers, grouped heads


@pytest.mark.parametrize("frozen", [False, True])
def test_fc1_recompute_mlp_matches_upstream_mlp(model_parallel, tiny_transformer_config, frozen):
    from trainer.megatron.mlp_recompute import RecomputeFc1MLP

    ref = _gpt(_config(tiny_transformer_config), frozen=frozen)
    model = _gpt(_config(tiny_transformer_config, mlp_recompute=True), frozen=frozen)
    mlp = model.decoder.layers[0].mlp
    assert isinstance(mlp, RecomputeFc1MLP) and mlp._can_recompute(None)
    _assert_same(model, ref, IDS)


def test_fc1_recompute_saves_only_the_mlp_input(model_parallel, tiny_transformer_config):
    """What the MLP keeps for backward, in bytes of non-parameter tensors: its input only."""
    def saved_bytes(mlp, x):
        params = {p.data_ptr() for p in mlp.parameters()}
        total = []

        def pack(t):
            if t.data_ptr() not in params:
                total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            mlp(x)
        return sum(total)

    x = torch.randn(20, 2, 32, requires_grad=True)
    ref = _gpt(_config(tiny_transformer_config)).decoder.layers[0].mlp
    ours = _gpt(_config(tiny_transformer_config, mlp_recompute=True)).decoder.layers[0].mlp
    assert saved_bytes(ours, x) == x.numel() * 4
    assert saved_bytes(ref, x) >= 3 * x.numel() * 4  # the [tokens, 2 x ffn] fc1 output at least


def test_fc1_recompute_runs_the_swiglu_kernels_on_token_rows(monkeypatch):
    """megatron's compiled SwiGLU kernels ran ~3x slower on [seq, batch, 2 x ffn] tensors than on
    the [tokens, 2 x ffn] views its own MLP passes them (one H200): ours passes 2-D views too."""
    from trainer.megatron import mlp_recompute

    ranks = []
    real_fwd, real_back = mlp_recompute._swiglu, mlp_recompute._swiglu_back
    monkeypatch.setattr(mlp_recompute, "_swiglu", lambda y: ranks.append(("fwd", y.dim())) or real_fwd(y))
    monkeypatch.setattr(mlp_recompute, "_swiglu_back",
                        lambda g, y: ranks.append(("back", g.dim(), y.dim())) or real_back(g, y))
    x = torch.randn(5, 3, 4, requires_grad=True)
    w1, w2 = torch.randn(12, 4, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    out = mlp_recompute.mlp_recompute_fc1(x, w1, w2)
    assert out.shape == (5, 3, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape and w1.grad.shape == w1.shape and w2.grad.shape == w2.shape
    assert ranks == [("fwd", 2), ("back", 2, 2), ("fwd", 2)]  # forward; backward; fc2's weight gradient


def test_compiled_layers_match_eager_layers(model_parallel, tiny_transformer_config, monkeypatch):
    from trainer.megatron import compiled_layer

    monkeypatch.setattr(compiled_layer, "BACKEND", "aot_eager")  # Dynamo + AOT autograd, no codegen on CPU
    ref = _gpt(_config(tiny_transformer_config))
    model = _gpt(_config(tiny_transformer_config, compile_layers=True))
    assert isinstance(model.decoder.layers[0], compiled_layer.CompiledTransformerLayer)
    _assert_same(model, ref, IDS)
    assert "aot_eager" in compiled_layer._compiled
    model.eval()
    with torch.no_grad():  # validation: the eager forward
        assert not model.decoder.layers[0].training


def test_configure_leaves_other_specs_and_defaults_alone(tiny_transformer_config):
    config = tiny_transformer_config()
    config.transformer_layer_spec = layers.local_layer_spec
    assert not fast_spec.configure(config, sdpa_backend="cudnn")
    assert config.transformer_layer_spec is layers.local_layer_spec
    config.transformer_layer_spec = layers.sdpa_layer_spec
    assert not fast_spec.configure(config)  # everything at today's values
    assert config.transformer_layer_spec is layers.sdpa_layer_spec
    with pytest.raises(ValueError, match="model.sdpa_backend: 'fast' is not one of"):
        fast_spec.configure(config, sdpa_backend="fast")
    bare = tiny_transformer_config()  # a restored or exported config has no jp_* attributes
    assert fast_spec.fast_layer_spec(bare).submodules.self_attention.submodules.core_attention \
        is layers.SDPACoreAttention


def test_upstream_pieces_the_plug_ins_rely_on():
    """If this fails, megatron-core or torch changed under sdpa_backend / mlp_recompute / compiled_layer."""
    from megatron.core.fusions import fused_bias_swiglu
    from megatron.core.transformer.cuda_graphs import _CudaGraphRunner
    from megatron.core.transformer.mlp import MLP
    from megatron.core.transformer.transformer_layer import TransformerLayer
    from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: F401

    from trainer.megatron.sdpa_backend import supports_enable_gqa

    assert supports_enable_gqa()
    assert {"CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"} <= set(SDPBackend.__members__)
    assert list(inspect.signature(MLP.forward).parameters) == ["self", "hidden_states", "per_token_scale"]
    assert callable(fused_bias_swiglu.swiglu) and callable(fused_bias_swiglu.swiglu_back)
    assert "self.base_module.forward(*args, **kwargs)" in inspect.getsource(_CudaGraphRunner.create_fwd_graph)
    assert "self._forward_attention(*args, **kwargs)" in inspect.getsource(TransformerLayer.forward)
    assert "self.attend(q, k, v, mask, causal, groups)" in inspect.getsource(layers.SDPACoreAttention.forward)
