"""``trainer export``: NeMo 2 checkpoint (LoRA or full) -> Hugging Face directory, parity-checked.

Steps: load the checkpoint into a float32 megatron-core model on the CPU
(:mod:`trainer.convert.export_nemo`; a LoRA checkpoint brings its base), fold the LoRA
adapters into the weights and map the names and fused layouts to Hugging Face
Qwen2 (:mod:`trainer.convert.export_mapping`), write ``config.json``, ``model.safetensors``,
``generation_config.json`` and the tokenizer files, and the adapter alone in PEFT's
format under ``adapter/``. Then the written directory is loaded back with
``AutoModelForCausalLM`` and scored on a fixed batch beside the NeMo model (adapters
unmerged): losses further apart than ``tolerance`` (1e-3) fail the export with
both numbers, and nothing is left at the output path. Everything is written to a
temporary sibling directory first and renamed into place at the end.

Output layout::

    OUT/config.json  model.safetensors  generation_config.json  tokenizer files
    OUT/adapter/adapter_config.json  adapter_model.safetensors   (LoRA checkpoints)
    OUT/export.json   source, base, dtype, LoRA settings, parity losses
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from jpcorpus.errors import DataProblem
from trainer.convert.export_mapping import Qwen2Shape, adapters_to_peft, merge_lora, to_hf

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class ExportParityError(DataProblem, RuntimeError):
    """The exported model does not compute what the NeMo model computes."""


@dataclass
class ExportResult:
    output: str
    source: str
    base: str | None
    dtype: str
    adapter_only: bool
    lora: dict | None = None
    """rank, alpha, dropout, targets (NeMo names) of the merged adapter."""
    parity: dict | None = None
    """``{"nemo_loss", "hf_loss", "tolerance", "batch"}``; None when the check was skipped."""
    notes: list[str] = field(default_factory=list)


def model_shape(cfg) -> Qwen2Shape:
    head_dim = cfg.kv_channels or cfg.hidden_size // cfg.num_attention_heads
    if head_dim * cfg.num_attention_heads != cfg.hidden_size:
        raise ValueError(f"kv_channels {head_dim} x {cfg.num_attention_heads} heads != hidden {cfg.hidden_size}: "
                         "not expressible as a Hugging Face Qwen2 config")
    if not cfg.add_qkv_bias or cfg.add_bias_linear or not cfg.gated_linear_unit:
        raise ValueError("not a Qwen2 architecture (needs qkv bias, no other linear bias, SwiGLU)")
    return Qwen2Shape(cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_query_groups,
                      head_dim, cfg.ffn_hidden_size, bool(cfg.share_embeddings_and_output_weights))


def hf_config(cfg, vocab_rows: int, dtype: torch.dtype, eos_id: int | None, bos_id: int | None):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_rows, hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_query_groups, max_position_embeddings=cfg.seq_length,
        rope_theta=float(cfg.rotary_base), rms_norm_eps=cfg.layernorm_epsilon, hidden_act="silu",
        tie_word_embeddings=bool(cfg.share_embeddings_and_output_weights), use_sliding_window=False,
        eos_token_id=eos_id, bos_token_id=bos_id, dtype=dtype,
    )


def _context_files(contexts: list[Path]) -> tuple[Path | None, Path | None]:
    """The first tokenizer directory and generation_config.json among the checkpoints' contexts."""
    tok = next((c / "nemo_tokenizer" for c in contexts if (c / "nemo_tokenizer").is_dir()), None)
    gen = next((c / "artifacts" / "generation_config.json" for c in contexts
                if (c / "artifacts" / "generation_config.json").is_file()), None)
    return tok, gen


def _write_hf(tmp: Path, hf_state: dict, config, dtype: torch.dtype, tok_dir: Path | None,
              gen_file: Path | None) -> None:
    from transformers import GenerationConfig, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    missing, unexpected = model.load_state_dict(hf_state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"Hugging Face state dict mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    model.to(dtype).save_pretrained(tmp, safe_serialization=True)
    gen = GenerationConfig.from_pretrained(gen_file.parent, gen_file.name) if gen_file else \
        GenerationConfig.from_model_config(config)
    gen.save_pretrained(tmp)
    if tok_dir is not None:
        for f in tok_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def _write_adapter(out: Path, adapters: dict, shape: Qwen2Shape, lora, dtype: torch.dtype, base: str) -> dict:
    from safetensors.torch import save_file

    tensors, targets = adapters_to_peft(adapters, shape)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, out / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(lora.dim), "lora_alpha": lora.alpha,
              "lora_dropout": float(lora.dropout), "target_modules": targets, "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": base,
              "nemo_target_modules": list(lora.target_modules)}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"rank": int(lora.dim), "alpha": lora.alpha, "dropout": float(lora.dropout),
            "targets": list(lora.target_modules), "peft_targets": targets}


