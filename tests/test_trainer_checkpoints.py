"""Damaged and partial checkpoints are skipped with a message, moved aside, never deleted.

Checkpoint directories are built the way NeMo 2.7.3 / megatron-core write them: the
tensors through torch's distributed checkpoint writer (``.metadata`` + ``__0_0.distcp``;
no process group needed on one CPU process), ``common.pt`` through ``torch.save``,
megatron's ``metadata.json``, and a ``context/`` with ``io.json``. Then they are damaged
the ways an interrupted save or a full disk leaves them. Needs torch only; the last test
(NeMo's own AutoResume on the cleaned directory) needs NeMo and is skipped without it.
"""

from __future__ import annotations

import json
import shutil
import os
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the checkpoint checks read torch DCP metadata")

from trainer.run.checkpoints import (  # noqa: E402
    check_checkpoint,
    find_resumable,
    nemo_would_resume,
    prepare_resume,
    unfinished_marker,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MCORE_CONFIG = {"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
                "common_backend_version": 1}  # what megatron's save_config writes


def make_checkpoint(root: Path, step: int, last: bool = False, val_loss: float = 2.5) -> Path:
    import torch.distributed.checkpoint as dcp

    name = f"val_loss={val_loss:.4f}-step={step}-consumed_samples={step * 32}.0" + ("-last" if last else "")
    path = root / name
    gen = torch.Generator().manual_seed(step)
    tensors = {"module.layer.adapter.linear_in.weight": torch.randn(8, 16, generator=gen),
               "module.layer.adapter.linear_out.weight": torch.randn(16, 8, generator=gen)}
    dcp.save(tensors, storage_writer=dcp.FileSystemWriter(str(path / "weights")), no_dist=True)
    torch.save({"global_step": step, "loops": {}, "callbacks": {}}, path / "weights" / "common.pt")
    (path / "weights" / "metadata.json").write_text(json.dumps(MCORE_CONFIG))
    (path / "weights" / "adapter_metadata.json").write_text(json.dumps({"model_ckpt_path": str(root / "base")}))
    (path / "context").mkdir()
    (path / "context" / "io.json").write_text(json.dumps({"root": {"type": "ref"}}))
    (path / "context" / "model.yaml").write_text("_target_: JaQwen2Model\n")
    (path / "context" / "nemo_tokenizer").mkdir()
    (path / "context" / "nemo_tokenizer" / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    return path


def all_files(*dirs: Path) -> dict[str, int]:
    """Every file below checkpoint directories -> size, keyed by its path inside its checkpoint
    directory, whose name is taken without the quarantine suffix (moving keeps the key)."""
    files = {}
    for d in dirs:
        for f in d.rglob("*"):
            if f.is_file():
                rel = f.relative_to(d)
                files[str(Path(re.sub(r"\.corrupt-[a-z-]+", "", rel.parts[0]), *rel.parts[1:]))] = f.stat().st_size
    return files


def truncate(file: Path, keep: int) -> None:
    with open(file, "r+b") as f:
        f.truncate(keep)


def break_distcp(p):
    truncate(p / "weights" / "__0_0.distcp", 100)


def drop_distcp(p):
    (p / "weights" / "__0_0.distcp").unlink()


def drop_metadata(p):
    (p / "weights" / ".metadata").unlink()


def cut_metadata(p):
    truncate(p / "weights" / ".metadata", 40)


def cut_common(p):
    truncate(p / "weights" / "common.pt", 50)


def bad_mcore_json(p):
    (p / "weights" / "metadata.json").write_text('{"sharded_backend": ')


def empty_weights(p):
    for f in (p / "weights").iterdir():
        f.unlink()


def no_weights(p):
    for f in (p / "weights").iterdir():
        f.unlink()
    (p / "weights").rmdir()


def empty_context(p):
    shutil.rmtree(p / "context")
    (p / "context").mkdir()


def cut_tokenizer_json(p):  # seen on a real GPU checkpoint: the largest file of a LoRA checkpoint
    truncate(p / "context" / "nemo_tokenizer" / "tokenizer.json", 10)


def unfinished(p):
    unfinished_marker(p).touch()


DAMAGE = [
    (break_distcp, ["truncated_storage_file"]),
    (drop_distcp, ["missing_storage_file"]),
    (drop_metadata, ["missing_dcp_metadata"]),
    (cut_metadata, ["invalid_dcp_metadata"]),
    (cut_common, ["invalid_common_pt"]),
    (bad_mcore_json, ["invalid_metadata_json"]),
    (empty_weights, ["missing_metadata_json", "missing_common_pt", "missing_dcp_metadata"]),
    (no_weights, ["missing_weights"]),
    (empty_context, ["empty_context"]),
    (cut_tokenizer_json, ["invalid_context_file"]),
    (unfinished, ["unfinished"]),
]


def codes(problems: list[str]) -> list[str]:
    return [p.split(":", 1)[0] for p in problems]


def test_a_complete_checkpoint_has_no_problems(tmp_path):
    assert check_checkpoint(make_checkpoint(tmp_path, 20)) == []


@pytest.mark.parametrize("damage,expected", DAMAGE, ids=[d.__name__ for d, _ in DAMAGE])
def test_each_damage_is_named(tmp_path, damage, expected):
    path = make_checkpoint(tmp_path, 20)
    damage(path)
    assert codes(check_checkpoint(path)) == expected


def test_truncation_message_gives_the_sizes(tmp_path):
    path = make_checkpoint(tmp_path, 20)
    full = (path / "weights" / "__0_0.distcp").stat().st_size
    break_distcp(path)
    assert check_checkpoint(path) == [f"truncated_storage_file: weights/__0_0.distcp has 100 of {full} bytes"]


def test_link_to_nothing_is_skipped(tmp_path):
    os.symlink(tmp_path / "gone", tmp_path / "val_loss=2.0-step=60-consumed_samples=1920.0-last")
    chosen, skipped = find_resumable(tmp_path)
    assert chosen is None and codes([r for _, r in skipped]) == ["not_a_directory"]


def test_bad_last_falls_back_to_newest_good_and_nothing_is_deleted(tmp_path):
    ckpts, quarantine = tmp_path / "checkpoints", tmp_path / "quarantine"
    ckpts.mkdir()
    make_checkpoint(ckpts, 20, val_loss=2.4)
    good40 = make_checkpoint(ckpts, 40, val_loss=2.2)
    last = make_checkpoint(ckpts, 40, last=True, val_loss=2.2)
    bad20 = ckpts / "val_loss=2.4000-step=20-consumed_samples=640.0"
    break_distcp(last)
    drop_metadata(bad20)
    before = all_files(ckpts)

    chosen, skipped = find_resumable(ckpts)
    assert chosen == good40
    assert [(p.name, r.split(":")[0]) for p, r in skipped] == [(last.name, "truncated_storage_file"),
                                                             (bad20.name, "missing_dcp_metadata")]
    messages = []
    chosen, explicit = prepare_resume(ckpts, quarantine, echo=messages.append)
    # NeMo alone would find no *-last left and restart from the base: the good step-40 one is passed explicitly
    assert chosen == explicit == good40 and nemo_would_resume(ckpts) is None
    assert messages[0].startswith(f"checkpoint {last.name}: skipped, never loaded: truncated_storage_file: ")
    assert messages[1].startswith(f"checkpoint {bad20.name}: skipped, never loaded: missing_dcp_metadata: ")
    assert messages[-1] == f"resuming from {good40}"
    assert sorted(p.name for p in quarantine.iterdir()) == [
        f"{last.name}.corrupt-truncated-storage-file", f"{bad20.name}.corrupt-missing-dcp-metadata"]
    assert [p.name for p in ckpts.iterdir()] == [good40.name]
    assert all_files(ckpts, quarantine) == before  # moved, every file kept at its size


def test_good_last_is_left_to_nemo(tmp_path):
    make_checkpoint(tmp_path, 20)
    last = make_checkpoint(tmp_path, 20, last=True)
    messages = []
    assert prepare_resume(tmp_path, tmp_path.parent / "q", echo=messages.append) == (last, None)
    assert messages == [f"resuming from {last}"]


def test_unfinished_last_moves_with_its_marker(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    good = make_checkpoint(ckpts, 20, last=True)
    newer = make_checkpoint(ckpts, 40, last=True)
    unfinished(newer)
    chosen, explicit = prepare_resume(ckpts, tmp_path / "quarantine", echo=lambda m: None)
    assert chosen == good and explicit is None  # NeMo's newest-mtime *-last is now the good one
    moved = tmp_path / "quarantine" / f"{newer.name}.corrupt-unfinished"
    assert moved.is_dir() and Path(str(moved) + "-unfinished").is_file()
    assert not unfinished_marker(newer).exists()


def test_only_bad_checkpoints_start_from_base(tmp_path):
    break_distcp(make_checkpoint(tmp_path / "c", 20, last=True))
    messages = []
    assert prepare_resume(tmp_path / "c", tmp_path / "q", echo=messages.append) == (None, None)
    assert messages[-1] == f"no good checkpoint in {tmp_path / 'c'}: the run starts from the base checkpoint"


def test_dry_run_moves_nothing(tmp_path):
    last = make_checkpoint(tmp_path / "c", 20, last=True)
    cut_common(last)
    messages = []
    prepare_resume(tmp_path / "c", tmp_path / "q", move=False, echo=messages.append)
    assert last.is_dir() and not (tmp_path / "q").exists()
    assert messages[0] == (f"checkpoint {last.name}: would be skipped and moved to {tmp_path / 'q'}: "
                           + check_checkpoint(last)[0])


def test_no_checkpoint_dir_yet(tmp_path):
    assert find_resumable(tmp_path / "missing") == (None, [])


def test_nemo_autoresume_lands_on_the_good_checkpoint(tmp_path):
    """NeMo's own search, before and after: alone it refuses (only an unfinished *-last)."""
    resume = pytest.importorskip("nemo.lightning.resume", reason="NeMo (the train extra) not installed")
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    good = make_checkpoint(ckpts, 20)
    last = make_checkpoint(ckpts, 40, last=True)
    unfinished(last)
    auto = resume.AutoResume(resume_if_exists=True, resume_from_directory=str(ckpts),
                             resume_ignore_no_checkpoint=True)
    with pytest.raises(ValueError, match="Last checkpoint is unfinished"):
        auto.get_trainer_ckpt_path()
    _, explicit = prepare_resume(ckpts, tmp_path / "quarantine", echo=lambda m: None)
    assert auto.get_trainer_ckpt_path() is None  # NeMo alone: no *-last left -> from the base
    auto.resume_from_path = str(explicit)  # what trainer/run/launch.py does
    path = auto.get_trainer_ckpt_path()
    assert Path(path) == good and path.base_model_path == ckpts / "base"  # AdapterPath, as for LoRA resume


def test_docstring_examples():
    import doctest

    import trainer.run.checkpoints

    assert doctest.testmod(trainer.run.checkpoints).failed == 0
