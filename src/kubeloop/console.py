"""Human output for long-running commands: timestamped progress lines and plain tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

__all__ = ["Meter", "Progress", "ProgressFn", "format_table", "quiet", "time_left"]

ProgressFn = Callable[[str], None]


def quiet(_message: str) -> None:
    """A progress callback that discards every message."""


class Progress:
    """Print one line per step, prefixed with the seconds elapsed since creation.

    Args:
        stream: Where lines go (standard error by default, so stdout stays parseable).
        prefix: Optional tag shown before every line (e.g. ``"train"``).
    """

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "") -> None:
        self._stream = stream
        self._prefix = f"{prefix} " if prefix else ""
        self._start = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self._start
        stream = self._stream or sys.stderr
        print(f"[{elapsed:6.1f}s] {self._prefix}{message}", file=stream, flush=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render rows as an aligned plain-text table; missing cells are shown as ``-``.

    Args:
        rows: One mapping per row.
        columns: Column names, in display order (also the header).

    Returns:
        The table as one string, header and rule first.
    """
    cells = [[_cell(row.get(column, "-")) for column in columns] for row in rows]
    widths = [
        max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)
    ]
    header = "  ".join(column.ljust(widths[i]) for i, column in enumerate(columns))
    rule = "  ".join("-" * width for width in widths)
    body = [
        "  ".join(
            cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(line)
        )
        for line in cells
    ]
    return "\n".join([header, rule, *body])


def time_left(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the average rate so far (``None`` before any work is done)."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0.0) * elapsed / done


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Meter:
    """Progress of one long piece of work, in rows: rows/s and the time left.

    Quiet for the first ``after`` seconds (short work says nothing more than its start and
    end lines), then one line every ``every`` seconds at most::

        loading: 1,200,000 of 5,000,000 rows (24%), 410,000 rows/s, about 9 s left

    Args:
        say: Where lines go (a :class:`Progress`).
        what: The work's name, the start of every line.
        total: Rows in all (``None`` when unknown: no time left is shown).
        after: Seconds of silence before the first line.
        every: Seconds between lines.
        clock: The time source (tests pass their own).
    """

    def __init__(
        self,
        say: ProgressFn,
        what: str,
        total: float | None,
        *,
        after: float = 3.0,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say, self.what, self.total = say, what, total
        self._after, self._every, self._clock = after, every, clock
        self._start = clock()
        self._next = self._start + after
        self.done = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since the meter was made."""
        return self._clock() - self._start

    def line(self, done: float, elapsed: float) -> str:
        """The progress line for ``done`` rows after ``elapsed`` seconds."""
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.what}: {done:,.0f}"
        if self.total:
            text += f" of {self.total:,.0f} rows ({100 * done / self.total:.0f}%)"
        else:
            text += " rows"
        text += f", {rate:,.0f} rows/s"
        left = None if self.total is None else time_left(done, self.total, elapsed)
        return text + (f", about {_duration(left)} left" if left is not None else "")

    def due(self) -> bool:
        """True when a line is due (then the next one is due ``every`` seconds later)."""
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._every
        return True

    def update(self, done: float) -> None:
        """Record ``done`` rows so far; say a line when one is due."""
        self.done = done
        if self.due():
            self._say(self.line(done, self.elapsed))

    def finish(self, done: float | None = None, *, detail: str = "") -> float:
        """Say the closing line (rows, seconds, rows/s) and return the seconds taken."""
        done = self.done if done is None else done
        elapsed = self.elapsed
        rate = f", {done / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        self._say(f"{self.what}: {done:,.0f} rows in {elapsed:.1f} s{rate}{detail}")
        return elapsed
