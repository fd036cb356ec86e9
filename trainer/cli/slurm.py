"""``trainer slurm``: thin click layer over :func:`trainer.run.slurm.render`.

Registered into the ``trainer`` group by ``trainer/cli/__init__.py``; imports nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from jpcorpus.errors import EXIT_STATUS_HELP, ConventionCommand


@click.command("slurm", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the script here (made executable); default: print it.")
@click.option("--time", "time_limit", default="24:00:00", show_default=True, help="Slurm time limit.")
@click.option("--partition", default=None, help="Slurm partition (#SBATCH --partition).")
@click.option("--account", default=None, help="Slurm account (#SBATCH --account).")
@click.option("--python", default=".venv/bin/python", show_default=True,
              help="The Python with the train extra on the nodes (the PYTHON variable overrides it at run time).")
def slurm(config: str, overrides: tuple[str, ...], output: str | None, time_limit: str, partition: str | None,
          account: str | None, python: str) -> None:
    """Write a Slurm batch script for a multi-node run of CONFIG with OVERRIDES.

    The script prepares the run once (plan, checkpoint quarantine, base import), then
    starts one torchrun per node, one worker per GPU, meeting at a rendezvous on the
    first node. Node and GPU counts come from parallel.num_nodes / parallel.devices
    and follow the allocation when sbatch asks for others.

    \b
    Example:
      trainer slurm configs/qwen25_05b_ja_lora.yaml parallel.num_nodes=2 parallel.devices=8 -o job.sbatch
      sbatch job.sbatch schedule.max_steps=20000
    """
    from trainer.run.config import load_config
    from trainer.run.slurm import render

    try:
        cfg = load_config(config, list(overrides))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    text = render(cfg, config, list(overrides), script=output or "job.sbatch", time=time_limit,
                  partition=partition, account=account, python=python)
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    os.chmod(output, 0o755)
    click.echo(f"wrote {output}: sbatch {output}")
