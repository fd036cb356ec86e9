"""``trainer export``: thin click layer over :func:`trainer.convert.export.export`.

Registered into the ``trainer`` group by ``trainer/cli/__init__.py``; NeMo and torch are
imported inside the command so ``--help`` stays instant.
"""

from __future__ import annotations

import click

from jpcorpus.errors import EXIT_STATUS_HELP, ConventionCommand


@click.command("export", cls=ConventionCommand, epilog=EXIT_STATUS_HELP)
@click.argument("checkpoint", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="New directory for the Hugging Face checkpoint (must not exist; written atomically).")
@click.option("--base", type=click.Path(file_okay=False), default=None,
              help="Base NeMo checkpoint of a LoRA checkpoint, when its weights/adapter_metadata.json "
                   "points somewhere that no longer exists.")
@click.option("--adapter-only", is_flag=True, help="Write only the LoRA adapter (PEFT format), no merged model.")
@click.option("--dtype", type=click.Choice(["bf16", "fp32"]), default="bf16", show_default=True,
              help="dtype of the written weights.")
@click.option("--no-parity-check", is_flag=True,
              help="Skip scoring the exported model against the NeMo model on a fixed batch.")
def export(checkpoint: str, output: str, base: str | None, adapter_only: bool, dtype: str,
           no_parity_check: bool) -> None:
    """Merge a NeMo checkpoint's LoRA into its base and write a Hugging Face directory.

    CHECKPOINT is a NeMo 2 checkpoint directory (context/ and weights/): one that
    `trainer run` saved under RUN_DIR/run/v0/checkpoints/, or an imported base.
    OUTPUT gets config.json, model.safetensors, generation_config.json, the
    tokenizer files, adapter/ (PEFT adapter_config.json + adapter_model.safetensors)
    and export.json. The exported model's loss on a fixed batch must equal the
    NeMo model's within 1e-3, else nothing is written (exit 1).

    \b
    Example:
      trainer export runs/qwen25_05b_ja_lora/run/v0/checkpoints/'val_loss=2.3456-step=999-consumed_samples=32000.0-last' \\
          -o exports/qwen25_05b_ja
      trainer export CKPT -o exports/adapter --adapter-only
    """
    from trainer.convert.export import export as run_export

    # A parity failure is a DataProblem (exit 1), a bad checkpoint or output a ValueError (exit 2):
    # the trainer group prints either as one error line.
    result = run_export(checkpoint, output, base=base, adapter_only=adapter_only, dtype=dtype,
                        parity_check=not no_parity_check)
    click.echo(f"wrote {result.output} ({result.dtype})")
    if result.lora:
        click.echo(f"LoRA rank {result.lora['rank']} alpha {result.lora['alpha']} on "
                   f"{', '.join(result.lora['targets'])} {'written alone' if adapter_only else 'merged'}")
    if result.parity:
        p = result.parity
        click.echo(f"parity: NeMo loss {p['nemo_loss']:.6f}, exported loss {p['hf_loss']:.6f} "
                   f"(|diff| {abs(p['nemo_loss'] - p['hf_loss']):.2e} <= {p['tolerance']:g})")
    for note in result.notes:
        click.echo(f"note: {note}")
