"""The speed options through ``trainer run --dry-run`` on CPU, twice in one process as
bench/speed_driver.py runs its variants: the plan names the kernels, the NeMo objects build,
the LoRA class and the layer spec are the ones the options ask for."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nemo.collections.llm", reason="needs the train extra")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_variants_build_in_one_process(tmp_path):
    from test_trainer_nemo import _shards

    from trainer.megatron.fast_spec import fast_layer_spec
    from trainer.megatron.fused_lora import FusedLoRA
    from trainer.megatron.layers import sdpa_layer_spec
    from trainer.run.config import load_config
    from trainer.run.recipe import build, format_plan, model_tokenizer, nemo_model_config, plan

    tok = model_tokenizer("qwen2.5")
    prefix = _shards(tmp_path, tok)
    common = ["model.base=null", "model.from_scratch=true", f"data.train=[{prefix}_train]",
              f"data.valid=[{prefix}_valid]", "data.seq_length=64", "schedule.max_steps=300", "data.num_workers=0",
              "model.sdpa_backend=default"]  # the plain path (the shipped config names cudnn)
    fast = ["model.sdpa_backend=cudnn", "peft.fused_adapters=true", "model.mlp_recompute=true",
            "model.compile_layers=true", "optim.sync_free_step=true"]
    from megatron.core.optimizer import optimizer as megatron_optimizer

    from trainer.megatron import sync_free_step
    from trainer.run.callbacks import GradientCheck

    for i, extra in enumerate(([], fast, [])):
        cfg = load_config(ROOT / "configs/qwen25_05b_ja_lora.yaml", common + extra + [f"run_dir={tmp_path}/r{i}"])
        run = build(cfg, tok, accelerator="cpu")
        text = format_plan(plan(run))
        config = nemo_model_config(run.preset, cfg)
        if extra:
            assert isinstance(run.peft, FusedLoRA) and config.transformer_layer_spec is fast_layer_spec
            assert "attention cudnn, layers compiled, MLP fc1 recomputed, LoRA fused" in text
            assert any(isinstance(c, GradientCheck) for c in run.trainer.callbacks)
            assert run.trainer.strategy.ddp_config.check_for_nan_in_grad is False
            assert megatron_optimizer.get_grad_norm_fp32 is sync_free_step.grad_norm_fp32
        else:
            assert type(run.peft).__name__ == "LeanLoRA" and config.transformer_layer_spec is sdpa_layer_spec
            assert "attention default, layers eager, MLP kept, LoRA lean" in text
            assert not any(isinstance(c, GradientCheck) for c in run.trainer.callbacks)
            assert run.trainer.strategy.ddp_config.check_for_nan_in_grad is True
            assert megatron_optimizer.get_grad_norm_fp32 is not sync_free_step.grad_norm_fp32
