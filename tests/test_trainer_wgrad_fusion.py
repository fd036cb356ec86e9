"""trainer/megatron/wgrad_fusion.py on megatron-core's real DDP (CPU, gloo): the linear layers' weight
gradients go straight into ``main_grad``, DDP's hook adds nothing for them, and training matches
the path where autograd forms the gradients and the hook adds them; fails if the upstream flags
this relies on move."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("megatron.core", reason="needs megatron-core (the train extra)")

import torch  # noqa: E402

import megatron_cpu as mc  # noqa: E402
from trainer.megatron import wgrad_fusion  # noqa: E402

LINEARS = ("linear_qkv.weight", "linear_proj.weight", "linear_fc1.weight", "linear_fc2.weight")


def _fused_flags(ddp):
    return {n: bool(p.grad_added_to_main_grad) for n, p in ddp.module.named_parameters() if n.endswith(LINEARS)}


@pytest.mark.parametrize("bf16", [False, True])
def test_same_training_as_the_hook_adding_gradients(on_cpu, bf16):
    ref_ddp, ref_opt = mc.build(bf16=bf16, distributed_optimizer=False)
    ddp, opt = mc.build(bf16=bf16, distributed_optimizer=False, wgrad_fusion=True)
    for step in range(3):
        ref_loss = mc.train_step(ref_ddp, ref_opt, step)
        loss = mc.train_step(ddp, opt, step)
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
        flags = _fused_flags(ddp)
        assert len(flags) == 8 and all(flags.values()), flags  # 2 layers x 4 linears went the fused way
        assert not any(_fused_flags(ref_ddp).values())
    for a, b in zip(mc.master_params(ref_opt), mc.master_params(opt)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_accumulates_over_micro_batches(on_cpu):
    """Two backward passes before the optimizer: main_grad holds their sum, as DDP's hook would."""
    grads = []
    for fused in (False, True):
        ddp, _ = mc.build(distributed_optimizer=False, wgrad_fusion=fused)
        ddp.zero_grad_buffer()
        pos = torch.arange(mc.SEQ).unsqueeze(0).expand(2, -1)
        mask = torch.triu(torch.ones(mc.SEQ, mc.SEQ, dtype=torch.bool), 1)[None, None]
        for step in range(2):
            ids = mc.global_batch(step)[:2]
            ddp(ids, pos, mask, labels=ids).float().mean().backward()
        grads.append({n: p.main_grad.clone() for n, p in ddp.module.named_parameters() if n.endswith(LINEARS)})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 8
    for name, ref in grads[0].items():
        assert ref.abs().sum() > 0
        torch.testing.assert_close(grads[1][name], ref, rtol=1e-5, atol=1e-7, msg=name)


def test_frozen_and_plain_weights_keep_f_linear():
    class Layer:
        config = type("C", (), {wgrad_fusion.CONFIG_ATTR: True})()

    w = torch.nn.Parameter(torch.randn(3, 4))
    assert not wgrad_fusion.wanted(Layer, w)  # no main_grad: not under megatron's DDP
    w.main_grad = torch.zeros(3, 4)
    assert wgrad_fusion.wanted(Layer, w)
    w.requires_grad_(False)
    assert not wgrad_fusion.wanted(Layer, w)  # frozen (LoRA)
    w.requires_grad_(True)
    with torch.no_grad():
        assert not wgrad_fusion.wanted(Layer, w)
    Layer.config = type("C", (), {})()
    assert not wgrad_fusion.wanted(Layer, w)  # the option is off


def test_upstream_flags_this_relies_on(on_cpu):
    from megatron.core.distributed import distributed_data_parallel as ddp_module
    from megatron.core.transformer import cuda_graphs

    hook = inspect.getsource(ddp_module.DistributedDataParallel._make_backward_post_hook)
    assert "grad_added_to_main_grad" in hook and "main_grad.add_" in hook
    assert "grad_added_to_main_grad = False" in inspect.getsource(ddp_module.DistributedDataParallel.zero_grad_buffer)
    runner_src = inspect.getsource(cuda_graphs._CudaGraphRunner)
    assert "groundtruth_grad_added_to_main_grad" in runner_src and "get_input_grads_with_dummy_flags" in runner_src
    wgrad_fusion.install()
    wgrad_fusion.install()  # idempotent
    for fused in (False, True):
        ddp, _ = mc.build(distributed_optimizer=False, wgrad_fusion=fused)
        layer = ddp.module.decoder.layers[0]
        runner = cuda_graphs._CudaGraphRunner(layer, None, None, [], {})
        assert runner.fuse_wgrad_accumulation is fused
        assert layer.config.gradient_accumulation_fusion is False  # never the config's flag
