"""The reference profile: the training distribution that travels with the model.

``reference_profile.json`` is the drift baseline. The server counts live traffic into the same
bins (``kubeloop_feature_bin_total{feature, bin}``) and the monitor compares the two with PSI,
so both sides must bin identically. This module owns that single rule:

- **Numeric** features: ``edges`` are inner quantile edges, strictly increasing; bin ``i`` of a
  value ``x`` is ``numpy.searchsorted(edges, x, side="left")``, so bin 0 is ``(-inf, e1]`` and
  the last bin is ``(e_k, inf)``; a value equal to an edge goes to the lower bin. Edges are
  observed training values (the ``inverted_cdf`` quantile) and never the maximum, so every
  reference bin holds at least one row; a constant column has no edges and a single bin.
- **Datetime** features: numeric bins over the value's seconds since 1970-01-01
  (:mod:`kubeloop.bundle.dates`), so the bins are spans of time; traffic values (ISO text,
  timestamps) are read with the same rule (:func:`bin_numbers`), and one that is not a date
  counts as missing. The entry also holds the feature's ``date_format``.
- **Categorical** (and binary) features: the bins are the category names; a value not in the
  profile goes to :data:`UNKNOWN_BIN`, whose reference count is 0 -- or, for a feature with
  the ``__other__`` category (the category cap of ``kubeloop.data``), to ``__other__``
  (:func:`unknown_label`).
- **Missing** values (NaN / ``None``) are counted apart, under ``missing`` in the profile and the
  label :data:`MISSING_BIN` when counting traffic.
- **Predictions**: binary classification profiles the probability of ``classes[1]``; multiclass
  profiles the top-class probability (the model's confidence, one number per row); regression
  profiles the predicted value. The prediction profile is always numeric.

Format (``format`` 2 when a feature is a datetime, else 1, which older versions read)::

    {"format": 1, "rows": 5000, "bins": 10,
     "features": {
        "tenure": {"kind": "numeric", "edges": [...], "counts": [...], "missing": 3},
        "Contract": {"kind": "categorical", "categories": {"One year": 1200}, "missing": 0}},
     "prediction": {"kind": "numeric", "edges": [...], "counts": [...], "missing": 0}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop.bundle.dates import column_seconds
from kubeloop.bundle.schema import OTHER_CATEGORY, Schema, normalize_category
from kubeloop.errors import ConfigError, DataValidationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MISSING_BIN",
    "PROFILE_FORMAT",
    "UNKNOWN_BIN",
    "assign_bins",
    "bin_labels",
    "bin_numbers",
    "build_reference_profile",
    "count_values",
    "has_edges",
    "numeric_profile",
    "profile_features",
    "unknown_label",
]

PROFILE_FORMAT = 2
_COMPARE_FROM, _COMPARE_EDGES = 1_024, 32  # when assign_bins counts edges instead of searching
UNKNOWN_BIN = "__unknown__"
MISSING_BIN = "missing"


def assign_bins(edges: Sequence[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin index of each value: ``numpy.searchsorted(edges, values, side="left")``.

    This is the one binning rule of kubeloop (profile, server counters, drift). Bin 0 is
    ``(-inf, edges[0]]``, bin ``i`` is ``(edges[i-1], edges[i]]``, the last bin is
    ``(edges[-1], inf)``. NaN lands in the last bin, so drop missing values first.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if values.size < _COMPARE_FROM or len(edges) > _COMPARE_EDGES:
        return np.searchsorted(edges, values, side="left")
    # The same answer for a long column and a few edges: the number of edges below each value,
    # one vectorised comparison per edge (several times faster than a binary search per value).
    bins = np.zeros(values.shape, dtype=np.intp)
    for edge in edges.tolist():
        bins += values > edge
    bins[np.isnan(values)] = len(edges)
    return bins


def _quantile_edges(finite: np.ndarray, bins: int) -> list[float]:
    if finite.size == 0:
        return []
    probabilities = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    # inverted_cdf picks observed values, so each (e_{i-1}, e_i] bin holds e_i itself.
    quantiles = np.unique(np.quantile(finite, probabilities, method="inverted_cdf"))
    # An edge at the maximum would leave the top bin empty (and a constant column with a
    # useless second bin).
    return [float(e) for e in quantiles if e < finite.max()]


def numeric_profile(values: np.ndarray, *, bins: int = 10) -> dict[str, Any]:
    """Profile of one numeric array: quantile edges, counts per bin, missing (NaN) count.

    Infinite values are counted in the outer bins but never become edges (JSON has no inf).
    """
    array = np.asarray(values, dtype=np.float64)
    missing = np.isnan(array)
    present = array[~missing]
    edges = _quantile_edges(present[np.isfinite(present)], bins)
    counts = np.bincount(assign_bins(edges, present), minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "edges": edges,
        "counts": [int(c) for c in counts],
        "missing": int(missing.sum()),
    }


def has_edges(feature_profile: Mapping[str, Any]) -> bool:
    """Whether a feature profile bins by edges (numeric, datetime) rather than by category."""
    return feature_profile["kind"] in ("numeric", "datetime")


def bin_numbers(feature_profile: Mapping[str, Any], values: Any) -> np.ndarray:
    """The float64 numbers the edges of ``feature_profile`` bin (NaN: missing): the values as
    numbers (text that is not a number is missing), or a datetime's seconds (text that is not
    a date is missing)."""
    if feature_profile["kind"] == "datetime":
        return column_seconds(values, feature_profile.get("date_format"))[0]
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    import pandas as pd  # text columns only (payload logs, batch files): never a server's path

    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)


def unknown_label(feature_profile: Mapping[str, Any]) -> str:
    """Where a categorical value outside the profile's categories is counted:
    ``__other__`` when the feature has that category, else :data:`UNKNOWN_BIN`."""
    return OTHER_CATEGORY if OTHER_CATEGORY in feature_profile["categories"] else UNKNOWN_BIN


def _categorical_profile(values: Any, known: Sequence[str]) -> dict[str, Any]:
    """Counts per normalized category: each distinct value is normalized once, not each row."""
    import pandas as pd

    counts: dict[str, int] = dict.fromkeys(known, 0)
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    per_code = np.bincount(codes[codes >= 0], minlength=len(uniques)).tolist()
    missing = int((codes < 0).sum())
    for value, count in zip(uniques.tolist(), per_code, strict=True):
        key = normalize_category(value)
        if key is None:
            missing += count
        else:
            counts[key] = counts.get(key, 0) + count
    return {
        "kind": "categorical",
        "categories": {name: counts[name] for name in sorted(counts)},
        "missing": missing,
    }


def profile_features(
    X: pd.DataFrame, schema: Schema, *, bins: int = 10, rows: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """The ``features`` part of the reference profile (see :func:`build_reference_profile`).

    Args:
        X: Feature frame (numerics float64 with NaN; categoricals str/None).
        schema: The data schema.
        bins: Number of quantile bins to aim for.
        rows: Profile only these rows of ``X`` (the training part of a whole table), taken one
            column at a time; ``None``: every row.

    Raises:
        ConfigError: ``bins`` is below 2.
        DataValidationError: a schema feature is missing from ``X``.
    """
    import pandas as pd  # here: the model server bins requests with this module, without pandas

    if bins < 2:
        raise ConfigError(f"bins must be at least 2 to profile a distribution; got {bins}.")
    absent = [name for name in schema.feature_names if name not in X.columns]
    if absent:
        raise DataValidationError(
            f"X lacks the schema feature(s) {absent}; profile the frame the model was trained on."
        )
    features: dict[str, dict[str, Any]] = {}
    for info in schema.features:
        column = X[info.name]
        if info.is_numeric:
            values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
            features[info.name] = numeric_profile(
                values if rows is None else values[rows], bins=bins
            )
        elif info.kind == "datetime":
            seconds = column_seconds(column.to_numpy(), info.date_format)[0]
            features[info.name] = {
                **numeric_profile(seconds if rows is None else seconds[rows], bins=bins),
                "kind": "datetime",
                "date_format": info.date_format,
            }
        else:
            values = column.to_numpy(dtype=object)
            features[info.name] = _categorical_profile(
                values if rows is None else values[rows], info.categories
            )
    return features


def build_reference_profile(
    X: pd.DataFrame | None,
    schema: Schema,
    predictions: np.ndarray,
    *,
    bins: int = 10,
    features: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Profile the training features and the model's predictions on them.

    Args:
        X: Feature frame in schema order (numerics float64 with NaN; categoricals str/None);
            ``None`` when ``features`` is given.
        schema: The data schema; categorical features list every schema category (count 0
            when absent from ``X``).
        predictions: ``TabularModel.predict(...)`` on the same rows: ``(n,)`` or ``(n, K)``.
        bins: Number of quantile bins to aim for (fewer when values repeat).
        features: The features' profile made earlier by :func:`profile_features` (training
            can then let the frame go before the model is trained).

    Returns:
        The ``reference_profile.json`` content (see the module docstring).

    Raises:
        ConfigError: ``bins`` is below 2.
        DataValidationError: a schema feature is missing from ``X`` or row counts disagree.
    """
    if bins < 2:
        raise ConfigError(f"bins must be at least 2 to profile a distribution; got {bins}.")
    predicted = np.asarray(predictions, dtype=np.float64)
    if predicted.ndim == 2:
        predicted = predicted.max(axis=1)  # multiclass: the top-class probability
    rows = len(predicted) if X is None else len(X)
    if predicted.shape != (rows,):
        raise DataValidationError(
            f"predictions have shape {np.asarray(predictions).shape} but X has {rows} rows; "
            "pass the model's predictions on exactly these rows."
        )
    if features is None:
        if X is None:
            raise ConfigError("build_reference_profile needs X or the features' profile.")
        features = profile_features(X, schema, bins=bins)
    return {
        "format": PROFILE_FORMAT if schema.datetime_features else 1,
        "rows": rows,
        "bins": bins,
        "features": features,
        "prediction": numeric_profile(predicted, bins=bins),
    }


