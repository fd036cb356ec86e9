"""One config -> the NeMo 2 objects of a run: setup -> plan -> train.

``build(cfg, tok)`` flattens the config into plain NeMo/megatron-core arguments
(the GPT model with our Qwen2 preset and layer spec, ``PreTrainingDataModule`` on
our shards with the model's tokenizer, ``llm.peft.LoRA``, the optimizer and
schedule, the checkpoint callback, logging and auto-resume). ``plan`` states what
the run will do; ``train`` hands everything to ``llm.finetune``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.run.config import TrainConfig, shard_blend
from trainer.run.data import SampleLayout, check_shards, sample_layout
from trainer.run.presets import ModelPreset, get_preset


@dataclass
class Run:
    """Everything ``llm.finetune`` takes, plus what the plan reports."""

    cfg: TrainConfig
    preset: ModelPreset
    tokenizer: Any
    train_shards: list
    valid_shards: list
    model: Any = None
    data: Any = None
    trainer: Any = None
    optim: Any = None
    peft: Any = None
    log: Any = None
    resume: Any = None
    layout: SampleLayout = SampleLayout(False, False)


def model_tokenizer(spec: str):
    """The model's tokenizer through the project's tokenizer layer."""
    import importlib.metadata

    import tiktoken

    # tiktoken 0.7.0 (NeMo's pin) has no __version__, which jpcorpus.tokenizer reads
    # for its cache key; give it the installed version until jpcorpus stops needing it.
    if not hasattr(tiktoken, "__version__"):
        tiktoken.__version__ = importlib.metadata.version("tiktoken")
    from jpcorpus.tokenizer import load_tokenizer

    return load_tokenizer(spec)


def check_run_inputs(cfg: TrainConfig, tok) -> tuple[ModelPreset, list, list]:
    """Refusals that need no NeMo: the shards against the model's tokenizer."""
    preset = get_preset(cfg.model.preset)
    described = tok.describe()
    if int(tok.vocab_size) > preset.vocab_size:
        from trainer.run.data import ShardMismatch

        raise ShardMismatch(f"model.tokenizer: vocab_size {tok.vocab_size} exceeds the model's {preset.vocab_size} "
                            "embedding rows; choose the model's own tokenizer (see "
                            "docs/troubleshooting.md#tokenizer-mismatch)")
    train = check_shards(shard_blend(cfg.data.train), described, preset.vocab_size, "train")
    valid = check_shards(shard_blend(cfg.data.valid), described, preset.vocab_size, "valid")
    return preset, train, valid


