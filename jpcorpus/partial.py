"""Temporary files: one naming scheme for every command, and their whole life cycle.

Every file a command writes reaches its final name by a rename at the very
end; until then it is ``FINAL.partial-PID`` in the same folder (``PID``: the
writing process). That one scheme serves ``binarize`` (``.bin``, ``.idx``, the
lengths scratch file, the sidecar) and ``normalize`` (its output and rejects).
The life cycle:

- **made** by :func:`partial_path`, which also registers the file as live;
- **removed** on every exit Python sees: the writers remove theirs on any
  exception (Ctrl-C included), and :func:`cleanup_on_signals` removes every
  live one on SIGTERM or SIGHUP before the process dies of that signal;
- **cleaned** by the next run of the same output (:func:`clean_stale`), which
  removes the leftovers of runs that can no longer clean up (``kill -9``, a
  power cut): those whose process is gone;
- **never read**: :func:`is_partial` is how readers recognise and skip them.

Names of earlier versions (``NAME.partial`` and the hidden
``.NAME.partial-PID``) are recognised and cleaned the same way.

>>> is_partial("out/clean.jsonl.zst.partial-4242"), is_partial("out/clean.jsonl.zst")
(True, False)
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

_PARTIAL = re.compile(r"\.partial(?:-(\d+))?$")
_LIVE: set[Path] = set()


def partial_path(final: str | os.PathLike) -> Path:
    """The temporary name of ``final`` for this process, registered as live until :func:`release`."""
    final = Path(final)
    path = final.with_name(f"{final.name}.partial-{os.getpid()}")
    _LIVE.add(path)
    return path


def release(path: Path) -> None:
    """``path`` was renamed into place or removed: no longer ours to clean."""
    _LIVE.discard(Path(path))


def remove(path: Path) -> None:
    """Remove a temporary file (if it is there) and release it."""
    Path(path).unlink(missing_ok=True)
    release(path)


def is_partial(path: str | os.PathLike) -> bool:
    """True for a temporary file of any jpcorpus command (this scheme or an earlier one)."""
    return _PARTIAL.search(Path(path).name) is not None


def _owner_gone(path: Path) -> bool:
    match = _PARTIAL.search(path.name)
    if match is None or match.group(1) is None:
        return True  # an earlier scheme without a process id: nobody owns it any more
    pid = int(match.group(1))
    if pid == os.getpid():
        return path not in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def clean_stale(final: str | os.PathLike, *, family: bool = False) -> list[Path]:
    """Remove the leftovers of earlier runs that wrote ``final`` (and, with ``family``, ``final.*``/``final_*``).

    Only files whose process is gone are removed; one whose writer still
    runs is left alone with a warning (two runs writing the same output).
    Returns the files removed.
    """
    final = Path(final)
    folder = final.parent if str(final.parent) else Path(".")
    if not folder.is_dir():
        return []
    names = (final.name, f".{final.name}")
    removed = []
    for path in folder.iterdir():
        name = path.name
        mine = name.startswith(tuple(f"{n}." for n in names)) or (
            family and name.startswith(tuple(f"{n}_" for n in names)))
        if not (mine and is_partial(path) and path.is_file()):
            continue
        if _owner_gone(path):
            path.unlink(missing_ok=True)
            removed.append(path)
        else:
            log.warning("%s: another process is still writing it (two runs writing the same output?)", path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


@contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP first remove this process's live temporary files.

    The signal then does what it would have done (normally: end the process),
    so the exit status still says which signal it was. Forked children
    inherit the handler but never act on it: only the installing process
    owns the files. Off the main thread, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    previous = {}

    def handle(signum, frame):
        if os.getpid() == owner:
            for path in list(_LIVE):
                remove(path)
        old = previous.get(signum, signal.SIG_DFL)
        if callable(old):
            old(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL if old is None else old)
        if old != signal.SIG_IGN:
            os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN:  # e.g. SIGHUP under nohup: the user asked to survive it
            continue
        previous[signum] = current
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)
