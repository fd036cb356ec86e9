"""The checkpoint checks and the quarantine on checkpoints written by several ranks.

A checkpoint saved on N GPUs holds one storage file per writing rank (``__0_0.distcp``,
``__1_0.distcp``, ...), every tensor split into chunks across them. The weights here are
written that way for real (two gloo ranks saving DTensor shards, ``tests/dcp_ranks.py``),
then one rank's file is damaged by hand. Needs torch only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the checkpoint checks read torch DCP metadata")

from dcp_ranks import write_sharded  # noqa: E402
from trainer.run.checkpoints import check_checkpoint, find_resumable, prepare_resume  # noqa: E402

MCORE_CONFIG = {"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
                "common_backend_version": 1}


@pytest.fixture(scope="module")
def two_rank_weights(tmp_path_factory) -> Path:
    gen = torch.Generator().manual_seed(0)
    tensors = {"module.decoder.layers.self_attention.linear_qkv.weight": torch.randn(2, 48, 16, generator=gen),
               "module.decoder.final_layernorm.weight": torch.randn(16, generator=gen),
               "optimizer.state.exp_avg.decoder.final_layernorm.weight": torch.randn(16, generator=gen),
               "module.output_layer.bias": torch.randn(7, generator=gen)}  # 7 rows: replicated, rank 0 writes it
    return write_sharded(tensors, tmp_path_factory.mktemp("ranks") / "weights")


def make_checkpoint(root: Path, weights: Path, step: int, last: bool) -> Path:
    path = root / (f"val_loss=2.5000-step={step}-consumed_samples={step * 32}.0" + ("-last" if last else ""))
    shutil.copytree(weights, path / "weights")
    torch.save({"global_step": step, "loops": {}}, path / "weights" / "common.pt")
    (path / "weights" / "metadata.json").write_text(json.dumps(MCORE_CONFIG))
    (path / "context").mkdir()
    (path / "context" / "io.json").write_text(json.dumps({"root": {"type": "ref"}}))
    return path


def test_two_rank_checkpoint_has_a_file_per_rank_and_passes(two_rank_weights, tmp_path):
    files = sorted(p.name for p in two_rank_weights.glob("*.distcp"))
    assert files == ["__0_0.distcp", "__1_0.distcp"]
    assert check_checkpoint(make_checkpoint(tmp_path, two_rank_weights, 40, last=True)) == []


@pytest.mark.parametrize("damage, code", [
    (lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), "truncated_storage_file"),
    (lambda f: f.unlink(), "missing_storage_file"),
])
def test_damage_to_the_second_ranks_file_is_found(two_rank_weights, tmp_path, damage, code):
    ckpt = make_checkpoint(tmp_path, two_rank_weights, 40, last=True)
    damage(ckpt / "weights" / "__1_0.distcp")
    problems = check_checkpoint(ckpt)
    assert [p.split(":")[0] for p in problems] == [code]
    assert "weights/__1_0.distcp" in problems[0]


def test_resume_skips_a_checkpoint_with_one_rank_damaged(two_rank_weights, tmp_path):
    ckpts, quarantine = tmp_path / "checkpoints", tmp_path / "quarantine"
    good = make_checkpoint(ckpts, two_rank_weights, 40, last=False)
    bad = make_checkpoint(ckpts, two_rank_weights, 80, last=True)
    victim = bad / "weights" / "__1_0.distcp"
    victim.write_bytes(victim.read_bytes()[:100])
    sizes = {str(f.relative_to(bad)): f.stat().st_size for f in bad.rglob("*") if f.is_file()}
    said: list[str] = []
    chosen, explicit = prepare_resume(ckpts, quarantine, echo=said.append)
    assert chosen == good and explicit == good  # NeMo alone would find no -last and restart from the base
    moved = next(quarantine.iterdir())
    assert moved.name == bad.name + ".corrupt-truncated-storage-file"
    assert {str(f.relative_to(moved)): f.stat().st_size for f in moved.rglob("*") if f.is_file()} == sizes
    assert "weights/__1_0.distcp has 100 of" in said[0]
    assert find_resumable(ckpts) == (good, [])
