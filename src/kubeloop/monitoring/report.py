"""Compare live traffic with a bundle's reference profile: one :class:`DriftReport`.

Counts come in as ``feature -> {bin label -> count}`` (the server's
``kubeloop_feature_bin_total{feature, bin}`` counters, a Prometheus ``increase()``, or the
payload log binned by :func:`count_frame`). Labels follow :func:`kubeloop.bundle.profile.bin_labels`
plus :data:`~kubeloop.bundle.profile.MISSING_BIN`; missing values are one more bin, so a jump in the
missing rate is drift too. A label the profile does not know (a category counted by an older
server) is folded into :data:`~kubeloop.bundle.profile.UNKNOWN_BIN`.

The verdict per feature is ``PSI >= threshold`` (Evidently's convention); KS (numerics) and
chi-squared (categoricals) are reported beside it for the reader, not used in the verdict. The
prediction distribution is scored the same way but kept out of the drift share, which counts
input features only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.bundle.profile import (
    MISSING_BIN,
    UNKNOWN_BIN,
    assign_bins,
    bin_labels,
    bin_numbers,
    has_edges,
    unknown_label,
)
from kubeloop.bundle.schema import normalize_category
from kubeloop.errors import check_range
from kubeloop.monitoring.drift import (
    DEFAULT_PSI_THRESHOLD,
    PSI_EPSILON,
    chi_square,
    drift_share,
    ks_binned,
    psi_rows,
)

__all__ = [
    "PREDICTION",
    "Counts",
    "DriftConfig",
    "DriftReport",
    "FeatureDrift",
    "align_counts",
    "compare_profile",
    "count_columns",
    "count_frame",
    "count_labels",
    "datetime_values",
    "reference_counts",
    "row_bins",
    "row_log_likelihood",
]

PREDICTION = "__prediction__"
Counts = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class DriftConfig:
    """How drift is judged.

    Attributes:
        psi_threshold: PSI at or above which a feature counts as drifted.
        feature_thresholds: Per-feature overrides of ``psi_threshold``.
        min_rows: Fewest current rows a feature needs to be judged at all.
        epsilon: PSI proportion floor (see :mod:`kubeloop.monitoring.drift`).
    """

    psi_threshold: float = DEFAULT_PSI_THRESHOLD
    feature_thresholds: Mapping[str, float] = field(default_factory=dict)
    min_rows: int = 100
    epsilon: float = PSI_EPSILON

    def __post_init__(self) -> None:
        owner = "DriftConfig"
        check_range("psi_threshold", self.psi_threshold, low=0.0, closed="neither", owner=owner)
        for feature, value in self.feature_thresholds.items():
            name = f"feature_thresholds[{feature!r}]"
            check_range(name, value, low=0.0, closed="neither", owner=owner)
        check_range("min_rows", self.min_rows, kind=int, low=1, owner=owner)

    def threshold(self, feature: str) -> float:
        """The PSI threshold that applies to ``feature``."""
        return float(self.feature_thresholds.get(feature, self.psi_threshold))


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature (or of the prediction, named :data:`PREDICTION`)."""

    feature: str
    kind: str
    rows: int
    psi: float
    threshold: float
    drifted: bool
    test: str
    statistic: float
    p_value: float


@dataclass(frozen=True)
class DriftReport:
    """Drift of one window of traffic against the reference profile."""

    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None
    rows: int

    @property
    def judged(self) -> tuple[FeatureDrift, ...]:
        """Features that had enough rows to be judged."""
        return tuple(f for f in self.features if not np.isnan(f.psi))

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the drifted input features."""
        return tuple(f.feature for f in self.features if f.drifted)

    @property
    def drift_share(self) -> float:
        """Fraction of judged input features that drifted (0.0 when none was judged)."""
        return drift_share([f.drifted for f in self.judged])

    def psi_by_feature(self) -> dict[str, float]:
        """PSI per input feature (NaN where not judged)."""
        return {f.feature: f.psi for f in self.features}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready content (NaN becomes ``None``)."""

        def clean(item: FeatureDrift) -> dict[str, Any]:
            return {
                k: (None if isinstance(v, float) and np.isnan(v) else v)
                for k, v in asdict(item).items()
            }

        return {
            "rows": self.rows,
            "drift_share": self.drift_share,
            "drifted_features": list(self.drifted_features),
            "features": [clean(f) for f in self.features],
            "prediction": clean(self.prediction) if self.prediction else None,
        }


