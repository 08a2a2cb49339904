"""The one rule for dates and times: what a value of a ``datetime`` feature means, and its
calendar features.

A date or time becomes **seconds since 1970-01-01 00:00 on its own clock**: a value with a time
zone (an ISO-8601 offset, a time-zone-aware timestamp) keeps its local wall-clock time and drops
the offset, so ``2024-03-01T09:00:00+01:00`` and ``2024-03-01T09:00:00Z`` both read as 09:00 (the
hour of day a person at that place saw). Calendar features are computed from that number, in
the same way at training and when serving.

Accepted values (:func:`to_seconds`):

- text in ISO 8601 (``2024-03-01``, ``2024-03-01T09:30``, ``2024-03-01 09:30:00.250``,
  ``2024-03-01T09:30:00Z``, ``...+01:00``), always;
- text in the column's own format when training found one of :data:`TEXT_FORMATS` (e.g.
  ``03/01/2024``), with an optional time ``HH:MM`` or ``HH:MM:SS`` after a space;
- ``datetime.datetime`` / ``datetime.date`` / ``numpy.datetime64`` objects (pandas ``Timestamp``
  included);
- a number: already seconds since 1970-01-01 (the form :mod:`kubeloop.data` gives a datetime
  column).

``None``, NaN, ``NaT`` and blank text are missing. Needs no pandas (the model server uses it).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "CALENDAR_PARTS",
    "TEXT_FORMATS",
    "calendar_features",
    "column_seconds",
    "detect_format",
    "format_seconds",
    "to_seconds",
    "varies_by_hour",
]

TEXT_FORMATS: tuple[str, ...] = (
    "%Y/%m/%d",
    "%m/%d/%Y",  # month first wins a tie with day first (both read 03/04/2024), as in pandas
    "%d/%m/%Y",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%d %b %Y",
    "%d-%b-%Y",
    "%b %d %Y",
    "%b %d, %Y",
)
"""Text date formats recognised besides ISO 8601 (``strptime`` codes), each optionally followed by
a space and ``%H:%M`` or ``%H:%M:%S``. A column's values must share one of them."""

CALENDAR_PARTS: tuple[str, ...] = ("year", "month", "day", "weekday", "dayofyear", "hour", "value")
"""Calendar features of a datetime feature, in output order: ``weekday`` 0 = Monday; ``hour``
only when the training values' times of day vary; ``value`` = the seconds themselves."""

_TIMES = ("", " %H:%M", " %H:%M:%S")
_LIMIT = 253_402_300_800.0  # 10000-01-01: a number of seconds beyond years 1-9999 is not a date
_EPOCH = _dt.datetime(1970, 1, 1)
_DAY = 86_400.0
_MISSING_TYPES = ("NAType", "NaTType")
_DETECT_SHARE = 0.95


class _Unparseable(ValueError):
    """A value that is not a date or time in an accepted form."""


def _clock_seconds(moment: _dt.datetime) -> float:
    """Seconds since 1970-01-01 00:00 on the value's own clock (its offset dropped)."""
    return (moment.replace(tzinfo=None) - _EPOCH).total_seconds()


def _parse_text(text: str, fmt: str | None) -> float:
    try:
        return _clock_seconds(_dt.datetime.fromisoformat(text))
    except ValueError:
        pass
    if fmt is not None:
        for time in _TIMES:
            try:
                return _clock_seconds(_dt.datetime.strptime(text, fmt + time))
            except ValueError:
                continue
    raise _Unparseable(text)


def to_seconds(value: Any, fmt: str | None = None) -> float:
    """Seconds since 1970-01-01 on the value's own clock; NaN when the value is missing.

    Args:
        value: A date or time in one of the accepted forms (see the module docstring).
        fmt: The column's text format (one of :data:`TEXT_FORMATS`), or ``None``: ISO only.

    Raises:
        ValueError: the value is not a date or time in an accepted form.
    """
    if value is None:
        return math.nan
    kind = type(value)
    if kind is str:
        text = value.strip()
        return _parse_text(text, fmt) if text else math.nan
    if kind.__name__ in _MISSING_TYPES and kind.__module__.startswith("pandas."):
        return math.nan
    if isinstance(value, _dt.datetime):
        return _clock_seconds(value)
    if isinstance(value, _dt.date):
        return (value - _EPOCH.date()).days * _DAY
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return math.nan
        whole = value.astype("datetime64[s]")
        fraction = (value - whole) / np.timedelta64(1, "ns") / 1e9
        return _in_range(float(whole.astype(np.int64)) + float(fraction), value)
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        number = float(value)
        return number if math.isnan(number) else _in_range(number, value)
    if isinstance(value, bytes):
        return to_seconds(value.decode("utf-8", errors="replace"), fmt)
    raise _Unparseable(value)


def _in_range(seconds: float, value: Any) -> float:
    if not -_LIMIT < seconds < _LIMIT:
        raise _Unparseable(value)
    return seconds


