"""The run configuration: typed dataclasses, one docstring per field.

``load_config(path, overrides)`` reads YAML, applies ``dotted.key=value`` overrides
and builds :class:`TrainConfig`; any wrong key or value raises ``ValueError``
naming the dotted key to change, before anything heavy is imported.

>>> cfg = from_dict({"model": {"preset": "tiny", "from_scratch": True},
...                  "data": {"train": ["a"], "valid": ["b"]}}, ["schedule.max_steps=500"])
>>> cfg.schedule.max_steps, cfg.peft.rank, cfg.optim.lr
(500, 16, 0.0003)
>>> from_dict({"model": {"from_scratch": True}}, ["schedule.micro_batch_size=3"])
Traceback (most recent call last):
...
ValueError: schedule.global_batch_size: 32 is not a multiple of schedule.micro_batch_size 3
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.run.parallel import ParallelConfig, checks as parallel_checks
from trainer.run.presets import PRESETS

SDPA_BACKENDS = ("default", "auto", "cudnn", "flash", "efficient", "math")  # trainer/megatron/sdpa_backend.py
FLEX_KERNEL_OPTIONS = ("tuned", "torch")  # trainer/megatron/flex_attention.py: KERNEL_OPTION_CHOICES


@dataclass
class ModelConfig:
    preset: str = "qwen2.5-0.5b"
    """Architecture: ``qwen2.5-0.5b`` or ``tiny`` (tests); see ``trainer/run/presets.py``."""
    base: str | None = None
    """Weights to start from: a Hugging Face directory (imported once, with the parity
    check) or a NeMo checkpoint directory made by a previous import."""
    from_scratch: bool = False
    """Start from random weights. Required (and only allowed) when ``base`` is unset."""
    tokenizer: str = "qwen2.5"
    """Tokenizer spec for ``jpcorpus.tokenizer.load_tokenizer`` (name or HF directory);
    the shards' sidecars must name the same fingerprint, vocabulary and eod id."""
    attention: str = "sdpa"
    """Core attention without TransformerEngine: ``sdpa`` (torch scaled_dot_product_attention,
    no s x s scores in memory) or ``local`` (megatron-core's DotProductAttention)."""
    fused_loss: bool = True
    """Compute the output layer and the cross-entropy chunk by chunk (``trainer/megatron/fused_loss.py``):
    the same loss and gradients without the full ``[tokens, vocab]`` logits in memory."""
    loss_chunk_tokens: int = 4096
    """Tokens per chunk of the fused loss (bf16 logits of one chunk: chunk x vocab x 2 bytes)."""
    fusions: bool = True
    """On the GPU, megatron-core's torch.compile'd SwiGLU (keeps only its input for the
    backward pass) and bias-dropout-add; pure PyTorch, no TransformerEngine needed."""
    recompute: list[str] | None = None
    """Activation recomputation (megatron-core's selective recompute) of these modules:
    ``mlp``, ``core_attn``, ``layernorm``; e.g. ``[mlp]`` trades ~15% more matrix work
    for most of the activation memory. None: keep all activations."""
    cuda_graphs: bool = True
    """GPU only: capture each transformer layer's forward and backward once as CUDA graphs
    and replay them (megatron-core's own graphs, ``trainer/megatron/cuda_graphs.py``), so the host
    no longer launches every kernel (~2x faster LoRA steps on one H100). Excludes
    ``recompute``: set this to false to use it."""
    sdpa_backend: str = "default"
    """Kernel of the SDPA core attention (``trainer/megatron/sdpa_backend.py``): ``default``
    (today's: key/value heads expanded, torch picks), ``auto`` (grouped heads, torch picks),
    ``cudnn``, ``flash``, ``efficient``, ``math`` (grouped heads, that kernel)."""
    flex_kernel_options: str = "tuned"
    """Kernel options of the document-masked flex attention (``data.document_masking`` and packed
    shards; ``trainer/megatron/flex_attention.py``): ``tuned`` (measured block sizes for the cards
    listed there, torch's own choice elsewhere) or ``torch`` (always torch's choice)."""
    compile_layers: bool = False
    """GPU: ``torch.compile`` each transformer layer's training forward (inside the CUDA graphs
    when those are on; ``trainer/megatron/compiled_layer.py``)."""
    mlp_recompute: bool = False
    """Keep only the MLP's input for backward and recompute ``fc1`` there
    (``trainer/megatron/mlp_recompute.py``): about half the activation memory for ~8% more
    matrix work; works with ``cuda_graphs``, unlike ``recompute``."""
    wgrad_fusion: bool = False
    """Full-parameter runs: each linear layer's weight gradient accumulated by its matmul straight
    into megatron's float32 ``main_grad`` (cuBLAS float32 output, ``trainer/megatron/wgrad_fusion.py``)
    instead of formed in bf16 and added by DDP's hook. No effect on frozen (LoRA) weights."""


