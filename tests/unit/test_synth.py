"""Unit tests of kubeloop.data.synth: shapes, dirt, determinism, drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from kubeloop.data import build_dataset
from kubeloop.data.synth import PAYMENT_METHODS, generate_churn, generate_regression
from kubeloop.errors import ConfigError


def _psi(reference: pd.Series, current: pd.Series) -> float:
    """Population stability index over reference deciles (numerics) or categories."""
    if pd.api.types.is_numeric_dtype(reference):
        edges = np.unique(np.nanquantile(reference, np.linspace(0.1, 0.9, 9)))
        ref = np.bincount(np.searchsorted(edges, reference.dropna()), minlength=len(edges) + 1)
        cur = np.bincount(np.searchsorted(edges, current.dropna()), minlength=len(edges) + 1)
    else:
        labels = sorted(set(reference) | set(current))
        ref = reference.value_counts().reindex(labels, fill_value=0).to_numpy()
        cur = current.value_counts().reindex(labels, fill_value=0).to_numpy()
    p = np.clip(ref / ref.sum(), 1e-4, None)
    q = np.clip(cur / cur.sum(), 1e-4, None)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_churn(20_000, seed=0)


def test_churn_shape_and_dirt(base: pd.DataFrame) -> None:
    assert len(base) == 20_000
    assert 12 <= base.shape[1] <= 20
    assert base["customer_id"].is_unique
    assert set(base["churned"]) == {"Yes", "No"}
    assert 0.2 <= (base["churned"] == "Yes").mean() <= 0.3
    assert base["total_charges"].dtype == object
    blanks = int((base["total_charges"] == " ").sum())
    assert 0 < blanks < 200
    assert set(base["contract"]) == {"Month-to-month", "One year", "Two year"}
    assert set(base["payment_method"]) == set(PAYMENT_METHODS)
    assert set(base["senior"]) == {0, 1}
    assert set(base["paperless_billing"]) == {"Yes", "No"}
    missing = base.isna().sum()
    assert (missing > 0).sum() == 2
    assert missing["data_usage_gb"] > 0 and missing["age"] > 0


def test_churn_goes_through_data(base: pd.DataFrame) -> None:
    ds = build_dataset(base, target="churned")
    assert ds.schema.classes == ("No", "Yes")
    assert "customer_id" not in ds.X.columns
    blanks = int((base["total_charges"] == " ").sum())
    assert any(f"'total_charges' has {blanks} values" in n for n in ds.notes)
    kinds = {f.name: f.kind for f in ds.schema.features}
    assert kinds["senior"] == kinds["partner"] == "binary"
    assert kinds["contract"] == "categorical"
    assert kinds["total_charges"] == kinds["tenure_months"] == "numeric"


def test_churn_is_deterministic() -> None:
    pd.testing.assert_frame_equal(generate_churn(500, seed=3), generate_churn(500, seed=3))
    assert not generate_churn(500, seed=3).equals(generate_churn(500, seed=4))


def _model_and_matrix(frame: pd.DataFrame) -> tuple[LogisticRegression, list[str]]:
    X = _matrix(frame)
    model = LogisticRegression(max_iter=500).fit(X, frame["churned"] == "Yes")
    return model, list(X.columns)


def _matrix(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    numeric = ["tenure_months", "monthly_charges", "support_calls", "senior"]
    dummies = pd.get_dummies(
        frame[["contract", "payment_method", "tech_support", "internet_service"]], dtype=float
    )
    X = pd.concat([frame[numeric].astype(float), dummies], axis=1)
    return X if columns is None else X.reindex(columns=columns, fill_value=0.0)


def test_label_is_learnable_and_concept_shift_hurts(base: pd.DataFrame) -> None:
    model, columns = _model_and_matrix(base.iloc[:10_000])
    holdout = base.iloc[10_000:]

    def auc(frame: pd.DataFrame) -> float:
        scores = model.predict_proba(_matrix(frame, columns))[:, 1]
        return float(roc_auc_score(frame["churned"] == "Yes", scores))

    fresh = auc(holdout)
    assert 0.78 <= fresh <= 0.92
    drifted = auc(generate_churn(10_000, seed=5, concept_shift=1.0))
    assert drifted < fresh - 0.2
    half = auc(generate_churn(10_000, seed=5, concept_shift=0.5))
    assert drifted < half < fresh - 0.1


def test_covariate_shift_moves_distributions(base: pd.DataFrame) -> None:
    same = generate_churn(20_000, seed=1)
    shifted = generate_churn(20_000, seed=1, covariate_shift=1.0)
    for column in ("tenure_months", "monthly_charges", "contract", "payment_method"):
        assert _psi(base[column], same[column]) < 0.02, column
        assert _psi(base[column], shifted[column]) > 0.25, column
    assert shifted["tenure_months"].mean() < base["tenure_months"].mean()
    assert shifted["monthly_charges"].mean() > base["monthly_charges"].mean()
    unseen = set(shifted["payment_method"]) - set(PAYMENT_METHODS)
    assert len(unseen) == 1
    assert set(generate_churn(5_000, seed=1, covariate_shift=0.4)["payment_method"]) == set(
        PAYMENT_METHODS
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"n_rows": 0}, {"n_rows": 10, "covariate_shift": -0.1}, {"n_rows": 10, "concept_shift": -1}],
)
def test_churn_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="must be"):
        generate_churn(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("n_features", [2, 8, 30])
def test_regression(n_features: int) -> None:
    frame = generate_regression(2_000, seed=1, n_features=n_features)
    assert frame.shape == (2_000, n_features + 1)
    assert frame["target"].dtype == np.float64
    assert set(frame["segment"]) == {"A", "B", "C", "D"}
    assert frame.drop(columns="target").isna().any().sum() >= 1
    ds = build_dataset(frame, target="target")
    assert ds.schema.task == "regression"
    assert len(ds.schema.features) == n_features
    assert ds.schema.categorical_features == ("segment",)


def test_regression_is_learnable_and_deterministic() -> None:
    frame = generate_regression(3_000, seed=2)
    pd.testing.assert_frame_equal(frame, generate_regression(3_000, seed=2))
    assert not frame.equals(generate_regression(3_000, seed=3))
    X = pd.get_dummies(frame.drop(columns="target"), dtype=float).fillna(0.0).to_numpy()
    X = np.column_stack([X, np.ones(len(X))])
    coef, *_ = np.linalg.lstsq(X, frame["target"].to_numpy(), rcond=None)
    residual = frame["target"].to_numpy() - X @ coef
    r2 = 1 - residual.var() / frame["target"].var()
    assert r2 > 0.6


def test_regression_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="n_features must be at least 2"):
        generate_regression(10, n_features=1)
