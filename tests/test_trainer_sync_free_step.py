"""trainer/megatron/sync_free_step.py: megatron-core's real bf16 optimizer (CPU, gloo) trains to the same
bits with it as without, clipping or not; the gradient norm, the clipping and NeMo's loss reduction ask
nothing of the host; a NaN gradient stops the run; and the guard fails if upstream stops calling the names
it replaces."""

from __future__ import annotations

import inspect
import math

import pytest

pytest.importorskip("megatron.core", reason="needs megatron-core (the train extra)")
pytest.importorskip("nemo.lightning", reason="needs NeMo (the train extra)")

import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

import megatron_cpu as mc  # noqa: E402
from trainer.megatron import sync_free_step  # noqa: E402


class NoHostReads(TorchFunctionMode):
    """Fails on every way a tensor's value reaches Python (on a GPU, each is a host-device sync)."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.cpu, torch.Tensor.numpy}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            raise AssertionError(f"host read of a tensor: {func.__name__}")
        return func(*args, **(kwargs or {}))


def _train(steps: int, clip_grad: float | None = None):
    ddp, opt = mc.build(bf16=True, distributed_optimizer=False)
    if clip_grad is not None:
        for o in opt.chained_optimizers:
            o.config.clip_grad = clip_grad
    losses = [mc.train_step(ddp, opt, step) for step in range(steps)]
    return losses, mc.master_params(opt), [p.detach().clone() for p in ddp.module.parameters()]


@pytest.fixture
def installed():
    assert sync_free_step.install() is True
    yield
    sync_free_step.uninstall()


@pytest.mark.parametrize("clip_grad", [1.0, 1e6])  # 1.0 clips every step here, 1e6 none
def test_megatrons_bf16_optimizer_trains_to_the_same_bits(on_cpu, clip_grad):
    ref = _train(3, clip_grad)
    assert sync_free_step.install() is True
    try:
        norms = []
        got = _train(3, clip_grad)
        norms.append(sync_free_step.check_norm(float(sync_free_step.peek_norm()), step=3))
    finally:
        sync_free_step.uninstall()
    assert got[0] == ref[0]
    for a, b in zip(ref[1] + ref[2], got[1] + got[2]):
        assert torch.equal(a, b)
    assert norms[0] is not None and math.isfinite(norms[0]) and norms[0] > 0
    assert (norms[0] > clip_grad) == (clip_grad == 1.0), norms  # the clipping case did clip


def test_norm_and_clipping_read_nothing_on_the_host(on_cpu, installed):
    from megatron.core import parallel_state
    from megatron.core.optimizer import optimizer as mopt

    ddp, opt = mc.build(bf16=True, distributed_optimizer=False)
    ids = mc.global_batch(0)
    pos = torch.arange(mc.SEQ).unsqueeze(0).expand(ids.shape[0], -1)
    mask = torch.triu(torch.ones(mc.SEQ, mc.SEQ, dtype=torch.bool), 1)[None, None]
    ddp(ids, pos, mask, labels=ids).float().mean().backward()
    ddp.finish_grad_sync()
    opt.prepare_grads()
    inner = opt.chained_optimizers[0]
    grads = [p.grad.clone() for p in inner.get_parameters()]
    with NoHostReads():
        norm = opt.get_grad_norm()
        mopt.clip_grad_by_total_norm_fp32(inner.get_parameters(), 1.0, norm)
    assert isinstance(norm, torch.Tensor) and norm.dtype == torch.float64 and norm.dim() == 0
    expected = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    assert float(norm) == pytest.approx(expected, rel=1e-6)
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))
    for g, p in zip(grads, inner.get_parameters()):
        assert torch.equal(p.grad, g * torch.tensor(scale, dtype=torch.float32))
    assert parallel_state.get_data_parallel_world_size() == 1


def _micro(loss_sum: float, tokens: int) -> dict:
    return {"loss_sum_and_ub_size": torch.tensor([loss_sum, float(tokens)])}


@pytest.mark.parametrize("micro", [
    [(6.0, 3), (2.0, 1)],
    [(6.0, 3), (float("nan"), 0), (1.5, 2)],  # a micro batch without a valid token, its sum NaN
    [(0.0, 0), (0.0, 0)],
])
def test_loss_reduction_equals_nemos_without_host_reads(model_parallel, micro):
    from nemo.lightning.megatron_parallel import MaskedTokenLossReduction

    outputs = [_micro(*m) for m in micro]
    upstream = MaskedTokenLossReduction.reduce
    with mc.cuda_on_cpu():
        expected = upstream(MaskedTokenLossReduction(), outputs)
        assert sync_free_step.install() is True
        try:
            with NoHostReads():
                got = MaskedTokenLossReduction().reduce(outputs)
        finally:
            sync_free_step.uninstall()
    assert MaskedTokenLossReduction.reduce is upstream
    assert torch.equal(got, expected) or (got.isnan().item() and expected.isnan().item()), (got, expected)


def test_a_nan_gradient_norm_stops_the_run():
    sync_free_step._last_norm[:] = [torch.tensor(float("nan"), dtype=torch.float64)]
    with pytest.raises(sync_free_step.NonFiniteGradient, match="step 7: the gradient norm is nan"):
        sync_free_step.check_norm(float(sync_free_step.peek_norm()), step=7)
    sync_free_step._last_norm[:] = [torch.tensor(0.25, dtype=torch.float64)]
    assert sync_free_step.check_norm(float(sync_free_step.peek_norm()), step=8) == 0.25
    assert sync_free_step.check_norm(None, step=9) is None  # no norm computed: nothing to check


def test_install_replaces_the_names_upstream_calls():
    """If this fails, megatron-core or NeMo changed where the optimizer or the reduction look these up."""
    from megatron.core.optimizer import clip_grads, optimizer
    from nemo.lightning.megatron_parallel import MaskedTokenLossReduction

    before = (optimizer.get_grad_norm_fp32, optimizer.clip_grad_by_total_norm_fp32, MaskedTokenLossReduction.reduce)
    assert before[0] is clip_grads.get_grad_norm_fp32
    assert "item" in clip_grads.get_grad_norm_fp32.__code__.co_names  # upstream's sync we avoid
    assert sync_free_step.install() is True
    assert sync_free_step.install() is True  # idempotent
    assert optimizer.get_grad_norm_fp32 is sync_free_step.grad_norm_fp32
    assert optimizer.clip_grad_by_total_norm_fp32 is sync_free_step.clip_by_total_norm
    assert MaskedTokenLossReduction.reduce is sync_free_step.reduce_without_sync
    from nemo.lightning.pytorch.optim.base import OptimizerModule

    assert OptimizerModule.on_train_batch_start is sync_free_step.log_lr_without_sync
    sync_free_step.uninstall()
    assert OptimizerModule.on_train_batch_start is not sync_free_step.log_lr_without_sync
    assert "'lr'" in inspect.getsource(OptimizerModule.on_train_batch_start)  # what log_lr_without_sync logs
    assert (optimizer.get_grad_norm_fp32, optimizer.clip_grad_by_total_norm_fp32,
            MaskedTokenLossReduction.reduce) == before
    source = inspect.getsource(MaskedTokenLossReduction.reduce)  # what reduce_without_sync reproduces
    assert '["loss_sum_and_ub_size"][1] > 0' in source and "loss[0] / loss[1]" in source


def test_the_ddp_nan_check_is_off_only_with_the_option():
    from trainer.run import parallel
    from trainer.run.config import load_config

    cfg = load_config("configs/qwen25_05b_ja_lora.yaml", [])
    assert parallel.ddp_config(cfg).check_for_nan_in_grad is True
    cfg = load_config("configs/qwen25_05b_ja_lora.yaml", ["optim.sync_free_step=true"])
    assert parallel.ddp_config(cfg).check_for_nan_in_grad is False
    with pytest.raises(ValueError, match="optim.sync_free_step"):
        load_config("configs/qwen25_05b_ja_lora.yaml", ["optim.sync_free_step=true", "optim.clip_grad=0"])


def test_the_learning_rate_is_logged_as_nemo_logs_it():
    class Module:
        def __init__(self):
            self.logged = []

        def log(self, name, value, **kwargs):
            self.logged.append((name, value, kwargs))

    class Owner:
        _optimizers = [torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0125)]

    module = Module()
    sync_free_step.log_lr_without_sync(Owner(), None, module, None, 0)
    (name, value, kwargs), = module.logged
    assert name == "lr" and float(value) == pytest.approx(0.0125) and kwargs == {"batch_size": 1, "prog_bar": True}
