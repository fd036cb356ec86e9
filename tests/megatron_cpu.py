"""megatron-core's DDP and distributed optimizer on the CPU, for tests (not a test module).

megatron-core 0.15.3 builds its gradient buffers on ``torch.cuda.current_device()``,
makes its optimizer's flags with ``device='cuda'``, accepts only parameters whose
``Tensor.type()`` is ``torch.cuda.*Tensor`` and moves gather buffers with ``.cuda()``.
:func:`cuda_on_cpu` turns exactly those into CPU operations for the duration of a
``with`` block (a ``TorchFunctionMode`` rewriting ``device='cuda'`` factory arguments,
``Tensor.cuda()`` and ``Tensor.type()``; ``torch.cuda.current_device`` -> ``"cpu"``), so
the real DDP buckets, reduce-scatter, distributed optimizer and ``dist_checkpointing`` code
runs over gloo, one process or several.

The model is a 2-layer GPT with the project's SDPA layer spec and fused loss (megatron's
local attention needs the CUDA RNG tracker); a step's batch is cut from a fixed global batch
by data-parallel rank, so runs at different data-parallel sizes see the same samples.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch.overrides import TorchFunctionMode

VOCAB, SEQ, GLOBAL_BATCH = 64, 16, 4
SHARDING = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}  # NeMo's metadata


class _CudaOnCpu(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "cpu"
        if func is torch.Tensor.cuda:
            return args[0]
        out = func(*args, **kwargs)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs and isinstance(out, str) \
                and not out.startswith("torch.cuda."):
            out = "torch.cuda." + out.removeprefix("torch.")
        return out


@contextlib.contextmanager
def cuda_on_cpu():
    saved = torch.cuda.current_device, torch.cuda.synchronize
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *a, **k: None
    try:
        with _CudaOnCpu():
            yield
    finally:
        torch.cuda.current_device, torch.cuda.synchronize = saved


def build(seed: int = 0, bf16: bool = False, distributed_optimizer: bool = True, fused_loss_chunk: int | None = 24,
          wgrad_fusion: bool = False):
    """(megatron DDP-wrapped tiny GPT, megatron optimizer) on the current process group.

    The model is the project's: SDPA core attention, lean linear layers and (unless
    ``fused_loss_chunk`` is None) the chunked output layer + cross-entropy, 24 tokens a chunk
    (a rank's micro batch of 2 x 16 tokens spans two chunks); ``wgrad_fusion``: the linear layers'
    weight gradients go straight into ``main_grad`` (``trainer/megatron/wgrad_fusion.py``)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.models.gpt import GPTModel
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.transformer.transformer_config import TransformerConfig

    from trainer.megatron.layers import sdpa_layer_spec

    torch.manual_seed(seed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    config = TransformerConfig(
        num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=64,
        use_cpu_initialization=True, params_dtype=dtype, bf16=bf16, normalization="RMSNorm",
        gated_linear_unit=True, add_bias_linear=False, add_qkv_bias=True, activation_func=torch.nn.functional.silu,
        hidden_dropout=0.0, attention_dropout=0.0, masked_softmax_fusion=False, bias_activation_fusion=False,
        bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False)
    if wgrad_fusion:
        from trainer.megatron.wgrad_fusion import CONFIG_ATTR

        setattr(config, CONFIG_ATTR, True)
    model = GPTModel(config, sdpa_layer_spec(config), vocab_size=VOCAB, max_sequence_length=SEQ).to(dtype)
    if fused_loss_chunk:
        from trainer.megatron import fused_loss

        fused_loss.install(model, fused_loss_chunk)
    ddp = DistributedDataParallel(config, DistributedDataParallelConfig(
        use_distributed_optimizer=distributed_optimizer, grad_reduce_in_fp32=True, overlap_grad_reduce=False), model)
    opt = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=1e-2, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, clip_grad=1.0, bf16=bf16,
        use_distributed_optimizer=distributed_optimizer), [ddp])
    return ddp, opt


def global_batch(step: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ), generator=torch.Generator().manual_seed(1000 + step))


