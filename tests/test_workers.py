"""jpcorpus.workers.ordered_map: order, clean shutdown, and Ctrl-C that cannot hang.

Each scenario runs in a child process with a deadline, so a regression shows
as a failed test instead of a hung suite.
"""

import subprocess
import sys
import textwrap

import pytest
from childproc import default_sigint

PRELUDE = """
import multiprocessing, os, signal, sys
from jpcorpus.workers import ignore_sigint, ordered_map

def slow_len(item):
    import time
    time.sleep(0.05)
    return len(item)

def new_pool():
    return multiprocessing.get_context("fork").Pool(2, ignore_sigint)

def assert_joined(pool):
    assert all(p.exitcode is not None for p in pool._pool), [p.exitcode for p in pool._pool]
"""


def _run(body: str, timeout: float = 60) -> str:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=default_sigint)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_results_come_back_in_input_order_and_the_pool_is_joined():
    out = _run("""
        pool = new_pool()
        items = ["x" * n for n in (5, 1, 4, 1, 5, 9, 2, 6, 5, 3)]
        print(list(ordered_map(pool, slow_len, items, ahead=3)))
        assert_joined(pool)
    """)
    assert out.strip() == "[5, 1, 4, 1, 5, 9, 2, 6, 5, 3]"


def test_sigint_is_raised_between_items_while_big_batches_are_in_flight():
    # 16 MB items keep the pool's task thread busy writing into its pipe when
    # the interruption comes: the moment at which Pool.terminate() can hang.
    out = _run("""
        pool = new_pool()
        items = ("x" * (16 << 20) for _ in range(8))
        results = ordered_map(pool, slow_len, items, ahead=4)
        got = [next(results)]
        signal.raise_signal(signal.SIGINT)  # as if typed now: held until the next item
        try:
            got.append(next(results))
        except KeyboardInterrupt:
            print("interrupted after", len(got))
        assert_joined(pool)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    """)
    assert out.strip() == "interrupted after 1"


def test_an_error_in_the_consumer_closes_the_pool():
    out = _run("""
        pool = new_pool()
        results = ordered_map(pool, slow_len, ["ab"] * 20, ahead=4)
        next(results)
        results.close()  # what a for loop does when its body raises
        assert_joined(pool)
        print("closed")
    """)
    assert out.strip() == "closed"


def test_an_error_in_a_worker_reaches_the_caller():
    out = _run("""
        pool = new_pool()
        try:
            list(ordered_map(pool, slow_len, ["ab", 3, "cd"], ahead=2))
        except TypeError as exc:
            print("TypeError:", exc)
        assert_joined(pool)
    """)
    assert out.startswith("TypeError: object of type 'int' has no len()")


@pytest.mark.parametrize("initializer", [False, True])
def test_workers_ignore_sigint(initializer):
    # a terminal's Ctrl-C reaches the whole process group; workers must not die mid-batch
    out = _run(f"""
        init = (os.write, 1, b"init ok\\n") if {initializer} else ()
        pool = multiprocessing.get_context("spawn").Pool(1, ignore_sigint, init)
        pid = pool.apply(os.getpid)
        os.kill(pid, signal.SIGINT)
        print(pool.apply(os.getpid) == pid)
        pool.close(); pool.join()
    """)
    assert out.split() == (["init", "ok", "True"] if initializer else ["True"])
