"""A Slurm batch script for a multi-node run, rendered from the config.

The script asks Slurm for ``parallel.num_nodes`` nodes with ``parallel.devices`` GPUs each
and one task per node, then runs two job steps:

1. ``trainer run CONFIG ... --prepare-only`` on the first node, one process: the plan, the
   quarantine of damaged checkpoints and the base-checkpoint import, once.
2. ``srun`` one torchrun per node; the torchruns meet at a c10d rendezvous on the first
   node (``MASTER_ADDR:MASTER_PORT``) and start one worker per GPU
   (``trainer/run/torchrun.py``). Node ranks come from the rendezvous, so no NODE_RANK.

The node and GPU counts the job really got (``SLURM_NNODES``, ``SLURM_GPUS_ON_NODE``) are
passed as ``parallel.num_nodes`` / ``parallel.devices`` overrides, so ``sbatch --nodes=4
job.sbatch`` works without re-rendering; extra arguments to ``sbatch job.sbatch`` are more
overrides. ``MASTER_ADDR``/``MASTER_PORT`` and every ``NCCL_*`` variable set before
``sbatch`` are kept (srun exports the environment); NVLink multicast stays off
(``NCCL_NVLS_ENABLE=0`` unless set). The shared file system must hold the repository,
the shards and ``run_dir`` at the same paths on every node.
"""

from __future__ import annotations

import shlex

from trainer.run.torchrun import MULTICAST_OFF, node_command

_TEMPLATE = """#!/bin/bash
# sbatch {script} [key=value ...]
#
# {what}
# Rendered by: trainer slurm {render_args}
# Extra arguments are config overrides; node and GPU counts follow the allocation (sbatch --nodes=N).
#SBATCH --job-name={job_name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --exclusive
#SBATCH --time={time}
#SBATCH --output=slurm-%x-%j.out
{extra_sbatch}set -euo pipefail

cd "{workdir}"
PYTHON=${{PYTHON:-{python}}}
NNODES=${{SLURM_NNODES:-{nodes}}}
GPUS_PER_NODE=${{SLURM_GPUS_ON_NODE:-{gpus}}}
MASTER_ADDR=${{MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)}}  # reads all: no SIGPIPE
MASTER_PORT=${{MASTER_PORT:-29500}}
export MASTER_ADDR MASTER_PORT
{multicast}
CONFIG={config}
OVERRIDES=({overrides} "parallel.num_nodes=$NNODES" "parallel.devices=$GPUS_PER_NODE" "$@")

# 1. once, one process on the first node: plan, checkpoint quarantine, base-checkpoint import
srun --nodes=1 --ntasks=1 "$PYTHON" -m trainer.cli run "$CONFIG" "${{OVERRIDES[@]}}" --prepare-only

# 2. one torchrun per node, one worker per GPU, all meeting at $MASTER_ADDR:$MASTER_PORT
srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \\
    {torchrun}
"""


def render(cfg, config: str, overrides: list[str], *, script: str = "job.sbatch", time: str = "24:00:00",
           partition: str | None = None, account: str | None = None, python: str = ".venv/bin/python",
           workdir: str = "$SLURM_SUBMIT_DIR") -> str:
    """The batch script for ``cfg`` (loaded from ``config`` with ``overrides``) as text."""
    p = cfg.parallel
    user = [o for o in overrides if not o.startswith(("parallel.num_nodes=", "parallel.devices="))]
    torchrun = node_command('"$CONFIG"', ['"${OVERRIDES[@]}"'], '"$GPUS_PER_NODE"', '"$NNODES"',
                            '"$MASTER_ADDR:$MASTER_PORT"', '"$SLURM_JOB_ID"', python='"$PYTHON"')
    extra = "".join(f"#SBATCH --{k}={v}\n" for k, v in (("partition", partition), ("account", account)) if v)
    multicast = "\n".join(f"export {k}=${{{k}:-{v}}}  # NVLink multicast stays off" if k == "NCCL_NVLS_ENABLE"
                          else f"export {k}=${{{k}:-{v}}}" for k, v in MULTICAST_OFF.items())
    render_args = " ".join(shlex.quote(a) for a in [config, *overrides, "-o", script])
    return _TEMPLATE.format(
        script=script, what=f"{p.num_nodes} nodes x {p.devices} GPUs of `trainer run {config}`, run_dir {cfg.run_dir}",
        render_args=render_args, job_name=_job_name(cfg.run_dir), nodes=p.num_nodes, gpus=p.devices, time=time,
        extra_sbatch=extra, workdir=workdir, python=python, multicast=multicast,
        config=shlex.quote(config), overrides=" ".join(shlex.quote(o) for o in user), torchrun=" ".join(torchrun))


def _job_name(run_dir: str) -> str:
    """``trainer-<last part of run_dir>``, letters, digits, ``-_.`` only.

    >>> _job_name("runs/qwen25 ja/")
    'trainer-qwen25_ja'
    """
    tail = run_dir.rstrip("/").rsplit("/", 1)[-1] or "run"
    return "trainer-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in tail)
