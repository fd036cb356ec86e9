"""Data and tensor parallelism of a run: the ``parallel:`` config section, its checks, its plan
lines and the NeMo/megatron arguments it turns into.

One process per GPU. ``tensor_parallel`` GPUs of one node split each layer's matrices
(megatron's column/row-parallel linears); the rest of the world is data parallel: every
data-parallel rank holds a model copy and takes ``micro_batch_size`` samples per micro
batch, so a step of ``global_batch_size`` samples runs ``global / (micro x data-parallel)``
micro batches per GPU (gradient accumulation) and the global batch, the learning-rate
schedule and the loss curve stay those of one GPU.

The distributed optimizer (megatron's ZeRO-1: each data-parallel rank keeps the fp32 master
weights and Adam moments of 1/N of the parameters; gradients are reduce-scattered and the
updated weights all-gathered) is on by default whenever there is more than one GPU. Its
checkpoints are written in megatron's ``fully_reshardable`` format (per parameter, in the
model's shapes), which any data-parallel size and tensor-parallel split can load; the
``dp_reshardable`` default of NeMo fails to save with torch's AdamW on megatron-core 0.15.3
and the resume needs :mod:`trainer.megatron.dist_optim` (which says why).

>>> p = ParallelConfig(devices=8)
>>> world_size(p), data_parallel_size(p), use_distributed_optimizer(p)
(8, 8, True)
>>> micro_batches_per_gpu(32, 4, p)
1
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ParallelConfig:
    devices: int = 1
    """GPUs per node; ``trainer run`` starts one process per GPU (through torchrun) when the
    run has more than one GPU."""
    num_nodes: int = 1
    """Nodes; more than one needs one launcher per node (``pipelines/slurm_train.sbatch``, or
    torchrun with a rendezvous on every node; docs/trainer.md)."""
    tensor_parallel: int = 1
    """GPUs of one node that split every layer (megatron tensor parallelism); must divide
    ``devices`` and the model's attention heads, query groups, FFN width and vocabulary.
    Only worth it for models that do not fit one GPU; Qwen2.5-0.5B trains fastest at 1."""
    distributed_optimizer: bool | None = None
    """Shard the fp32 master weights and Adam moments over the data-parallel ranks (megatron's
    distributed optimizer). Unset: on when the run has more than one GPU. Settable on one GPU
    (it then shards nothing, but saves and resumes through the same code)."""
    overlap_grad_reduce: bool = True
    """With more than one data-parallel rank, reduce each gradient bucket while the backward
    pass still computes the earlier layers' gradients (megatron DDP)."""
    bucket_size: int | None = None
    """Gradient elements per communication bucket; unset: megatron's default
    (max(40M, 1M x data-parallel size)). LoRA's gradients (1.5M) fit one bucket."""


def world_size(p: ParallelConfig) -> int:
    return p.devices * p.num_nodes


def data_parallel_size(p: ParallelConfig) -> int:
    return world_size(p) // max(p.tensor_parallel, 1)


def use_distributed_optimizer(p: ParallelConfig) -> bool:
    return world_size(p) > 1 if p.distributed_optimizer is None else p.distributed_optimizer


def micro_batches_per_gpu(global_batch: int, micro_batch: int, p: ParallelConfig) -> int:
    """Micro batches each GPU runs per optimizer step (gradient accumulation)."""
    return global_batch // (micro_batch * data_parallel_size(p))


def checks(cfg, preset) -> list[tuple[str, bool, str]]:
    """``(key, ok, message)`` for the ``parallel`` section against the model and the batch sizes."""
    p, s = cfg.parallel, cfg.schedule
    tp = p.tensor_parallel
    out = [
        ("parallel.devices", p.devices >= 1, f"{p.devices} must be >= 1"),
        ("parallel.num_nodes", p.num_nodes >= 1, f"{p.num_nodes} must be >= 1"),
        ("parallel.tensor_parallel", tp >= 1, f"{tp} must be >= 1"),
        ("parallel.bucket_size", p.bucket_size is None or p.bucket_size > 0, f"{p.bucket_size} must be positive"),
    ]
    if not all(ok for _, ok, _ in out):
        return out
    out.append(("parallel.tensor_parallel", p.devices % tp == 0,
                f"{tp} does not divide parallel.devices={p.devices} (tensor parallelism stays inside a node)"))
    for what, n in (("attention heads", preset.num_attention_heads), ("query groups", preset.num_query_groups),
                    ("FFN width", preset.ffn_hidden_size), ("vocabulary rows", preset.vocab_size)):
        out.append(("parallel.tensor_parallel", n % tp == 0,
                    f"{tp} does not divide the model's {n} {what} ({preset.name}); "
                    f"choose one of {divisors_of_model(preset)}"))
    dp = data_parallel_size(p)
    out.append(("schedule.global_batch_size", s.global_batch_size % (s.micro_batch_size * dp) == 0,
                f"{s.global_batch_size} is not a multiple of schedule.micro_batch_size {s.micro_batch_size} x "
                f"data-parallel size {dp} (parallel.devices x parallel.num_nodes / parallel.tensor_parallel) "
                f"= {s.micro_batch_size * dp}"))
    return out


def divisors_of_model(preset) -> list[int]:
    """Tensor-parallel sizes the model's shapes allow (up to 8 GPUs of a node)."""
    dims = (preset.num_attention_heads, preset.num_query_groups, preset.ffn_hidden_size, preset.vocab_size)
    return [t for t in range(1, 9) if all(d % t == 0 for d in dims)]


