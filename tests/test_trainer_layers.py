"""trainer.megatron.layers on a real megatron-core GPTModel (CPU): the rotary embedding handed to
SDPACoreAttention gives the outputs and gradients of megatron's own SelfAttention path."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core", reason="needs megatron-core (dev or train extra)")

from trainer.megatron import layers  # noqa: E402



def _spec(config, hand_off: bool, lean: bool = True):
    spec = layers.sdpa_layer_spec(config)
    if not hand_off:
        from megatron.core.transformer.attention import SelfAttention

        spec.submodules.self_attention.module = SelfAttention  # upstream applies the rotary embedding
    if not lean:
        from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

        attention, mlp = spec.submodules.self_attention.submodules, spec.submodules.mlp.submodules
        attention.linear_qkv, attention.linear_proj = ColumnParallelLinear, RowParallelLinear
        mlp.linear_fc1, mlp.linear_fc2 = ColumnParallelLinear, RowParallelLinear
    return spec


def _gpt(config, hand_off: bool, seed: int = 0, lean: bool = True, frozen: bool = False):
    from megatron.core.models.gpt import GPTModel

    from trainer.megatron.cpu_shims import megatron_on_cpu

    torch.manual_seed(seed)
    with megatron_on_cpu():
        model = GPTModel(config=config, transformer_layer_spec=_spec(config, hand_off, lean), vocab_size=128,
                         max_sequence_length=64, position_embedding_type="rope", rotary_base=10000)
    if frozen:  # as under LoRA: the layers' weights frozen (megatron then uses LinearWithFrozenWeight)
        for name, p in model.named_parameters():
            if "decoder.layers" in name:
                p.requires_grad_(False)
    return model


def _run(model, ids):
    from trainer.megatron.cpu_shims import megatron_on_cpu

    model.zero_grad(set_to_none=True)
    s = ids.shape[1]
    pos = torch.arange(s).unsqueeze(0).expand_as(ids)
    with megatron_on_cpu():
        loss = model(ids, pos, None, labels=ids)
    loss.sum().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_self_attention_signature_still_has_what_the_hand_off_reads():
    """If this fails, megatron-core changed SelfAttention.forward: re-check trainer/megatron/layers.py."""
    from megatron.core.transformer.attention import SelfAttention

    assert set(layers.SELF_ATTENTION_PARAMS) <= set(inspect.signature(SelfAttention.forward).parameters)


def test_rope_hand_off_matches_upstream_outputs_and_gradients(model_parallel, tiny_transformer_config, monkeypatch):
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(3))
    ref_loss, ref_grads = _run(_gpt(tiny_transformer_config(), hand_off=False), ids)
    calls = []
    monkeypatch.setattr(layers, "apply_rope", lambda t, f: calls.append(t.shape) or
                        layers._apply_rotary_pos_emb_bshd(t, f))
    model = _gpt(tiny_transformer_config(), hand_off=True)
    assert isinstance(model.decoder.layers[0].self_attention, layers.RopeInCoreSelfAttention)
    loss, grads = _run(model, ids)
    assert len(calls) == 2 * 2  # query and key of each of the 2 layers, applied once each
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    assert model.decoder.layers[0].self_attention.core_attention.pending_rope is None


@pytest.mark.parametrize("frozen", [False, True])
def test_lean_linears_match_upstream_linears(model_parallel, tiny_transformer_config, frozen):
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(4))
    ref_model = _gpt(tiny_transformer_config(), True, lean=False, frozen=frozen)
    model = _gpt(tiny_transformer_config(), True, lean=True, frozen=frozen)
    layer = model.decoder.layers[0]
    assert isinstance(layer.self_attention.linear_qkv, layers.LeanColumnParallelLinear)
    assert isinstance(layer.mlp.linear_fc2, layers.LeanRowParallelLinear)
    assert not isinstance(ref_model.decoder.layers[0].mlp.linear_fc2, layers.LeanRowParallelLinear)
    assert sorted(model.state_dict()) == sorted(ref_model.state_dict())
    ref_loss, ref_grads = _run(ref_model, ids)
    loss, grads = _run(model, ids)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) >= (2 if frozen else 17)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_rope_is_not_handed_off_when_core_attention_is_recomputed(model_parallel, tiny_transformer_config):
    model = _gpt(tiny_transformer_config(), hand_off=True)
    attention = model.decoder.layers[0].self_attention
    attention.checkpoint_core_attention = True
    assert not attention._can_hand_off({"rotary_pos_emb": torch.zeros(1)})
    attention.checkpoint_core_attention = False
    assert attention._can_hand_off({"rotary_pos_emb": torch.zeros(1)})
    assert not attention._can_hand_off({"rotary_pos_emb": None})


def test_cuda_graphs_cover_training_passes_only(model_parallel, tiny_transformer_config):
    """Upstream graphs no-grad passes too (the preflight validation then recorded forward-only
    graphs that training replayed); TrainGraphsTransformerLayer runs those eagerly."""
    from megatron.core.transformer.transformer_layer import TransformerLayer

    layer = _gpt(tiny_transformer_config(), hand_off=True).decoder.layers[0]
    assert isinstance(layer, layers.TrainGraphsTransformerLayer)
    assert not layer._should_call_local_cudagraph(inference_context=None)  # no manager: graphs off
    layer.cudagraph_manager = object()  # what GraphableMegatronModule sets for cuda_graph_impl="local"
    assert layer._should_call_local_cudagraph(inference_context=None)
    with torch.no_grad():
        assert not layer._should_call_local_cudagraph(inference_context=None)
        # If this fails, upstream stopped graphing no-grad passes: the subclass can go.
        assert TransformerLayer._should_call_local_cudagraph(layer, inference_context=None)
