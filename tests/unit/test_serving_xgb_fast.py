"""The single-row XGBoost path gives exactly what ``inplace_predict`` gives, for every task."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost

from kubeloop.models import XGBoostModel
from kubeloop.serving._xgb_fast import fast_predictor


@pytest.mark.parametrize(
    ("task", "params", "n_classes"),
    [
        ("classification", {"objective": "binary:logistic"}, 2),
        ("classification", {"objective": "multi:softprob", "num_class": 3}, 3),
        ("regression", {"objective": "reg:squarederror"}, 1),
    ],
    ids=["binary", "multiclass", "regression"],
)
def test_fast_predictor_equals_inplace_predict(
    task: str, params: dict[str, object], n_classes: int
) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 7))
    y = rng.integers(0, n_classes, size=300) if task == "classification" else X[:, 0] * 2.0
    booster = xgboost.train({**params, "nthread": 1, "max_depth": 3}, xgboost.DMatrix(X, y), 10)
    model = XGBoostModel(booster, task=task, n_classes=n_classes)  # type: ignore[arg-type]
    fast = fast_predictor(model)
    assert fast is not model, "the fast path should be available with this XGBoost"
    for rows in (X[:1], X[:50], np.zeros((2, 7))):
        expected = model.predict(rows)
        got = fast.predict(rows)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="expected"):
        fast.predict(X[:, :3])
