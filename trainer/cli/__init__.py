"""The ``trainer`` command. Thin: parse, call one library function, print.

``run`` lives here; ``export.py`` and ``evaluate.py`` hold the other commands. NeMo,
megatron-core and torch are imported inside the commands, so ``trainer --help`` is instant.

May import: ``trainer.run``, ``trainer.convert``, ``trainer.evaluate``. Nothing imports from here.
"""

from __future__ import annotations

import click

from jpcorpus.errors import EXIT_STATUS_HELP, ConventionGroup


@click.group(cls=ConventionGroup, epilog=EXIT_STATUS_HELP)
def main() -> None:
    """Continual pretraining (NeMo 2) and evaluation of Qwen2.5 on Japanese.

    \b
    Example:
      trainer run configs/qwen25_05b_ja_lora.yaml --dry-run
      trainer run configs/qwen25_05b_ja_lora.yaml schedule.max_steps=200 peft=none
    """


@main.command("run", epilog=EXIT_STATUS_HELP)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Check the config, model.base and the shards (before NeMo is "
              "imported), build the NeMo objects and the data module on CPU, print the plan; train nothing.")
@click.option("--prepare-only", is_flag=True, help="Do the one-time work (plan, checkpoint quarantine, base "
              "checkpoint import) and stop: before starting torchrun on several nodes.")
def run_command(config: str, overrides: tuple[str, ...], dry_run: bool, prepare_only: bool) -> None:
    """Train as CONFIG says, with OVERRIDES as dotted key=value.

    Before NeMo is imported, model.base must be a Hugging Face or NeMo
    checkpoint directory and every shard must pass jpcorpus's structural
    checks (data.verify=full adds the sha256 of every byte); a refusal exits 1
    and names the file, the problem and the fix.

    \b
    Example:
      trainer run configs/qwen25_05b_ja_lora.yaml --dry-run
      trainer run configs/qwen25_05b_ja_lora.yaml run_dir=runs/try2 schedule.max_steps=120
      trainer run configs/qwen25_05b_ja_lora.yaml parallel.devices=8     # one node, 8 GPUs (torchrun)
    """
    from trainer.run.config import load_config

    try:
        cfg = load_config(config, list(overrides))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    from trainer.run.launch import run

    # Refusals (shards, tokenizer, base checkpoint, import parity, preflight loss) are
    # jpcorpus.errors.DataProblem: the group prints them and exits 1.
    run(cfg, dry_run=dry_run, prepare_only=prepare_only, echo=click.echo)


# Commands that live in their own modules (each keeps its heavy imports inside the function).
from trainer.cli.evaluate import check_env, eval_command, generate, monitor  # noqa: E402
from trainer.cli.export import export  # noqa: E402
from trainer.cli.slurm import slurm  # noqa: E402

for _command in (eval_command, generate, monitor, check_env, export, slurm):
    main.add_command(_command)
