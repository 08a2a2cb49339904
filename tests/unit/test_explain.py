"""Explanations: contributions per input feature add up to the model's margin, for every model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost

from kubeloop.bundle.explain import Explainer, global_importance
from kubeloop.bundle.models import LinearModel, XGBoostModel
from kubeloop.data import build_dataset
from kubeloop.data.synth import generate_churn, generate_regression
from kubeloop.features import FastTransform, fit_preprocessor

CASES = {
    "binary": ("churned", {"objective": "binary:logistic"}),
    "multiclass": ("contract", {"objective": "multi:softprob", "num_class": 3}),
    "regression": ("target", {"objective": "reg:squarederror"}),
}


def _data(case: str) -> tuple[object, object, np.ndarray]:
    target, _ = CASES[case]
    frame = generate_regression(400, seed=1) if case == "regression" else generate_churn(400)
    dataset = build_dataset(frame, target=target)
    _, spec = fit_preprocessor(dataset.X, dataset.schema)
    return dataset, spec, FastTransform(spec).transform(dataset.X)


def _xgboost(case: str, *, forest: bool = False) -> tuple[object, object, XGBoostModel, np.ndarray]:
    dataset, spec, matrix = _data(case)
    params = {**CASES[case][1], "max_depth": 4, "eta": 0.3, "nthread": 1}
    if forest:
        params.update({"num_parallel_tree": 5, "subsample": 0.8, "colsample_bynode": 0.8})
    booster = xgboost.train(params, xgboost.DMatrix(matrix, label=dataset.y), num_boost_round=15)
    n_classes = len(dataset.schema.classes) or 1
    kind = "random_forest" if forest else "xgboost"
    model = XGBoostModel(booster, kind=kind, task=dataset.schema.task, n_classes=n_classes)
    return dataset, spec, model, matrix


def _link(case: str, margin: np.ndarray) -> np.ndarray:
    if case == "binary":
        return np.asarray(1.0 / (1.0 + np.exp(-margin[:, 0])))
    if case == "regression":
        return np.asarray(margin[:, 0])
    e = np.exp(margin - margin.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("forest", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_treeshap_adds_up_to_the_margin_per_input_feature(case: str, forest: bool) -> None:
    dataset, spec, model, matrix = _xgboost(case, forest=forest)
    matrix = matrix.copy()
    matrix[::7, 0] = np.nan  # missing values follow the trees' default branch
    explanation = Explainer(model, spec, dataset.schema.feature_names).explain(matrix)
    groups = 3 if case == "multiclass" else 1
    features = dataset.schema.feature_names
    assert explanation.features == features
    assert explanation.contributions.shape == (len(matrix), groups, len(features))
    total = explanation.contributions.sum(axis=2) + explanation.bias
    np.testing.assert_allclose(total, explanation.margin, atol=1e-5, rtol=0)
    # the margin is the model's own: through the link it gives the prediction
    np.testing.assert_allclose(_link(case, explanation.margin), model.predict(matrix), atol=1e-5)


def test_one_hot_columns_are_summed_into_their_feature() -> None:
    dataset, spec, model, matrix = _xgboost("binary")
    raw = model.booster.predict(xgboost.DMatrix(matrix[:20]), pred_contribs=True)
    explanation = Explainer(model, spec, dataset.schema.feature_names).explain(matrix[:20])
    columns = list(spec.output_columns)
    for step in spec.categorical:
        wanted = raw[:, [columns.index(f"{step.name}={c}") for c in step.categories]].sum(axis=1)
        got = explanation.contributions[:, 0, dataset.schema.feature_names.index(step.name)]
        np.testing.assert_allclose(got, wanted, atol=1e-6)
    for step in spec.numeric:
        got = explanation.contributions[:, 0, dataset.schema.feature_names.index(step.name)]
        np.testing.assert_allclose(got, raw[:, columns.index(step.name)], atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_linear_terms_add_up_to_the_margin(case: str) -> None:
    dataset, spec, matrix = _data(case)
    rng = np.random.default_rng(3)
    rows = 3 if case == "multiclass" else 1
    model = LinearModel(
        rng.normal(size=(rows, matrix.shape[1])),
        rng.normal(size=rows),
        task=dataset.schema.task,
        n_classes=len(dataset.schema.classes) or 1,
    )
    explanation = Explainer(model, spec, dataset.schema.feature_names).explain(matrix)
    total = explanation.contributions.sum(axis=2) + explanation.bias
    np.testing.assert_allclose(total, explanation.margin, atol=1e-9)
    np.testing.assert_allclose(_link(case, explanation.margin), model.predict(matrix), atol=1e-9)
    # a numeric feature's term is coefficient x its standardized value
    first = spec.numeric[0].name
    index = dataset.schema.feature_names.index(first)
    np.testing.assert_allclose(
        explanation.contributions[:, 0, index], model.coef[0, 0] * matrix[:, 0], atol=1e-12
    )


def test_global_importance_is_mean_absolute_contribution() -> None:
    dataset, spec, model, matrix = _xgboost("multiclass")
    explanation = Explainer(model, spec, dataset.schema.feature_names).explain(matrix)
    importance = global_importance(explanation)
    assert list(importance) == list(dataset.schema.feature_names)
    expected = np.abs(explanation.contributions).sum(axis=1).mean(axis=0)
    np.testing.assert_allclose(list(importance.values()), expected)
    assert max(importance.values()) > 0


def test_wrong_width_is_refused() -> None:
    dataset, spec, model, matrix = _xgboost("binary")
    with pytest.raises(ValueError, match=r"expected a \(rows, \d+\) matrix"):
        Explainer(model, spec, dataset.schema.feature_names).explain(matrix[:, :-1])


def test_categorical_columns_transform_like_lists() -> None:
    """Batch scoring hands the transform pandas Categoricals: same matrix and counts."""
    dataset, spec, _ = _data("binary")
    frame = dataset.X.head(300).copy()
    name = spec.categorical[0].name
    values = frame[name].astype(object).to_numpy()
    values[:5] = None  # missing -> imputed
    values[5:8] = "never seen"  # unknown -> all-zero block
    values[8:10] = f" {values[20]} "  # normalised to a known category
    frame[name] = values
    transform = FastTransform(spec)
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    plain = transform.transform_columns(
        {c: (v.tolist() if v.dtype == object else v) for c, v in columns.items()}
    )
    fast = transform.transform_columns(
        {c: (pd.Categorical(v) if v.dtype == object else v) for c, v in columns.items()}
    )
    np.testing.assert_array_equal(fast.matrix, plain.matrix)
    assert fast.imputed == plain.imputed and fast.unknown == plain.unknown
    assert fast.unknown[name] == 3 and fast.imputed[name] >= 5


def test_categoricals_with_the_same_categories_in_another_order_and_float32() -> None:
    """The per-feature table of a Categorical's categories is reused only for the same
    categories object (unordered dtypes compare equal in any order); float32 storage holds the
    float64 values rounded."""
    dataset, spec, _ = _data("binary")
    frame = dataset.X.head(200)
    transform = FastTransform(spec)
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    plain = transform.transform_columns(
        {c: (v.tolist() if v.dtype == object else v) for c, v in columns.items()}
    ).matrix
    for reverse in (False, True, False):
        encoded = {}
        for c, v in columns.items():
            if v.dtype == object:
                categories = sorted(set(v.tolist()), reverse=reverse)
                encoded[c] = pd.Categorical(v, categories=categories)
            else:
                encoded[c] = v
        first = transform.transform_columns(encoded).matrix
        again = transform.transform_columns(  # a slice shares the categories: the cached table
            {c: v[:100] for c, v in encoded.items()}, dtype=np.float32
        ).matrix
        np.testing.assert_array_equal(first, plain)
        assert again.dtype == np.float32
        np.testing.assert_array_equal(again, plain[:100].astype(np.float32))


@pytest.mark.parametrize(
    ("case", "forest"), [("binary", False), ("multiclass", False), ("binary", True)]
)
def test_tabulated_treeshap_equals_xgboost(case: str, forest: bool) -> None:
    from kubeloop.bundle._treeshap import TreeShap

    _, _, model, matrix = _xgboost(case, forest=forest)
    matrix = matrix[:150].copy()
    matrix[::3, 1] = np.nan
    want = model.booster.predict(xgboost.DMatrix(matrix), pred_contribs=True, strict_shape=True)
    got = TreeShap.from_booster(model.booster).contributions(matrix)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_xgboost_treeshap_is_the_fallback() -> None:
    """A model too large to tabulate is explained by XGBoost's own TreeSHAP, same values."""
    from kubeloop.bundle._treeshap import TreeShap

    dataset, spec, model, matrix = _xgboost("binary")
    fast = Explainer(model, spec, dataset.schema.feature_names).explain(matrix[:40])
    with pytest.raises(ValueError, match="exceed 8 entries"):
        TreeShap.from_booster(model.booster, max_entries=8)
    slow = Explainer(model, spec, dataset.schema.feature_names, max_table_entries=8)
    assert slow._tables is None
    explained = slow.explain(matrix[:40])
    np.testing.assert_allclose(explained.contributions, fast.contributions, atol=1e-5)
    np.testing.assert_allclose(explained.margin, fast.margin, atol=1e-5)


def test_global_importance_explains_at_most_a_fixed_draw_of_test_rows() -> None:
    from kubeloop.training.workflow import IMPORTANCE_ROWS, _importance_rows

    assert _importance_rows(IMPORTANCE_ROWS).tolist() == list(range(IMPORTANCE_ROWS))
    drawn = _importance_rows(4128)
    assert len(drawn) == len(set(drawn.tolist())) == IMPORTANCE_ROWS
    assert drawn.tolist() == sorted(drawn.tolist()) and drawn.min() >= 0 and drawn.max() < 4128
    assert (drawn == _importance_rows(4128)).all()  # the same rows every run