@dataclass
class DataConfig:
    train: list[Any] = field(default_factory=list)
    """Training shard prefixes (``PREFIX`` of ``PREFIX.bin/.idx/.json``), either plain
    strings or ``{prefix: ..., weight: ...}`` for a weighted blend."""
    valid: list[Any] = field(default_factory=list)
    """Validation shard prefixes, same form as ``train``."""
    seq_length: int = 2048
    """Tokens per training sample."""
    num_workers: int = 2
    """DataLoader worker processes."""
    seed: int = 1234
    """Seed of the sample shuffling (GPTDataset index)."""
    verify: str = "structure"
    """Shard checks before NeMo is imported (``jpcorpus.verify``): ``structure`` (header, sizes,
    pointers, document indices, sidecar counts; milliseconds a shard whatever its size) or
    ``full`` (also the sha256 of every byte against the sidecar and every token id against the
    vocabulary: reads every shard once, about a second per GB)."""
    document_masking: bool | None = None
    """Confine attention to each document (block-diagonal causal, flex_attention; no s x s mask),
    restart position ids and leave the prediction across a boundary unscored. Unset: on for
    ``jpcorpus binarize --pack`` shards (one packed document per sample), off for ordinary
    shards; ``true`` on ordinary shards puts the boundaries at the end-of-document token."""


@dataclass
class PeftConfig:
    method: str = "lora"
    """``lora`` or ``none`` (full-parameter continual pretraining). YAML ``peft: none`` also works."""
    rank: int = 16
    """LoRA rank (NeMo's ``dim``)."""
    alpha: int = 32
    """LoRA scale numerator: the update is scaled by alpha / rank."""
    dropout: float = 0.1
    """Dropout on the LoRA branch input."""
    targets: list[str] = field(default_factory=lambda: ["linear_qkv", "linear_proj"])
    """Megatron module names: linear_qkv (fused q,k,v), linear_proj (o), linear_fc1, linear_fc2."""
    lean_adapters: bool = True
    """On one tensor-parallel rank, run NeMo's LoRA adapters through plain ``F.linear``
    (``trainer/megatron/fast_lora.py``): same parameters and checkpoints, less host time per step."""
    fused_adapters: bool = False
    """GPU: run each adapted linear (base matmul, dropout, A, B, scale, addition) as one function
    with two Triton kernels and the dropout mask regenerated in backward
    (``trainer/megatron/fused_lora.py``); same parameters and checkpoints. Needs ``lean_adapters``."""


@dataclass
class OptimConfig:
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr: float = 3e-5
    """Learning rate at the end of cosine annealing."""
    warmup_steps: int = 200
    """Linear warmup steps from 0 to ``lr``."""
    schedule: str = "cosine"
    """Annealing after warmup: ``cosine`` (to ``min_lr`` at ``schedule.max_steps``) or ``constant``."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay."""
    clip_grad: float = 1.0
    """Gradient-norm clipping threshold."""
    precision: str = "bf16-mixed"
    """Mixed precision through NeMo's MegatronMixedPrecision plugin: ``bf16-mixed`` or ``32``."""
    fused_adam: bool = False
    """torch's fused AdamW kernel for megatron's optimizer (``trainer/megatron/fused_adam.py``):
    one pass per step instead of the ``foreach`` passes; same update to rounding."""
    foreach_scale: bool = False
    """megatron's gradient clipping and its copy of the float32 main parameters into the bf16 model
    as torch ``foreach`` kernels instead of Python loops of one or two kernels per tensor
    (``trainer/megatron/multi_tensor_scale.py``); the same values to the bit."""
    sync_free_step: bool = False
    """No host-device synchronisation between the last backward and the optimizer: the gradient
    norm and the clipping stay on the GPU, NeMo's loss reduction compares nothing on the host,
    and megatron's per-bucket NaN check is replaced by a check of the gradient norm at the end of
    the step (``trainer/megatron/sync_free_step.py``); the same values. Needs ``clip_grad`` > 0."""


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None
    """Validations without improvement before stopping; unset disables early stopping."""
    min_delta: float = 0.0
    """Smallest decrease of val_loss that counts as an improvement."""


