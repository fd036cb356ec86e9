"""trainer.megatron.fused_loss: the chunked output layer + cross-entropy against the unfused
computation, alone (float64 references) and inside a real megatron-core GPTModel."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trainer.megatron.fused_loss import POSTPROCESS_PARAMS, install, linear_cross_entropy  # noqa: E402


def _reference(hidden, weight, labels):
    s, b, _ = hidden.shape
    logits = (hidden @ weight.t()).float()  # megatron: logits in the model's dtype, loss in float32
    return torch.nn.functional.cross_entropy(logits.transpose(0, 1).reshape(s * b, -1), labels.reshape(-1),
                                             reduction="none").view(b, s)


def _inputs(seed, s=13, b=3, h=16, vocab=37, dtype=torch.float64, w_grad=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(s, b, h, generator=gen, dtype=dtype).requires_grad_()
    weight = torch.randn(vocab, h, generator=gen, dtype=dtype).requires_grad_(w_grad)
    labels = torch.randint(0, vocab, (b, s), generator=gen)
    upstream_grad = torch.rand(b, s, generator=gen, dtype=torch.float32)  # a loss mask / token count
    return hidden, weight, labels, upstream_grad


@pytest.mark.parametrize("chunk", [1, 5, 13 * 3, 1000])
@pytest.mark.parametrize("w_grad", [True, False])
def test_matches_unfused_loss_and_gradients(chunk, w_grad):
    hidden, weight, labels, g = _inputs(chunk, w_grad=w_grad)
    ref = _reference(hidden, weight, labels)
    (ref * g).sum().backward()
    ref_h, ref_w = hidden.grad.clone(), (weight.grad.clone() if w_grad else None)
    hidden.grad, weight.grad = None, None

    out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=chunk)
    assert out.shape == (3, 13) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref.float(), rtol=1e-6, atol=1e-6)
    (out * g).sum().backward()
    torch.testing.assert_close(hidden.grad, ref_h, rtol=1e-4, atol=1e-5)  # float32 math inside
    if w_grad:
        torch.testing.assert_close(weight.grad, ref_w, rtol=1e-4, atol=1e-5)
    else:
        assert weight.grad is None


def test_bfloat16_close_to_megatron_style_reference():
    hidden, weight, labels, g = _inputs(7, s=64, b=2, h=64, vocab=300, dtype=torch.bfloat16, w_grad=False)
    ref = _reference(hidden, weight, labels)
    (ref * g).sum().backward()
    ref_h, hidden.grad = hidden.grad.clone(), None
    out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=50)
    (out * g).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # same bf16 logits, same float32 math
    rel = (hidden.grad.float() - ref_h.float()).norm() / ref_h.float().norm()
    assert rel < 1e-2  # bf16 rounding of (softmax - onehot) before vs after the scaling


def test_no_grad_gives_loss_only():
    hidden, weight, labels, _ = _inputs(3)
    with torch.no_grad():
        out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=4)
    assert not out.requires_grad
    torch.testing.assert_close(out, _reference(hidden, weight, labels).float().detach())


# --- inside megatron-core's GPTModel -------------------------------------------------------------

megatron = pytest.importorskip("megatron.core", reason="needs megatron-core (dev or train extra)")



def _tiny_gpt(config, tied: bool, seed: int = 0):
    from megatron.core.models.gpt import GPTModel

    from trainer.megatron.cpu_shims import megatron_on_cpu
    from trainer.megatron.layers import sdpa_layer_spec

    torch.manual_seed(seed)
    with megatron_on_cpu():
        return GPTModel(config=config, transformer_layer_spec=sdpa_layer_spec(config),
                        vocab_size=256, max_sequence_length=64, share_embeddings_and_output_weights=tied,
                        position_embedding_type="rope")


def _loss_and_grads(model, ids, g):
    from trainer.megatron.cpu_shims import megatron_on_cpu

    model.zero_grad(set_to_none=True)
    s = ids.shape[1]
    pos = torch.arange(s).unsqueeze(0).expand_as(ids)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)[None, None]
    with megatron_on_cpu():
        loss = model(ids, pos, mask, labels=ids)
    (loss * g).sum().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_postprocess_signature_still_has_what_install_binds():
    """If this fails, megatron-core changed GPTModel._postprocess: re-check trainer/megatron/fused_loss.py."""
    import inspect

    from megatron.core.models.gpt import GPTModel

    assert set(POSTPROCESS_PARAMS) <= set(inspect.signature(GPTModel._postprocess).parameters)


@pytest.mark.parametrize("tied,frozen_output", [(True, False), (False, False), (True, True)])
def test_same_loss_and_gradients_as_upstream_in_gpt_model(model_parallel, tiny_transformer_config, tied,
                                                          frozen_output):
    model = _tiny_gpt(tiny_transformer_config(), tied)
    if frozen_output:  # LoRA-like: the (tied) output weight frozen, the layers trained
        model.embedding.word_embeddings.weight.requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (2, 24), generator=gen)
    g = torch.rand(2, 24, generator=gen)
    ref_loss, ref_grads = _loss_and_grads(model, ids, g)
    install(model, chunk_tokens=10)
    loss, grads = _loss_and_grads(model, ids, g)
    assert ref_loss.shape == loss.shape == (2, 24)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 5
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_inference_path_unchanged(model_parallel, tiny_transformer_config):
    from trainer.megatron.cpu_shims import megatron_on_cpu

    model = _tiny_gpt(tiny_transformer_config(), True).eval()
    ids = torch.randint(0, 256, (1, 16))
    pos = torch.arange(16).unsqueeze(0)
    mask = torch.triu(torch.ones(16, 16, dtype=torch.bool), diagonal=1)[None, None]
    with torch.no_grad(), megatron_on_cpu():
        ref = model(ids, pos, mask)
        install(model)
        out = model(ids, pos, mask)
    assert out.shape == (1, 16, 256)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_nemo_model_installs_fused_loss_when_asked(model_parallel):
    pytest.importorskip("nemo.collections.llm", reason="needs the train extra")
    from nemo.collections.llm.gpt.model.qwen2 import Qwen2Config

    from trainer.megatron.cpu_shims import megatron_on_cpu
    from trainer.megatron.layers import sdpa_layer_spec
    from trainer.megatron.model import JaQwen2Model

    def build(chunk):
        config = Qwen2Config(num_layers=1, hidden_size=32, num_attention_heads=4, num_query_groups=2,
                             ffn_hidden_size=64, vocab_size=256, seq_length=16, use_cpu_initialization=True,
                             params_dtype=torch.float32, transformer_layer_spec=sdpa_layer_spec)
        model = JaQwen2Model(config)
        model.fused_loss_chunk_tokens = chunk
        with megatron_on_cpu():
            model.configure_model()
        return model.module

    assert build(8).fused_loss_chunk_tokens == 8 and "_postprocess" in vars(build(8))
    assert "_postprocess" not in vars(build(None))


def test_docstring_examples():
    import doctest

    from trainer.megatron import fused_loss

    result = doctest.testmod(fused_loss)
    assert result.attempted > 0 and result.failed == 0


def test_bfloat16_weight_gradient_accumulated_in_float32():
    # full-parameter runs: W's gradient sums bf16 chunk products into float32, the upstream gradient
    # scaled into (softmax - onehot) in float32 before its one rounding to bf16
    hidden, weight, labels, g = _inputs(7, s=64, b=2, h=64, vocab=300, dtype=torch.bfloat16, w_grad=True)
    ref = _reference(hidden.float(), weight.float(), labels)
    (ref * g).sum().backward()
    ref_h, ref_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=50)
    (out * g).sum().backward()
    assert weight.grad.dtype == torch.bfloat16 and hidden.grad.dtype == torch.bfloat16
    for got, want in ((hidden.grad, ref_h), (weight.grad, ref_w)):
        rel = (got.float() - want.float()).norm() / want.float().norm()
        assert rel < 2e-2, rel


def test_accumulate_product_adds_into_float32():
    from trainer.megatron.fused_loss import accumulate_product

    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 5, generator=gen), torch.randn(5, 4, generator=gen)
    acc = torch.ones(6, 4)
    accumulate_product(acc, a, b)  # same dtype: addmm_ in place
    torch.testing.assert_close(acc, 1 + a @ b)
    acc16 = torch.ones(6, 4)
    accumulate_product(acc16, a.bfloat16(), b.bfloat16())
    assert acc16.dtype == torch.float32
    torch.testing.assert_close(acc16, 1 + (a.bfloat16() @ b.bfloat16()).float())


def test_torch_still_has_the_float32_output_addmm():
    # accumulate_product's CUDA path: cuBLAS bf16 x bf16 -> float32 into the accumulator
    schema = str(torch.ops.aten.addmm.dtype_out._schema)
    assert "ScalarType out_dtype" in schema and "Tensor(a!) out" in schema
