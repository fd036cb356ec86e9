"""megatron-core's distributed optimizer on the CPU: upstream's torch-AdamW checkpoint failures,
the fix in trainer/megatron/dist_optim.py, and resuming on another data-parallel size.

Real megatron-core (DDP buckets, reduce-scatter, DistributedOptimizer, dist_checkpointing)
over gloo, on a model with the project's SDPA attention, lean linears and fused loss (so the
two-rank run also shows those give one rank's losses under data parallelism);
``tests/megatron_cpu.py`` says what is redirected from CUDA to the CPU. ~60 s on 2 cores,
most of it the two spawned ranks importing megatron.
"""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("megatron.core", reason="needs megatron-core (the train extra)")

import torch  # noqa: E402

import megatron_cpu as mc  # noqa: E402
from trainer.megatron import dist_optim  # noqa: E402


@pytest.fixture
def patched():
    dist_optim.install()
    yield
    dist_optim.uninstall()


def _main_params(opt):
    return [p.detach().clone() for o in opt.chained_optimizers for g in o.optimizer.param_groups for p in g["params"]]


def test_upstream_alone_cannot_save_dp_reshardable_nor_resume(on_cpu, tmp_path):
    """If this fails, megatron-core changed: re-check whether dist_optim.py is still needed."""
    dist_optim.uninstall()
    assert dist_optim.needed(), "apex or TransformerEngine present: the torch-Adam path is not used"
    ddp, opt = mc.build(bf16=True)
    for s in range(2):
        mc.train_step(ddp, opt, s)
    with pytest.raises(AssertionError, match=r"torch\.Size\(\[\]\)"):  # the 0-dim step in a flat shard
        mc.save(ddp, opt, str(tmp_path / "dp"), sharding="dp_reshardable")
    mc.save(ddp, opt, str(tmp_path / "full"))  # fully_reshardable saves
    fresh_ddp, fresh_opt = mc.build(seed=7, bf16=True)
    with pytest.raises(AssertionError):  # DistributedOptimizer.state_dict: len(steps) == 1 on an empty state
        mc.load(fresh_ddp, fresh_opt, str(tmp_path / "full"))


def test_round_trip_keeps_step_moments_weights_and_losses(on_cpu, patched, tmp_path):
    ddp, opt = mc.build(bf16=True)
    for s in range(3):
        mc.train_step(ddp, opt, s)
    mc.save(ddp, opt, str(tmp_path / "ckpt"))
    at_save = _main_params(opt)
    moments = [st["exp_avg_sq"].clone() for o in opt.chained_optimizers for st in o.optimizer.state.values()]
    reference = [mc.train_step(ddp, opt, s) for s in (3, 4)]

    fresh_ddp, fresh_opt = mc.build(seed=7, bf16=True)
    assert not torch.equal(fresh_ddp.module.embedding.word_embeddings.weight,
                           ddp.module.embedding.word_embeddings.weight)
    mc.load(fresh_ddp, fresh_opt, str(tmp_path / "ckpt"))
    assert mc.adam_steps(fresh_opt) == [3.0] * len(mc.adam_steps(fresh_opt))
    states = [st for o in fresh_opt.chained_optimizers for st in o.optimizer.state.values()]
    assert len({id(st["step"]) for st in states}) == len(states), "parameters share one step tensor"
    assert all(torch.equal(a, b) for a, b in zip(at_save, _main_params(fresh_opt)))
    assert all(torch.equal(a, st["exp_avg_sq"]) for a, st in zip(moments, states))
    resumed = [mc.train_step(fresh_ddp, fresh_opt, s) for s in (3, 4)]
    assert resumed == reference
    assert set(mc.adam_steps(fresh_opt)) == {5.0}  # one increment per step, not one per parameter


def test_step_count_without_the_unsharing_runs_away(on_cpu, patched, tmp_path, monkeypatch):
    """What the fourth patch prevents: upstream's shared step tensor, advanced once per parameter."""
    ddp, opt = mc.build()
    mc.train_step(ddp, opt, 0)
    mc.save(ddp, opt, str(tmp_path / "ckpt"))
    monkeypatch.setattr(dist_optim, "unshare_steps", lambda optimizer: None)
    fresh_ddp, fresh_opt = mc.build(seed=7)
    mc.load(fresh_ddp, fresh_opt, str(tmp_path / "ckpt"))
    mc.train_step(fresh_ddp, fresh_opt, 1)
    n_states = len(mc.adam_steps(fresh_opt))
    assert set(mc.adam_steps(fresh_opt)) == {1.0 + n_states}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_resumes_on_another_data_parallel_size(on_cpu, patched, tmp_path):
    """1 rank -> checkpoint -> 2 ranks (3 steps, a checkpoint in per-rank files) -> 1 rank:
    the same losses and step counts as one uninterrupted run on one rank."""
    ddp, opt = mc.build()
    for s in range(3):
        mc.train_step(ddp, opt, s)
    mc.save(ddp, opt, str(tmp_path / "dp1"))
    reference = {s: mc.train_step(ddp, opt, s) for s in range(3, 8)}

    out = tmp_path / "dp2.json"
    torch.multiprocessing.start_processes(
        mc.resume_worker, args=(2, _free_port(), str(tmp_path / "dp1"), str(tmp_path / "dp2"), [3, 4, 5], str(out)),
        nprocs=2, start_method="spawn")
    dp2 = json.loads(out.read_text())
    assert dp2["steps_after_load"] == [3.0] and dp2["adam_steps"] == [6.0]
    assert dp2["losses"] == pytest.approx([reference[s] for s in (3, 4, 5)], rel=1e-5)
    files = sorted(p.name for p in (tmp_path / "dp2").glob("*.distcp"))
    assert any(f.startswith("__0_") for f in files) and any(f.startswith("__1_") for f in files), files

    back_ddp, back_opt = mc.build(seed=7)
    mc.load(back_ddp, back_opt, str(tmp_path / "dp2"))
    assert set(mc.adam_steps(back_opt)) == {6.0}
    assert [mc.train_step(back_ddp, back_opt, s) for s in (6, 7)] == pytest.approx([reference[6], reference[7]],
                                                                                     rel=1e-5)
    assert set(mc.adam_steps(back_opt)) == {8.0}


def test_tensor_parallel_two_trains_saves_and_resumes_on_one_rank(on_cpu, patched, tmp_path):
    """Two spawned ranks split every layer (TP 2: column/row-parallel linears, vocabulary-parallel
    embedding and loss), train 3 steps, save and train 2 more; the checkpoint loaded by one
    unsplit rank gives those 2 steps' losses."""
    out = tmp_path / "tp2.json"
    torch.multiprocessing.start_processes(
        mc.tensor_parallel_worker, args=(2, _free_port(), str(tmp_path / "tp2"), str(out)), nprocs=2,
        start_method="spawn")
    tp2 = json.loads(out.read_text())
    assert tp2["adam_steps"] == [5.0]
    ddp, opt = mc.build(seed=7)
    mc.load(ddp, opt, str(tmp_path / "tp2"))
    assert set(mc.adam_steps(opt)) == {3.0}
    assert [mc.train_step(ddp, opt, s) for s in (3, 4)] == pytest.approx(tp2["losses_after"], rel=1e-5)