def count_labels(feature_profile: Mapping[str, Any]) -> list[str]:
    """The bin labels counts are kept under: :func:`~kubeloop.bundle.profile.bin_labels` +
    missing."""
    return [*bin_labels(dict(feature_profile)), MISSING_BIN]


def reference_counts(feature_profile: Mapping[str, Any]) -> np.ndarray:
    """Reference counts of one feature profile, aligned with its labels (+ missing)."""
    if has_edges(feature_profile):
        counts = list(feature_profile["counts"])
    else:
        counts = [*feature_profile["categories"].values(), 0]  # the unknown bin
    return np.asarray([*counts, feature_profile.get("missing", 0)], dtype=np.float64)


def align_counts(feature_profile: Mapping[str, Any], counts: Mapping[str, float]) -> np.ndarray:
    """Live ``{label: count}`` as a vector aligned with :func:`count_labels` (unknown folded)."""
    labels = count_labels(feature_profile)
    index = {label: i for i, label in enumerate(labels)}
    vector = np.zeros(len(labels), dtype=np.float64)
    numeric = has_edges(feature_profile)
    for label, value in counts.items():
        position = index.get(label)
        if position is None:
            if numeric:
                continue  # a bin of another profile (e.g. the previous model's): ignore
            position = index[UNKNOWN_BIN]
        vector[position] += max(float(value), 0.0)
    return vector


def _categorical_codes(feature_profile: Mapping[str, Any], values: Any) -> np.ndarray:
    # Normalise each distinct value once (the one rule of kubeloop.data), then broadcast.
    if isinstance(values, pd.Categorical):  # already factorized (batch scoring)
        codes, uniques = np.asarray(values.codes), values.categories
    else:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    known = {name: i for i, name in enumerate(feature_profile["categories"])}
    unknown, missing = known.get(unknown_label(feature_profile), len(known)), len(known) + 1
    mapped = np.empty(len(uniques) + 1, dtype=np.int64)
    for i, value in enumerate(uniques):
        key = normalize_category(value)
        mapped[i] = missing if key is None else known.get(key, unknown)
    mapped[-1] = missing  # the NA sentinel -1 indexes the last slot
    return mapped[codes]


