"""trainer.megatron.lora_kernels: the fused LoRA linear equals plain autograd ops with the same
dropout mask (output and every gradient), draws a new mask per call, keeps 1 - p of the inputs.

The Triton kernels run in Triton's interpreter on a CPU machine when Triton is importable
(a subprocess with TRITON_INTERPRET=1), on the GPU itself where there is one; without Triton
those two tests skip and the torch path (the same function, torch ops) is what runs here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from childproc import default_sigint

torch = pytest.importorskip("torch")

from trainer.megatron import lora_kernels as lk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _inputs(n=300, k=200, o=96, r=16, dtype=None, device="cpu", bias_grad=True):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=gen).to(device, dtype or torch.float32).requires_grad_()
    w = (torch.randn(o, k, generator=gen) / k ** 0.5).to(device, x.dtype)
    bias = torch.randn(o, generator=gen).to(device, x.dtype).requires_grad_(bias_grad)
    a = (torch.randn(r, k, generator=gen) / k ** 0.5).to(device, x.dtype).requires_grad_()
    b = (torch.randn(o, r, generator=gen) / r ** 0.5).to(device, x.dtype).requires_grad_()
    g = torch.randn(n, o, generator=gen).to(device, x.dtype)
    return x, w, bias, a, b, g


def _fused_and_reference(p, shape=(300, 200), lead=None):
    x, w, bias, a, b, g = _inputs(*shape)
    if lead:  # megatron's [s, b, h] layout
        x = x.detach().view(*lead, shape[1]).requires_grad_()
        g = g.view(*lead, g.shape[-1])
    torch.manual_seed(11)
    out = lk.lora_linear(x, w, bias, a, b, 2.0, p)
    grads = torch.autograd.grad(out, (x, bias, a, b), g)
    torch.manual_seed(11)
    keep = lk.torch_keep_mask(lk.new_seed("cpu"), (x.numel() // shape[1], shape[1]), p, "cpu") if p else None
    ref = lk.reference_lora_linear(x, w, bias, a, b, 2.0, keep, p)
    return out, grads, ref, torch.autograd.grad(ref, (x, bias, a, b), g), keep


@pytest.mark.parametrize("p", [0.0, 0.1])
def test_torch_path_equals_autograd_with_its_own_mask(p):
    out, grads, ref, ref_grads, _ = _fused_and_reference(p, lead=(30, 10))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("x", "bias", "a", "b"), grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4, msg=name)


def test_dropout_is_real_keeps_one_minus_p_and_changes_per_call():
    _, _, _, _, keep = _fused_and_reference(0.1, shape=(2000, 200))
    assert abs(keep.float().mean().item() - 0.9) < 0.005  # 400k draws: sd 0.0005
    x, w, bias, a, b, _ = _inputs()
    first, second = (lk.lora_linear(x, w, bias, a, b, 2.0, 0.1) for _ in range(2))
    assert not torch.equal(first, second)
    no_dropout = lk.lora_linear(x, w, bias, a, b, 2.0, 0.0)
    torch.testing.assert_close(no_dropout, lk.reference_lora_linear(x, w, bias, a, b, 2.0, None, 0.0))


def test_a_trainable_base_weight_is_refused_in_backward():
    x, w, bias, a, b, g = _inputs()
    out = lk.lora_linear(x, w.requires_grad_(), bias, a, b, 2.0, 0.1)
    with pytest.raises(RuntimeError, match="base weight must be frozen"):
        out.backward(g)


TRITON_SCRIPT = textwrap.dedent('''
    import torch
    from trainer.megatron import lora_kernels as lk
    assert lk.triton_ok(torch.zeros(1)), "Triton path not taken"
    import sys
    gen = torch.Generator().manual_seed(0)
    n, k, o, r, p = int(sys.argv[1]), 200, 96, 16, 0.1   # neither a multiple of the block sizes
    x = torch.randn(n, k, generator=gen).requires_grad_()
    w, bias = torch.randn(o, k, generator=gen) / k ** 0.5, torch.randn(o, generator=gen)
    a = (torch.randn(r, k, generator=gen) / k ** 0.5).requires_grad_()
    b = (torch.randn(o, r, generator=gen) / r ** 0.5).requires_grad_()
    g = torch.randn(n, o, generator=gen)
    torch.manual_seed(7)
    out = lk.lora_linear(x, w, bias, a, b, 2.0, p)
    grads = torch.autograd.grad(out, (x, a, b), g)
    torch.manual_seed(7)
    keep = lk.keep_mask(lk.new_seed("cpu"), n, k, p)   # the kernels' own Philox mask
    assert abs(keep.float().mean().item() - 0.9) < 0.01, keep.float().mean()
    ref = lk.reference_lora_linear(x, w, bias, a, b, 2.0, keep, p)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, torch.autograd.grad(ref, (x, a, b), g)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
    print("triton kernels ok")
''')


@pytest.mark.parametrize("rows", [300, 16500])  # small and large block choices of both kernels
def test_triton_kernels_equal_the_reference_in_the_interpreter(rows):
    pytest.importorskip("triton", reason="Triton is not installed here (the GPU image has it)")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    result = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, str(rows)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600, preexec_fn=default_sigint)
    assert result.returncode == 0 and "triton kernels ok" in result.stdout, result.stderr[-3000:]


def test_triton_api_the_kernels_use_is_there():
    """If this fails, Triton changed a symbol the kernels are written against."""
    triton = pytest.importorskip("triton", reason="Triton is not installed here (the GPU image has it)")
    import triton.language as tl

    for name in ("rand", "dot", "trans", "where", "load", "store", "program_id", "arange", "zeros", "zeros_like"):
        assert hasattr(tl, name), name
    assert callable(triton.cdiv) and callable(triton.jit)


@pytest.mark.skipif(not torch.cuda.is_available() or lk.triton is None, reason="needs a CUDA GPU and Triton")
def test_gpu_kernels_graph_replays_and_mask():
    result = lk.self_check()
    assert all(err < 2e-2 for err in result["max_rel_error"].values()), result
    assert abs(result["keep_rate"] - 0.9) < 0.005 and result["replays_differ"], result
