"""The NeMo side of a multi-GPU run, built on the CPU: strategy, optimizer, plan, checkpoint
context, and the optimizer format a resume follows. Skipped without NeMo (the train extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("nemo.collections.llm", reason="needs NeMo 2.7.3 (the train extra)")
torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from test_trainer_nemo import _shards  # noqa: E402
from trainer.run.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "qwen25_05b_ja_lora.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from trainer.run.recipe import model_tokenizer

    try:
        tok = model_tokenizer("qwen2.5")
    except ImportError as exc:
        pytest.skip(f"jpcorpus.tokenizer unavailable: {exc}")
    return tok, _shards(tmp_path_factory.mktemp("shards"), tok)


def _overrides(prefix, run_dir, *extra):
    return ["model.base=null", "model.from_scratch=true", f"data.train=[{prefix}_train]",
            f"data.valid=[{prefix}_valid]", f"run_dir={run_dir}", "data.seq_length=64", "schedule.max_steps=300",
            "data.num_workers=0", "schedule.micro_batch_size=4", *extra]


@pytest.mark.slow
def test_two_gpu_run_builds_megatron_strategy_and_distributed_optimizer(shards, tmp_path):
    from trainer.run.recipe import build

    tok, prefix = shards
    cfg = load_config(CONFIG, _overrides(prefix, tmp_path / "run", "parallel.devices=2"))
    run = build(cfg, tok, accelerator="cpu")
    strategy = run.trainer.strategy
    assert strategy.tensor_model_parallel_size == 1 and strategy.ckpt_optim_fully_reshardable
    ddp = strategy.ddp_config
    assert (ddp.use_distributed_optimizer, ddp.overlap_grad_reduce, ddp.check_for_nan_in_grad) == (True, True, True)
    assert run.optim.config.use_distributed_optimizer
    assert strategy.sharded_state_dict_metadata["distrib_optim_sharding_type"] == "fully_reshardable"
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    assert getattr(DistributedOptimizer.sharded_state_dict, "_trainer_torch_adam_ckpt", False)
    # a checkpoint's context/io.json records the trainer (NeMo's io_dump, as ModelCheckpoint calls it)
    run.trainer.io_dump(tmp_path / "context", yaml_attrs=[])
    recorded = (tmp_path / "context" / "io.json").read_text()
    assert "DistributedDataParallelConfig" in recorded and "overlap_grad_reduce" in recorded

    one = build(load_config(CONFIG, _overrides(prefix, tmp_path / "run1")), tok, accelerator="cpu")
    ddp1 = one.trainer.strategy.ddp_config
    assert (ddp1.use_distributed_optimizer, ddp1.overlap_grad_reduce, ddp1.bucket_size) == (False, False, None)
    assert "distrib_optim_sharding_type" not in one.trainer.strategy.sharded_state_dict_metadata


@pytest.mark.slow
def test_dry_run_plan_of_eight_gpus_and_of_tensor_parallel(shards, tmp_path):
    from trainer.cli import main

    tok, prefix = shards
    result = CliRunner().invoke(main, ["run", str(CONFIG), "--dry-run",
                                       *_overrides(prefix, tmp_path / "run", "parallel.devices=8")])
    assert result.exit_code == 0, result.output
    assert "1 node x 8 GPUs (8 processes through torchrun): tensor parallel 1, data parallel 8" in result.output
    assert "micro batches per step per GPU  1" in result.output
    assert "tokens per GPU per step  256" in result.output  # 32 x 64 tokens / 8 GPUs
    result = CliRunner().invoke(main, ["run", str(CONFIG), "--dry-run",
                                       *_overrides(prefix, tmp_path / "tp", "parallel.devices=2",
                                                   "parallel.tensor_parallel=2")])
    assert result.exit_code == 0, result.output
    assert "tensor parallel 2, data parallel 1" in result.output and "model.fused_loss" in result.output


def _checkpoint(root: Path, step: int, distributed: bool) -> Path:
    """A resumable checkpoint whose common.pt records the optimizer format as NeMo does."""
    import torch.distributed.checkpoint as dcp

    path = root / f"val_loss=2.5000-step={step}-consumed_samples={step * 32}.0-last"
    dcp.save({"module.w": torch.ones(4)}, storage_writer=dcp.FileSystemWriter(str(path / "weights")), no_dist=True)
    metadata = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}
    if distributed:
        metadata["distrib_optim_sharding_type"] = "fully_reshardable"
    torch.save({"global_step": step, "content_metadata": metadata}, path / "weights" / "common.pt")
    (path / "weights" / "metadata.json").write_text(json.dumps({
        "sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
        "common_backend_version": 1}))
    (path / "context").mkdir()
    (path / "context" / "io.json").write_text("{}")
    return path


@pytest.mark.parametrize("distributed", [True, False])
def test_an_unset_optimizer_follows_the_checkpoint_and_a_set_one_must_match(tmp_path, distributed):
    from trainer.run.parallel import saved_with_distributed_optimizer, settle_optimizer

    ckpts = tmp_path / "run" / "run" / "v0" / "checkpoints"
    chosen = _checkpoint(ckpts, 40, distributed)
    assert saved_with_distributed_optimizer(chosen) is distributed
    # saved on the other GPU count: 8 GPUs with the distributed optimizer resumed on 1, and back
    devices = "parallel.devices=1" if distributed else "parallel.devices=8"
    cfg = load_config(CONFIG, [f"run_dir={tmp_path}/run", devices, "schedule.micro_batch_size=4"])
    said = []
    settled = settle_optimizer(cfg, ckpts, echo=said.append)
    assert settled.parallel.distributed_optimizer is distributed
    assert said and f"saved {'with' if distributed else 'without'} the distributed optimizer" in said[0]
    wrong = load_config(CONFIG, [f"run_dir={tmp_path}/run", devices, "schedule.micro_batch_size=4",
                                 f"parallel.distributed_optimizer={str(not distributed).lower()}"])
    with pytest.raises(ValueError, match=r"^parallel.distributed_optimizer: .* set parallel.distributed_optimizer="
                                         f"{str(distributed).lower()}"):
        settle_optimizer(wrong, ckpts)
    fresh = load_config(CONFIG, [f"run_dir={tmp_path}/fresh", devices, "schedule.micro_batch_size=4"])
    assert settle_optimizer(fresh, tmp_path / "fresh" / "run" / "v0" / "checkpoints") == fresh


@pytest.mark.slow
def test_several_gpus_prepare_once_then_hand_over_to_torchrun(shards, tmp_path, monkeypatch):
    from trainer.run import launch, torchrun

    tok, prefix = shards
    run_dir = tmp_path / "run"
    for part in ("context", "weights"):  # an imported base: prepare_base has nothing to import
        (run_dir / "base" / "nemo" / part).mkdir(parents=True)
    handed = []
    monkeypatch.setattr(torchrun, "exec_workers", lambda cfg, echo: handed.append(cfg))
    said = []
    cfg = load_config(CONFIG, _overrides(prefix, run_dir, "parallel.devices=2"))
    launch.run(cfg, dry_run=False, echo=said.append)
    text = "\n".join(said)
    assert "data parallel 2" in text and f"base checkpoint: {run_dir}/base/nemo" in text
    assert "train samples (built)" not in text  # the workers build the datasets, not this process
    assert len(handed) == 1 and handed[0].parallel.devices == 2

    said.clear()
    launch.run(cfg, dry_run=False, prepare_only=True, echo=said.append)
    assert said[-1].startswith("prepared:") and len(handed) == 1
    two_nodes = load_config(CONFIG, _overrides(prefix, run_dir, "parallel.devices=2", "parallel.num_nodes=2",
                                               "schedule.micro_batch_size=8"))
    with pytest.raises(ValueError, match=r"^parallel.num_nodes: 2 nodes need one torchrun per node"):
        launch.run(two_nodes, dry_run=False, echo=said.append)
    assert len(handed) == 1


def test_a_worker_refuses_without_the_base_and_with_the_wrong_world(tmp_path, monkeypatch):
    from trainer.run import torchrun

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                       "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(CONFIG, [f"run_dir={tmp_path}/run", "parallel.devices=2"])
    with pytest.raises(ValueError, match=r"^model.base: no base checkpoint at .* --prepare-only"):
        torchrun.train_worker(cfg)
    with pytest.raises(ValueError, match=r"^parallel.devices: torchrun started 2 processes"):
        torchrun.train_worker(load_config(CONFIG, [f"run_dir={tmp_path}/run", "parallel.devices=4",
                                                   "schedule.micro_batch_size=8"]))
