"""Human output for long-running commands: timestamped progress lines and plain tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

__all__ = ["Progress", "ProgressFn", "format_table", "quiet"]

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
