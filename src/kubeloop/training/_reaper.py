"""A local Ray dies with the process that started it, even after ``kill -9``.

Ray's head processes (GCS, raylet, agents) share the driver's fate through ``PR_SET_PDEATHSIG``,
but the workers and actors the raylet spawned do not: after a ``kill -9`` of ``kubeloop train``
they stayed up for good (measured: 7 processes, ~330 MB). So when kubeloop starts a local Ray it
tags that Ray's environment with a marker only its processes carry (every Ray process inherits
the raylet's environment), and starts this small reaper in its own session. The reaper blocks
on a pipe whose write end only the driver holds; when the driver exits -- normally, by an
exception or by ``SIGKILL`` -- the pipe closes and the reaper kills every process that carries
the marker, then exits itself.

Run as ``python -I .../kubeloop/training/_reaper.py MARKER`` (Linux: it reads ``/proc``).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

__all__ = ["MARKER_ENV", "marked_processes", "start_reaper"]

MARKER_ENV = "KUBELOOP_RAY_OWNER"
_DEADLINE_S = 30.0
_SNAPSHOT_S = 1.0  # seconds between looks at the driver's descendants
_reapers: list[subprocess.Popen[bytes]] = []  # kept open: their stdin is the lifeline


def marked_processes(marker: str, *, variable: str = MARKER_ENV) -> Iterator[int]:
    """Pids of this user's processes (but this one) whose environment has ``variable=marker``."""
    needle = f"{variable}={marker}".encode()
    proc = "/proc"
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"{proc}/{entry}/environ", "rb") as handle:
                variables = handle.read().split(b"\0")
        except OSError:  # gone, or another user's process
            continue
        if needle in variables:
            yield int(entry)


def start_reaper(marker: str) -> bool:
    """Start the reaper of the processes marked ``marker``; ``False`` where ``/proc`` is absent.

    The reaper runs in its own session (a terminal's ``SIGINT`` to the driver's process group
    does not reach it) and without the marker in its own environment.
    """
    if not os.path.isdir("/proc/self"):
        return False
    environment = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
    # Run as a file, not ``-m``: importing the kubeloop.training package would load XGBoost and
    # numpy into a process that only waits (this file needs the standard library alone).
    reaper = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        start_new_session=True,
    )
    _reapers.append(reaper)
    return True


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            table[int(entry)] = (int(fields[1]), fields[19])
    return table


def _descendants(roots: Iterable[int]) -> set[tuple[int, str]]:
    """(pid, start time) of every process below ``roots`` (this reaper left out)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[tuple[int, str]] = set()
    todo = [child for root in roots for child in children.get(root, [])]
    while todo:
        pid = todo.pop()
        if pid != os.getpid():
            found.add((pid, table[pid][1]))
            todo.extend(children.get(pid, []))
    return found


def _reap(marker: str, known: Iterable[tuple[int, str]] = ()) -> int:
    """Kill every marked process, and every process seen below a marked one that still runs
    (same pid and start time), until none is left or the deadline passes; the count killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + _DEADLINE_S
    while time.monotonic() < deadline:
        table = _processes()
        pids = set(marked_processes(marker))
        pids |= {pid for pid, start in known if pid in table and table[pid][1] == start}
        pids -= killed
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)  # killed processes stay in /proc until their parent reaps them
    return len(killed)


def main(argv: list[str]) -> int:
    """Wait for the driver to go (stdin closes), then kill the marked processes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    marker = argv[0]
    # Ray's agents and workers normally carry the marker; the processes seen below a marked one
    # (the raylet's agents and workers) are killed too, in case one of them was started with an
    # environment of its own.
    known: set[tuple[int, str]] = set()
    while True:
        ready, _, _ = select.select([0], [], [], _SNAPSHOT_S)
        if ready and not os.read(0, 4096):  # nothing is ever written; EOF = the driver is gone
            break
        known |= _descendants(marked_processes(marker))
    _reap(marker, known)
    return 0


if __name__ == "__main__":  # pragma: no cover - runs as its own process
    sys.exit(main(sys.argv[1:]))