def nemo_model_config(preset: ModelPreset, cfg: TrainConfig, document_masking: bool = False):
    """megatron/NeMo Qwen2Config with the preset's numbers written through.

    ``document_masking``: the forward step hands the layers document ids
    (:mod:`trainer.megatron.document_masking`) and the ``sdpa`` spec's core attention is
    :class:`~trainer.megatron.flex_attention.FlexCoreAttention`; the ``local`` spec gets
    megatron's dense per-document mask instead (the reference path).
    """
    from nemo.collections.llm.gpt.model.qwen2 import Qwen2Config

    from trainer.megatron import nemo_patches
    from trainer.megatron.layers import local_layer_spec, sdpa_layer_spec

    bf16 = cfg.optim.precision == "bf16-mixed"
    import torch

    spec, masking = (sdpa_layer_spec if cfg.model.attention == "sdpa" else local_layer_spec), {}
    if document_masking:  # constructor arguments, so that checkpoint contexts record them
        from trainer.megatron.document_masking import document_forward_step
        from trainer.megatron.flex_attention import flex_layer_spec

        masking = {"forward_step_fn": document_forward_step}
        spec = flex_layer_spec if cfg.model.attention == "sdpa" else spec
    config = Qwen2Config(
        num_layers=preset.num_layers, hidden_size=preset.hidden_size,
        num_attention_heads=preset.num_attention_heads, num_query_groups=preset.num_query_groups,
        ffn_hidden_size=preset.ffn_hidden_size, vocab_size=preset.vocab_size, add_qkv_bias=preset.add_qkv_bias,
        share_embeddings_and_output_weights=preset.tie_embeddings, rotary_base=preset.rope_theta,
        layernorm_epsilon=preset.rms_norm_eps, seq_length=cfg.data.seq_length,
        bf16=bf16, params_dtype=torch.bfloat16 if bf16 else torch.float32,
        autocast_dtype=torch.bfloat16 if bf16 else torch.float32,
        transformer_layer_spec=spec, **masking,
    )
    nemo_patches.apply_no_te_settings(config)
    if cfg.model.fusions and torch.cuda.is_available():
        # megatron-core's own torch.compile fusions (megatron/core/fusions): no TE or apex needed.
        config.bias_activation_fusion = True
        config.bias_dropout_fusion = True
    if cfg.model.recompute:
        config.recompute_granularity = "selective"
        config.recompute_modules = list(cfg.model.recompute)
    if cfg.model.cuda_graphs:
        from trainer.megatron import cuda_graphs

        cuda_graphs.enable(config)
    if cfg.model.wgrad_fusion:
        from trainer.megatron import wgrad_fusion

        setattr(config, wgrad_fusion.CONFIG_ATTR, True)  # read by the lean linears and the graph runner
        wgrad_fusion.install()
    from trainer.megatron import fast_spec

    fast_spec.configure(config, sdpa_backend=cfg.model.sdpa_backend, compile_layers=cfg.model.compile_layers,
                        mlp_recompute=cfg.model.mlp_recompute)
    if document_masking:
        from trainer.megatron.flex_attention import CONFIG_ATTR

        setattr(config, CONFIG_ATTR, cfg.model.flex_kernel_options)  # read by FlexCoreAttention
    return config


