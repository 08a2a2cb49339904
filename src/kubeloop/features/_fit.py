"""Building and fitting the scikit-learn ``ColumnTransformer`` (scikit-learn imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop.bundle.dates import CALENDAR_PARTS, calendar_features, varies_by_hour
from kubeloop.bundle.preprocessor import (
    CategoricalStep,
    DatetimeStep,
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


def _calendar(X: Any, parts: tuple[str, ...]) -> np.ndarray:
    # Module-level (not a lambda) so the fitted transformer stays picklable for Ray/KFP.
    return calendar_features(np.asarray(X, dtype=np.float64).reshape(-1), parts)


def _split_features(schema: Schema) -> tuple[list[str], list[str]]:
    numeric = [f.name for f in schema.features if f.is_numeric]
    categorical = [f.name for f in schema.features if f.is_categorical]
    return numeric, categorical


_NO_HOUR = tuple(p for p in CALENDAR_PARTS if p != "hour")


def calendar_parts(X: pd.DataFrame, schema: Schema) -> dict[str, tuple[str, ...]]:
    """The calendar parts of each datetime feature: all of them, ``hour`` only where the
    training values' times of day vary."""
    return {
        name: CALENDAR_PARTS if varies_by_hour(X[name].to_numpy(np.float64)) else _NO_HOUR
        for name in schema.datetime_features
    }


def build_column_transformer(
    schema: Schema, *, parts: dict[str, tuple[str, ...]] | None = None
) -> ColumnTransformer:
    """Return the unfitted scikit-learn transformer for ``schema`` (dense float64 output).

    Args:
        schema: The features and their kinds.
        parts: The calendar parts of each datetime feature (:func:`calendar_parts`; default:
            all of them).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric, categorical = _split_features(schema)
    transformers: list[tuple[str, Pipeline, list[str]]] = []
    if numeric:
        steps = [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        transformers.append(("numeric", Pipeline(steps), numeric))
    for name in schema.datetime_features:
        kwargs = {"parts": (parts or {}).get(name, CALENDAR_PARTS)}
        steps = [
            ("calendar", FunctionTransformer(_calendar, kw_args=kwargs, validate=False)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]
        transformers.append((f"datetime:{name}", Pipeline(steps), [name]))
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
        _training_column(X, feature.name, None, numeric=not feature.is_categorical)
    parts = calendar_parts(X, schema)
    transformer = build_column_transformer(schema, parts=parts)
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
    dates = []
    for info in schema.features:
        if info.kind != "datetime":
            continue
        pipe = transformer.named_transformers_[f"datetime:{info.name}"]
        imputer, scaler = pipe.named_steps["impute"], pipe.named_steps["scale"]
        steps = tuple(
            NumericStep(part, float(median), float(mean), float(scale))
            for part, median, mean, scale in zip(
                parts[info.name], imputer.statistics_, scaler.mean_, scaler.scale_, strict=True
            )
        )
        dates.append(DatetimeStep(info.name, info.date_format, steps))
    spec = PreprocessorSpec(
        numeric=numeric,
        categorical=categorical,
        output_columns=_output_columns(numeric, categorical, dates),
        datetime=tuple(dates),
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
    sorted, as ``OneHotEncoder`` orders them), and per datetime column the numeric statistics of
    each calendar part. Training uses it; :func:`fit_preprocessor` stays the reference it is
    tested against.

    Args:
        X: Features in the layout of :class:`kubeloop.data.Dataset`.
        schema: The dataset's schema.
        rows: The training rows of ``X`` (``None``: all of them), taken column by column.

    Raises:
        DataValidationError: as :func:`fit_preprocessor`.
    """
    import pandas as pd

    _check_training_frame(X, schema)
    numeric_names, categorical_names = _split_features(schema)
    numeric = [
        _numeric_step(name, _training_column(X, name, rows, numeric=True)) for name in numeric_names
    ]
    categorical: list[CategoricalStep] = []
    for name in categorical_names:
        values = _training_column(X, name, rows, numeric=False)
        counts = pd.Series(values, dtype=object).value_counts()
        counted = {str(k): int(v) for k, v in counts.items()}
        top = max(counted.values())
        fill = min(k for k, v in counted.items() if v == top)
        categorical.append(CategoricalStep(name, fill, tuple(sorted(counted))))
    dates = []
    for info in schema.features:
        if info.kind != "datetime":
            continue
        seconds = _training_column(X, info.name, rows, numeric=True)
        parts = CALENDAR_PARTS if varies_by_hour(seconds) else _NO_HOUR
        table = calendar_features(seconds, parts)
        steps = tuple(_numeric_step(part, table[:, i]) for i, part in enumerate(parts))
        dates.append(DatetimeStep(info.name, info.date_format, steps))
    return PreprocessorSpec(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        output_columns=_output_columns(tuple(numeric), tuple(categorical), dates),
        datetime=tuple(dates),
    )


def _numeric_step(name: str, values: np.ndarray) -> NumericStep:
    """Median imputation, then scikit-learn's ``StandardScaler``, on one column."""
    from sklearn.preprocessing import StandardScaler

    median = float(np.nanmedian(values))
    filled = np.where(np.isnan(values), median, values).reshape(-1, 1)
    scaler = StandardScaler().fit(filled)
    return NumericStep(name, median, float(scaler.mean_[0]), float(scaler.scale_[0]))
