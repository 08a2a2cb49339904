"""The one error hierarchy of kubeloop.

Every error kubeloop raises on purpose derives from :class:`KubeloopError`; each subclass also
inherits the matching builtin so callers can catch ``ValueError`` etc. Messages name the thing
and the fix. All classes take a single message argument so they survive pickling across Ray
workers and KFP subprocesses.

Settings objects check their values where they are made, with :func:`check_range` and
:func:`check_choice`; every refusal reads the same way (scikit-learn's form)::

    The 'gate_margin' parameter of RunRequest must be a float in the range [0.0, inf).
    Got -1.0 instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Literal, TypeVar

__all__ = [
    "BundleError",
    "Closed",
    "ConfigError",
    "DataValidationError",
    "KubeloopError",
    "RegistryError",
    "TrainingError",
    "check_choice",
    "check_range",
    "in_range",
    "interval_text",
    "parameter_error",
]

_SHOWN = 80  # characters of a refused value quoted back
_T = TypeVar("_T")
Closed = Literal["both", "left", "right", "neither"]  # which bounds belong to an interval


class KubeloopError(Exception):
    """Root of every error kubeloop raises on purpose."""


class DataValidationError(KubeloopError, ValueError):
    """Training or scoring data is unusable (missing target, one class, unreadable file...)."""


class BundleError(KubeloopError, ValueError):
    """A model bundle is incomplete, tampered with, or holds something forbidden (pickle)."""


class ConfigError(KubeloopError, ValueError):
    """A setting, flag or values file is wrong."""


class RegistryError(KubeloopError, RuntimeError):
    """The model registry cannot do what was asked (no champion, version exists, ...)."""


class TrainingError(KubeloopError, RuntimeError):
    """Training failed for a reason that is not the data's fault (Ray, XGBoost)."""


def parameter_error(name: str, value: object, *, owner: str, expected: str) -> ConfigError:
    """The one form of a refused setting: what, what is allowed, what was given.

    Args:
        name: The parameter (``"gate_margin"``).
        value: The value given (quoted back, cut to a readable length).
        owner: The object whose parameter it is (``"RunRequest"``).
        expected: What is allowed, as it completes "must be ..." (``"an int in the range
            [1, inf)"``).

    Returns:
        ``ConfigError("The 'gate_margin' parameter of RunRequest must be <expected>.
        Got <value> instead.")`` for the caller to raise.
    """
    text = repr(value)
    if len(text) > _SHOWN:
        text = f"{text[:_SHOWN]}... ({len(text)} characters)"
    return ConfigError(f"The '{name}' parameter of {owner} must be {expected}. Got {text} instead.")


def interval_text(
    kind: type[int] | type[float],
    low: float | None,
    high: float | None,
    *,
    closed: Closed = "both",
) -> str:
    """``"a float in the range [0.0, inf)"``: the allowed values, as :func:`check_range` says."""
    left = "[" if low is not None and closed in ("both", "left") else "("
    right = "]" if high is not None and closed in ("both", "right") else ")"
    lower = "-inf" if low is None else repr(kind(low))
    upper = "inf" if high is None else repr(kind(high))
    article = "an int" if kind is int else "a float"
    return f"{article} in the range {left}{lower}, {upper}{right}"


def in_range(
    value: object,
    *,
    kind: type[int] | type[float] = float,
    low: float | None = None,
    high: float | None = None,
    closed: Closed = "both",
) -> bool:
    """Whether ``value`` is a number of ``kind`` inside the interval (see :func:`check_range`)."""
    number = Integral if kind is int else Real
    if not isinstance(value, number) or isinstance(value, bool):
        return False
    x = float(value)
    if math.isnan(x):
        return False
    if low is not None and not (x >= low if closed in ("both", "left") else x > low):
        return False
    return high is None or (x <= high if closed in ("both", "right") else x < high)


def check_range(
    name: str,
    value: object,
    *,
    owner: str,
    kind: type[int] | type[float] = float,
    low: float | None = None,
    high: float | None = None,
    closed: Closed = "both",
) -> None:
    """Refuse ``value`` unless it is a number of ``kind`` inside the interval.

    ``kind=int`` takes whole numbers (numpy's too, not ``bool``); ``kind=float`` takes any real
    number but NaN. ``low``/``high`` of ``None`` are unbounded (as in scikit-learn, an infinity
    on that side is accepted); ``closed`` says which bounds belong to the interval.

    Raises:
        ConfigError: :func:`parameter_error`'s message, e.g. "The 'num_boost_round' parameter
            of RunRequest must be an int in the range [1, inf). Got 0 instead."
    """
    if not in_range(value, kind=kind, low=low, high=high, closed=closed):
        expected = interval_text(kind, low, high, closed=closed)
        raise parameter_error(name, value, owner=owner, expected=expected)


def check_choice(name: str, value: _T, choices: Iterable[_T], *, owner: str) -> _T:
    """Return ``value`` when it is one of ``choices``, else refuse it.

    Raises:
        ConfigError: "The 'runner' parameter of RunRequest must be one of 'subprocess',
            'docker'. Got 'x' instead."
    """
    options = tuple(choices)
    if value not in options:
        expected = "one of " + ", ".join(repr(option) for option in options)
        raise parameter_error(name, value, owner=owner, expected=expected)
    return value