def one_rank_plugins_off(cfg) -> list[str]:
    """The plug-ins asked for in the config that only run on one tensor-parallel rank and
    are therefore off under tensor parallelism (each falls back to upstream's code)."""
    if cfg.parallel.tensor_parallel == 1:
        return []
    off = ["lean linear layers (megatron's tensor-parallel linears)"]
    if cfg.model.fused_loss:
        off.append("model.fused_loss (megatron's vocabulary-parallel cross-entropy, full logits per rank)")
    if cfg.peft.method == "lora" and cfg.peft.lean_adapters:
        off.append("peft.lean_adapters (NeMo's tensor-parallel adapters)")
    if cfg.peft.method == "lora" and getattr(cfg.peft, "fused_adapters", False):
        off.append("peft.fused_adapters (NeMo's tensor-parallel adapters)")
    if getattr(cfg.model, "mlp_recompute", False):
        off.append("model.mlp_recompute (megatron's MLP, activations kept)")
    return off


def plan_items(cfg) -> dict:
    """The plan's lines about processes, batches per GPU and the optimizer's sharding."""
    p, s = cfg.parallel, cfg.schedule
    dp, tp = data_parallel_size(p), p.tensor_parallel
    where = f"{p.num_nodes} node{'s' if p.num_nodes > 1 else ''} x {p.devices} GPU{'s' if p.devices > 1 else ''}"
    launch = "one process" if world_size(p) == 1 else f"{world_size(p)} processes through torchrun"
    items = {
        "parallel": f"{where} ({launch}): tensor parallel {tp}, data parallel {dp}",
        "micro batches per step per GPU": micro_batches_per_gpu(s.global_batch_size, s.micro_batch_size, p),
        "tokens per GPU per step": s.global_batch_size * cfg.data.seq_length // dp,
        "optimizer sharding": ("distributed optimizer: master weights and moments split over "
                               f"{dp} data-parallel rank{'s' if dp > 1 else ''}; checkpoints fully_reshardable "
                               "(resume on any GPU count)" if use_distributed_optimizer(p)
                               else "none (every GPU keeps the whole optimizer state)"),
    }
    if dp > 1:
        items["gradient reduce"] = ("overlapped with the backward pass, bucket by bucket" if p.overlap_grad_reduce
                                    else "after the backward pass")
    if off := one_rank_plugins_off(cfg):
        items["tensor parallel"] = "off under tensor parallelism: " + "; ".join(off)
    return items


def ddp_config(cfg):
    """megatron's ``DistributedDataParallelConfig`` for NeMo's strategy (NeMo's default plus ours)."""
    from megatron.core.distributed import DistributedDataParallelConfig

    p = cfg.parallel
    overlap = p.overlap_grad_reduce and data_parallel_size(p) > 1  # nothing to overlap on one rank
    return DistributedDataParallelConfig(
        # NeMo's default for ddp="megatron"; optim.sync_free_step checks the gradient norm instead
        check_for_nan_in_grad=not cfg.optim.sync_free_step,
        use_distributed_optimizer=use_distributed_optimizer(p),
        overlap_grad_reduce=overlap, bucket_size=p.bucket_size if overlap else None,
    )


def strategy_kwargs(cfg) -> dict:
    """Arguments of ``nl.MegatronStrategy`` beside the checkpoint settings of the recipe."""
    return dict(tensor_model_parallel_size=cfg.parallel.tensor_parallel, pipeline_model_parallel_size=1,
                sequence_parallel=False, ddp=ddp_config(cfg),
                # megatron-core 0.15.3 + torch AdamW: dp_reshardable fails to save (trainer/megatron/dist_optim.py)
                ckpt_optim_fully_reshardable=use_distributed_optimizer(cfg.parallel))



def saved_with_distributed_optimizer(checkpoint) -> bool:
    """Whether a checkpoint's optimizer state was written by the distributed optimizer: NeMo
    records the format (``distrib_optim_sharding_type``) in the content metadata of
    ``weights/common.pt``; the plain optimizer's checkpoints have none."""
    from pathlib import Path

    from megatron.core import dist_checkpointing

    metadata = dist_checkpointing.load_content_metadata(str(Path(checkpoint) / "weights")) or {}
    return "distrib_optim_sharding_type" in metadata


def settle_optimizer(cfg, checkpoint_dir, echo=print):
    """``cfg`` with ``parallel.distributed_optimizer`` settled against the checkpoint it resumes.

    Neither optimizer reads the other's checkpoint (megatron raises a CheckpointingException or
    a KeyError deep in the load), and the default differs between one GPU and several. So when
    the key is unset the run continues as the checkpoint was saved (a run begun on 8 GPUs
    resumes on 1); set to the other value, it is refused here, naming the key.
    """
    import dataclasses

    from trainer.run.checkpoints import find_resumable

    chosen, _ = find_resumable(checkpoint_dir) if cfg.checkpoint.resume else (None, [])
    if chosen is None:
        return cfg
    saved, wanted = saved_with_distributed_optimizer(chosen), cfg.parallel.distributed_optimizer
    how = "with" if saved else "without"
    if wanted is None:
        if saved != use_distributed_optimizer(cfg.parallel):
            echo(f"parallel.distributed_optimizer: unset; {chosen.name} was saved {how} the distributed "
                 f"optimizer, so the run continues {how} it")
        return dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, distributed_optimizer=saved))
    if wanted != saved:
        raise ValueError(f"parallel.distributed_optimizer: {str(wanted).lower()}, but {chosen} was saved {how} the "
                         "distributed optimizer and the other cannot read its optimizer state; set "
                         f"parallel.distributed_optimizer={str(saved).lower()} (or leave it unset) to resume it, "
                         "or start a new run_dir")
    return cfg