def column_seconds(values: Any, fmt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`to_seconds` of every value, each distinct value parsed once.

    Args:
        values: A sequence of values, a ``numpy.datetime64`` array, or a pandas ``Categorical``
            (its categories parsed once).
        fmt: The column's text format, or ``None``.

    Returns:
        float64 seconds (NaN where missing or unparseable) and the boolean mask of the values
        that were present but could not be read.
    """
    if hasattr(values, "categories") and hasattr(values, "codes"):
        table, bad_table = column_seconds(list(values.categories), fmt)
        codes = np.asarray(values.codes, dtype=np.intp)
        seconds = np.append(table, np.nan)[codes]
        return seconds, np.append(bad_table, False)[codes]
    if isinstance(values, np.ndarray) and values.dtype.kind in "Mfiu":
        if values.dtype.kind == "M":
            whole = values.astype("datetime64[s]")
            seconds = whole.astype(np.int64).astype(np.float64)
            seconds[np.isnat(whole)] = np.nan
            seconds += (values - whole).astype("timedelta64[ns]").astype(np.float64) / 1e9
        else:
            seconds = values.astype(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(seconds) < _LIMIT) & ~np.isnan(seconds)
        seconds[bad] = np.nan
        return seconds, bad
    items = values if isinstance(values, list) else list(values)
    seen: dict[Any, float] = {}
    seconds = np.empty(len(items), dtype=np.float64)
    for i, value in enumerate(items):
        try:
            number = seen.get(value)
            if number is None:
                number = seen[value] = _read(value, fmt)
        except TypeError:  # unhashable: never a date
            number = _BAD
        seconds[i] = number
    bad = np.isinf(seconds)
    seconds[bad] = np.nan
    return seconds, bad


_BAD = math.inf  # column_seconds' mark of a value that is not a date (seconds are finite)


def _read(value: Any, fmt: str | None) -> float:
    try:
        return to_seconds(value, fmt)
    except ValueError:
        return _BAD


def detect_format(texts: Sequence[str]) -> tuple[bool, str | None]:
    """Whether these distinct non-blank texts are dates, and the text format they share.

    At least 95 % of them must read as ISO 8601 (format ``None``) or in one of
    :data:`TEXT_FORMATS` (the first that reads the most of them).
    """
    sample = [t.strip() for t in texts[:1000]]
    if not sample:
        return False, None
    head = sample[:20]
    best: tuple[int, str | None] = (0, None)
    for fmt in (None, *TEXT_FORMATS):
        if sum(_reads(t, fmt) for t in head) < len(head) / 2:
            continue
        hits = sum(_reads(t, fmt) for t in sample)
        if hits >= _DETECT_SHARE * len(sample) and hits > best[0]:
            best = (hits, fmt)
            if fmt is None or hits == len(sample):
                break
    return best[0] > 0, best[1]


def _reads(text: str, fmt: str | None) -> bool:
    try:
        _parse_text(text, fmt)
    except ValueError:
        return False
    return True


def calendar_features(seconds: np.ndarray, parts: Sequence[str]) -> np.ndarray:
    """The ``parts`` (names from :data:`CALENDAR_PARTS`) of each value: ``(n, len(parts))``
    float64, NaN rows where the value is missing."""
    seconds = np.asarray(seconds, dtype=np.float64)
    missing = np.isnan(seconds)
    whole = np.floor(np.where(missing, 0.0, seconds)).astype(np.int64)
    moments = whole.astype("datetime64[s]")
    days = moments.astype("datetime64[D]")
    months = moments.astype("datetime64[M]")
    years = moments.astype("datetime64[Y]")
    computed = {
        "year": lambda: years.astype(np.int64) + 1970,
        "month": lambda: months.astype(np.int64) % 12 + 1,
        "day": lambda: (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
        "weekday": lambda: (days.astype(np.int64) + 3) % 7,  # 1970-01-01 was a Thursday
        "dayofyear": lambda: (days - years.astype("datetime64[D]")).astype(np.int64) + 1,
        "hour": lambda: (whole - days.astype(np.int64) * 86_400) // 3_600,
        "value": lambda: seconds,
    }
    out = np.empty((len(seconds), len(parts)), dtype=np.float64)
    for column, part in enumerate(parts):
        out[:, column] = computed[part]()
    out[missing] = np.nan
    return out


def varies_by_hour(seconds: np.ndarray) -> bool:
    """Whether the present values hold times of day other than midnight."""
    present = seconds[~np.isnan(seconds)]
    return bool(np.any(np.mod(present, _DAY) != 0.0))


def format_seconds(seconds: float) -> str:
    """A value as ISO text: the date alone at midnight, else date and time."""
    moment = _EPOCH + _dt.timedelta(seconds=float(seconds))
    if moment.hour == moment.minute == moment.second == moment.microsecond == 0:
        return moment.date().isoformat()
    return moment.isoformat(sep=" ", timespec="seconds")
