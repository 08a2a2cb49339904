"""Feature prep: a scikit-learn ``ColumnTransformer`` to fit, a numpy fast path to serve.

Numerics are median-imputed then standardised; categorical and binary features are
most-frequent-imputed then one-hot encoded, unseen categories becoming all-zero rows (scikit-learn's
``handle_unknown="ignore"``). Output columns: numerics first, then ``"<feature>=<category>"``, each
group in schema order.

The fitted transformer is exported as a :class:`PreprocessorSpec` (``preprocessor.json``: plain
data, no pickle) and :class:`FastTransform` applies it with numpy alone. scikit-learn is imported
lazily inside the fit functions so that a model server, which only needs the fast path, never pays
for importing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop.errors import BundleError, DataValidationError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.compose import ColumnTransformer

    from kubeloop.data import Schema

__all__ = [
    "SPEC_FORMAT",
    "CategoricalStep",
    "FastTransform",
    "NumericStep",
    "PreprocessorSpec",
    "TransformResult",
    "build_column_transformer",
    "fit_preprocessor",
]

SPEC_FORMAT = 1
_FIX = "re-create the bundle with `kubeloop train`"


@dataclass(frozen=True)
class NumericStep:
    """Median imputation then standardisation ``(x - mean) / scale`` of one numeric feature."""

    name: str
    median: float
    mean: float
    scale: float


@dataclass(frozen=True)
class CategoricalStep:
    """Most-frequent imputation (``fill``) then one-hot encoding over ``categories``."""

    name: str
    fill: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class PreprocessorSpec:
    """The fitted feature transform as plain data: the content of ``preprocessor.json``."""

    numeric: tuple[NumericStep, ...]
    categorical: tuple[CategoricalStep, ...]
    output_columns: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.numeric] + [s.name for s in self.categorical]
        if not names or len(set(names)) != len(names):
            raise BundleError(f"Preprocessor spec needs distinct features, got {names}; {_FIX}.")
        for step in self.numeric:
            values = (step.median, step.mean, step.scale)
            if not all(np.isfinite(values)) or step.scale <= 0:
                raise BundleError(
                    f"Preprocessor spec: numeric feature {step.name!r} has median/mean/scale "
                    f"{values}; they must be finite and the scale positive; {_FIX}."
                )
        for cat in self.categorical:
            if cat.fill not in cat.categories or len(set(cat.categories)) != len(cat.categories):
                raise BundleError(
                    f"Preprocessor spec: categorical feature {cat.name!r} needs distinct "
                    f"categories that include its fill value {cat.fill!r}; {_FIX}."
                )
        if self.output_columns != _output_columns(self.numeric, self.categorical):
            raise BundleError(f"Preprocessor spec: output_columns do not match its steps; {_FIX}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready content of ``preprocessor.json``."""
        return {
            "format": SPEC_FORMAT,
            "numeric": [
                {"name": s.name, "median": s.median, "mean": s.mean, "scale": s.scale}
                for s in self.numeric
            ],
            "categorical": [
                {"name": s.name, "fill": s.fill, "categories": list(s.categories)}
                for s in self.categorical
            ],
            "output_columns": list(self.output_columns),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessorSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Raises:
            BundleError: the data is not a preprocessor spec of a supported format.
        """
        if data.get("format") != SPEC_FORMAT:
            raise BundleError(
                f"Preprocessor spec format {data.get('format')!r} is not supported "
                f"(expected {SPEC_FORMAT}); {_FIX}."
            )
        try:
            numeric = tuple(
                NumericStep(str(s["name"]), float(s["median"]), float(s["mean"]), float(s["scale"]))
                for s in data["numeric"]
            )
            categorical = tuple(
                CategoricalStep(str(s["name"]), str(s["fill"]), tuple(map(str, s["categories"])))
                for s in data["categorical"]
            )
            output_columns = tuple(map(str, data["output_columns"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"Preprocessor spec is malformed ({exc!r}); {_FIX}.") from None
        return cls(numeric=numeric, categorical=categorical, output_columns=output_columns)


def _output_columns(
    numeric: Sequence[NumericStep], categorical: Sequence[CategoricalStep]
) -> tuple[str, ...]:
    one_hot = (_one_hot_name(s.name, c) for s in categorical for c in s.categories)
    return (*(s.name for s in numeric), *one_hot)


def _one_hot_name(feature: str, category: object) -> str:
    # Module-level (not a lambda) so the fitted OneHotEncoder stays picklable for Ray/KFP.
    return f"{feature}={category}"


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
    for feature in schema.features:
        column = X[feature.name]
        if column.isna().all():
            raise DataValidationError(
                f"Column {feature.name!r} has no values in the training rows; drop it or "
                "provide data for it."
            )
        if feature.is_numeric and np.isinf(column.to_numpy(dtype=np.float64)).any():
            raise DataValidationError(
                f"Column {feature.name!r} holds infinite values; replace them with numbers "
                "or leave them empty (missing)."
            )


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


@dataclass(frozen=True)
class TransformResult:
    """Output of :meth:`FastTransform.transform_columns`.

    Attributes:
        matrix: float64 array of shape ``(rows, len(spec.output_columns))``.
        imputed: feature -> rows whose value was missing and imputed (numeric NaN, categorical
            None); features without any are absent.
        unknown: categorical feature -> rows with a category unseen in training (encoded as all
            zeros); features without any are absent.
    """

    matrix: np.ndarray
    imputed: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)


class FastTransform:
    """Apply a :class:`PreprocessorSpec` with numpy alone (the serving path).

    Args:
        spec: the fitted transform, e.g. ``PreprocessorSpec.from_dict(json.load(f))``.
    """

    def __init__(self, spec: PreprocessorSpec) -> None:
        self.spec = spec
        self.output_columns = spec.output_columns
        self._numeric_names = tuple(s.name for s in spec.numeric)
        self._medians = np.array([s.median for s in spec.numeric], dtype=np.float64)
        self._means = np.array([s.mean for s in spec.numeric], dtype=np.float64)
        self._scales = np.array([s.scale for s in spec.numeric], dtype=np.float64)
        # Per categorical feature: category -> absolute output column, and the fill's column.
        self._categorical: list[tuple[str, dict[str, int], int]] = []
        offset = len(spec.numeric)
        for step in spec.categorical:
            lookup = {c: offset + i for i, c in enumerate(step.categories)}
            self._categorical.append((step.name, lookup, lookup[step.fill]))
            offset += len(step.categories)
        self._width = offset
        self._features = self._numeric_names + tuple(s.name for s in spec.categorical)

    def _row_count(self, columns: Mapping[str, Any]) -> int:
        try:
            lengths = [len(columns[name]) for name in self._features]
        except KeyError:
            absent = [name for name in self._features if name not in columns]
            raise DataValidationError(
                f"Feature(s) {', '.join(map(repr, absent))} missing from the input; every row "
                f"needs all {len(self._features)} features of the model's schema."
            ) from None
        except TypeError:
            scalar = next(n for n in self._features if not hasattr(columns[n], "__len__"))
            raise DataValidationError(
                f"Feature {scalar!r} must be a column (a sequence with one value per row), "
                f"got {type(columns[scalar]).__name__}."
            ) from None
        if lengths.count(lengths[0]) != len(lengths):
            shown = dict(zip(self._features, lengths, strict=True))
            raise DataValidationError(
                f"Feature columns differ in length ({shown}); give every feature one value per row."
            )
        return lengths[0]

    def _numeric_block(self, columns: Mapping[str, Any], rows: int) -> np.ndarray:
        # One conversion for all numeric columns: per-column numpy calls dominate single-row
        # latency on the serving path.
        try:
            block = np.array([columns[name] for name in self._numeric_names], dtype=np.float64).T
        except (TypeError, ValueError):
            block = np.empty((0, 0))
        if block.shape != (rows, len(self._numeric_names)):
            for name in self._numeric_names:
                try:
                    np.asarray(columns[name], dtype=np.float64).reshape(rows)
                except (TypeError, ValueError):
                    raise DataValidationError(
                        f"Feature {name!r} must be numeric (a number or null, one per row); got "
                        f"values such as {list(columns[name])[:3]!r}."
                    ) from None
            raise DataValidationError(
                f"Numeric features {list(self._numeric_names)} must be flat columns of "
                f"{rows} values each; got an array of shape {block.shape} after stacking."
            )
        if np.isinf(block).any():
            name = self._numeric_names[int(np.nonzero(np.isinf(block).any(axis=0))[0][0])]
            raise DataValidationError(
                f"Feature {name!r} is infinite; send a finite number or null (imputed)."
            )
        return block

    def transform_columns(self, columns: Mapping[str, Any]) -> TransformResult:
        """Transform one column per feature (numeric: float64 with NaN; categorical: str/None).

        Columns not in the spec are ignored. Categorical values that are not already one of the
        trained category strings are normalised with :func:`kubeloop.data.normalize_category`
        before they count as unknown.

        Raises:
            DataValidationError: a feature is absent, columns differ in length, or a numeric
                column holds text or infinity.
        """
        rows = self._row_count(columns)
        matrix = np.zeros((rows, self._width), dtype=np.float64)
        imputed: dict[str, int] = {}
        unknown: dict[str, int] = {}
        if self._numeric_names:
            block = self._numeric_block(columns, rows)
            missing = np.isnan(block)
            if missing.any():
                block = np.where(missing, self._medians, block)
                counts = missing.sum(axis=0).tolist()
                imputed.update(
                    (n, c) for n, c in zip(self._numeric_names, counts, strict=True) if c
                )
            # Same two IEEE operations, in the same order, as StandardScaler.transform.
            matrix[:, : len(self._numeric_names)] = (block - self._means) / self._scales
        if self._categorical:
            codes = np.array(self._category_codes(columns, imputed, unknown), dtype=np.intp)
            codes = codes.reshape(len(self._categorical), rows)
            row_index = np.arange(rows)
            if unknown:  # unseen categories keep an all-zero one-hot block
                known = codes >= 0
                matrix[np.broadcast_to(row_index, codes.shape)[known], codes[known]] = 1.0
            else:
                matrix[row_index, codes] = 1.0
        return TransformResult(matrix=matrix, imputed=imputed, unknown=unknown)

    def _category_codes(
        self, columns: Mapping[str, Any], imputed: dict[str, int], unknown: dict[str, int]
    ) -> list[list[int]]:
        # Per feature: the output column of each row's category, -1 when unseen. A dict lookup
        # per value is the fast path (a single request row costs a microsecond per feature).
        result = []
        for name, lookup, fill in self._categorical:
            column = columns[name]
            values = column.tolist() if isinstance(column, np.ndarray) else list(column)
            get = lookup.get
            try:
                codes = [get(v, -1) for v in values]
            except TypeError:  # unhashable cells (lists, dicts) are never categories
                raise DataValidationError(
                    f"Feature {name!r} must hold category strings or null; got values such as "
                    f"{values[:3]!r}."
                ) from None
            if -1 in codes:
                self._resolve(codes, values, lookup, fill, name, imputed, unknown)
            result.append(codes)
        return result

    @staticmethod
    def _resolve(
        codes: list[int],
        values: list[Any],
        lookup: dict[str, int],
        fill: int,
        name: str,
        imputed: dict[str, int],
        unknown: dict[str, int],
    ) -> None:
        # Rare path: missing values, unseen categories, or values not yet normalised (1.0, " x").
        from kubeloop.data import normalize_category

        n_missing = n_unknown = 0
        for i, code in enumerate(codes):
            if code >= 0:
                continue
            value = normalize_category(values[i])
            if value is None:
                codes[i] = fill
                n_missing += 1
            else:
                codes[i] = lookup.get(value, -1)
                n_unknown += codes[i] < 0
        if n_missing:
            imputed[name] = n_missing
        if n_unknown:
            unknown[name] = n_unknown

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Transform a feature frame (training/evaluation convenience); same output as sklearn's.

        Raises:
            DataValidationError: as :meth:`transform_columns`.
        """
        absent = [name for name in self._features if name not in X.columns]
        if absent:
            raise DataValidationError(
                f"Feature column(s) {absent} missing from the frame; pass all schema features."
            )
        columns: dict[str, np.ndarray] = {}
        for name in self._numeric_names:
            try:
                columns[name] = X[name].to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                raise DataValidationError(
                    f"Column {name!r} must be numeric; got values such as "
                    f"{X[name].head(3).tolist()!r}."
                ) from None
        for name, _, _ in self._categorical:
            columns[name] = X[name].to_numpy(dtype=object)
        return self.transform_columns(columns).matrix
