"""trainer config, presets and shard refusals: no NeMo needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from childproc import default_sigint

from trainer.run.config import from_dict, load_config
from trainer.run.data import ShardMismatch, check_shards
from trainer.run.presets import qwen25_05b

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QWEN_TOK = {"name": "qwen2.5", "fingerprint": "tokfp1:aa", "vocab_size": 151665, "eod_id": 151643}


def test_qwen_preset_numbers():
    p = qwen25_05b()
    assert (p.num_layers, p.hidden_size, p.num_attention_heads, p.num_query_groups, p.ffn_hidden_size,
            p.vocab_size, p.add_qkv_bias, p.tie_embeddings) == (24, 896, 14, 2, 4864, 151936, True, True)
    assert p.num_parameters() == 494_032_768
    assert p.lora_parameters(16, ("linear_qkv", "linear_proj")) == 1_474_560


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_opens_with_its_command(path):
    assert path.read_text().splitlines()[0] == f"# trainer run configs/{path.name}"
    cfg = load_config(path)
    assert cfg.schedule.global_batch_size % cfg.schedule.micro_batch_size == 0


def test_overrides_and_peft_none():
    cfg = load_config(CONFIGS[0], ["peft=none", "schedule.max_steps=300", "data.seq_length=1024"])
    assert (cfg.peft.method, cfg.schedule.max_steps, cfg.data.seq_length) == ("none", 300, 1024)


@pytest.mark.parametrize("override, key", [
    (["model.from_scratch=false", "model.base=null"], "model.from_scratch"),
    (["model.preset=qwen9"], "model.preset"),
    (["peft.targets=[linear_xyz]"], "peft.targets"),
    (["optim.min_lr=1.0"], "optim.min_lr"),
    (["schedule.micro_batch_size=5"], "schedule.global_batch_size"),
    (["schedule.max_steps=abc"], "schedule.max_steps"),
    (["model.flavour=1"], "model.flavour"),
    (["data.train=[{prefix: a, weight: -1}]"], "data.train[0].weight"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ValueError) as err:
        load_config(CONFIGS[0], override)
    assert str(err.value).startswith(key + ":") or str(err.value).startswith(key + "."), str(err.value)


def _shard(tmp_path: Path, name: str, tokenizer: dict) -> str:
    prefix = str(tmp_path / name)
    Path(prefix + ".bin").write_bytes(np.arange(10, dtype=np.int32).tobytes())
    Path(prefix + ".idx").write_bytes(b"x")
    Path(prefix + ".json").write_text(json.dumps({
        "format": "megatron-indexed-dataset", "format_version": 1, "dtype": "int32", "documents": 1,
        "sequences": 1, "tokens": 10, "tokenizer": dict(tokenizer, eod_token="<|endoftext|>")}))
    return prefix


@pytest.mark.parametrize("key, value", [("fingerprint", "tokfp1:bb"), ("vocab_size", 50257), ("eod_id", 50256)])
def test_shard_with_other_tokenizer_is_refused_with_both_values(tmp_path, key, value):
    prefix = _shard(tmp_path, "s", dict(QWEN_TOK, **{key: value}))
    with pytest.raises(ShardMismatch) as err:
        check_shards([(prefix, 1.0)], QWEN_TOK, 151936, "train")
    assert f"{key}: shard {value}, model {QWEN_TOK[key]}" in str(err.value)


def test_matching_shard_passes_and_missing_sidecar_is_refused(tmp_path):
    prefix = _shard(tmp_path, "ok", QWEN_TOK)
    assert check_shards([(prefix, 2.0)], QWEN_TOK, 151936, "train")[0].tokens == 10
    Path(prefix + ".json").unlink()
    with pytest.raises(ShardMismatch, match="missing sidecar"):
        check_shards([(prefix, 1.0)], QWEN_TOK, 151936, "train")


def test_cli_help_is_instant_and_light():
    import subprocess
    import sys

    code = "import sys, trainer.cli; assert 'nemo' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, preexec_fn=default_sigint)
    from click.testing import CliRunner

    from trainer.cli import main

    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0 and "Example" in result.output
