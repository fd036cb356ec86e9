"""``trainer export`` on tiny Qwen2 models made here: HF -> NeMo (our importer) -> LoRA -> HF.

Real NeMo and megatron-core on the CPU. The LoRA checkpoint is written the way
``llm.finetune`` writes one (adapter tensors only through megatron's dist_checkpointing,
``adapter_metadata.json`` naming the base, the LoRA in the context), with random
nonzero A and B so the merge changes the model.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("nemo.collections.llm", reason="trainer export needs NeMo 2.7.3 (the train extra)")
torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from trainer.cli.export import export as export_command  # noqa: E402
from trainer.megatron.cpu_shims import megatron_on_cpu  # noqa: E402

LORA_TARGETS = ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]


def make_hf(path, tie: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["今日は雨が降った。傘を持って駅まで歩いた。", "The quick brown fox."] * 4,
                            trainers.BpeTrainer(vocab_size=264, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0 if tie else 1)
    config = Qwen2Config(vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tie, eos_token_id=fast.eos_token_id)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # norms and biases away from their init values, so a dropped one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif "bias" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def write_lora_checkpoint(base, out, rank=4, alpha=8):
    """An adapter-only checkpoint as ``llm.finetune`` leaves it, with random nonzero A and B."""
    from megatron.core import dist_checkpointing
    from nemo.collections import llm
    from nemo.lightning.io.pl import TrainerContext

    from trainer.convert import export_nemo

    loaded = export_nemo.load(base)
    try:
        lora = llm.peft.LoRA(target_modules=LORA_TARGETS, dim=rank, alpha=alpha, dropout=0.0)
        export_nemo.apply_lora(loaded.model, lora)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for name, p in loaded.model.module.named_parameters():
                if ".adapter." in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        sharded = {k: v for k, v in loaded.model.module.sharded_state_dict(prefix="module.").items()
                   if ".adapter." in k}
        (out / "weights").mkdir(parents=True)
        with megatron_on_cpu():
            dist_checkpointing.save(sharded, str(out / "weights"))
        (out / "weights" / "adapter_metadata.json").write_text(json.dumps({"model_ckpt_path": str(base)}))
        loaded.model.model_transform = lora
        loaded.model.__io__.model_transform = lora.__io__
        TrainerContext.from_trainer(loaded.trainer).io_dump(out / "context", yaml_attrs=["model"])
    finally:
        export_nemo.close(loaded)
    return out


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def checkpoints(request, tmp_path_factory):
    from trainer.convert.importer import import_hf

    root = tmp_path_factory.mktemp("tied" if request.param else "untied")
    hf = make_hf(root / "hf", request.param)
    nemo = import_hf(hf, root / "nemo")
    return {"root": root, "hf": hf, "nemo": nemo, "tie": request.param}


def _run_export(args):
    result = CliRunner().invoke(export_command, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_round_trip_hf_nemo_hf(checkpoints):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    out = checkpoints["root"] / "round_trip"
    printed = _run_export([checkpoints["nemo"], "-o", out, "--dtype", "fp32"])
    assert "parity" in printed
    ref, got = load_file(checkpoints["hf"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(ref) == sorted(got)
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    config = AutoConfig.from_pretrained(out)
    assert (config.num_hidden_layers, config.hidden_size, config.num_key_value_heads, config.vocab_size,
            config.tie_word_embeddings) == (2, 64, 2, 384, checkpoints["tie"])
    report = json.loads((out / "export.json").read_text())
    assert abs(report["parity"]["nemo_loss"] - report["parity"]["hf_loss"]) <= 1e-3
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()


def test_lora_merge_parity_and_peft_adapter(checkpoints):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora_ckpt = write_lora_checkpoint(checkpoints["nemo"], checkpoints["root"] / "lora")
    out = checkpoints["root"] / "merged"
    _run_export([lora_ckpt, "-o", out, "--dtype", "fp32"])
    report = json.loads((out / "export.json").read_text())
    parity = report["parity"]
    assert abs(parity["nemo_loss"] - parity["hf_loss"]) <= 1e-3, parity
    assert report["lora"]["rank"] == 4 and report["lora"]["alpha"] == 8

    ids = torch.randint(0, 264, (2, 16), generator=torch.Generator().manual_seed(3))
    base = AutoModelForCausalLM.from_pretrained(checkpoints["hf"], dtype=torch.float32).eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base_logits, merged_logits = _logits(base, ids), _logits(merged, ids)
    assert (merged_logits - base_logits).abs().max() > 1e-2, "the LoRA merge changed nothing"
    AutoTokenizer.from_pretrained(out)

    peft = pytest.importorskip("peft", reason="the PEFT adapter check needs peft")
    adapted = peft.PeftModel.from_pretrained(base, out / "adapter").eval()
    assert (_logits(adapted, ids) - merged_logits).abs().max() < 1e-4


def test_adapter_only_and_bf16(checkpoints):
    if not checkpoints["tie"]:
        pytest.skip("once is enough")
    lora_ckpt = checkpoints["root"] / "lora"
    if not lora_ckpt.is_dir():
        write_lora_checkpoint(checkpoints["nemo"], lora_ckpt)
    out = checkpoints["root"] / "adapter_only"
    _run_export([lora_ckpt, "-o", out, "--adapter-only"])
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "export.json"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert config["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"])
    bf16 = checkpoints["root"] / "bf16"
    _run_export([lora_ckpt, "-o", bf16, "--dtype", "bf16"])
    from transformers import AutoConfig

    assert str(AutoConfig.from_pretrained(bf16).dtype).endswith("bfloat16")


def test_refusals(checkpoints, tmp_path):
    if not checkpoints["tie"]:
        pytest.skip("once is enough")
    exists = tmp_path / "exists"
    exists.mkdir()
    result = CliRunner().invoke(export_command, [str(checkpoints["nemo"]), "-o", str(exists)])
    assert result.exit_code == 2 and "already exists" in result.output
    result = CliRunner().invoke(export_command, [str(checkpoints["nemo"]), "-o", str(tmp_path / "a"),
                                                 "--adapter-only"])
    assert result.exit_code == 2 and "no LoRA adapter" in result.output
    assert not (tmp_path / "a").exists()
    result = CliRunner().invoke(export_command, [str(tmp_path), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "not a NeMo checkpoint" in result.output


def test_split_qkv_interleaving():
    from trainer.convert.export_mapping import split_qkv

    heads, groups, d, hidden = 4, 2, 3, 5
    q = torch.randn(heads * d, hidden)
    k, v = torch.randn(groups * d, hidden), torch.randn(groups * d, hidden)
    per = heads // groups
    fused = torch.cat([torch.cat([q.view(heads, d, hidden)[g * per:(g + 1) * per].reshape(-1, hidden),
                                  k.view(groups, d, hidden)[g], v.view(groups, d, hidden)[g]])
                       for g in range(groups)])
    got = split_qkv(fused, heads, groups, d)
    assert all(torch.equal(a, b) for a, b in zip(got, (q, k, v)))


def test_help_has_example():
    result = CliRunner().invoke(export_command, ["--help"])
    assert result.exit_code == 0 and "Example" in result.output