def build(cfg: TrainConfig, tok, *, accelerator: str = "gpu") -> Run:
    from nemo import lightning as nl
    from nemo.collections import llm
    from nemo.lightning.pytorch.callbacks import ModelCheckpoint
    from nemo.lightning.pytorch.optim import CosineAnnealingScheduler, MegatronOptimizerModule
    from megatron.core.optimizer import OptimizerConfig

    from trainer.megatron import grad_norm, multi_tensor_scale, nemo_patches, sync_free_step
    from trainer.megatron.model import JaQwen2Model
    from trainer.run import parallel
    from trainer.run.callbacks import MetricsFile, Preflight, Profile
    from trainer.run.data import build_data_module, nemo_tokenizer

    nemo_patches.patch_lora_without_te()
    if cfg.model.cuda_graphs and accelerator == "gpu":
        from trainer.megatron import cuda_graphs

        cuda_graphs.install_graph_safe_rng()  # before NeMo creates megatron's RNG tracker
    grad_norm.install()  # one host sync per step for the gradient norm instead of one per tensor
    if cfg.optim.foreach_scale:
        multi_tensor_scale.install()
    else:
        multi_tensor_scale.uninstall()  # a process that built a run with it before
    if cfg.optim.sync_free_step:
        sync_free_step.install()
    else:
        sync_free_step.uninstall()
    if parallel.use_distributed_optimizer(cfg.parallel):
        from trainer.megatron import dist_optim

        dist_optim.install()  # its checkpoints resume with torch's AdamW, step count kept
    preset, train, valid = check_run_inputs(cfg, tok)
    run = Run(cfg, preset, tok, train, valid, layout=sample_layout(train + valid, cfg.data.seq_length,
                                                                   cfg.data.document_masking))
    # megatron's local attention needs a dense mask (the causal one, or per document);
    # document ids reach the flex core attention without one
    dense_mask = cfg.model.attention == "local" or not run.layout.document_masking
    s, o, run_dir = cfg.schedule, cfg.optim, Path(cfg.run_dir)
    nemo_tok = nemo_tokenizer(tok.hf_dir)
    run.data = build_data_module(
        train, valid, nemo_tok, seq_length=cfg.data.seq_length, micro_batch_size=s.micro_batch_size,
        global_batch_size=s.global_batch_size, num_workers=cfg.data.num_workers, seed=cfg.data.seed,
        index_dir=str(run_dir / "index_cache"), layout=run.layout,
        causal_mask=dense_mask,  # upstream's gpt_forward_step asserts one without TE
    )
    run.model = JaQwen2Model(nemo_model_config(preset, cfg, run.layout.document_masking), tokenizer=nemo_tok)
    if cfg.model.fused_loss:
        run.model.fused_loss_chunk_tokens = cfg.model.loss_chunk_tokens
    if cfg.peft.method == "lora":
        from trainer.megatron.fast_lora import LeanLoRA

        lora_cls = LeanLoRA if cfg.peft.lean_adapters else llm.peft.LoRA
        if cfg.peft.fused_adapters:
            from trainer.megatron.fused_lora import FusedLoRA

            lora_cls = FusedLoRA
        run.peft = lora_cls(target_modules=list(cfg.peft.targets), dim=cfg.peft.rank, alpha=cfg.peft.alpha,
                                 dropout=cfg.peft.dropout)
    sched = CosineAnnealingScheduler(
        max_steps=s.max_steps, warmup_steps=o.warmup_steps, constant_steps=0,
        min_lr=o.min_lr if o.schedule == "cosine" else o.lr,
    )
    run.optim = MegatronOptimizerModule(
        config=OptimizerConfig(optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay,
                               adam_beta1=0.9, adam_beta2=0.95, clip_grad=o.clip_grad,
                               bf16=o.precision == "bf16-mixed",
                               # saved fully_reshardable, resumed through trainer/megatron/dist_optim.py
                               use_distributed_optimizer=parallel.use_distributed_optimizer(cfg.parallel)),
        lr_scheduler=sched,
    )
    callbacks = [MetricsFile(run_dir / cfg.logging.metrics_file, cfg.data.seq_length, s.global_batch_size,
                             deferred=o.sync_free_step),
                 Preflight(s.preflight_batches, preset.vocab_size, expect_trained=not cfg.model.from_scratch)]
    if o.sync_free_step:
        from trainer.run.callbacks import GradientCheck

        callbacks.append(GradientCheck())
    if o.fused_adam:
        from trainer.run.callbacks import FusedAdam

        callbacks.append(FusedAdam())
    if cfg.logging.profile_steps:
        callbacks.append(Profile(*cfg.logging.profile_steps, out_dir=run_dir))
    if cfg.logging.sync_trace_steps:
        from trainer.run.callbacks import SyncTrace

        callbacks.append(SyncTrace(*cfg.logging.sync_trace_steps, out_dir=run_dir))
    if s.early_stopping.patience is not None:
        from lightning.pytorch.callbacks import EarlyStopping

        callbacks.append(EarlyStopping(monitor="val_loss", patience=s.early_stopping.patience,
                                       min_delta=s.early_stopping.min_delta, mode="min"))
    run.trainer = nl.Trainer(
        devices=cfg.parallel.devices, num_nodes=cfg.parallel.num_nodes, accelerator=accelerator,
        max_steps=s.max_steps,
        strategy=nl.MegatronStrategy(**parallel.strategy_kwargs(cfg), ckpt_async_save=False,
                                     ckpt_load_strictness="log_all"),
        plugins=nl.MegatronMixedPrecision(precision=o.precision),
        val_check_interval=s.val_every, limit_val_batches=s.val_batches, limit_test_batches=1,
        num_sanity_val_steps=s.preflight_batches, log_every_n_steps=cfg.logging.every_n_steps,
        callbacks=callbacks, use_distributed_sampler=False, enable_progress_bar=False,
    )
    # No every_n_train_steps: Lightning then saves in on_validation_end (every val_every steps, as
    # val_check_interval says), so the name and the top-k ranking carry the val_loss just computed.
    # Saving on the train-step trigger ran before that step's validation: the first checkpoint was
    # named val_loss=0.0000 and later ones carried the previous validation's loss.
    ckpt = ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=cfg.checkpoint.save_top_k,
                           save_last=cfg.checkpoint.save_last,
                           filename="{val_loss:.4f}-{step}-{consumed_samples}", save_optim_on_train_end=True)
    tb = None
    if cfg.logging.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        tb = TensorBoardLogger(save_dir=str(run_dir), name="tb")
    run.log = nl.NeMoLogger(log_dir=str(run_dir), name="run", version="v0", use_datetime_version=False,
                            ckpt=ckpt, tensorboard=tb)
    run.resume = nl.AutoResume(
        restore_config=nl.RestoreConfig(path=str(base_checkpoint(cfg))) if base_checkpoint(cfg) else None,
        resume_if_exists=cfg.checkpoint.resume, resume_ignore_no_checkpoint=True,
    )
    return run


