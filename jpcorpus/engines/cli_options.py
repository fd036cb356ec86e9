"""The command-line options every staged command shares (``--engine``, ``--ray-address``, ...)."""

from __future__ import annotations

import click

ENGINE_HELP = ("Where the work runs: 'local' (this machine, --workers processes) or 'ray' (Ray tasks; "
               "pip install 'jpcorpus[ray]'). The output is the same bytes for either.")
ADDRESS_HELP = ("With --engine ray: the cluster to join, 'auto' (the one this machine belongs to) or HOST:PORT "
                "[default: start Ray here with --workers CPUs; --workers 0: every CPU of the cluster].")


def _size(ctx, param, value):
    from jpcorpus.cli import _parse_size

    return _parse_size(value)


def engine_options(command):
    """Add the engine options to a click command; they arrive as keyword arguments (see :func:`engine_kwargs`)."""
    for option in reversed([
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help=ENGINE_HELP),
        click.option("--ray-address", default=None, help=ADDRESS_HELP),
        click.option("--work-dir", default=None,
                     help="Partitions and markers of this run (shared by every node with Ray) "
                          "[default: .NAME.work beside the output]; a rerun reuses finished partitions."),
        click.option("--partition-size", default=None, callback=_size,
                     help="Input per task, e.g. 8MB [default: 1/256 of the input, 1-64 MiB]; "
                          "never changes the output."),
        click.option("--keep-work", is_flag=True, help="Keep the work directory after a successful run."),
    ]):
        command = option(command)
    return command


def engine_kwargs(options: dict) -> dict:
    """The library's names for the engine options."""
    return {"engine": options["engine"], "ray_address": options["ray_address"], "work_dir": options["work_dir"],
            "partition_bytes": options["partition_size"], "keep_work": options["keep_work"]}
