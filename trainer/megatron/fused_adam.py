"""torch's fused AdamW kernel for megatron-core's optimizer when neither apex nor TE is there.

Without apex or TransformerEngine, megatron-core 0.15.3 builds ``torch.optim.AdamW`` with
torch's defaults, which on CUDA is the ``foreach`` implementation: about a dozen
multi-tensor passes over the float32 master weights, moments and gradients a step. For a
full-parameter step of Qwen2.5-0.5B (494M float32 parameters) that was ~22 ms of kernels
on one H200; torch's ``fused=True`` kernel does the update in one pass per tensor chunk.

:func:`install` registers a step pre-hook on every torch Adam/AdamW inside megatron's
optimizer (NeMo's ``McoreDistributedOptimizer`` -> ``mcore_optimizer`` -> ``optimizer``, or
the optimizers of a ``ChainedOptimizer``) that, for that step only, sets the param
groups' ``fused`` (and clears ``foreach``) and moves any ``step`` count that is still a
host tensor (a fresh state, or one restored from a checkpoint written without this) to
its parameter's device, as fused AdamW keeps it; a post-hook puts the flags back, so the
optimizer's saved param groups stay what megatron wrote. Hooks, not a subclass, because
megatron picks the class itself and checkpoints restore the optimizer after it is built.

Upstream (torch >= 2.4: ``Optimizer.register_step_pre_hook``, AdamW ``fused`` on CPU and
CUDA; megatron-core 0.15.3: ``torch.optim.AdamW`` when apex/TE are missing).
Guard: ``tests/test_trainer_fused_adam.py``.
"""

from __future__ import annotations

import torch

HOOKED = "_jp_fused_adam_hooked"


def torch_adams(optimizer) -> list[torch.optim.Optimizer]:
    """Every torch Adam/AdamW reachable from ``optimizer`` (NeMo's or megatron's wrappers)."""
    found, stack, seen = [], [optimizer], set()
    while stack:
        opt = stack.pop()
        if opt is None or id(opt) in seen:
            continue
        seen.add(id(opt))
        if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
            found.append(opt)
            continue
        stack.extend(getattr(opt, "chained_optimizers", None) or [])
        stack.extend(getattr(opt, name, None) for name in ("mcore_optimizer", "optimizer"))
    return found


def _fusable(opt: torch.optim.Optimizer) -> bool:
    params = [p for g in opt.param_groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cuda", "cpu") for p in params) \
        and len({p.device for p in params}) == 1 and not any(g.get("differentiable") for g in opt.param_groups)


def _before_step(opt, args, kwargs):
    opt._jp_saved_flags = [(g.get("fused"), g.get("foreach")) for g in opt.param_groups]
    for group in opt.param_groups:
        group["fused"], group["foreach"] = True, False
        for p in group["params"]:
            state = opt.state.get(p)
            step = state.get("step") if state else None
            if isinstance(step, torch.Tensor) and step.device != p.device:
                state["step"] = step.to(device=p.device, dtype=torch.float32)


def _after_step(opt, args, kwargs):
    for group, (fused, foreach) in zip(opt.param_groups, getattr(opt, "_jp_saved_flags", [])):
        group["fused"], group["foreach"] = fused, foreach


def install(optimizer) -> int:
    """Hook every fusable torch Adam/AdamW under ``optimizer``; returns how many are hooked."""
    hooked = 0
    for opt in torch_adams(optimizer):
        if getattr(opt, HOOKED, False):
            hooked += 1
            continue
        if not _fusable(opt):
            continue
        opt.register_step_pre_hook(_before_step)
        opt.register_step_post_hook(_after_step)
        setattr(opt, HOOKED, True)
        hooked += 1
    return hooked
