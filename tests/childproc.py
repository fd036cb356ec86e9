"""For tests that start child processes: give the child a default SIGINT.

A signal ignored at exec stays ignored in the new program, and Python then
installs no KeyboardInterrupt handler. Started with SIGINT ignored (``nohup
pytest &``, some CI runners), the suite would hand that to every child, and
tests that interrupt a child would fail for a reason unrelated to the code.
Pass ``preexec_fn=default_sigint`` to ``subprocess.run``/``Popen``.
"""

import signal


def default_sigint() -> None:
    """In the child, between fork and exec: SIGINT back to its default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
