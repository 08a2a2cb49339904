"""Unit tests of kubeloop.bundle.profile: the one binning rule and the reference profile format."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle.profile import (
    MISSING_BIN,
    UNKNOWN_BIN,
    assign_bins,
    bin_labels,
    build_reference_profile,
    count_values,
    numeric_profile,
)
from kubeloop.bundle.schema import FeatureInfo, Schema
from kubeloop.errors import ConfigError, DataValidationError

SCHEMA = Schema(
    features=(
        FeatureInfo("tenure", "numeric", minimum=0.0, maximum=99.0),
        FeatureInfo("flat", "numeric", minimum=3.0, maximum=3.0),
        FeatureInfo("contract", "categorical", categories=("Month", "One year", "Two year")),
        FeatureInfo("partner", "binary", categories=("No", "Yes")),
    ),
    target="churned",
    task="classification",
    classes=("No", "Yes"),
)


def _frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    tenure = rng.integers(0, 100, size=n).astype(np.float64)
    tenure[:7] = np.nan
    contract = rng.choice(["Month", "One year"], size=n, p=[0.7, 0.3]).astype(object)
    contract[:3] = None
    return pd.DataFrame(
        {
            "tenure": tenure,
            "flat": np.full(n, 3.0),
            "contract": contract,
            "partner": rng.choice(["No", "Yes"], size=n).astype(object),
        }
    )


def test_assign_bins_boundaries_go_to_the_lower_bin() -> None:
    edges = [1.0, 2.0, 5.0]
    values = np.array([-np.inf, 0.5, 1.0, 1.0001, 2.0, 4.9, 5.0, 5.0001, np.inf])
    assert assign_bins(edges, values).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert assign_bins([], np.array([-1.0, 0.0, 7.0])).tolist() == [0, 0, 0]


def test_assign_bins_on_long_columns_equals_the_binary_search() -> None:
    """Long columns are binned by counting edges; the answer is searchsorted's, ties, infinities
    and NaN (last bin) included."""
    rng = np.random.default_rng(5)
    edges = np.unique(np.round(rng.normal(size=12), 1))
    values = np.round(rng.normal(size=50_000), 1)  # many values equal to an edge
    values[::97] = np.nan
    values[::101] = np.inf
    values[::103] = -np.inf
    want = np.searchsorted(edges, values, side="left")
    assert assign_bins(edges, values).tolist() == want.tolist()
    assert assign_bins(edges.tolist(), values[:3]).tolist() == want[:3].tolist()
    assert assign_bins([], values).tolist() == [0] * len(values)


def test_numeric_profile_counts_sum_to_rows_and_edges_increase() -> None:
    values = np.random.default_rng(1).normal(size=1000)
    values[::50] = np.nan
    profile = numeric_profile(values, bins=10)
    edges = np.array(profile["edges"])
    assert len(edges) == 9
    assert np.all(np.diff(edges) > 0)
    assert len(profile["counts"]) == len(edges) + 1
    assert profile["missing"] == 20
    assert sum(profile["counts"]) + profile["missing"] == 1000
    assert min(profile["counts"]) > 0
    # Quantile bins hold about a tenth of the rows each.
    assert max(profile["counts"]) - min(profile["counts"]) <= 2


def test_repeated_values_deduplicate_edges_and_leave_no_empty_bin() -> None:
    values = np.array([0.0] * 80 + [1.0] * 15 + [2.0] * 5)
    profile = numeric_profile(values, bins=10)
    assert profile["edges"] == [0.0, 1.0]
    assert profile["counts"] == [80, 15, 5]


def test_constant_column_has_one_bin() -> None:
    profile = numeric_profile(np.full(50, 3.0), bins=10)
    assert profile == {"kind": "numeric", "edges": [], "counts": [50], "missing": 0}
    assert bin_labels(profile) == ["0"]


def test_infinite_values_are_counted_but_never_edges() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, np.inf, -np.inf])
    profile = numeric_profile(values, bins=4)
    assert all(np.isfinite(profile["edges"]))
    assert sum(profile["counts"]) == 6
    json.dumps(profile, allow_nan=False)


def test_reference_profile_format() -> None:
    frame = _frame()
    predictions = np.linspace(0.0, 1.0, len(frame))
    profile = build_reference_profile(frame, SCHEMA, predictions, bins=5)
    json.dumps(profile, allow_nan=False)
    assert profile["format"] == 1
    assert profile["rows"] == 200
    assert profile["bins"] == 5
    assert list(profile["features"]) == ["tenure", "flat", "contract", "partner"]

    tenure = profile["features"]["tenure"]
    assert tenure["missing"] == 7
    assert sum(tenure["counts"]) == 193
    assert np.all(np.diff(tenure["edges"]) > 0)
    assert profile["features"]["flat"]["counts"] == [200]

    contract = profile["features"]["contract"]
    expected = frame["contract"].value_counts().to_dict()
    assert contract["categories"] == {
        "Month": expected["Month"],
        "One year": expected["One year"],
        "Two year": 0,  # in the schema, absent from these rows
    }
    assert contract["missing"] == 3
    assert sum(profile["features"]["partner"]["categories"].values()) == 200

    prediction = profile["prediction"]
    assert prediction["kind"] == "numeric"
    assert sum(prediction["counts"]) == 200


def test_multiclass_prediction_profiles_the_top_probability() -> None:
    frame = _frame(30)
    probabilities = np.tile([0.2, 0.5, 0.3], (30, 1))
    probabilities[:10] = [0.9, 0.05, 0.05]
    profile = build_reference_profile(frame, SCHEMA, probabilities, bins=4)
    assert profile["prediction"]["edges"] == [0.5]
    assert profile["prediction"]["counts"] == [20, 10]


def test_bin_labels() -> None:
    profile = build_reference_profile(_frame(), SCHEMA, np.zeros(200), bins=4)
    tenure = profile["features"]["tenure"]
    assert bin_labels(tenure) == [str(i) for i in range(len(tenure["counts"]))]
    contract = profile["features"]["contract"]
    assert bin_labels(contract) == ["Month", "One year", "Two year", UNKNOWN_BIN]


def test_count_values_uses_the_same_bins_as_the_reference() -> None:
    frame = _frame()
    profile = build_reference_profile(frame, SCHEMA, np.zeros(200), bins=5)
    tenure = profile["features"]["tenure"]
    live = count_values(tenure, frame["tenure"].to_numpy())
    assert [live[label] for label in bin_labels(tenure)] == tenure["counts"]
    assert live[MISSING_BIN] == tenure["missing"]

    contract = profile["features"]["contract"]
    live = count_values(contract, np.array(["Month", "Month", "Lifetime", None, 1.0], dtype=object))
    assert live == {
        "Month": 2,
        "One year": 0,
        "Two year": 0,
        UNKNOWN_BIN: 2,  # "Lifetime" and "1" were never seen in training
        MISSING_BIN: 1,
    }


def test_bad_arguments() -> None:
    frame = _frame(20)
    with pytest.raises(ConfigError, match="bins must be at least 2"):
        build_reference_profile(frame, SCHEMA, np.zeros(20), bins=1)
    with pytest.raises(DataValidationError, match="X has 20 rows"):
        build_reference_profile(frame, SCHEMA, np.zeros(19))
    with pytest.raises(DataValidationError, match=r"\['partner'\]"):
        build_reference_profile(frame.drop(columns="partner"), SCHEMA, np.zeros(20))
