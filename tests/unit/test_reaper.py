"""The Ray reaper on plain processes: when its lifeline closes it kills the marked ones only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from kubeloop.training import _reaper

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the reaper reads /proc (Linux)")
def test_closing_the_lifeline_kills_the_marked_processes_only() -> None:
    marker = f"test-{uuid.uuid4().hex}"
    marked = subprocess.Popen(SLEEP, env={**os.environ, _reaper.MARKER_ENV: marker})
    other = subprocess.Popen(SLEEP, env={**os.environ, _reaper.MARKER_ENV: "someone-else"})
    try:
        assert _reaper.start_reaper(marker)
        reaper = _reaper._reapers.pop()
        assert list(_reaper.marked_processes(marker)) == [marked.pid]
        assert reaper.stdin is not None
        reaper.stdin.close()  # what the kernel does when the driver dies, even by SIGKILL
        assert marked.wait(timeout=60) == -signal.SIGKILL
        assert reaper.wait(timeout=60) == 0
        assert other.poll() is None
    finally:
        for process in (marked, other):
            process.kill()
            process.wait()