def train_step(ddp, opt, step: int) -> float:
    """One optimizer step on this rank's slice of step ``step``'s global batch; the global mean loss."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    dp, rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    ids = global_batch(step).chunk(dp)[rank]
    pos = torch.arange(SEQ).unsqueeze(0).expand(ids.shape[0], -1)
    mask = torch.triu(torch.ones(SEQ, SEQ, dtype=torch.bool), 1)[None, None]
    ddp.zero_grad_buffer()
    opt.zero_grad()
    loss = ddp(ids, pos, mask, labels=ids).float().mean()
    loss.backward()
    ddp.finish_grad_sync()
    opt.step()
    total = loss.detach().clone()
    dist.all_reduce(total, group=parallel_state.get_data_parallel_group())
    return float(total) / dp


def master_params(opt) -> list[torch.Tensor]:
    """Copies of every parameter the optimizer updates, in its order."""
    return [p.detach().clone() for o in opt.chained_optimizers for g in o.optimizer.param_groups for p in g["params"]]


def adam_steps(opt) -> list[float]:
    """Every parameter's AdamW step count (one value per parameter state on this rank)."""
    return [float(s["step"]) for o in opt.chained_optimizers for s in o.optimizer.state.values()]


def save(ddp, opt, path: str, sharding: str | None = "fully_reshardable") -> None:
    """Model and optimizer through megatron's dist_checkpointing, as NeMo 2.7.3's MegatronCheckpointIO
    saves them (fully parallel: the replicated tensors' writing is spread over the ranks)."""
    from pathlib import Path

    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

    Path(path).mkdir(parents=True, exist_ok=True)
    metadata = {**SHARDING, **({"distrib_optim_sharding_type": sharding} if sharding else {})}  # None: plain
    model_sd = ddp.module.sharded_state_dict(metadata=metadata)
    state = {"model": model_sd, "optimizer": opt.sharded_state_dict(model_sd, metadata=metadata)}
    strategy = FullyParallelSaveStrategyWrapper(get_default_save_sharded_strategy("torch_dist", 1), None, False)
    dist_checkpointing.save(state, path, sharded_strategy=strategy, content_metadata=metadata)


def load(ddp, opt, path: str) -> None:
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelLoadStrategyWrapper

    metadata = dist_checkpointing.load_content_metadata(path)
    model_sd = ddp.module.sharded_state_dict(metadata=metadata)
    template = {"model": model_sd, "optimizer": opt.sharded_state_dict(model_sd, is_loading=True, metadata=metadata)}
    strategy = FullyParallelLoadStrategyWrapper(get_default_load_sharded_strategy(path),
                                                parallel_state.get_data_parallel_group(with_context_parallel=True))
    loaded = dist_checkpointing.load(template, path, sharded_strategy=strategy)
    ddp.module.load_state_dict(loaded["model"])
    opt.load_state_dict(loaded["optimizer"])


def init(rank: int, world: int, port: int, tensor_parallel: int = 1) -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    parallel_state.initialize_model_parallel(tensor_parallel, 1)


def resume_worker(rank: int, world: int, port: int, load_from: str, save_to: str, steps: list[int], out: str):
    """A data-parallel rank: load ``load_from``, train ``steps``, save to ``save_to``; rank 0 writes
    ``{"losses", "adam_steps"}`` to ``out`` as JSON."""
    import json

    import torch.distributed as dist

    from trainer.megatron import dist_optim

    init(rank, world, port)
    try:
        with cuda_on_cpu():
            dist_optim.install()
            ddp, opt = build(seed=99)
            load(ddp, opt, load_from)
            steps_after_load = adam_steps(opt)
            losses = [train_step(ddp, opt, s) for s in steps]
            save(ddp, opt, save_to)
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"losses": losses, "steps_after_load": sorted(set(steps_after_load)),
                           "adam_steps": sorted(set(adam_steps(opt)))}, f)
    finally:
        dist.destroy_process_group()


def tensor_parallel_worker(rank: int, world: int, port: int, save_to: str, out: str):
    """A tensor-parallel rank (TP = ``world``): train steps 0-2, save, train 3-4; rank 0 writes
    ``{"losses_before", "losses_after", "adam_steps"}`` to ``out``."""
    import json

    import torch.distributed as dist

    from trainer.megatron import dist_optim

    init(rank, world, port, tensor_parallel=world)
    try:
        with cuda_on_cpu():
            dist_optim.install()
            ddp, opt = build(seed=0)
            before = [train_step(ddp, opt, s) for s in range(3)]
            save(ddp, opt, save_to)
            after = [train_step(ddp, opt, s) for s in (3, 4)]
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"losses_before": before, "losses_after": after,
                           "adam_steps": sorted(set(adam_steps(opt)))}, f)
    finally:
        dist.destroy_process_group()
