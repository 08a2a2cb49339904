"""Pure parts behind the HTML report: curve data in metrics.json, the monitor's history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kubeloop.charts import bars, number
from kubeloop.monitoring.decision import HISTORY_KEEP, MonitorState, load_state, save_state
from kubeloop.training.evaluation import curve_points


def test_curve_points_binary_are_thinned_and_scored() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.4 + rng.random(500) * 0.6, 0, 1)
    curves = curve_points("classification", y, p, classes=("No", "Yes"), points=30)
    (roc,) = curves["roc"]
    assert roc["name"] == "Yes" and 0.5 < roc["score"] <= 1.0
    assert len(roc["x"]) == len(roc["y"]) <= 30
    assert roc["x"][0] == 0.0 and roc["x"][-1] == 1.0
    assert curves["pr"][0]["score"] > 0.5


def test_curve_points_multiclass_and_regression() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3), 300)
    curves = curve_points("classification", y, p, classes=("a", "b", "c"))
    assert [c["name"] for c in curves["roc"]] == ["a", "b", "c"]
    values = rng.normal(size=200)
    residuals = curve_points("regression", values, values + 0.1)["residuals"]
    assert len(residuals["edges"]) == len(residuals["counts"]) + 1 == 21
    assert sum(residuals["counts"]) == 200


def test_history_survives_the_state_file_and_is_bounded(tmp_path: Path) -> None:
    state = MonitorState()
    for i in range(HISTORY_KEEP + 5):
        state = state.with_history({"at": float(i), "decision": {"retrain": False}})
    path = tmp_path / "state.json"
    save_state(path, state)
    loaded = load_state(path)
    assert len(loaded.history) == HISTORY_KEEP
    assert loaded.history[0]["at"] == 5.0 and loaded.history[-1]["at"] == HISTORY_KEEP + 4


@pytest.mark.parametrize(
    ("value", "text"), [(None, "-"), (0.0, "0"), (1234.5, "1,234"), (0.01234, "0.0123")]
)
def test_number(value: float | None, text: str) -> None:
    assert number(value) == text


def test_bars_are_accessible_svg() -> None:
    svg = bars("x", ["a", "b"], [("ref", "#000", [0.5, 0.5])], title="T <1>", desc="D")
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert '<title id="x-t">T &lt;1&gt;</title>' in svg and "<script" not in svg