def _parity(hf_model, nemo_model, tolerance: float) -> dict:
    from trainer.convert.parity import fixed_batch, parity_losses
    from trainer.megatron.cpu_shims import megatron_on_cpu

    ids = fixed_batch(int(hf_model.config.vocab_size))
    with megatron_on_cpu():
        hf_loss, nemo_loss = parity_losses(hf_model, nemo_model, ids)
    result = {"nemo_loss": nemo_loss, "hf_loss": hf_loss, "tolerance": tolerance, "batch": list(ids.shape)}
    if not abs(hf_loss - nemo_loss) <= tolerance:  # also catches NaN
        raise ExportParityError(
            f"export parity failed: NeMo loss {nemo_loss:.6f}, exported Hugging Face loss {hf_loss:.6f} "
            f"(|diff| {abs(hf_loss - nemo_loss):.2e} > {tolerance:g}) on a fixed batch of {tuple(ids.shape)}; "
            "nothing written (see docs/troubleshooting.md#export-parity)")
    return result


def export(checkpoint: str | Path, output: str | Path, *, base: str | Path | None = None,
           adapter_only: bool = False, dtype: str = "bf16", parity_check: bool = True,
           tolerance: float = 1e-3) -> ExportResult:
    """Export ``checkpoint`` to ``output`` (which must not exist); see the module docstring."""
    from trainer.convert import export_nemo

    if dtype not in DTYPES:
        raise ValueError(f"--dtype: {dtype!r}; choose one of {sorted(DTYPES)}")
    output = Path(output)
    if output.exists():
        raise ValueError(f"--output: {output} already exists; choose a new directory")
    loaded = export_nemo.load(Path(checkpoint), Path(base) if base else None)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        result = _export_loaded(loaded, tmp, output, Path(checkpoint), adapter_only, dtype, parity_check, tolerance)
        (tmp / "export.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
        os.replace(tmp, output)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        export_nemo.close(loaded)


def _export_loaded(loaded, tmp: Path, output: Path, checkpoint: Path, adapter_only: bool, dtype: str,
                   parity_check: bool, tolerance: float) -> ExportResult:
    cfg, lora = loaded.model.config, loaded.lora
    shape = model_shape(cfg)
    state = {k: v.detach() for k, v in loaded.model.module.state_dict().items() if not k.endswith("_extra_state")}
    result = ExportResult(output=str(output), source=str(checkpoint), dtype=dtype, adapter_only=adapter_only,
                          base=str(loaded.base) if loaded.base else None)
    if adapter_only and lora is None:
        raise ValueError(f"--adapter-only: {checkpoint} has no LoRA adapter (a full or imported checkpoint)")
    merged, adapters = merge_lora(state, lora.alpha / lora.dim if lora is not None else 0.0)
    if lora is not None:
        adapter_dir = tmp if adapter_only else tmp / "adapter"
        # The NeMo base, for the record; never ".." (the merged model): AutoPeftModel would apply it twice.
        base_name = str(loaded.base)
        result.lora = _write_adapter(adapter_dir, adapters, shape, lora, DTYPES[dtype], base_name)
    if adapter_only:
        result.notes.append("adapter only: the parity check needs the merged model, run without --adapter-only")
        return result
    tok_dir, gen_file = _context_files([loaded.context] + ([loaded.base / "context"] if loaded.base else []))
    if tok_dir is None:
        result.notes.append("no tokenizer files in the checkpoint context: copy them into the output")
    hf_state = to_hf(merged, shape)
    eos = bos = None
    if gen_file is not None:
        gen = json.loads(gen_file.read_text())
        eos, bos = gen.get("eos_token_id"), gen.get("bos_token_id")
    config = hf_config(cfg, hf_state["model.embed_tokens.weight"].shape[0], DTYPES[dtype], eos, bos)
    _write_hf(tmp, hf_state, config, DTYPES[dtype], tok_dir, gen_file)
    if parity_check:
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32)
        result.parity = _parity(hf_model, loaded.model, tolerance)
    else:
        result.notes.append("parity check skipped (--no-parity-check)")
    return result
