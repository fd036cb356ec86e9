"""The distributed optimizer's checkpoints with torch's AdamW (no apex, no TransformerEngine).

Without apex or TransformerEngine, megatron-core's ``DistributedOptimizer`` wraps
``torch.optim.AdamW``, which keeps one 0-dim ``step`` tensor per parameter and creates
its state only at its first step. megatron-core 0.15.3's checkpoint code assumes
TE/apex's FusedAdam (the step in the param groups, the state allocated up front). Read
in ``megatron/core/optimizer/distrib_optimizer.py`` and reproduced on the CPU by the
guard test, on a tiny GPT model with megatron's own DDP and optimizer:

1. ``dp_reshardable`` save (NeMo's default format): ``sharded_param_state_dp_reshardable``
   asserts that every state tensor is one flat shard and fails on ``step``:
   ``AssertionError: (torch.Size([]), 0, 2048)`` (896 on Qwen2.5-0.5B). Not patched: runs use
   ``fully_reshardable`` (``MegatronStrategy(ckpt_optim_fully_reshardable=True)``), which
   stores ``param``/``exp_avg``/``exp_avg_sq`` per parameter in the model's shapes (any
   data-parallel size and tensor-parallel split can load it) and the step count once, in
   the param groups of the common state (``state_dict``: ``param_group["step"] = step``).
   So ``fully_reshardable`` does not lose the step: it moves it.
2. Every load (a resume), any format: the load template calls ``state_dict()``, which
   asserts ``len(steps) == 1`` over the torch optimizer's per-parameter states; a fresh
   optimizer has none yet -> bare ``AssertionError``. :func:`materialize_state` first
   creates what AdamW creates at its first step (zero moments, ``step`` 0).
3. ``load_parameter_state_from_fully_reshardable`` leaves ``step`` out of the loaded
   tensors, but ``_set_main_param_and_optimizer_states`` copies every key of the
   destination state, which has ``step`` -> ``KeyError: 'step'``. Patched to keep the
   destination's step (``load_state_dict`` has just set it from the param groups).
4. ``load_state_dict`` hands every parameter's state the same step tensor object
   (``s["step"] = step``; torch's ``Optimizer.load_state_dict`` keeps ``step`` tensors as
   they are). AdamW increments each parameter's step in place, so one optimizer step would
   advance the shared count once per parameter: bias correction as if that many steps had
   passed, and a wrong count in the next checkpoint. Patched: one copy per parameter.

With the three patches a restored optimizer continues exactly (same step count, moments,
master weights; the same losses as an uninterrupted run).

Upstream (megatron-core 0.15.3): wraps ``optimizer.distrib_optimizer.DistributedOptimizer``'s
``sharded_state_dict``, ``load_state_dict`` and ``_set_main_param_and_optimizer_states``, active only
when ``distrib_optimizer.HAVE_APEX_OR_TE`` is false (megatron's torch-Adam fallback).
Guard: ``tests/test_trainer_dist_optim.py`` (save, load into a fresh optimizer, continue; and
that upstream alone still fails, so the patch can be dropped when it stops failing).
"""

from __future__ import annotations

import functools

import torch

_PATCHED = "_trainer_torch_adam_ckpt"
PATCHED_METHODS = ("sharded_state_dict", "load_state_dict", "_set_main_param_and_optimizer_states")


def needed() -> bool:
    """True when megatron-core runs its torch-Adam fallback (no apex, no TransformerEngine)."""
    from megatron.core.optimizer import distrib_optimizer

    return not distrib_optimizer.HAVE_APEX_OR_TE


def materialize_state(optimizer: torch.optim.Optimizer) -> int:
    """Create AdamW's per-parameter state where it is missing, as its first step would
    (``step`` 0, zero moments); returns how many parameters got one.

    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = torch.optim.AdamW([p])
    >>> materialize_state(opt), float(opt.state[p]["step"]), opt.state[p]["exp_avg"].tolist()
    (1, 0.0, [0.0, 0.0, 0.0])
    """
    made = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            if "step" in state:
                continue
            state["step"] = torch.tensor(0.0)  # AdamW's own default (CPU float32, not capturable/fused)
            state.setdefault("exp_avg", torch.zeros_like(param, memory_format=torch.preserve_format))
            state.setdefault("exp_avg_sq", torch.zeros_like(param, memory_format=torch.preserve_format))
            made += 1
    return made


def unshare_steps(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter's state its own ``step`` tensor (same value)."""
    seen: set[int] = set()
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            if id(step) in seen:
                state["step"] = step.detach().clone()
            seen.add(id(state["step"]))


def install() -> bool:
    """Patch ``DistributedOptimizer`` (idempotent); False when apex/TE make it unnecessary."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    if not needed():
        return False
    if getattr(DistributedOptimizer.sharded_state_dict, _PATCHED, False):
        return True
    sharded_state_dict = DistributedOptimizer.sharded_state_dict
    load_state_dict = DistributedOptimizer.load_state_dict
    set_states = DistributedOptimizer._set_main_param_and_optimizer_states

    @functools.wraps(sharded_state_dict)
    def patched_sharded_state_dict(self, *args, **kwargs):
        if not self.ddp_config.use_megatron_fsdp:
            materialize_state(self.optimizer)  # no-op once AdamW has stepped
        return sharded_state_dict(self, *args, **kwargs)

    @functools.wraps(load_state_dict)
    def patched_load_state_dict(self, state_dict):
        load_state_dict(self, state_dict)
        unshare_steps(self.optimizer)

    @functools.wraps(set_states)
    def patched_set_states(self, model_param, tensors):
        if "step" not in tensors and not self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            step = self.optimizer.state[main_param].get("step")
            if step is not None:
                tensors = {**tensors, "step": step}  # copied onto itself: kept as loaded
        return set_states(self, model_param, tensors)

    for name, fn, original in (("sharded_state_dict", patched_sharded_state_dict, sharded_state_dict),
                               ("load_state_dict", patched_load_state_dict, load_state_dict),
                               ("_set_main_param_and_optimizer_states", patched_set_states, set_states)):
        setattr(fn, _PATCHED, True)
        fn.original = original
        setattr(DistributedOptimizer, name, fn)
    return True


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    for name in PATCHED_METHODS:
        fn = getattr(DistributedOptimizer, name)
        if getattr(fn, _PATCHED, False):
            setattr(DistributedOptimizer, name, fn.original)
