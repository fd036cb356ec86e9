"""trainer/megatron/multi_tensor_scale.py: the same bits as megatron's Python fallback, on its own and
inside megatron-core's real bf16 optimizer (clipping and the main-to-model copy, CPU, gloo); fails if
upstream stops reading the module globals it replaces."""

from __future__ import annotations

import pytest

pytest.importorskip("megatron.core", reason="needs megatron-core (the train extra)")

import torch  # noqa: E402

import megatron_cpu as mc  # noqa: E402
from trainer.megatron import multi_tensor_scale  # noqa: E402


def _lists(src_dtype, dst_dtype):
    gen = torch.Generator().manual_seed(0)
    src = [torch.randn(shape, generator=gen).to(src_dtype) for shape in [(7,), (3, 5), (16, 4), (1,), (0,)]]
    return src, [torch.zeros_like(t, dtype=dst_dtype) for t in src]


@pytest.mark.parametrize("src_dtype,dst_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
                                                 (torch.float32, torch.float32)])
@pytest.mark.parametrize("factor", [1.0, 0.3173])
def test_copy_is_bit_equal_to_the_fallback(src_dtype, dst_dtype, factor):
    from megatron.core.utils import local_multi_tensor_scale

    src, expected = _lists(src_dtype, dst_dtype)
    _, got = _lists(src_dtype, dst_dtype)
    local_multi_tensor_scale(2048 * 32, None, [src, expected], factor)
    multi_tensor_scale.scale(2048 * 32, None, [src, got], factor)
    for e, g in zip(expected, got):
        assert g.dtype == dst_dtype and torch.equal(e, g)
    assert any(e.abs().sum() > 0 for e in expected)


@pytest.mark.parametrize("factor", [1.0, 0.3173])
def test_in_place_scale_is_bit_equal_to_the_fallback(factor):
    from megatron.core.utils import local_multi_tensor_scale

    expected, _ = _lists(torch.float32, torch.float32)
    got = [t.clone() for t in expected]
    local_multi_tensor_scale(2048 * 32, None, [expected, expected], factor)
    multi_tensor_scale.scale(2048 * 32, None, [got, got], factor)
    assert all(torch.equal(e, g) for e, g in zip(expected, got))


def test_empty_and_mismatched_lists():
    multi_tensor_scale.scale(2048, None, [[], []], 0.5)
    with pytest.raises(ValueError, match="2 sources for 1 destinations"):
        multi_tensor_scale.scale(2048, None, [[torch.ones(1), torch.ones(1)], [torch.ones(1)]], 0.5)


def _train(steps: int):
    ddp, opt = mc.build(bf16=True, distributed_optimizer=False)
    losses = [mc.train_step(ddp, opt, step) for step in range(steps)]
    return losses, mc.master_params(opt), [p.detach().clone() for p in ddp.module.parameters()]


def test_megatrons_bf16_optimizer_trains_to_the_same_bits(on_cpu, monkeypatch):
    """Clipping (the norm is above clip_grad=1.0 here) and the fp32 -> bf16 copy both run through it."""
    from megatron.core.optimizer import clip_grads, optimizer
    from megatron.core.utils import local_multi_tensor_scale

    calls = []

    def counting(chunk, flag, lists, factor):
        calls.append(factor)
        multi_tensor_scale.scale(chunk, flag, lists, factor)

    for module in (clip_grads, optimizer):
        monkeypatch.setattr(module, "multi_tensor_scale_impl", local_multi_tensor_scale)
    ref = _train(3)
    for module in (clip_grads, optimizer):
        monkeypatch.setattr(module, "multi_tensor_scale_impl", counting)
    copies = []

    def counting_copy(this, that, overflow_buf=None):
        copies.append((len(this), overflow_buf))
        multi_tensor_scale.copy_this_to_that(this, that, overflow_buf)

    monkeypatch.setattr(optimizer, "_multi_tensor_copy_this_to_that", counting_copy)
    got = _train(3)
    assert got[0] == ref[0]
    for a, b in zip(ref[1] + ref[2], got[1] + got[2]):
        assert torch.equal(a, b)
    assert any(f != 1.0 for f in calls), calls  # gradients were clipped
    assert len(copies) == 3 and all(n > 10 and buf is None for n, buf in copies), copies  # fp32 -> bf16 model


def test_install_replaces_megatrons_local_fallback(monkeypatch):
    """If this fails, megatron-core changed how its optimizer picks the scale kernel: re-check the module."""
    from megatron.core.optimizer import clip_grads, optimizer
    from megatron.core.utils import local_multi_tensor_scale

    for module in (clip_grads, optimizer):
        monkeypatch.setattr(module, "multi_tensor_scale_impl", local_multi_tensor_scale)
    monkeypatch.setattr(optimizer, "_multi_tensor_copy_this_to_that", optimizer._multi_tensor_copy_this_to_that)
    assert "copy_" in optimizer._multi_tensor_copy_this_to_that.__code__.co_names  # upstream's loop
    assert multi_tensor_scale.install() is True
    assert optimizer._multi_tensor_copy_this_to_that is multi_tensor_scale.copy_this_to_that
    assert clip_grads.multi_tensor_scale_impl is multi_tensor_scale.scale
    assert optimizer.multi_tensor_scale_impl is multi_tensor_scale.scale
    assert multi_tensor_scale.install() is True  # idempotent
    multi_tensor_scale.uninstall()
    assert clip_grads.multi_tensor_scale_impl is local_multi_tensor_scale
    assert optimizer.multi_tensor_scale_impl is local_multi_tensor_scale
    assert "copy_" in optimizer._multi_tensor_copy_this_to_that.__code__.co_names
    assert "multi_tensor_scale_impl" in clip_grads.clip_grad_by_total_norm_fp32.__code__.co_names
    for name in ("_copy_main_params_to_model_params", "_copy_model_params_to_main_params"):
        code = getattr(optimizer.Float16OptimizerWithFloat16Params, name).__code__
        assert "_multi_tensor_copy_this_to_that" in code.co_names, name


def test_docstring_examples():
    import doctest

    assert doctest.testmod(multi_tensor_scale).failed == 0
