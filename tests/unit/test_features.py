"""kubeloop.features: the sklearn transformer, its JSON spec, and the numpy fast path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle.preprocessor import CategoricalStep, NumericStep, PreprocessorSpec
from kubeloop.bundle.schema import FeatureInfo, Schema
from kubeloop.data import load_dataset, split_dataset
from kubeloop.errors import BundleError, DataValidationError
from kubeloop.features import (
    FastTransform,
    TransformResult,
    build_column_transformer,
    fit_preprocessor,
)

TOLERANCE = 1e-9

SCHEMA = Schema(
    features=(
        FeatureInfo("tenure", "numeric"),
        FeatureInfo("plan", "categorical", categories=("basic", "plus", "pro")),
        FeatureInfo("charges", "numeric"),
        FeatureInfo("constant", "numeric"),
        FeatureInfo("paperless", "binary", categories=("No", "Yes")),
        FeatureInfo("region", "categorical", categories=("east", "north", "west")),
    ),
    target="churned",
    task="classification",
    classes=("No", "Yes"),
)


def _frame(rows: int, *, seed: int, unseen: bool = False) -> pd.DataFrame:
    """Features with missing values everywhere; ``unseen`` adds categories absent in training."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, rows).astype(np.float64)
    tenure[rng.random(rows) < 0.1] = np.nan
    charges = rng.normal(70.0, 30.0, rows)
    charges[rng.random(rows) < 0.05] = np.nan
    plans = ["basic", "plus", "pro", "team"] if unseen else ["basic", "plus", "pro"]
    plan = rng.choice(np.array(plans, dtype=object), rows)
    plan[rng.random(rows) < 0.1] = None
    paperless = rng.choice(np.array(["No", "Yes"], dtype=object), rows, p=[0.3, 0.7])
    paperless[rng.random(rows) < 0.05] = None
    regions = ["east", "north", "west", "south"] if unseen else ["east", "north", "west"]
    region = rng.choice(np.array(regions, dtype=object), rows)
    return pd.DataFrame(
        {
            "tenure": tenure,
            "plan": plan,
            "charges": charges,
            "constant": np.full(rows, 3.5),
            "paperless": paperless,
            "region": region,
            "ignored": rng.random(rows),  # not in the schema: both paths must drop it
        }
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[object, PreprocessorSpec]:
    return fit_preprocessor(_frame(400, seed=1), SCHEMA)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def test_spec_mirrors_sklearn_layout(fitted: tuple[object, PreprocessorSpec]) -> None:
    ct, spec = fitted
    assert [s.name for s in spec.numeric] == ["tenure", "charges", "constant"]
    assert [s.name for s in spec.categorical] == ["plan", "paperless", "region"]
    assert spec.output_columns == tuple(ct.get_feature_names_out())  # type: ignore[attr-defined]
    assert spec.output_columns[:4] == ("tenure", "charges", "constant", "plan=basic")
    constant = spec.numeric[2]
    assert (constant.median, constant.mean, constant.scale) == (3.5, 3.5, 1.0)
    train = _frame(400, seed=1)
    assert spec.numeric[0].median == float(np.nanmedian(train["tenure"]))
    assert spec.categorical[1].fill == train["paperless"].value_counts().idxmax()
    assert spec.categorical[2].categories == ("east", "north", "west")


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("unseen", [False, True])
def test_fast_transform_equals_sklearn(
    fitted: tuple[object, PreprocessorSpec], seed: int, unseen: bool
) -> None:
    ct, spec = fitted
    X = _frame(300, seed=seed, unseen=unseen)
    expected = ct.transform(X)  # type: ignore[attr-defined]
    actual = FastTransform(spec).transform(X)
    assert actual.dtype == np.float64
    assert _max_diff(actual, expected) <= TOLERANCE


def test_nan_in_categorical_column_is_missing_like_none(
    fitted: tuple[object, PreprocessorSpec],
) -> None:
    ct, spec = fitted
    X = _frame(50, seed=4)
    X.loc[[0, 1], "plan"] = np.nan
    X.loc[2, "plan"] = None
    result = FastTransform(spec).transform_columns({name: X[name].to_numpy() for name in X.columns})
    assert _max_diff(result.matrix, ct.transform(X)) <= TOLERANCE  # type: ignore[attr-defined]
    assert result.imputed["plan"] == int(X["plan"].isna().sum())


def test_spec_json_round_trip(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    text = json.dumps(spec.to_dict())
    again = PreprocessorSpec.from_dict(json.loads(text))
    assert again == spec
    X = _frame(120, seed=5, unseen=True)
    assert np.array_equal(FastTransform(again).transform(X), FastTransform(spec).transform(X))


def test_counts_of_imputed_and_unknown(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    X = _frame(200, seed=6, unseen=True)
    result = FastTransform(spec).transform_columns({n: X[n].to_numpy() for n in X.columns})
    assert isinstance(result, TransformResult)
    expected_imputed = {
        name: int(X[name].isna().sum()) for name in ("tenure", "charges", "plan", "paperless")
    }
    assert result.imputed == {k: v for k, v in expected_imputed.items() if v}
    assert result.imputed["tenure"] > 0 and result.imputed["plan"] > 0
    assert result.unknown == {
        "plan": int((X["plan"] == "team").sum()),
        "region": int((X["region"] == "south").sum()),
    }
    start = spec.output_columns.index("region=east")
    south = (X["region"] == "south").to_numpy()
    assert not result.matrix[south, start : start + 3].any()  # unseen -> all-zero one-hot


def test_single_row_of_one_element_arrays(fitted: tuple[object, PreprocessorSpec]) -> None:
    ct, spec = fitted
    row = {
        "tenure": np.array([np.nan]),
        "plan": np.array(["pro"], dtype=object),
        "charges": np.array([80.0]),
        "constant": np.array([3.5]),
        "paperless": np.array([None], dtype=object),
        "region": np.array(["mars"], dtype=object),
    }
    result = FastTransform(spec).transform_columns(row)
    assert result.matrix.shape == (1, len(spec.output_columns))
    frame = pd.DataFrame({name: values for name, values in row.items()})
    assert _max_diff(result.matrix, ct.transform(frame)) <= TOLERANCE  # type: ignore[attr-defined]
    assert result.imputed == {"tenure": 1, "paperless": 1}
    assert result.unknown == {"region": 1}


def test_rows_one_at_a_time_equal_the_batch(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    fast = FastTransform(spec)
    X = _frame(60, seed=8, unseen=True)
    columns = {n: X[n].to_numpy() for n in X.columns}
    batch = fast.transform_columns(columns)
    for i in range(len(X)):
        one = fast.transform_row({n: column[i] for n, column in columns.items()})
        assert one is not None and np.array_equal(one.matrix, batch.matrix[i : i + 1])
    # codes are kept only for features whose every value was a trained category as is
    assert "plan" not in batch.codes and "region" not in batch.codes
    clean = fast.transform_columns({**columns, "region": np.array(["east"] * 60, dtype=object)})
    assert clean.codes["region"].tolist() == [spec.output_columns.index("region=east")] * 60


def test_unnormalised_categories_are_normalised(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    fast = FastTransform(spec)
    base = {
        "tenure": np.array([1.0, 1.0]),
        "charges": np.array([1.0, 1.0]),
        "constant": np.array([1.0, 1.0]),
        "paperless": np.array(["Yes", "Yes"], dtype=object),
        "region": np.array(["east", "east"], dtype=object),
    }
    clean = fast.transform_columns({**base, "plan": np.array(["pro", None], dtype=object)})
    messy = fast.transform_columns({**base, "plan": np.array([" pro ", ""], dtype=object)})
    assert np.array_equal(clean.matrix, messy.matrix)
    assert messy.imputed == {"plan": 1} and messy.unknown == {}


def test_missing_feature_is_named(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    X = _frame(5, seed=7)
    columns = {n: X[n].to_numpy() for n in X.columns if n != "charges"}
    with pytest.raises(DataValidationError, match="'charges' missing"):
        FastTransform(spec).transform_columns(columns)
    with pytest.raises(DataValidationError, match="'region'"):
        FastTransform(spec).transform(X.drop(columns=["region"]))


def _objects(*values: object) -> np.ndarray:
    """An object array holding ``values`` as they are (lists stay list cells)."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


@pytest.mark.parametrize(
    ("column", "values", "match"),
    [
        ("charges", _objects("cheap"), "'charges' must be numeric"),
        ("charges", np.array([np.inf]), "'charges' is infinite"),
        ("plan", _objects(["pro"]), "'plan' must hold category strings"),
    ],
)
def test_bad_values_are_named(
    fitted: tuple[object, PreprocessorSpec], column: str, values: np.ndarray, match: str
) -> None:
    _, spec = fitted
    columns = {name: s.to_numpy()[:1] for name, s in _frame(3, seed=8).items()}
    columns[column] = values
    with pytest.raises(DataValidationError, match=match):
        FastTransform(spec).transform_columns(columns)


def test_columns_of_different_lengths(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    columns = {n: s.to_numpy() for n, s in _frame(4, seed=9).items()}
    columns["tenure"] = columns["tenure"][:2]
    with pytest.raises(DataValidationError, match="differ in length"):
        FastTransform(spec).transform_columns(columns)


def test_scalar_and_nested_columns_are_refused(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    columns: dict[str, object] = {n: s.to_numpy() for n, s in _frame(2, seed=14).items()}
    with pytest.raises(DataValidationError, match="'tenure' must be a column"):
        FastTransform(spec).transform_columns({**columns, "tenure": 3.0})
    with pytest.raises(DataValidationError, match="must be flat columns"):
        FastTransform(spec).transform_columns({**columns, "charges": np.ones((2, 1))})


def test_empty_input_gives_empty_matrix(fitted: tuple[object, PreprocessorSpec]) -> None:
    _, spec = fitted
    matrix = FastTransform(spec).transform(_frame(10, seed=10).iloc[:0])
    assert matrix.shape == (0, len(spec.output_columns))


def test_all_missing_training_column_is_refused() -> None:
    X = _frame(40, seed=11)
    X["plan"] = None
    with pytest.raises(DataValidationError, match="'plan' has no values"):
        fit_preprocessor(X, SCHEMA)


def test_absent_training_column_is_refused() -> None:
    with pytest.raises(DataValidationError, match="'constant'"):
        fit_preprocessor(_frame(40, seed=12).drop(columns=["constant"]), SCHEMA)


def test_only_numeric_or_only_categorical_schemas() -> None:
    X = _frame(60, seed=13)
    for kinds in ({"numeric"}, {"categorical", "binary"}):
        schema = Schema(
            features=tuple(f for f in SCHEMA.features if f.kind in kinds),
            target="churned",
            task="classification",
            classes=("No", "Yes"),
        )
        ct, spec = fit_preprocessor(X, schema)
        assert _max_diff(FastTransform(spec).transform(X), ct.transform(X)) <= TOLERANCE
        assert len(build_column_transformer(schema).transformers) == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format=99),
        lambda d: d["numeric"][0].update(scale=0.0),
        lambda d: d["numeric"][0].pop("mean"),
        lambda d: d["categorical"][0].update(fill="not-a-category"),
        lambda d: d.update(output_columns=d["output_columns"][::-1]),
    ],
)
def test_malformed_spec_is_refused(fitted: tuple[object, PreprocessorSpec], mutate: object) -> None:
    _, spec = fitted
    data = json.loads(json.dumps(spec.to_dict()))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(BundleError, match="Preprocessor spec"):
        PreprocessorSpec.from_dict(data)


def test_spec_is_plain_data() -> None:
    spec = PreprocessorSpec(
        numeric=(NumericStep("a", 1.0, 0.5, 2.0),),
        categorical=(CategoricalStep("b", "x", ("x", "y")),),
        output_columns=("a", "b=x", "b=y"),
    )
    result = FastTransform(spec).transform_columns(
        {"a": np.array([np.nan, 4.5]), "b": np.array(["y", "z"], dtype=object)}
    )
    assert np.array_equal(result.matrix, [[0.25, 0.0, 1.0], [2.0, 0.0, 0.0]])
    assert result.imputed == {"a": 1} and result.unknown == {"b": 1}


def test_fast_path_does_not_import_sklearn(
    fitted: tuple[object, PreprocessorSpec], tmp_path: Path
) -> None:
    _, spec = fitted
    path = tmp_path / "preprocessor.json"
    path.write_text(json.dumps(spec.to_dict()))
    script = (
        "import json, sys, numpy as np\n"
        "from kubeloop.bundle.preprocessor import PreprocessorSpec\n"
        "from kubeloop.features import FastTransform\n"
        f"spec = PreprocessorSpec.from_dict(json.load(open({str(path)!r})))\n"
        "cols = {s.name: np.array([1.0]) for s in spec.numeric}\n"
        "cols.update({s.name: np.array([None], dtype=object) for s in spec.categorical})\n"
        "FastTransform(spec).transform_columns(cols)\n"
        "print('sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("fixture", "target"), [("telco_csv", "Churn"), ("housing_csv", "median_house_value")]
)
def test_shared_dataset_test_split_equals_sklearn(
    request: pytest.FixtureRequest, fixture: str, target: str
) -> None:
    path = request.getfixturevalue(fixture)
    splits = split_dataset(load_dataset(path, target=target), seed=0)
    ct, spec = fit_preprocessor(splits.train.X, splits.schema)
    expected = ct.transform(splits.test.X)
    actual = FastTransform(spec).transform(splits.test.X)
    assert actual.shape == (len(splits.test.X), len(spec.output_columns))
    assert _max_diff(actual, expected) <= TOLERANCE
    again = FastTransform(PreprocessorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))))
    assert np.array_equal(again.transform(splits.test.X), actual)
