"""The compiled forest predicts what ``inplace_predict`` predicts, for kubeloop's boosters."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import xgboost

from kubeloop.bundle.models import XGBoostModel
from kubeloop.serving._served import verified_forest
from kubeloop.serving.forest import CompiledForest

FEATURES = 9


def _data(seed: int, rows: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES))
    X[:, 5:] = rng.integers(0, 2, size=(rows, FEATURES - 5))  # one-hot-like columns
    X[rng.random(X.shape) < 0.2] = np.nan
    return X


def _labels(X: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 5])
    if n_classes == 1:
        return 10.0 + 3.0 * signal + rng.normal(size=len(X))
    edges = np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1])
    noisy = np.where(rng.random(len(X)) < 0.2, rng.integers(0, n_classes, len(X)), 0)
    return (np.searchsorted(edges, signal) + noisy) % n_classes


OBJECTIVES: dict[str, tuple[dict[str, Any], int]] = {
    "binary": ({"objective": "binary:logistic", "scale_pos_weight": 3.0}, 2),
    "multiclass": ({"objective": "multi:softprob", "num_class": 4}, 4),
    "regression": ({"objective": "reg:squarederror"}, 1),
}


def _model(kind: str, *, forest: bool = False, early_stop: bool = False) -> XGBoostModel:
    params, n_classes = OBJECTIVES[kind]
    X = _data(1, 600)
    y = _labels(X, n_classes, 2)
    params = {**params, "nthread": 1, "max_depth": 5, "seed": 0}
    if forest:  # kubeloop's random-forest candidate: one round of parallel sampled trees
        params.update(num_parallel_tree=12, subsample=0.632, colsample_bynode=0.6, eta=1.0)
    train = xgboost.DMatrix(X[:450], y[:450])
    if early_stop:
        valid = xgboost.DMatrix(X[450:], y[450:])
        booster = xgboost.train(
            {**params, "eta": 0.3},
            train,
            200,
            evals=[(valid, "valid")],
            early_stopping_rounds=5,
            verbose_eval=False,
        )
        assert booster.best_iteration + 1 < booster.num_boosted_rounds()
        booster = booster[: booster.best_iteration + 1]
    else:
        booster = xgboost.train(params, train, 1 if forest else 25)
    task = "regression" if n_classes == 1 else "classification"
    return XGBoostModel(booster, task=task, n_classes=n_classes)  # type: ignore[arg-type]


def _assert_same(model: XGBoostModel, forest: CompiledForest) -> None:
    X = np.vstack([_data(7, 300), np.zeros((1, FEATURES)), np.full((1, FEATURES), np.nan)])
    X[:50] *= 4.0  # beyond the training range too
    expected = model.predict(X)
    scale = 1.0 if model.task == "classification" else float(np.abs(expected).max())
    got = forest.predict(X)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)
    for i in (0, 1, 300, 301):  # single rows, the serving case
        np.testing.assert_allclose(
            forest.predict(X[i : i + 1]), expected[i : i + 1], rtol=0, atol=1e-5 * scale
        )
    if model.task == "classification" and model.n_classes > 2:
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
@pytest.mark.parametrize(
    "variant", ["boosted", "random_forest", "early_stopped"], ids=["gbtree", "rf", "sliced"]
)
def test_compiled_forest_equals_inplace_predict(kind: str, variant: str) -> None:
    model = _model(kind, forest=variant == "random_forest", early_stop=variant == "early_stopped")
    forest = CompiledForest.from_booster(model.booster)
    _assert_same(model, forest)
    verified = verified_forest(model)
    assert verified is not None
    _assert_same(model, verified)


def test_base_score_is_used_in_margin_space() -> None:
    X = _data(3, 200)
    y = _labels(X, 2, 4)
    booster = xgboost.train(
        {"objective": "binary:logistic", "base_score": 0.9, "nthread": 1, "max_depth": 2},
        xgboost.DMatrix(X, y),
        3,
    )
    model = XGBoostModel(booster, task="classification", n_classes=2)
    _assert_same(model, CompiledForest.from_booster(booster))


def test_depth_zero_trees() -> None:
    """A booster whose trees are single leaves (nothing to split on) still compiles."""
    X = _data(5, 50)
    booster = xgboost.train(
        {"objective": "reg:squarederror", "nthread": 1, "max_depth": 3, "min_child_weight": 1e6},
        xgboost.DMatrix(X, np.arange(50.0)),
        3,
    )
    model = XGBoostModel(booster, task="regression", n_classes=1)
    _assert_same(model, CompiledForest.from_booster(booster))


def test_wrong_width_is_refused() -> None:
    forest = CompiledForest.from_booster(_model("binary").booster)
    with pytest.raises(ValueError, match="expected"):
        forest.predict(np.zeros((1, FEATURES - 1)))


def test_unsupported_booster_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    X = _data(6, 200)
    booster = xgboost.train(
        {"objective": "reg:absoluteerror", "nthread": 1, "max_depth": 2},
        xgboost.DMatrix(X, _labels(X, 1, 6)),
        2,
    )
    with pytest.raises(ValueError, match="not supported"):
        CompiledForest.from_booster(booster)
    model = XGBoostModel(booster, task="regression", n_classes=1)
    with caplog.at_level(logging.WARNING, logger="kubeloop.serving"):
        assert verified_forest(model) is None
    assert "inplace_predict" in caplog.text


def test_disagreeing_forest_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model("binary")
    real = CompiledForest.predict

    def off(self: CompiledForest, X: np.ndarray) -> np.ndarray:
        return real(self, X) + 1e-3

    monkeypatch.setattr(CompiledForest, "predict", off)
    with caplog.at_level(logging.WARNING, logger="kubeloop.serving"):
        assert verified_forest(model) is None
    assert "differs" in caplog.text