@dataclass
class ScheduleConfig:
    global_batch_size: int = 32
    """Samples per optimizer step (micro batches are accumulated to reach it)."""
    micro_batch_size: int = 4
    """Samples per forward/backward pass on one GPU."""
    max_steps: int = 1000
    """Optimizer steps of the whole run (resumed runs count from the checkpoint)."""
    val_every: int = 100
    """Validate (and checkpoint) every this many steps."""
    val_batches: int = 8
    """Global batches per validation."""
    preflight_batches: int = 2
    """Validation batches scored before training by the preflight check (0 disables it)."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """Stop when val_loss stops improving."""
    seed: int = 1234
    """Seed of weight init, LoRA init and dropout."""


@dataclass
class CheckpointConfig:
    save_top_k: int = 3
    """Keep this many best checkpoints by validation loss (plus the last)."""
    save_last: bool = True
    """Also keep the most recent checkpoint, for resuming."""
    resume: bool = True
    """Resume automatically from the last complete checkpoint in ``run_dir``."""


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    """Write TensorBoard event files under ``run_dir``."""
    metrics_file: str = "metrics.jsonl"
    """Plain JSON-lines metrics (step, loss, val_loss, lr, grad_norm, step_time,
    tokens_per_s, gpu_mem_gib) under ``run_dir``, read by ``trainer monitor``."""
    every_n_steps: int = 1
    """Log training metrics every this many steps."""
    profile_steps: list[int] | None = None
    """``[start, end]``: profile training steps start..end-1 with ``torch.profiler`` and
    write a table of the top operators and kernels (``profile_steps{start}-{end}.txt``)
    and the split of wall time into GPU-busy and idle under ``run_dir``."""
    sync_trace_steps: list[int] | None = None
    """``[start, end]``: record every host-device synchronisation of training steps
    start..end-1 (torch's sync debug mode), with where it came from and when in the step
    (``sync_trace_steps{start}-{end}.txt`` under ``run_dir``). Cheaper than the profiler,
    so the times are those of an ordinary step."""


@dataclass
class TrainConfig:
    run_dir: str = "runs/qwen25_05b_ja_lora"
    """Where checkpoints, logs and metrics go; a rerun with the same run_dir resumes."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture and starting weights."""
    data: DataConfig = field(default_factory=DataConfig)
    """Shards and sample length."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """LoRA, or full-parameter training with ``method: none``."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Batch sizes, steps, validation."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """What is kept on disk."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """TensorBoard and the metrics file."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """GPUs, nodes, tensor parallelism, the distributed optimizer (``trainer/run/parallel.py``)."""


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise ValueError naming the key for any value that would fail later."""
    m, d, p, o, s = cfg.model, cfg.data, cfg.peft, cfg.optim, cfg.schedule
    checks = [
        ("model.preset", m.preset in PRESETS, f"unknown preset {m.preset!r}; choose one of {sorted(PRESETS)}"),
        ("model.from_scratch", m.base or m.from_scratch,
         "no model.base given: set model.base to a checkpoint, or from_scratch: true for random weights"),
        ("model.from_scratch", not (m.base and m.from_scratch), "model.base and from_scratch: true exclude each other"),
        ("model.attention", m.attention in ("sdpa", "local"), f"{m.attention!r} is not sdpa or local"),
        ("model.loss_chunk_tokens", m.loss_chunk_tokens > 0, f"{m.loss_chunk_tokens} must be positive"),
        ("model.recompute", not m.recompute or set(m.recompute) <= {"mlp", "core_attn", "layernorm"},
         f"{m.recompute} must be a subset of mlp, core_attn, layernorm"),
        ("model.cuda_graphs", not (m.cuda_graphs and m.recompute),
         f"CUDA graphs exclude activation recompute (model.recompute={m.recompute}); "
         "set model.cuda_graphs=false to recompute, or model.recompute=null"),
        ("model.sdpa_backend", m.sdpa_backend in SDPA_BACKENDS,
         f"{m.sdpa_backend!r} is not one of {', '.join(SDPA_BACKENDS)}"),
        ("model.flex_kernel_options", m.flex_kernel_options in FLEX_KERNEL_OPTIONS,
         f"{m.flex_kernel_options!r} is not one of {', '.join(FLEX_KERNEL_OPTIONS)}"),
        ("model.mlp_recompute", not (m.mlp_recompute and m.recompute and "mlp" in m.recompute),
         "model.mlp_recompute and model.recompute=[mlp] both recompute the MLP; keep one"),
        ("peft.fused_adapters", not p.fused_adapters or p.lean_adapters,
         "fused adapters build on the lean ones: set peft.lean_adapters=true"),
        ("data.seq_length", d.seq_length > 0, f"{d.seq_length} must be positive"),
        ("data.verify", d.verify in ("structure", "full"), f"{d.verify!r} is not structure or full"),
        ("peft.method", p.method in ("lora", "none"), f"{p.method!r} is not lora or none"),
        ("peft.rank", p.rank > 0, f"{p.rank} must be positive"),
        ("peft.dropout", 0 <= p.dropout < 1, f"{p.dropout} is not in [0, 1)"),
        ("peft.targets", p.targets and set(p.targets) <= {"linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"},
         f"{p.targets} must be a non-empty subset of linear_qkv, linear_proj, linear_fc1, linear_fc2"),
        ("optim.lr", o.lr > 0, f"{o.lr} must be positive"),
        ("optim.min_lr", 0 <= o.min_lr <= o.lr, f"{o.min_lr} must lie in [0, optim.lr={o.lr}]"),
        ("optim.schedule", o.schedule in ("cosine", "constant"), f"{o.schedule!r} is not cosine or constant"),
        ("optim.sync_free_step", not o.sync_free_step or o.clip_grad > 0,
         "needs optim.clip_grad > 0: its NaN check reads the gradient norm that clipping computes"),
        ("optim.precision", o.precision in ("bf16-mixed", "32"), f"{o.precision!r} is not bf16-mixed or 32"),
        ("schedule.micro_batch_size", s.micro_batch_size > 0, f"{s.micro_batch_size} must be positive"),
        ("schedule.global_batch_size", s.global_batch_size % max(s.micro_batch_size, 1) == 0,
         f"{s.global_batch_size} is not a multiple of schedule.micro_batch_size {s.micro_batch_size}"),
        ("schedule.max_steps", s.max_steps > 0, f"{s.max_steps} must be positive"),
        ("optim.warmup_steps", 0 <= o.warmup_steps < s.max_steps,
         f"{o.warmup_steps} must be below schedule.max_steps={s.max_steps}"),
        ("schedule.val_every", s.val_every > 0, f"{s.val_every} must be positive"),
        ("schedule.val_batches", s.val_batches > 0, f"{s.val_batches} must be positive"),
        *(_step_range_check(f"logging.{key}", getattr(cfg.logging, key)) for key in ("profile_steps", "sync_trace_steps")),
        ("checkpoint.save_top_k", cfg.checkpoint.save_top_k >= 1, f"{cfg.checkpoint.save_top_k} must be >= 1"),
    ]
    checks += parallel_checks(cfg, PRESETS[m.preset]()) if m.preset in PRESETS else []
    for key, ok, message in checks:
        if not ok:
            raise ValueError(f"{key}: {message}")
    for part in ("train", "valid"):
        for i, entry in enumerate(getattr(d, part)):
            _check_shard_entry(f"data.{part}[{i}]", entry)
    return cfg


def _step_range_check(key: str, steps: list[int] | None) -> tuple[str, bool, str]:
    """A ``validate`` check: ``steps`` is unset or ``[start, end]`` with ``0 <= start < end``."""
    ok = steps is None or (len(steps) == 2 and 0 <= steps[0] < steps[1])
    return key, ok, f"{steps} must be [start, end] with 0 <= start < end"


def _check_shard_entry(key: str, entry: Any) -> None:
    if isinstance(entry, str):
        return
    if not isinstance(entry, dict) or set(entry) - {"prefix", "weight"} or "prefix" not in entry:
        raise ValueError(f"{key}: expected a prefix string or {{prefix: ..., weight: ...}}, got {entry!r}")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
        raise ValueError(f"{key}.weight: {weight!r} must be a positive number")


def shard_blend(entries: list[Any]) -> list[tuple[str, float]]:
    """``[(prefix, weight)]`` from the config's shard list (weight 1 when not given)."""
    return [(e, 1.0) if isinstance(e, str) else (e["prefix"], float(e.get("weight", 1.0))) for e in entries]


# ---- building from dictionaries -------------------------------------------------

def _build(cls: type, data: Any, key: str) -> Any:
    if data is None:
        data = {}
    if cls is PeftConfig and data in ("none", "lora"):
        data = {"method": data}
    if not isinstance(data, dict):
        raise ValueError(f"{key or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{key}." if key else ""
        raise ValueError(f"{where}{unknown[0]}: unknown key; known keys: {sorted(names)}")
    kwargs = {name: _coerce(hints[name], value, f"{key}.{name}" if key else name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set ``a.b.c=value`` (value parsed as YAML) in a nested dict, in place."""
    import yaml

    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ValueError(f"{item}: overrides are key=value with a dotted key, e.g. schedule.max_steps=100")
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            current = node.get(part)
            if current is None:
                node[part] = {}
            elif current in ("none", "lora"):  # `peft: none` shorthand
                node[part] = {"method": current}
            elif not isinstance(current, dict):
                raise ValueError(f"{path}: {part} is not a section")
            node = node[part]
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return data


def from_dict(data: dict, overrides: list[str] = ()) -> TrainConfig:
    import copy

    data = apply_overrides(copy.deepcopy(data or {}), list(overrides))
    return validate(_build(TrainConfig, data, ""))


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return from_dict(data, overrides)


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
