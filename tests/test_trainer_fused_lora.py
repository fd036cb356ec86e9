"""trainer.megatron.fused_lora: NeMo's LoRA linears run as one fused function compute what the lean
adapters compute (loss and every trainable gradient) on a real megatron-core model, keep NeMo's
parameters and checkpoint keys, and keep a real dropout in training."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nemo.collections.llm", reason="needs the train extra (pip install -e '.[train]')")


def _lora_gpt(config, peft_cls, dropout=0.0):
    from megatron.core.models.gpt import GPTModel

    from trainer.megatron import nemo_patches
    from trainer.megatron.cpu_shims import megatron_on_cpu
    from trainer.megatron.layers import sdpa_layer_spec

    nemo_patches.patch_lora_without_te()
    torch.manual_seed(0)
    with megatron_on_cpu():
        model = GPTModel(config=config, transformer_layer_spec=sdpa_layer_spec(config), vocab_size=128,
                         max_sequence_length=64, position_embedding_type="rope")
        peft = peft_cls(target_modules=["linear_qkv", "linear_proj"], dim=4, alpha=8, dropout=dropout)
        for p in model.parameters():
            p.requires_grad_(False)
        for i, layer in enumerate(model.decoder.layers):
            attn = layer.self_attention
            prefix = f"decoder.layers.{i}.self_attention"
            attn.linear_qkv = peft.transform(attn.linear_qkv, name="linear_qkv", prefix=prefix)
            attn.linear_proj = peft.transform(attn.linear_proj, name="linear_proj", prefix=prefix)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # B starts at zero; give both models the same non-zero adapters
        for name, p in model.named_parameters():
            if "adapter" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
                p.requires_grad_(True)
    return model


def _loss_and_grads(model, ids):
    from trainer.megatron.cpu_shims import megatron_on_cpu

    pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    with megatron_on_cpu():
        loss = model(ids, pos, None, labels=ids)
    loss.mean().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fused_linears_match_lean_adapters(model_parallel, tiny_transformer_config):
    from trainer.megatron.fast_lora import LeanLoRA
    from trainer.megatron.fused_lora import FusedLoRA, fused_forward

    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    ref_model = _lora_gpt(tiny_transformer_config(), LeanLoRA)
    model = _lora_gpt(tiny_transformer_config(), FusedLoRA)
    for layer in model.decoder.layers:  # qkv (column-parallel, with bias) and proj (row-parallel)
        for linear in (layer.self_attention.linear_qkv, layer.self_attention.linear_proj):
            assert linear.forward.__func__ is fused_forward
    assert sorted(ref_model.state_dict()) == sorted(model.state_dict())  # same checkpoint keys
    ref_loss, ref_grads = _loss_and_grads(ref_model, ids)
    loss, grads = _loss_and_grads(model, ids)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert abs(loss.mean().item() - ref_loss.mean().item()) < 1e-3
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 2 * 2
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_dropout_stays_on_in_training_and_off_in_eval(model_parallel, tiny_transformer_config):
    from trainer.megatron.fast_lora import LeanLoRA
    from trainer.megatron.fused_lora import FusedLoRA

    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(2))
    model = _lora_gpt(tiny_transformer_config(), FusedLoRA, dropout=0.1)
    ref_model = _lora_gpt(tiny_transformer_config(), LeanLoRA, dropout=0.1)
    model.train()
    first, _ = _loss_and_grads(model, ids)
    second, _ = _loss_and_grads(model, ids)
    assert not torch.equal(first, second)  # a new mask per call
    model.eval(), ref_model.eval()
    with torch.no_grad():
        from trainer.megatron.cpu_shims import megatron_on_cpu

        pos = torch.arange(16).unsqueeze(0).expand_as(ids)
        with megatron_on_cpu():
            torch.testing.assert_close(model(ids, pos, None, labels=ids), ref_model(ids, pos, None, labels=ids),
                                       rtol=1e-5, atol=1e-5)


def test_nemo_lora_linear_is_what_the_fused_forward_replaces():
    """If this fails, NeMo changed LoRALinear or its adapter: re-check trainer/megatron/fused_lora.py."""
    from nemo.collections.llm.peft.lora import LoRA, LoRALinear
    from nemo.collections.llm.peft.utils import ParallelLinearAdapter

    source = inspect.getsource(LoRALinear.forward)
    assert "self.base_linear_forward(x" in source and "linear_output + adapter_output" in source
    adapter_forward = inspect.getsource(ParallelLinearAdapter.forward)
    for piece in ("self.dropout_position == 'pre'", "self.linear_in(x)", "self.activation(x)",
                  "self.linear_out(x)", "self.alpha / self.dim"):
        assert piece in adapter_forward, piece
    assert LoRA.dropout_position == "pre"
