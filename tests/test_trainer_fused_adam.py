"""trainer/megatron/fused_adam.py on megatron-core's real optimizer (CPU, gloo): torch's fused
AdamW kernel runs in the step, the weights and losses match the foreach path, and the saved
param groups are untouched."""

from __future__ import annotations

import pytest

pytest.importorskip("megatron.core", reason="needs megatron-core (the train extra)")

import torch  # noqa: E402

import megatron_cpu as mc  # noqa: E402
from trainer.megatron import fused_adam  # noqa: E402


def _adam_ops(ddp, opt, step):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss = mc.train_step(ddp, opt, step)
    return loss, {e.key for e in prof.key_averages() if "adam" in e.key.lower()}


@pytest.mark.parametrize("distributed", [False, True])
def test_fused_kernel_same_training_as_foreach(on_cpu, distributed):
    ref_ddp, ref_opt = mc.build(bf16=True, distributed_optimizer=distributed)
    ddp, opt = mc.build(bf16=True, distributed_optimizer=distributed)
    assert fused_adam.install(opt) == len(fused_adam.torch_adams(opt)) >= 1
    assert fused_adam.install(opt) == len(fused_adam.torch_adams(opt))  # idempotent: no second hook
    groups_before = [{k: v for k, v in g.items() if k != "params"} for a in fused_adam.torch_adams(opt)
                     for g in a.param_groups]
    for step in range(3):
        ref_loss, ref_ops = _adam_ops(ref_ddp, ref_opt, step)
        loss, ops = _adam_ops(ddp, opt, step)
        assert not any("fused_adam" in k for k in ref_ops)
        assert any("_fused_adamw" in k for k in ops), ops  # the fused kernel ran this step
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    for a, b in zip(mc.master_params(ref_opt), mc.master_params(opt)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    groups_after = [{k: v for k, v in g.items() if k != "params"} for a in fused_adam.torch_adams(opt)
                    for g in a.param_groups]
    assert groups_after == groups_before  # fused/foreach put back: checkpoints keep megatron's groups


def test_finds_the_torch_adam_through_nemos_wrapper(on_cpu):
    _, opt = mc.build(bf16=True, distributed_optimizer=False)

    class Wrapper:  # the shape of NeMo's McoreDistributedOptimizer: the megatron optimizer as an attribute
        mcore_optimizer = opt

    found = fused_adam.torch_adams(Wrapper())
    assert found and all(isinstance(a, torch.optim.AdamW) for a in found)