def checkpoint_dir(cfg: TrainConfig) -> Path:
    """Where NeMoLogger(name="run", version="v0") puts the run's checkpoints (AutoResume looks here)."""
    return Path(cfg.run_dir) / "run" / "v0" / "checkpoints"


def base_checkpoint(cfg: TrainConfig) -> Path | None:
    """Where the NeMo base checkpoint is (or will be, once imported)."""
    if cfg.model.from_scratch:
        return Path(cfg.run_dir) / "base" / "nemo"
    base = Path(cfg.model.base)
    if (base / "context").is_dir() and (base / "weights").is_dir():
        return base
    return Path(cfg.run_dir) / "base" / "nemo"


def plan(run: Run) -> dict:
    """What the run will do, in numbers (printed by ``--dry-run``)."""
    from trainer.run.parallel import plan_items

    cfg, s = run.cfg, run.cfg.schedule
    flex = run.layout.document_masking and cfg.model.attention == "sdpa"
    tokens_per_step = s.global_batch_size * cfg.data.seq_length
    train_tokens = sum(sh.tokens for sh in run.train_shards)
    samples_per_epoch = (sum(sh.documents for sh in run.train_shards) if run.layout.packed
                         else max(train_tokens - 1, 0) // cfg.data.seq_length)
    trainable = (run.preset.lora_parameters(cfg.peft.rank, tuple(cfg.peft.targets)) if cfg.peft.method == "lora"
                 else run.preset.num_parameters())
    return {
        "model": f"{run.preset.name}: {run.preset.num_parameters():,} parameters "
                 f"({'tied' if run.preset.tie_embeddings else 'untied'} embeddings), attention {cfg.model.attention}",
        "start": "random weights (from_scratch)" if cfg.model.from_scratch else f"{cfg.model.base}",
        "tokenizer": f"{run.tokenizer.describe().get('name')} {run.tokenizer.fingerprint[:22]}... "
                     f"vocab {run.tokenizer.vocab_size}, eod {run.tokenizer.eod_id}",
        "train shards": ", ".join(f"{sh.prefix} (w={sh.weight:g}, {sh.tokens:,} tokens)" for sh in run.train_shards),
        "valid shards": ", ".join(f"{sh.prefix} ({sh.tokens:,} tokens)" for sh in run.valid_shards),
        "samples from": (f"packed shards (binarize --pack {cfg.data.seq_length}): one packed document per sample, "
                         f"padded, loss masked on the padding; fill {_fill(run.train_shards)}" if run.layout.packed
                         else f"the shards' token stream, cut every {cfg.data.seq_length} tokens"),
        "attention": (("per document (block-diagonal causal): "
                       + ("flex_attention on document ids" if cfg.model.attention == "sdpa"
                          else "megatron's dense per-document mask") + "; position ids restart at each document")
                      if run.layout.document_masking else "causal over the whole sample (across documents)"),
        "loss": (f"fused output layer + cross-entropy, {cfg.model.loss_chunk_tokens} tokens per chunk"
                 if cfg.model.fused_loss else "megatron-core's (full logits)"),
        "memory": f"activation recompute of {', '.join(cfg.model.recompute)}" if cfg.model.recompute
                  else "all activations kept",
        "launch": ("eager" if not cfg.model.cuda_graphs else "per-layer CUDA graphs" + (
            " (document ids are a graph input; if a capture fails, set model.cuda_graphs=false)"
            if flex else "")),
        "kernels": (f"attention {'flex (document ids)' if flex else cfg.model.sdpa_backend}, layers {'compiled' if cfg.model.compile_layers else 'eager'}"
                    f", MLP {'fc1 recomputed' if cfg.model.mlp_recompute else 'kept'}"
                    f", LoRA {'fused' if cfg.peft.fused_adapters else 'lean' if cfg.peft.lean_adapters else 'NeMo'}"),
        "tokens per step": tokens_per_step,
        **plan_items(cfg),
        "steps": s.max_steps,
        "samples": s.max_steps * s.global_batch_size,
        "tokens": s.max_steps * tokens_per_step,
        "steps per epoch": samples_per_epoch // s.global_batch_size,
        "epochs": round(s.max_steps * s.global_batch_size / max(samples_per_epoch, 1), 3),
        "peft": (f"LoRA rank {cfg.peft.rank} alpha {cfg.peft.alpha} dropout {cfg.peft.dropout} on "
                 f"{', '.join(cfg.peft.targets)}" if cfg.peft.method == "lora" else "none (full-parameter)"),
        "trainable parameters": trainable,
        "optimizer": (f"AdamW lr {cfg.optim.lr:g} -> {cfg.optim.min_lr:g} {cfg.optim.schedule}, "
                      f"warmup {cfg.optim.warmup_steps}, clip {cfg.optim.clip_grad}, {cfg.optim.precision}"),
        "validation": f"every {s.val_every} steps, {s.val_batches} batches; preflight {s.preflight_batches} batches",
        "checkpoints": (f"{cfg.run_dir}/run/v0/checkpoints: best {cfg.checkpoint.save_top_k} by val_loss"
                        f"{' + last' if cfg.checkpoint.save_last else ''}, every {s.val_every} steps; "
                        f"{'adapter weights only' if cfg.peft.method == 'lora' else 'all weights'} + optimizer; "
                        f"resume {'automatic' if cfg.checkpoint.resume else 'off'}"),
        "metrics": f"{cfg.run_dir}/{cfg.logging.metrics_file}"
                   + (f", TensorBoard {cfg.run_dir}/tb" if cfg.logging.tensorboard else ""),
    }


def _fill(shards: list) -> str:
    """Token-weighted fill rate of packed shards, from their sidecars."""
    room = sum(sh.documents * sh.packing.get("sample_tokens", 0) for sh in shards)
    return f"{sum(sh.tokens for sh in shards) / room:.2%}" if room else "unknown"


def dataset_sizes(run: Run) -> dict:
    """Build the data module's datasets (CPU is fine) and report their lengths in samples."""
    s = run.cfg.schedule
    run.data.build(trainer_max_steps=s.max_steps, trainer_val_check_interval=s.val_every,
                   trainer_limit_val_batches=s.val_batches, trainer_limit_test_batches=1)
    return {"train samples (built)": len(run.data._train_ds), "valid samples (built)": len(run.data._validation_ds)}


def format_plan(items: dict) -> str:
    width = max(len(k) for k in items)
    return "\n".join(f"{k:>{width}}  {v:,}" if isinstance(v, int) else f"{k:>{width}}  {v}" for k, v in items.items())
