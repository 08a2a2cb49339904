"""Drift statistics against hand-computed values, and the profile comparison."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kubeloop.bundle.profile import MISSING_BIN, UNKNOWN_BIN, count_values, numeric_profile
from kubeloop.errors import ConfigError
from kubeloop.monitoring import (
    PREDICTION,
    DriftConfig,
    chi_square,
    compare_profile,
    count_frame,
    drift_share,
    ks_binned,
    ks_two_sample,
    psi,
    psi_rows,
)


@pytest.mark.parametrize(
    ("reference", "current", "expected"),
    [
        # (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5)
        ([50, 50], [25, 75], 0.25 * math.log(2) + 0.25 * math.log(1.5)),
        ([10, 20, 70], [10, 20, 70], 0.0),
        # scale does not matter, proportions do
        ([1, 1], [300, 300], 0.0),
        # empty reference bin: floored at 1e-4 -> (0.5-1)ln(0.5/1) + (0.5-1e-4)ln(0.5/1e-4)
        ([100, 0], [50, 50], 0.5 * math.log(2) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)),
    ],
)
def test_psi_matches_hand_computed_values(
    reference: list[int], current: list[int], expected: float
) -> None:
    assert psi(np.array(reference), np.array(current)) == pytest.approx(expected, rel=1e-9)


def test_psi_rows_scores_padded_features_independently() -> None:
    reference = np.array([[50, 50, 0], [10, 20, 70]])
    current = np.array([[25, 75, 0], [70, 20, 10]])
    values = psi_rows(reference, current)
    assert values[0] == pytest.approx(psi(np.array([50, 50]), np.array([25, 75])))
    assert values[1] == pytest.approx(0.6 * math.log(7) + 0.0 + 0.6 * math.log(7))


def test_psi_of_empty_current_window_is_nan() -> None:
    assert math.isnan(psi(np.array([5, 5]), np.array([0, 0])))


def test_psi_rejects_misaligned_counts() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psi_rows(np.ones((2, 3)), np.ones((2, 4)))


def test_ks_binned_equals_two_sample_ks_on_discrete_values() -> None:
    reference, current = [10, 20, 30, 40], [40, 30, 20, 10]
    statistic, p_value = ks_binned(np.array(reference), np.array(current))
    assert statistic == pytest.approx(0.4)  # CDFs .1 .3 .6 1 vs .4 .7 .9 1
    raw_ref = np.repeat(np.arange(4), reference).astype(float)
    raw_cur = np.repeat(np.arange(4), current).astype(float)
    exact, _ = ks_two_sample(raw_ref, raw_cur)
    assert statistic == pytest.approx(exact)
    assert p_value == pytest.approx(stats.kstwobign.sf(math.sqrt(50) * 0.4))
    assert p_value < 1e-5


def test_ks_two_sample_drops_missing_values() -> None:
    statistic, p_value = ks_two_sample(np.array([1.0, 2.0, np.nan]), np.array([1.0, 2.0]))
    assert statistic == 0.0 and p_value == 1.0


def test_chi_square_matches_hand_computed_value() -> None:
    # expected 40/60 per row: 2 * (100/40 + 100/60) = 8.333...
    statistic, p_value = chi_square(np.array([50, 50, 0]), np.array([30, 70, 0]))
    assert statistic == pytest.approx(25 / 3)
    assert p_value == pytest.approx(stats.chi2.sf(25 / 3, 1))


def test_drift_share() -> None:
    assert drift_share([True, False, False, True]) == 0.5
    assert drift_share([]) == 0.0


def _profile() -> dict:
    rng = np.random.default_rng(1)
    return {
        "format": 1,
        "rows": 1000,
        "bins": 4,
        "features": {
            "x": numeric_profile(rng.normal(size=1000), bins=4),
            "c": {"kind": "categorical", "categories": {"a": 500, "b": 500}, "missing": 0},
        },
        "prediction": numeric_profile(rng.uniform(size=1000), bins=4),
    }


def test_count_frame_follows_the_profile_binning_rule() -> None:
    profile = _profile()
    frame = pd.DataFrame({"x": [-5.0, 0.0, 5.0, np.nan, 0.3], "c": ["a", " b ", "zz", None, 1.0]})
    counts = count_frame(profile, frame)
    for name in ("x", "c"):
        expected = count_values(profile["features"][name], frame[name].to_numpy())
        assert counts[name] == {k: float(v) for k, v in expected.items()}
    assert counts["c"][UNKNOWN_BIN] == 2 and counts["c"][MISSING_BIN] == 1


def test_compare_profile_flags_shifted_features_only() -> None:
    profile = _profile()
    rng = np.random.default_rng(2)
    same = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000)})
    shifted = same.assign(x=same["x"] + 2.0, c=np.where(rng.random(2000) < 0.5, "new", "a"))
    calm = compare_profile(profile, count_frame(profile, same))
    assert calm.drifted_features == () and calm.drift_share == 0.0
    report = compare_profile(profile, count_frame(profile, shifted))
    assert report.drifted_features == ("x", "c") and report.drift_share == 1.0
    by_name = {f.feature: f for f in report.features}
    assert by_name["x"].test == "ks" and by_name["x"].statistic > 0.5
    assert by_name["c"].test == "chi2" and by_name["c"].p_value < 1e-6
    assert report.to_dict()["drifted_features"] == ["x", "c"]


def test_per_feature_threshold_and_min_rows() -> None:
    profile = _profile()
    counts = {"x": {"0": 100.0, "1": 100.0, "2": 100.0, "3": 300.0}, "c": {"a": 10.0}}
    config = DriftConfig(psi_threshold=0.2, feature_thresholds={"x": 5.0}, min_rows=50)
    report = compare_profile(profile, counts, config=config)
    x, c = report.features
    assert 0.2 < x.psi < 5.0 and not x.drifted and x.threshold == 5.0
    assert math.isnan(c.psi) and not c.drifted  # 10 rows < min_rows: not judged
    assert report.drift_share == 0.0 and [f.feature for f in report.judged] == ["x"]


def test_prediction_is_scored_but_not_in_the_share() -> None:
    profile = _profile()
    counts = {
        "x": {"0": 250.0, "1": 250.0, "2": 250.0, "3": 250.0},
        "c": {"a": 500.0, "b": 500.0},
        PREDICTION: {"3": 1000.0},
    }
    report = compare_profile(profile, counts)
    assert report.prediction is not None and report.prediction.drifted
    assert report.drift_share == 0.0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"psi_threshold": 0.0}, "'psi_threshold' parameter of DriftConfig must be a float in "
         "the range (0.0, inf). Got 0.0 instead."),
        ({"feature_thresholds": {"x": -1.0}}, "'feature_thresholds['x']' parameter of "
         "DriftConfig must be a float in the range (0.0, inf). Got -1.0 instead."),
        ({"min_rows": 0}, "'min_rows' parameter of DriftConfig must be an int in the range "
         "[1, inf). Got 0 instead."),
    ],
)  # fmt: skip
def test_drift_config_rejects_bad_values(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        DriftConfig(**bad)
