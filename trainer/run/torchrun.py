"""One process per GPU: ``trainer run`` hands a multi-GPU run to torchrun.

Why torchrun and not Lightning's own launcher: Lightning's subprocess launcher starts
the other ranks by re-running the whole command line once ``fit`` begins, so every
rank would repeat what must happen once (the tokenizer and shard checks, the plan,
the quarantine of damaged checkpoints, the Hugging Face import of the base checkpoint,
which would race on one directory). With torchrun the split is explicit:

1. ``trainer run`` (one process) checks the config and shards, prints the plan, moves
   damaged checkpoints aside and imports the base checkpoint, then writes the resolved
   config to ``RUN_DIR/launch/config.yaml`` and replaces itself with
   ``python -m torch.distributed.run --standalone --nproc-per-node=N -m trainer.cli run
   RUN_DIR/launch/config.yaml``.
2. Each worker sees torchrun's variables (:func:`is_worker`), does none of the one-time
   work (it refuses to start if the base checkpoint is missing), and trains. Only rank 0
   prints and writes ``metrics.jsonl``.

The same worker path serves several nodes: torchrun on every node with one rendezvous
(``--nnodes``, ``--rdzv-backend=c10d``, ``--rdzv-endpoint=HOST:PORT``), which is what
``pipelines/slurm_train.sbatch`` runs; the one-time work is ``trainer run CONFIG
--prepare-only`` once before. torchrun also stops every worker when one fails, so a
dead rank never leaves the others hanging in a collective.

NCCL: every ``NCCL_*`` variable of the environment reaches the workers unchanged. NVLink
multicast (NVLS / NVLink SHARP) is never turned on: unless the environment already
says otherwise, the workers get ``NCCL_NVLS_ENABLE=0`` and its PyTorch and NVSHMEM
counterparts (:data:`MULTICAST_OFF`). Multicast needs NVSwitch fabric support that shared
or virtualised machines may lack or misconfigure, and the gradient all-reduce of this
model (a few MB for LoRA, ~1 GB full-parameter per step) does not need it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# torchrun's (and Lightning's TorchElasticEnvironment's) per-worker variables.
WORKER_VARS = ("RANK", "LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE")
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def is_worker(env=None) -> bool:
    """True inside a process that torchrun started.

    >>> is_worker({"RANK": "1", "LOCAL_RANK": "1", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"})
    True
    >>> is_worker({"SLURM_PROCID": "0"})
    False
    """
    env = os.environ if env is None else env
    return all(v in env for v in WORKER_VARS)


def rank(env=None) -> int:
    """The global rank (0 outside torchrun)."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")) if is_worker(env) else 0


def rank0_echo(echo):
    """``echo`` on global rank 0, a no-op on the other ranks."""
    return echo if rank() == 0 else (lambda *args, **kwargs: None)


def worker_env(env=None) -> dict:
    """The environment for the workers: the caller's, with multicast off unless it says otherwise.

    >>> e = worker_env({"NCCL_DEBUG": "INFO", "NCCL_NVLS_ENABLE": "0"})
    >>> e["NCCL_DEBUG"], e["NCCL_NVLS_ENABLE"], e["TORCH_SYMM_MEM_DISABLE_MULTICAST"]
    ('INFO', '0', '1')
    """
    out = dict(os.environ if env is None else env)
    for key, value in MULTICAST_OFF.items():
        out.setdefault(key, value)
    return out


def check_world(cfg, env=None) -> None:
    """The workers torchrun started must be the config's GPUs (ValueError naming the key)."""
    from trainer.run.parallel import world_size

    env = os.environ if env is None else env
    got, want = int(env["WORLD_SIZE"]), world_size(cfg.parallel)
    if got != want:
        raise ValueError(f"parallel.devices: torchrun started {got} processes, but parallel.devices x "
                         f"parallel.num_nodes = {cfg.parallel.devices} x {cfg.parallel.num_nodes} = {want}")
    local = int(env["LOCAL_WORLD_SIZE"])
    if local != cfg.parallel.devices:
        raise ValueError(f"parallel.devices: {cfg.parallel.devices}, but torchrun started {local} processes "
                         "on this node (--nproc-per-node)")


