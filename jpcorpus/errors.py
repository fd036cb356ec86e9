"""The exit status and error message convention of every command (``jpcorpus`` and ``trainer``).

======  ==================================================================
status  meaning
======  ==================================================================
0       done
1       a problem found in the data: a verify failure, a refusal (the
        trainer's checks), a run whose every record was skipped or dropped
2       a usage or input error: a bad option, a missing file, a bad input
        record (without ``--skip-bad``), a config key with a wrong value
130     interrupted (Ctrl-C); nothing was left under an output's final name
======  ==================================================================

An error is one line on stderr, ``error: FILE:LINE: what is wrong; what to
do``, never a traceback. Library code raises; only :class:`ConventionGroup`
(the click group of both command lines) prints and exits, so the mapping
from exception to status lives here and nowhere else.
"""

from __future__ import annotations

import sys

import click

EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_STATUS_HELP = (
    "Exit status: 0 done; 1 a problem found in the data (verify failure, refusal, nothing left to write); "
    "2 a usage or input error; 130 interrupted. Errors are one line on stderr: 'error: FILE:LINE: what is "
    "wrong; what to do'."
)

# Reasons (jpcorpus.readers) that --skip-bad turns into counted skips: the error says so.
SKIPPABLE_HINT = "to skip such records instead, pass --skip-bad (they are counted and logged)"


class DataProblem(Exception):
    """Something wrong in the data itself (exit 1): the message says what and what to do."""


class EmptyResult(DataProblem):
    """A run that would write an output without a single document.

    ``report`` (when given) is the run's counts, so the command can still
    print and save them: they say where the documents went.
    """

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


def empty_message(output: str, stats, dropped: dict[str, int], listed_in: str | None,
                  check: str = "the input and the filters") -> str:
    """Why a run has nothing to write, from its read counts (``ReadStats``) and drop reasons.

    >>> from jpcorpus.readers import ReadStats
    >>> empty_message("o.jsonl", ReadStats(documents=3), {"too_short": 3}, None)
    'o.jsonl: nothing written: all 3 documents were dropped (too_short 3); check the input and the filters, or pass --allow-empty to write an empty output (see docs/troubleshooting.md#empty-result)'
    """
    skipped = dict(stats.skipped)
    if stats.documents == 0 and not skipped:
        what = "the input holds no documents (empty files or blank lines only)"
    elif stats.documents == 0:
        what = f"every record was skipped as bad input ({_counts(skipped)})"
    else:
        what = (f"all {stats.documents:,} documents were dropped" if stats.documents > 1
                else "its one document was dropped") + f" ({_counts(dropped)})"
        if skipped:
            what += f" and {sum(skipped.values()):,} records skipped as bad input ({_counts(skipped)})"
    listed = f"; {listed_in} lists them" if listed_in and (skipped or dropped) else ""
    return (f"{output}: nothing written: {what}{listed}; check {check}, or pass "
            "--allow-empty to write an empty output (see docs/troubleshooting.md#empty-result)")


def _counts(reasons: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def _status_of(exc: BaseException) -> int | None:
    from jpcorpus.readers import InputError

    if isinstance(exc, DataProblem):
        return EXIT_DATA
    if isinstance(exc, (InputError, ValueError, LookupError, OSError)):
        return EXIT_USAGE
    return None


class _Convention:
    """The convention above for a click command or group (mixed into both).

    Library exceptions become one ``error:`` line per line of their message
    and their status; click's own usage errors are printed the same way
    (lower-case ``error:``, status 2). Anything else is a bug and keeps its
    traceback. A group's commands use :class:`ConventionCommand` too, so a
    command invoked on its own (tests, other groups) behaves the same.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            click.echo("interrupted: no output was left under its final name", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - mapped below, re-raised when not ours
            status = _status_of(exc)
            if status is None:
                raise
            for line in _message(exc, ctx).splitlines() or [type(exc).__name__]:
                click.echo(f"error: {line}", err=True)
            sys.exit(status)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from jpcorpus.partial import cleanup_on_signals

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with cleanup_on_signals():  # SIGTERM/SIGHUP: temporary files go first
                status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            _show_click_error(exc)
            sys.exit(EXIT_USAGE)
        except click.Abort:
            click.echo("interrupted: no output was left under its final name", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(status if isinstance(status, int) else EXIT_OK)


class ConventionGroup(_Convention, click.Group):
    """The group of ``jpcorpus`` and of ``trainer``; its commands default to :class:`ConventionCommand`."""

    command_class = None  # set below, once ConventionCommand exists


class ConventionCommand(_Convention, click.Command):
    """A command that follows the convention even when invoked outside its group."""


ConventionGroup.command_class = ConventionCommand


def _message(exc: BaseException, ctx: click.Context) -> str:
    from jpcorpus.readers import InputError

    text = str(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    elif isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, InputError) and exc.reason not in ("no_input",) and _has_skip_bad(ctx):
        text = f"{text}; {SKIPPABLE_HINT}"
    return text


def _has_skip_bad(ctx: click.Context) -> bool:
    command = ctx.command
    if isinstance(command, click.Group):
        name = ctx.invoked_subcommand
        command = command.get_command(ctx, name) if name else None
    return command is not None and any(p.name == "skip_bad" for p in command.params)


def _show_click_error(exc: click.ClickException) -> None:
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        click.echo(exc.ctx.get_usage(), err=True)
        click.echo(f"Try '{exc.ctx.command_path} --help' for help.", err=True)
    click.echo(f"error: {exc.format_message()}", err=True)
