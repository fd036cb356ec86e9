"""Read a NeMo 2 checkpoint into a live megatron-core model on the CPU, without NeMo's loader.

NeMo's own restore path (``MegatronStrategy.setup`` -> ``load_checkpoint``, also used
by ``llm.peft.merge_lora``) asserts CUDA (``_fix_tensors_device``, CUDA streams), so
it cannot run on a CPU machine. Here the ``weights/`` directory is read with torch's
distributed-checkpoint reader (no process group needed) and copied into the model
through the model's own ``sharded_state_dict()``: every ShardedTensor names its
checkpoint key and its slice (layer index) of the stacked tensor, exactly as
megatron's loader would place it. Only model tensors are read (``module.*``), never
the optimizer state beside them.

A LoRA checkpoint written by ``llm.finetune`` holds only adapter tensors; its
``weights/adapter_metadata.json`` names the base checkpoint (``model_ckpt_path``),
and its ``context/`` holds the ``llm.peft.LoRA`` transform (rank, alpha, targets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class LoadedCheckpoint:
    model: Any
    """NeMo lightning module (``JaQwen2Model``); ``model.module`` is the megatron GPTModel."""
    lora: Any
    """The ``llm.peft.LoRA`` applied to ``model`` (adapters unmerged), or None."""
    base: Path | None
    """The base checkpoint the adapter weights were trained on, for LoRA checkpoints."""
    context: Path
    """``context/`` of the checkpoint (tokenizer, generation config)."""
    trainer: Any


def is_checkpoint(path: Path) -> bool:
    return (path / "context").is_dir() and (path / "weights").is_dir()


def adapter_base(path: Path) -> Path | None:
    """The base checkpoint a LoRA checkpoint refers to (``adapter_metadata.json``), if any."""
    meta = path / "weights" / "adapter_metadata.json"
    if not meta.is_file():
        return None
    return Path(json.loads(meta.read_text())["model_ckpt_path"])


def read_tensors(weights_dir: Path, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """All tensors under ``prefix`` of a torch_dist checkpoint, full (unsharded), as stored."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(weights_dir))
    meta = reader.read_metadata().state_dict_metadata
    state = {key: torch.empty(m.size, dtype=m.properties.dtype) for key, m in meta.items()
             if key.startswith(prefix) and isinstance(m, TensorStorageMetadata)}
    if not state:
        raise ValueError(f"{weights_dir}: no model tensors ({prefix}*) in this checkpoint")
    dcp.load(state, storage_reader=reader, no_dist=True)
    return {key[len(prefix):]: value for key, value in state.items()}


def fill_model(module: torch.nn.Module, tensors: dict[str, torch.Tensor], only: str | None = None) -> set[str]:
    """Copy checkpoint tensors into ``module`` through its ``sharded_state_dict``.

    ``only`` restricts to keys containing it (``".adapter."``). Returns the keys used;
    raises if the model wants a tensor the checkpoint lacks or shapes differ.
    Parameters are set to NaN first: any left unfilled is an error, never silent.
    """
    def wanted(name: str) -> bool:
        return only in name if only else ".adapter." not in name

    with torch.no_grad():
        for name, p in module.named_parameters():
            if wanted(name):
                p.fill_(float("nan"))
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

    sharded = module.sharded_state_dict()
    apply_factories(sharded)  # e.g. SwiGLU's linear_fc1 -> gate and up halves (views of the weight)
    used = set()
    for sh in nested_values(sharded):
        if not isinstance(sh, ShardedTensor) or (only and only not in sh.key):
            continue
        if only is None and ".adapter." in sh.key:
            continue
        if sh.key not in tensors:
            raise ValueError(f"checkpoint has no tensor {sh.key}")
        full = tensors[sh.key]
        lead = sh.prepend_axis_num  # stacked-layer axes: one index each
        index = tuple(sh.global_offset[:lead]) + tuple(
            slice(off, off + size) for off, size in zip(sh.global_offset[lead:], sh.local_shape))
        piece = full[index]
        if piece.shape != sh.data.shape:
            raise ValueError(f"{sh.key}: checkpoint slice {tuple(piece.shape)} != model {tuple(sh.data.shape)}")
        with torch.no_grad():
            sh.data.copy_(piece.to(sh.data.dtype))
        used.add(sh.key)
    unfilled = [n for n, p in module.named_parameters() if wanted(n) and torch.isnan(p).any()]
    if unfilled:
        raise ValueError(f"parameters not found in the checkpoint: {unfilled[:8]}")
    return used


def load(path: Path, base: Path | None = None) -> LoadedCheckpoint:
    """Build the checkpoint's model in float32 on the CPU and load its weights (and LoRA)."""
    from nemo.lightning import MegatronStrategy, Trainer, _strategy_lib, io

    from trainer.megatron import nemo_patches

    path = Path(path)
    if not is_checkpoint(path):
        raise ValueError(f"{path}: not a NeMo checkpoint (expected context/ and weights/)")
    model = io.load_context(path / "context", "model")
    lora = getattr(model, "model_transform", None)
    model.model_transform = None
    if hasattr(model, "__io__"):
        model.__io__.model_transform = None
    base = Path(base) if base else adapter_base(path)
    if lora is not None and base is None:
        raise ValueError(f"{path} is a LoRA checkpoint without adapter_metadata.json: pass --base")
    if lora is not None and not is_checkpoint(base):
        raise ValueError(f"base checkpoint {base} (from adapter_metadata.json or --base) is not a NeMo "
                         "checkpoint: pass --base with the imported base (context/ and weights/)")
    cfg = model.config
    cfg.bf16, cfg.fp16, cfg.params_dtype, cfg.autocast_dtype = False, False, torch.float32, torch.float32
    cfg.perform_initialization = False
    nemo_patches.apply_no_te_settings(cfg)
    trainer = Trainer(devices=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      strategy=MegatronStrategy(ddp="pytorch", setup_optimizers=False, ckpt_async_save=False))
    trainer.strategy.connect(model)
    model.trainer = trainer  # llm.peft.LoRA asks the model for its trainer
    trainer.strategy.setup_environment()  # gloo process group + megatron parallel state
    with _strategy_lib.megatron_cpu_init_context(cfg):
        model.configure_model()
    weights = read_tensors((base if lora is not None else path) / "weights")
    used = fill_model(model.module, weights)
    if lora is not None:
        apply_lora(model, lora)
        adapters = read_tensors(path / "weights")
        used |= fill_model(model.module, adapters, only=".adapter.")
        if not any(".adapter." in k for k in used):
            raise ValueError(f"{path}: the LoRA checkpoint holds no adapter tensors this model uses")
    model.module.float().eval()
    return LoadedCheckpoint(model=model, lora=lora, base=base if lora is not None else None,
                            context=path / "context", trainer=trainer)


def apply_lora(model, lora) -> None:
    """Wrap ``model``'s target layers with ``lora``'s adapters, created on the CPU."""
    from nemo.lightning import _strategy_lib

    from trainer.megatron import nemo_patches

    nemo_patches.patch_lora_without_te()
    with _strategy_lib.megatron_cpu_init_context(model.config):  # else adapters go to cuda.current_device()
        lora(model)


def close(loaded: LoadedCheckpoint) -> None:
    """Tear down the process group ``load`` started."""
    from nemo.lightning import teardown

    teardown(loaded.trainer, loaded.model)