def resolved_config(cfg) -> Path:
    """Write the validated config (overrides applied) where the workers read it."""
    import yaml

    from trainer.run.config import to_dict

    path = Path(cfg.run_dir) / "launch" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("# written by trainer run: the config its torchrun workers read\n"
                   + yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path


def single_node_command(config_path: str | Path, devices: int, python: str = sys.executable) -> list[str]:
    """torchrun for one node: a private rendezvous on a free local port.

    >>> single_node_command("runs/x/launch/config.yaml", 4, python="python")[3:6]
    ['--standalone', '--nnodes=1', '--nproc-per-node=4']
    """
    return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={devices}",
            "--max-restarts=0", "-m", "trainer.cli", "run", str(config_path)]


def node_command(config: str, overrides: list[str], devices: int | str, num_nodes: int | str, endpoint: str,
                 run_id: str, python: str = "python") -> list[str]:
    """torchrun for one of several nodes (the same command on every node: c10d rendezvous at ``endpoint``;
    the counts may be shell variables, as in the Slurm script).

    >>> " ".join(node_command("c.yaml", ["run_dir=r"], 8, 2, "node1:29500", "job7")[3:8])
    '--nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=node1:29500 --rdzv-id=job7'
    """
    return [python, "-m", "torch.distributed.run", f"--nnodes={num_nodes}", f"--nproc-per-node={devices}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}", "--max-restarts=0",
            "-m", "trainer.cli", "run", config, *overrides]


def exec_workers(cfg, echo=print, execve=os.execvpe) -> None:
    """Replace this process with torchrun running ``cfg.parallel.devices`` workers on this node."""
    path = resolved_config(cfg)
    argv = single_node_command(path, cfg.parallel.devices)
    echo(f"starting {cfg.parallel.devices} workers: {' '.join(argv[1:])}")
    sys.stdout.flush()
    sys.stderr.flush()
    execve(argv[0], argv, worker_env())


def train_worker(cfg, echo=print) -> None:
    """One process of a multi-GPU run (torchrun started it): none of the one-time work, then train.

    The base checkpoint must exist (``trainer run`` made it before starting torchrun, or
    ``trainer run --prepare-only`` under Slurm); damaged checkpoints are skipped, never moved
    (the one-process step moves them).
    """
    from nemo.collections import llm

    from trainer.run.checkpoints import find_resumable, nemo_would_resume
    from trainer.run.parallel import settle_optimizer
    from trainer.run.recipe import base_checkpoint, build, checkpoint_dir, model_tokenizer

    check_world(cfg)
    import torch

    if torch.cuda.is_available():  # before anything touches CUDA: no stray context on GPU 0 from every rank
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    base = base_checkpoint(cfg)
    if not ((base / "context").is_dir() and (base / "weights").is_dir()):
        raise ValueError(f"model.base: no base checkpoint at {base} yet; run `trainer run CONFIG --prepare-only` "
                         "once (one process) before starting the torchrun workers")
    cfg = settle_optimizer(cfg, checkpoint_dir(cfg), echo)
    the_run = build(cfg, model_tokenizer(cfg.model.tokenizer), accelerator="gpu")
    if cfg.checkpoint.resume:
        chosen, skipped = find_resumable(checkpoint_dir(cfg))
        for path, reason in skipped:
            echo(f"checkpoint {path.name}: skipped, never loaded: {reason} "
                 "(`trainer run CONFIG --prepare-only` moves it to the quarantine)")
        if chosen is not None:
            echo(f"resuming from {chosen}")
            if nemo_would_resume(checkpoint_dir(cfg)) != chosen:
                the_run.resume.resume_from_path = str(chosen)
    echo(f"worker 0 of {cfg.parallel.devices * cfg.parallel.num_nodes}: base checkpoint {base}")
    llm.finetune(model=the_run.model, data=the_run.data, trainer=the_run.trainer, peft=the_run.peft,
                 log=the_run.log, resume=the_run.resume, optim=the_run.optim)
