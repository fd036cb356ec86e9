"""trainer.megatron.fast_lora: NeMo's LoRA adapters with the lean forward compute what NeMo's
own forward computes (loss and every trainable gradient), on a real megatron-core model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nemo.collections.llm", reason="needs the train extra (pip install -e '.[train]')")



def _lora_gpt(config, peft_cls):
    from megatron.core.models.gpt import GPTModel

    from trainer.megatron import nemo_patches
    from trainer.megatron.cpu_shims import megatron_on_cpu
    from trainer.megatron.layers import sdpa_layer_spec

    nemo_patches.patch_lora_without_te()
    torch.manual_seed(0)
    with megatron_on_cpu():
        model = GPTModel(config=config, transformer_layer_spec=sdpa_layer_spec(config), vocab_size=128,
                         max_sequence_length=64, position_embedding_type="rope")
        peft = peft_cls(target_modules=["linear_qkv", "linear_proj"], dim=4, alpha=8, dropout=0.0)
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


def test_lean_adapters_match_nemo_adapters(model_parallel, tiny_transformer_config):
    from nemo.collections.llm.peft.lora import LoRA

    from trainer.megatron.fast_lora import LeanLoRA, lean_adapter_forward

    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    ref_model = _lora_gpt(tiny_transformer_config(), LoRA)
    lean_model = _lora_gpt(tiny_transformer_config(), LeanLoRA)
    adapter = lean_model.decoder.layers[0].self_attention.linear_qkv.adapter
    assert adapter.forward.__func__ is lean_adapter_forward
    assert "forward" not in vars(ref_model.decoder.layers[0].self_attention.linear_qkv.adapter)
    assert sorted(ref_model.state_dict()) == sorted(lean_model.state_dict())  # same checkpoint keys
    ref_loss, ref_grads = _loss_and_grads(ref_model, ids)
    loss, grads = _loss_and_grads(lean_model, ids)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 2 * 2  # A and B of qkv and proj, 2 layers
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)
