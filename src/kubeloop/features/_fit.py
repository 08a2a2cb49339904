"""Building and fitting the scikit-learn ``ColumnTransformer`` (scikit-learn imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop.bundle.preprocessor import (
    CategoricalStep,
    NumericStep,
    PreprocessorSpec,
    _one_hot_name,
    _output_columns,
)
from kubeloop.errors import DataValidationError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.compose import ColumnTransformer

    from kubeloop.bundle.schema import Schema


def _missing_as_nan(X: Any) -> np.ndarray:
    # SimpleImputer only treats NaN as missing in object columns, but categorical cells are
    # None when missing (kubeloop.data's contract): map every missing marker to NaN first.
    import pandas as pd

    block = np.array(X, dtype=object)
    block[pd.isna(block)] = np.nan
    return block


def _split_features(schema: Schema) -> tuple[list[str], list[str]]:
    numeric = [f.name for f in schema.features if f.is_numeric]
    categorical = [f.name for f in schema.features if not f.is_numeric]
    return numeric, categorical


def build_column_transformer(schema: Schema) -> ColumnTransformer:
    """Return the unfitted scikit-learn transformer for ``schema`` (dense float64 output)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric, categorical = _split_features(schema)
    transformers: list[tuple[str, Pipeline, list[str]]] = []
    if numeric:
        steps = [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        encoder = OneHotEncoder(
            handle_unknown="ignore",
            sparse_output=False,
            dtype=np.float64,
            feature_name_combiner=_one_hot_name,
        )
        steps = [
            ("missing", FunctionTransformer(_missing_as_nan, feature_names_out="one-to-one")),
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("encode", encoder),
        ]
        transformers.append(("categorical", Pipeline(steps), categorical))
    return ColumnTransformer(
        transformers, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=False
    )


def _check_training_frame(X: pd.DataFrame, schema: Schema) -> None:
    missing = [name for name in schema.feature_names if name not in X.columns]
    if missing:
        raise DataValidationError(
            f"Training data lacks feature column(s) {missing}; pass the frame the schema was "
            "built from (kubeloop.data.load_dataset)."
        )


def _check_training_column(name: str, values: np.ndarray, *, numeric: bool) -> None:
    import pandas as pd

    if (np.isnan(values) if numeric else pd.isna(values)).all():
        raise DataValidationError(
            f"Column {name!r} has no values in the training rows; drop it or provide data for it."
        )
    if numeric and np.isinf(values).any():
        raise DataValidationError(
            f"Column {name!r} holds infinite values; replace them with numbers or leave them "
            "empty (missing)."
        )


def _training_column(
    X: pd.DataFrame, name: str, rows: np.ndarray | None, *, numeric: bool
) -> np.ndarray:
    """One feature column at the training rows (float64 with NaN, or objects), checked."""
    column = X[name]
    values = (
        column.to_numpy(dtype=np.float64, na_value=np.nan)
        if numeric
        else column.to_numpy(dtype=object)
    )
    values = values if rows is None else values[rows]
    _check_training_column(name, values, numeric=numeric)
    return values


def fit_preprocessor(X: pd.DataFrame, schema: Schema) -> tuple[ColumnTransformer, PreprocessorSpec]:
    """Fit the transformer on training features and export it as a spec.

    Args:
        X: training features in the layout of :class:`kubeloop.data.Dataset` (numerics float64
            with NaN, categorical/binary object columns of str or None).
        schema: the dataset's schema; fixes which features are numeric and their order.

    Returns:
        The fitted ``ColumnTransformer`` and the equivalent :class:`PreprocessorSpec`.

    Raises:
        DataValidationError: a feature column is absent, entirely missing, or infinite.
    """
    _check_training_frame(X, schema)
    for feature in schema.features:
        _training_column(X, feature.name, None, numeric=feature.is_numeric)
    transformer = build_column_transformer(schema)
    transformer.fit(X)
    numeric_names, categorical_names = _split_features(schema)
    numeric: tuple[NumericStep, ...] = ()
    categorical: tuple[CategoricalStep, ...] = ()
    if numeric_names:
        pipe = transformer.named_transformers_["numeric"]
        imputer, scaler = pipe.named_steps["impute"], pipe.named_steps["scale"]
        numeric = tuple(
            NumericStep(name, float(median), float(mean), float(scale))
            for name, median, mean, scale in zip(
                numeric_names, imputer.statistics_, scaler.mean_, scaler.scale_, strict=True
            )
        )
    if categorical_names:
        pipe = transformer.named_transformers_["categorical"]
        imputer, encoder = pipe.named_steps["impute"], pipe.named_steps["encode"]
        categorical = tuple(
            CategoricalStep(name, str(fill), tuple(str(c) for c in categories))
            for name, fill, categories in zip(
                categorical_names, imputer.statistics_, encoder.categories_, strict=True
            )
        )
    spec = PreprocessorSpec(
        numeric=numeric,
        categorical=categorical,
        output_columns=_output_columns(numeric, categorical),
    )
    return transformer, spec


def preprocessor_spec(
    X: pd.DataFrame, schema: Schema, *, rows: np.ndarray | None = None
) -> PreprocessorSpec:
    """The spec :func:`fit_preprocessor` exports, computed from the statistics alone.

    ``ColumnTransformer.fit`` transforms every training row and throws the result away (a dense
    one-hot matrix and object copies of every categorical column); this computes the same
    numbers one column at a time instead: the median of each numeric column and the mean and
    scale of its imputed values (scikit-learn's ``StandardScaler`` on that one column), and per
    categorical column the count of each distinct value (the fill is the most frequent one, the
    smallest on a tie, as ``SimpleImputer(strategy="most_frequent")`` picks; the categories
    sorted, as ``OneHotEncoder`` orders them). Training uses it; :func:`fit_preprocessor` stays
    the reference it is tested against.

    Args:
        X: Features in the layout of :class:`kubeloop.data.Dataset`.
        schema: The dataset's schema.
        rows: The training rows of ``X`` (``None``: all of them), taken column by column.

    Raises:
        DataValidationError: as :func:`fit_preprocessor`.
    """
    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    _check_training_frame(X, schema)
    numeric_names, categorical_names = _split_features(schema)
    numeric: list[NumericStep] = []
    for name in numeric_names:
        values = _training_column(X, name, rows, numeric=True)
        median = float(np.nanmedian(values))
        filled = np.where(np.isnan(values), median, values).reshape(-1, 1)
        scaler = StandardScaler().fit(filled)
        numeric.append(NumericStep(name, median, float(scaler.mean_[0]), float(scaler.scale_[0])))
    categorical: list[CategoricalStep] = []
    for name in categorical_names:
        values = _training_column(X, name, rows, numeric=False)
        counts = pd.Series(values, dtype=object).value_counts()
        counted = {str(k): int(v) for k, v in counts.items()}
        top = max(counted.values())
        fill = min(k for k, v in counted.items() if v == top)
        categorical.append(CategoricalStep(name, fill, tuple(sorted(counted))))
    return PreprocessorSpec(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        output_columns=_output_columns(tuple(numeric), tuple(categorical)),
    )
