"""trainer.megatron.grad_norm: same norm as megatron's fallback, swapped into the global it uses."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core", reason="needs megatron-core (dev or train extra)")

from trainer.megatron import grad_norm  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_same_value_as_upstream_formula(dtype):
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=gen).to(dtype) for shape in [(7,), (3, 5), (16, 4), (1,)]]
    expected = torch.norm(torch.tensor([float(torch.norm(g)) for g in grads]))  # what upstream computes
    got, per_tensor = grad_norm.l2_norm(2048 * 32, None, [grads], False)
    assert per_tensor is None and got.shape == (1,) and got.dtype == torch.float32
    torch.testing.assert_close(got[0], expected.float(), rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=0)


def test_install_replaces_megatrons_local_fallback():
    """If this fails, megatron-core changed how clip_grads picks its l2-norm kernel: re-check grad_norm.py."""
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import local_multi_tensor_l2_norm

    saved = clip_grads.l2_norm_impl
    try:
        clip_grads.l2_norm_impl = local_multi_tensor_l2_norm
        assert grad_norm.install() is True
        assert clip_grads.l2_norm_impl is grad_norm.l2_norm
        assert grad_norm.install() is True  # idempotent
    finally:
        clip_grads.l2_norm_impl = saved
    assert "l2_norm_impl" in clip_grads.get_grad_norm_fp32.__code__.co_names


def test_docstring_examples():
    import doctest

    assert doctest.testmod(grad_norm).failed == 0
