"""The end of a training step with no host-device synchronisation before the optimizer
(``optim.sync_free_step``).

The host runs ~150 ms ahead of the GPU through a step's micro batches. The sync trace of a
LoRA step (``logging.sync_trace_steps``; one NVIDIA H200, 0.424 s a step) shows where that
lead is thrown away: at 410 ms megatron's NaN check of the gradient buckets waits for the
GPU (two ``.item()``), then NeMo's loss reduction asks each micro batch whether it had a
valid token (``ub_size > 0``: four more), then the gradient norm's ``.item()`` for clipping,
then the logging. From the first of them on, the GPU has nothing queued and idles while the
host runs the optimizer's and Lightning's Python one launch at a time (~14 ms a step).

This plug-in removes them, so that the host queues the optimizer step and the next step
while the GPU still runs the backward:

* :func:`grad_norm_fp32`: megatron's total gradient norm (norm type 2) kept on the device, a
  0-d float64 tensor like the Python float megatron makes of it; :func:`clip_by_total_norm` scales by ``min(1, max_norm / (norm + 1e-6))``
  computed there in float64 as megatron computes it in Python, and always multiplies: below
  the threshold by exactly 1.0 (the same bits; one extra ``foreach`` pass over the gradients).
* :func:`reduce_without_sync`: NeMo's ``MaskedTokenLossReduction.reduce`` with micro batches
  without valid tokens zeroed by ``torch.where`` instead of dropped after a host comparison
  (the same sum: adding 0.0 changes no float).
* megatron's per-bucket NaN check is turned off (``check_for_nan_in_grad=False`` in
  ``trainer/run/parallel.py``) and :func:`check_norm` checks the norm instead, which is not
  finite exactly when some gradient is not: on every rank, read without a wait a step or two
  later (``GradientCheck`` in ``trainer/run/callbacks.py``), and every pending one before
  validation, a checkpoint or the end of the run. The update of that step (and perhaps the
  next) has been applied by then (megatron's check stops before it); the run stops either way,
  and no checkpoint holds it.

After the optimizer, the logging: NeMo's learning-rate log at the next step's start goes from
pinned memory without a wait (:func:`log_lr_without_sync`), and ``MetricsFile`` reads its
values without one (``trainer/run/deferred_values.py``). What still synchronises is
Lightning's conversion of the logged metrics when it writes them to TensorBoard, every
``logging.every_n_steps`` steps.

Upstream (megatron-core 0.15.3; NeMo 2.7.3): replaces ``optimizer.optimizer.get_grad_norm_fp32`` and
``optimizer.optimizer.clip_grad_by_total_norm_fp32`` (the names megatron's optimizers call) and
``nemo.lightning.megatron_parallel.MaskedTokenLossReduction.reduce`` and
``nemo.lightning.pytorch.optim.base.OptimizerModule.on_train_batch_start``.
Guard: ``tests/test_trainer_sync_free_step.py``.
"""

from __future__ import annotations

import inspect
import math

import torch

_UPSTREAM: dict = {}
_last_norm: list = []  # the norm of the step that is ending, still on the device


class NonFiniteGradient(RuntimeError):
    """The gradient norm of a step was NaN or infinite."""


def _l2_norm_impl():
    """megatron's choice of norm kernel, except its local fallback, which reads every norm on the host."""
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import local_multi_tensor_l2_norm

    from trainer.megatron import grad_norm

    impl = clip_grads.l2_norm_impl
    return grad_norm.l2_norm if impl is local_multi_tensor_l2_norm else impl


def grad_norm_fp32(grads_for_norm, norm_type=2, grad_stats_parallel_group=None):
    """megatron's ``get_grad_norm_fp32`` for norm type 2 without its ``.item()``: a 0-d float64 tensor.

    Other norm types go to upstream's function (a Python float, one sync).
    """
    from megatron.core.optimizer import clip_grads

    if float(norm_type) != 2.0:
        return _UPSTREAM[("optimizer", "get_grad_norm_fp32")](grads_for_norm, norm_type, grad_stats_parallel_group)
    if isinstance(grads_for_norm, torch.Tensor):
        grads_for_norm = [grads_for_norm]
    data_parallel_group = None
    for grad in grads_for_norm:
        data_parallel_group = clip_grads.get_data_parallel_group_if_dtensor(grad, data_parallel_group)
    grads_for_norm = [clip_grads.to_local_if_dtensor(grad) for grad in grads_for_norm]
    if grads_for_norm:
        flag = torch.zeros(1, dtype=torch.int, device="cuda")
        norm, _ = clip_grads.multi_tensor_applier(_l2_norm_impl(), flag, [grads_for_norm], False)
    else:
        norm = torch.zeros(1, dtype=torch.float, device="cuda")
    total = norm.float() ** 2.0
    if data_parallel_group:
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=data_parallel_group)
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=grad_stats_parallel_group)
    result = total.reshape(()).double().sqrt()  # float64, like upstream's Python ``x.item() ** 0.5``
    _last_norm[:] = [result]
    return result


