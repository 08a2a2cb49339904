"""The one form of a refused setting: check_range, check_choice, parameter_error."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from kubeloop.errors import (
    Closed,
    ConfigError,
    check_choice,
    check_range,
    in_range,
    interval_text,
    parameter_error,
)


def test_the_message_names_what_the_range_and_the_value() -> None:
    with pytest.raises(ConfigError) as refused:
        check_range("gate_margin", -1.0, low=0.0, owner="RunRequest")
    assert str(refused.value) == (
        "The 'gate_margin' parameter of RunRequest must be a float in the range [0.0, inf). "
        "Got -1.0 instead."
    )
    assert pickle.loads(pickle.dumps(refused.value)).args == refused.value.args


def test_choice_message() -> None:
    message = (
        "The 'runner' parameter of RunRequest must be one of 'subprocess', 'docker'. "
        "Got 'x' instead."
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_choice("runner", "x", ("subprocess", "docker"), owner="RunRequest")
    assert check_choice("runner", "docker", ("subprocess", "docker"), owner="R") == "docker"


@pytest.mark.parametrize(
    ("kind", "low", "high", "closed", "text"),
    [
        (int, 1, None, "both", "an int in the range [1, inf)"),
        (float, 0, 1, "right", "a float in the range (0.0, 1.0]"),
        (float, 0, 1, "left", "a float in the range [0.0, 1.0)"),
        (float, None, 5, "neither", "a float in the range (-inf, 5.0)"),
        (int, 0, 100, "both", "an int in the range [0, 100]"),
    ],
)
def test_interval_text(
    kind: type[int] | type[float], low: float | None, high: float | None, closed: Closed, text: str
) -> None:
    assert interval_text(kind, low, high, closed=closed) == text


@pytest.mark.parametrize(
    ("value", "kind", "low", "high", "closed", "inside"),
    [
        (0, int, 0, None, "both", True),
        (0, int, 0, None, "neither", False),
        (np.int64(3), int, 1, None, "both", True),  # numpy's whole numbers are ints
        (3.0, int, 1, None, "both", False),  # a float is not an int, even a whole one
        (True, int, 0, None, "both", False),  # nor is a bool
        (3, float, 0, None, "both", True),  # an int is a float
        (float("nan"), float, None, None, "both", False),
        (float("inf"), float, 0, None, "both", True),  # unbounded side: as scikit-learn
        (1.0, float, 0, 1, "right", True),
        (1.0, float, 0, 1, "left", False),
        ("1", float, 0, None, "both", False),
        (None, int, 0, None, "both", False),
    ],
)
def test_in_range(
    value: object,
    kind: type[int] | type[float],
    low: float | None,
    high: float | None,
    closed: Closed,
    inside: bool,
) -> None:
    bounds = {"kind": kind, "low": low, "high": high, "closed": closed}
    assert in_range(value, **bounds) is inside  # type: ignore[arg-type]
    if not inside:
        with pytest.raises(ConfigError, match=r"^The 'p' parameter of X must be"):
            check_range("p", value, owner="X", **bounds)  # type: ignore[arg-type]


def test_a_long_value_is_cut() -> None:
    error = parameter_error("data", "x" * 500, owner="X", expected="short")
    assert str(error).endswith("... (502 characters) instead.") and len(str(error)) < 200