def bin_labels(feature_profile: dict[str, Any]) -> list[str]:
    """Bin labels of one feature (or the prediction) profile, in bin order.

    ``"0"`` .. ``"k-1"`` for numerics; the category names then :data:`UNKNOWN_BIN` for
    categoricals. Missing values are counted apart under :data:`MISSING_BIN`.
    """
    if has_edges(feature_profile):
        return [str(i) for i in range(len(feature_profile["edges"]) + 1)]
    return [*feature_profile["categories"], UNKNOWN_BIN]


def count_values(feature_profile: dict[str, Any], values: np.ndarray) -> dict[str, int]:
    """Count ``values`` into the bins of ``feature_profile``: label -> count.

    Keys are :func:`bin_labels` plus :data:`MISSING_BIN`, all present (0 when empty), so live
    counts line up with the reference (whose unknown count is 0 and missing count is
    ``feature_profile["missing"]``).
    """
    labels = bin_labels(feature_profile)
    if has_edges(feature_profile):
        array = bin_numbers(feature_profile, values)
        missing = np.isnan(array)
        counts = np.bincount(
            assign_bins(feature_profile["edges"], array[~missing]), minlength=len(labels)
        )
        result = {label: int(c) for label, c in zip(labels, counts, strict=True)}
        result[MISSING_BIN] = int(missing.sum())
        return result
    result = dict.fromkeys([*labels, MISSING_BIN], 0)
    known = feature_profile["categories"]
    outside = unknown_label(feature_profile)
    for value in np.asarray(values, dtype=object):
        key = normalize_category(value)
        if key is None:
            result[MISSING_BIN] += 1
        else:
            result[key if key in known else outside] += 1
    return result