def count_frame(profile: Mapping[str, Any], frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Bin raw rows (payload log, a CSV) into the profile's bins, vectorised per column.

    Features of the profile that are absent from ``frame`` are skipped; a ``prediction``
    column, when present, is counted under :data:`PREDICTION`.
    """
    kinds = {name: spec for name, spec in profile["features"].items()}
    if profile.get("prediction"):
        kinds.setdefault("prediction", profile["prediction"])
    columns: dict[str, Any] = {}
    for name, feature_profile in kinds.items():
        if name not in frame.columns:
            continue
        series = frame[name]
        if feature_profile["kind"] == "numeric":
            columns[name] = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
        elif feature_profile["kind"] == "datetime":
            columns[name] = datetime_values(series)
        elif isinstance(series.dtype, pd.CategoricalDtype):
            columns[name] = series.array
        else:
            columns[name] = series.to_numpy(dtype=object)
    return count_columns(profile, columns)


def count_columns(
    profile: Mapping[str, Any], columns: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """:func:`count_frame` for columns already read: a float64 array (NaN: missing) per numeric
    feature and for ``"prediction"``, a ``pandas.Categorical`` or an object array per
    categorical feature. Absent features are skipped, as there."""
    result: dict[str, dict[str, float]] = {}
    names = {name: name for name in profile["features"] if name in columns}
    if "prediction" in columns and profile.get("prediction"):
        names[PREDICTION] = "prediction"
    for name, column in names.items():
        feature_profile = profile["prediction"] if name == PREDICTION else profile["features"][name]
        labels = count_labels(feature_profile)
        counts = np.bincount(row_bins(feature_profile, columns[column]), minlength=len(labels))
        result[name] = {label: float(c) for label, c in zip(labels, counts, strict=True)}
    return result


def row_bins(feature_profile: Mapping[str, Any], values: Any) -> np.ndarray:
    """The bin of every value, as positions in :func:`count_labels` (missing: the last).

    Args:
        feature_profile: One feature's entry of a reference profile.
        values: A float64 array (NaN: missing) for a numeric feature; a ``pandas.Categorical``
            or an object array for a categorical one.
    """
    if has_edges(feature_profile):
        values = bin_numbers(feature_profile, values)
        bins = assign_bins(feature_profile["edges"], values)
        bins[np.isnan(values)] = len(count_labels(feature_profile)) - 1
        return bins
    return _categorical_codes(feature_profile, values)


def datetime_values(series: pd.Series) -> Any:
    """A datetime feature's column as :func:`row_bins` and the fast transform read it:
    wall-clock ``datetime64`` for a timestamp column (the rule of :mod:`kubeloop.bundle.dates`),
    else the values as they are (a ``Categorical``, or an object array)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_localize(None)
        return series.to_numpy(dtype="datetime64[ns]")
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.array
    return series.to_numpy(dtype=object)


def row_log_likelihood(profile: Mapping[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """The log-likelihood of each row under a reference profile: the sum over its features of
    the log share of the reference rows in the row's bin (bins treated as independent; shares
    smoothed by one row per bin, so an empty bin is unlikely, not impossible).

    Two bundles' references compared on the same live rows say which training data looks more
    like today's traffic (:mod:`kubeloop.monitoring.rollout`'s ``drift_fit`` signal). Features
    absent from ``frame`` are skipped.
    """
    total = np.zeros(len(frame), dtype=np.float64)
    for name, feature_profile in profile["features"].items():
        if name not in frame.columns:
            continue
        series = frame[name]
        if feature_profile["kind"] == "numeric":
            values: Any = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
        elif feature_profile["kind"] == "datetime":
            values = datetime_values(series)
        else:
            values = series.to_numpy(dtype=object)
        reference = reference_counts(feature_profile) + 1.0
        total += np.log(reference / reference.sum())[row_bins(feature_profile, values)]
    return total


def _score(
    names: list[str],
    kinds: list[str],
    ref: list[np.ndarray],
    cur: list[np.ndarray],
    config: DriftConfig,
) -> list[FeatureDrift]:
    width = max((len(r) for r in ref), default=0)
    ref_matrix = np.zeros((len(ref), width))
    cur_matrix = np.zeros((len(cur), width))
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        ref_matrix[i, : len(r)], cur_matrix[i, : len(c)] = r, c
    values = psi_rows(ref_matrix, cur_matrix, epsilon=config.epsilon) if names else np.array([])
    results = []
    for i, name in enumerate(names):
        rows = int(cur[i].sum())
        value = float(values[i]) if rows >= config.min_rows else float("nan")
        if kinds[i] in ("numeric", "datetime"):  # KS over the ordered bins, missing apart
            test, (statistic, p_value) = "ks", ks_binned(ref[i][:-1], cur[i][:-1])
        else:
            test, (statistic, p_value) = "chi2", chi_square(ref[i], cur[i])
        threshold = config.threshold(name)
        results.append(
            FeatureDrift(
                feature=name,
                kind=kinds[i],
                rows=rows,
                psi=value,
                threshold=threshold,
                drifted=bool(value >= threshold),
                test=test,
                statistic=statistic,
                p_value=p_value,
            )
        )
    return results


def compare_profile(
    profile: Mapping[str, Any], counts: Counts, *, config: DriftConfig | None = None
) -> DriftReport:
    """Score every profiled feature (and the prediction) of one window of counts.

    Args:
        profile: A bundle's ``reference_profile.json`` content.
        counts: ``feature -> {bin label -> count}`` of the current window; the prediction
            under :data:`PREDICTION` (or ``"prediction"``) when available.
        config: Thresholds; defaults to :class:`DriftConfig`.

    Returns:
        The report; a feature without enough current rows has PSI NaN and is not drifted.
    """
    config = config or DriftConfig()
    names, kinds, ref, cur = [], [], [], []
    for name, feature_profile in profile["features"].items():
        names.append(name)
        kinds.append(feature_profile["kind"])
        ref.append(reference_counts(feature_profile))
        cur.append(align_counts(feature_profile, counts.get(name, {})))
    features = _score(names, kinds, ref, cur, config)
    prediction = None
    live = counts.get(PREDICTION) or counts.get("prediction")
    if profile.get("prediction") and live:
        pred_profile = profile["prediction"]
        prediction = _score(
            [PREDICTION],
            ["numeric"],
            [reference_counts(pred_profile)],
            [align_counts(pred_profile, live)],
            config,
        )[0]
    rows = max((f.rows for f in features), default=0)
    return DriftReport(features=tuple(features), prediction=prediction, rows=rows)
