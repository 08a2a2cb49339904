"""Waiting on something countable with a deadline (never a bare sleep before an assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    *,
    what: str,
    timeout: float = 60.0,
    every: float = 0.05,
    dead: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` every ``every`` seconds until it returns something true; return that.

    Args:
        dead: Asked between two checks: a non-empty answer says what awaited has died (a
            server process exited...), and waiting stops at once with it.

    Raises:
        AssertionError: ``check`` never returned a true value within ``timeout`` seconds
            (the message names ``what`` was awaited and the last value seen).
        RuntimeError: ``dead`` said the awaited thing died.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        problem = dead() if dead is not None else ""
        if problem:
            raise RuntimeError(f"{what} stopped: {problem}")
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {value!r})"
            )
        time.sleep(every)
