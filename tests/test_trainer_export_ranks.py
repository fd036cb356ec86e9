"""``trainer export`` reads checkpoints written by several ranks.

A tiny HF Qwen2 is imported and given a LoRA checkpoint (as in ``test_trainer_export.py``);
then the weights of both, base and adapter, are saved again from two gloo ranks, every
tensor split into per-rank chunks in ``__0_0.distcp`` / ``__1_0.distcp``
(``tests/dcp_ranks.py``): the layout a run on two GPUs leaves. Exporting the two-rank
LoRA checkpoint must give exactly the weights the one-file checkpoint gives.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("nemo.collections.llm", reason="trainer export needs NeMo 2.7.3 (the train extra)")
torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from dcp_ranks import write_sharded  # noqa: E402
from test_trainer_export import make_hf, write_lora_checkpoint  # noqa: E402
from trainer.cli.export import export as export_command  # noqa: E402


def _two_rank_copy(src, dst):
    """``src`` with its weights re-saved by two ranks (model tensors; the rest copied as is)."""
    from trainer.convert.export_nemo import read_tensors

    shutil.copytree(src / "context", dst / "context")
    write_sharded(read_tensors(src / "weights", prefix=""), dst / "weights")
    for name in ("common.pt", "metadata.json", "adapter_metadata.json"):
        if (src / "weights" / name).is_file():
            shutil.copy(src / "weights" / name, dst / "weights" / name)
    return dst


@pytest.mark.slow
def test_export_of_a_two_rank_lora_checkpoint_equals_the_one_file_export(tmp_path):
    from safetensors.torch import load_file

    from trainer.convert.importer import import_hf

    base = import_hf(make_hf(tmp_path / "hf", tie=True), tmp_path / "nemo")
    lora = write_lora_checkpoint(base, tmp_path / "lora")
    base2 = _two_rank_copy(base, tmp_path / "nemo2")
    lora2 = _two_rank_copy(lora, tmp_path / "lora2")
    (lora2 / "weights" / "adapter_metadata.json").write_text(json.dumps({"model_ckpt_path": str(base2)}))
    for ckpt in (base2, lora2):
        assert sorted(p.name for p in (ckpt / "weights").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    outputs = {}
    for name, ckpt in (("one", lora), ("two", lora2)):
        out = tmp_path / f"export_{name}"
        result = CliRunner().invoke(export_command, [str(ckpt), "-o", str(out), "--dtype", "fp32"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs[name] = load_file(out / "model.safetensors")
    assert sorted(outputs["one"]) == sorted(outputs["two"])
    for key, value in outputs["one"].items():
        assert torch.equal(value, outputs["two"][key]), key