def clip_by_total_norm(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """megatron's ``clip_grad_by_total_norm_fp32`` for a norm still on the device (a float goes upstream)."""
    if not isinstance(total_norm, torch.Tensor):
        return _UPSTREAM[("optimizer", "clip_grad_by_total_norm_fp32")](parameters, max_norm, total_norm,
                                                                       use_decoupled_grad)
    from megatron.core.optimizer import clip_grads

    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    grads = [clip_grads.to_local_if_dtensor(getattr(p, attr)).detach() for p in parameters
             if getattr(p, attr, None) is not None]
    if not grads:
        return
    coeff = (max_norm / (total_norm.double() + 1.0e-6)).clamp(max=1.0).float()  # megatron: float64, then the kernel's float32
    torch._foreach_mul_(grads, coeff.to(grads[0].device))


def reduce_without_sync(self, losses_reduced_per_micro_batch) -> torch.Tensor:
    """NeMo's ``MaskedTokenLossReduction.reduce`` without a host comparison per micro batch."""
    if not losses_reduced_per_micro_batch or "avg" in losses_reduced_per_micro_batch[0]:
        return _UPSTREAM[("nemo", "reduce")](self, losses_reduced_per_micro_batch)
    from megatron.core import parallel_state

    stacked = torch.vstack([x["loss_sum_and_ub_size"] for x in losses_reduced_per_micro_batch])
    loss = torch.where(stacked[:, 1:2] > 0, stacked, torch.zeros_like(stacked)).sum(dim=0)
    torch.distributed.all_reduce(loss, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
    return loss[0] / loss[1]


def peek_norm() -> torch.Tensor | None:
    """The gradient norm of the step that is ending (a device tensor), or None if none was computed."""
    return _last_norm[0] if _last_norm else None


def check_norm(value: float | None, step: int) -> float | None:
    """Raise :class:`NonFiniteGradient` if ``value``, step ``step``'s gradient norm, is NaN or infinite."""
    if value is not None and not math.isfinite(value):
        raise NonFiniteGradient(
            f"step {step}: the gradient norm is {value}: some gradient overflowed or is NaN (a learning rate "
            "too high, broken input, or bad base weights). The run stops before this step is checkpointed; "
            "resume from the last checkpoint with a lower optim.lr, or set optim.sync_free_step=false to have "
            "megatron name the first bad gradient bucket before the update.")
    return value


def log_lr_without_sync(self, trainer, pl_module, batch, batch_idx) -> None:
    """NeMo's ``OptimizerModule.on_train_batch_start``, the learning rate sent to the GPU from pinned
    memory without a wait (NeMo's own way for its other logged values) instead of a pageable copy."""
    if self._optimizers is not None:
        groups = self._optimizers[0].param_groups
        lr = groups[0]["lr"] if len(groups) > 0 else 0.0
        value = torch.tensor(float(lr), dtype=torch.float32)
        if torch.cuda.is_available():
            value = value.pin_memory().to("cuda", non_blocking=True)
        pl_module.log("lr", value, batch_size=1, prog_bar=True)


def install() -> bool:
    """Swap the four functions in (idempotent); True if megatron still calls its two where we replace them."""
    from megatron.core.optimizer import optimizer
    from nemo.lightning.megatron_parallel import MaskedTokenLossReduction
    from nemo.lightning.pytorch.optim.base import OptimizerModule

    if not _UPSTREAM:
        _UPSTREAM.update({("optimizer", "get_grad_norm_fp32"): optimizer.get_grad_norm_fp32,
                          ("optimizer", "clip_grad_by_total_norm_fp32"): optimizer.clip_grad_by_total_norm_fp32,
                          ("nemo", "reduce"): MaskedTokenLossReduction.reduce,
                          ("nemo", "lr"): OptimizerModule.on_train_batch_start})
    optimizer.get_grad_norm_fp32 = grad_norm_fp32
    optimizer.clip_grad_by_total_norm_fp32 = clip_by_total_norm
    MaskedTokenLossReduction.reduce = reduce_without_sync
    OptimizerModule.on_train_batch_start = log_lr_without_sync
    return all(name in inspect.unwrap(fn).__code__.co_names for fn, name in (
        (optimizer.MegatronOptimizer.get_grad_norm, "get_grad_norm_fp32"),
        (optimizer.MegatronOptimizer.clip_grad_norm, "get_grad_norm_fp32"),
        (optimizer.MegatronOptimizer.clip_grad_norm, "clip_grad_by_total_norm_fp32"),
        (optimizer.ChainedOptimizer.step, "clip_grad_by_total_norm_fp32")))


def uninstall() -> None:
    """Put back what :func:`install` replaced (a process that builds several runs)."""
    if not _UPSTREAM:
        return
    from megatron.core.optimizer import optimizer
    from nemo.lightning.megatron_parallel import MaskedTokenLossReduction
    from nemo.lightning.pytorch.optim.base import OptimizerModule

    optimizer.get_grad_norm_fp32 = _UPSTREAM[("optimizer", "get_grad_norm_fp32")]
    optimizer.clip_grad_by_total_norm_fp32 = _UPSTREAM[("optimizer", "clip_grad_by_total_norm_fp32")]
    MaskedTokenLossReduction.reduce = _UPSTREAM[("nemo", "reduce")]
    OptimizerModule.on_train_batch_start = _UPSTREAM[("nemo", "lr")]
    _UPSTREAM.clear()
    _last_norm.clear()
