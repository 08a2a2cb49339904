"""The demo's drift for a user's data: covariate shift plus a concept change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kubeloop.demo.harness import drift_frame


def test_drift_frame_shifts_features_and_reverses_the_label_in_a_group() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "a": rng.normal(size=1000), "b": rng.normal(size=1000),
        "c": rng.choice(["x", "y", "z"], 1000, p=[0.6, 0.3, 0.1]),
        "label": rng.choice(["No", "Yes"], 1000),
    })  # fmt: skip
    drifted = drift_frame(frame, "label", seed=1)
    assert drifted["a"].to_numpy() == pytest.approx((frame["a"] + frame["a"].std()).to_numpy())
    assert (drifted["b"] == frame["b"]).all()  # every other numeric column only
    assert (drifted["c"] == "z").mean() > 0.4  # 40 % replaced by the rarest category
    group = frame["a"] > frame["a"].median()
    assert (drifted.loc[group, "label"] != frame.loc[group, "label"]).all()
    assert (drifted.loc[~group, "label"] == frame.loc[~group, "label"]).all()


def test_drift_frame_mirrors_a_numeric_target() -> None:
    frame = pd.DataFrame({"a": np.arange(100.0), "y": np.linspace(0.0, 50.0, 100)})
    drifted = drift_frame(frame, "y")
    group = frame["a"] > frame["a"].median()
    assert np.allclose(drifted.loc[group, "y"], 2 * frame["y"].mean() - frame.loc[group, "y"])
