"""kubeloop.quick_exit in real child processes: handlers run, failures keep Python's exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent(
    """
    import atexit, sys, threading
    from kubeloop.quick_exit import exit_quickly_on_success

    class Teardown:  # prints when the module teardown collects it
        def __del__(self):
            print("teardown ran", flush=True)

    keep = Teardown()
    atexit.register(print, "earlier handler ran")
    exit_quickly_on_success()
    exit_quickly_on_success()  # twice: one handler
    atexit.register(print, "later handler ran")
    worker = threading.Thread(target=print, args=("thread finished",))
    worker.start()
    worker.join()
    print("step body done")
    if sys.argv[1] == "fail":
        raise RuntimeError("the step failed")
    """
)


def _child(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=60
    )


def test_a_finished_process_runs_every_handler_and_skips_the_teardown() -> None:
    done = _child("ok")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "step body done" in lines and "thread finished" in lines
    # every atexit handler ran once, in Python's order (last registered first)
    assert lines[-2:] == ["later handler ran", "earlier handler ran"]
    assert lines.count("later handler ran") == 1
    assert "teardown ran" not in lines


def test_a_failing_process_keeps_pythons_exit() -> None:
    done = _child("fail")
    assert done.returncode == 1
    assert "RuntimeError: the step failed" in done.stderr
    lines = done.stdout.splitlines()
    assert lines.count("later handler ran") == 1 and lines.count("earlier handler ran") == 1
    assert "teardown ran" in lines  # Python's own exit, teardown included
