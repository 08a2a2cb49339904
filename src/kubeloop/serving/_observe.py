"""Record one request's inputs and predictions into the metrics, cheaply.

Label children are resolved once per bundle (``Counter.labels`` is a dict lookup under a lock,
too slow to repeat per value). Batches are counted with ``numpy.bincount`` and one ``inc(n)``
per non-empty bin; single rows take a ``bisect`` per feature instead of numpy calls, which
costs less than a microsecond each.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kubeloop.data import normalize_category
from kubeloop.profile import MISSING_BIN, UNKNOWN_BIN, assign_bins, bin_labels
from kubeloop.serving import metrics

__all__ = ["Observer"]


class _NumericBins:
    def __init__(self, model: str, name: str, profile: Mapping[str, Any]) -> None:
        self.edges = np.asarray(profile["edges"], dtype=np.float64)
        self.edge_list = [float(e) for e in profile["edges"]]
        self.children = [
            metrics.FEATURE_BINS.labels(model, name, b) for b in bin_labels(dict(profile))
        ]
        self.missing = metrics.FEATURE_BINS.labels(model, name, MISSING_BIN)

    def one(self, value: float) -> None:
        if value != value:  # NaN
            self.missing.inc()
        else:
            self.children[bisect.bisect_left(self.edge_list, value)].inc()

    def many(self, column: np.ndarray) -> None:
        absent = np.isnan(column)
        n_missing = int(absent.sum())
        if n_missing:
            self.missing.inc(n_missing)
            column = column[~absent]
        counts = np.bincount(assign_bins(self.edges, column), minlength=len(self.children))
        for index in np.flatnonzero(counts).tolist():
            self.children[index].inc(int(counts[index]))


class _CategoricalBins:
    def __init__(self, model: str, name: str, profile: Mapping[str, Any]) -> None:
        self.children = {
            label: metrics.FEATURE_BINS.labels(model, name, label)
            for label in bin_labels(dict(profile))
        }
        self.unknown = self.children[UNKNOWN_BIN]
        self.missing = metrics.FEATURE_BINS.labels(model, name, MISSING_BIN)
        del self.children[UNKNOWN_BIN]  # a category literally named "__unknown__" stays unknown

    def _child(self, value: Any) -> Any:
        child = self.children.get(value) if type(value) is str else None
        if child is not None:
            return child
        key = normalize_category(value)
        return self.missing if key is None else self.children.get(key, self.unknown)

    def one(self, value: Any) -> None:
        self._child(value).inc()

    def many(self, column: np.ndarray) -> None:
        for value, count in Tally(column.tolist()).items():
            self._child(value).inc(count)


class Observer:
    """Metric children of one served bundle version.

    Args:
        model: The served model name (the ``model`` label).
        version: The bundle version (the ``version`` label).
        profile: The bundle's reference profile (``reference_profile.json``).
        classes: Class labels (classification) or ``()`` (regression).
        drift_counters: Count request values into the reference bins (off: skip that work).
    """

    def __init__(
        self,
        model: str,
        version: str,
        profile: Mapping[str, Any],
        classes: Sequence[str],
        *,
        drift_counters: bool = True,
    ) -> None:
        self._labels = (model, version)
        self._bins: list[tuple[str, _NumericBins | _CategoricalBins]] = []
        if drift_counters:
            for name, feature in profile.get("features", {}).items():
                kind = _NumericBins if feature["kind"] == "numeric" else _CategoricalBins
                self._bins.append((name, kind(model, name, feature)))
        names = list(classes) or ["value"]
        self._predicted = [metrics.PREDICTIONS.labels(model, version, c) for c in names]
        self._model = model
        self._imputed: dict[str, Any] = {}
        self._unknown: dict[str, Any] = {}

    def inputs(self, columns: Mapping[str, np.ndarray], rows: int) -> None:
        """Count every feature value of the request into its reference bin."""
        if rows == 1:
            for name, bins in self._bins:
                bins.one(columns[name][0])
        else:
            for name, bins in self._bins:
                bins.many(columns[name])

    def repairs(self, imputed: Mapping[str, int], unknown: Mapping[str, int]) -> None:
        """Count imputed missing values and unseen categories per feature."""
        for name, count in imputed.items():
            child = self._imputed.get(name)
            if child is None:
                child = self._imputed[name] = metrics.IMPUTED_VALUES.labels(self._model, name)
            child.inc(count)
        for name, count in unknown.items():
            child = self._unknown.get(name)
            if child is None:
                child = self._unknown[name] = metrics.UNKNOWN_CATEGORIES.labels(self._model, name)
            child.inc(count)

    def outputs(self, codes: np.ndarray | None, values: np.ndarray) -> None:
        """Count predicted labels (class codes; ``None`` for regression) and values."""
        rows = values.shape[0]
        if rows == 1:
            self._predicted[0 if codes is None else int(codes[0])].inc()
            metrics.PREDICTION_VALUE.observe(self._labels, float(values[0]))
            return
        if codes is None:
            self._predicted[0].inc(rows)
        else:
            counts = np.bincount(codes, minlength=len(self._predicted))
            for index in np.flatnonzero(counts).tolist():
                self._predicted[index].inc(int(counts[index]))
        metrics.PREDICTION_VALUE.observe_many(self._labels, values)
