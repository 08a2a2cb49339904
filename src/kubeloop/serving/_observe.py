"""Record one request's inputs and predictions into the metrics, cheaply.

Drift bins are the slots of one :class:`~kubeloop.serving.metrics.CounterBlock` per bundle
(features x bins, read by the registry at scrape time): a single row adds 1 to one slot per
feature (a ``bisect`` or a dict lookup each) under one lock, a batch adds one ``numpy.bincount``
per feature, instead of one ``prometheus_client`` ``inc`` (a lock each) per feature. Other label
children are resolved once per bundle (``Counter.labels`` is a dict lookup under a lock, too
slow to repeat per value). Every series carries the bundle version, so a champion and a
candidate served side by side are counted apart; the per-version request statistics of a staged
rollout (:class:`~kubeloop.serving.metrics.VersionStats`: outcomes, durations, and the moments of
the error, latency and score signals) are the observer's ``stats``.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kubeloop.bundle.dates import to_seconds
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
from kubeloop.serving import metrics

__all__ = ["Observer"]


class _NumericBins:
    """Slots ``base .. base+k-1`` are the bins, ``base+k`` counts missing values. A datetime
    feature's values are read as seconds first (a value that is not a date: missing)."""

    def __init__(self, base: int, profile: Mapping[str, Any]) -> None:
        self.profile = profile
        self.date_format: str | None = profile.get("date_format")
        self.dates = profile["kind"] == "datetime"
        self.edges = np.asarray(profile["edges"], dtype=np.float64)
        self.edge_list = [float(e) for e in profile["edges"]]
        self.labels = [*bin_labels(dict(profile)), MISSING_BIN]
        self.base = base
        self.missing = base + len(self.labels) - 1

    def one(self, value: Any) -> int:
        if self.dates:
            try:
                value = to_seconds(value, self.date_format)
            except ValueError:
                return self.missing
        if value != value:  # NaN
            return self.missing
        return self.base + bisect.bisect_left(self.edge_list, value)

    def many(self, column: np.ndarray | list[Any], out: np.ndarray) -> None:
        if self.dates:
            column = bin_numbers(self.profile, column)
        column = np.asarray(column, dtype=np.float64)
        absent = np.isnan(column)
        bins = assign_bins(self.edges, column)
        bins[absent] = len(self.labels) - 1  # NaN sorts last: move it to the missing slot
        out[self.base : self.missing + 1] += np.bincount(bins, minlength=len(self.labels))


class _CategoricalBins:
    """One slot per category, then ``__unknown__``, then missing."""

    def __init__(self, base: int, profile: Mapping[str, Any]) -> None:
        self.labels = [*bin_labels(dict(profile)), MISSING_BIN]
        self.slots = {label: base + i for i, label in enumerate(self.labels)}
        self.unknown = self.slots.pop(UNKNOWN_BIN)  # a category named "__unknown__" is unknown
        self.missing = self.slots.pop(MISSING_BIN)
        if unknown_label(profile) != UNKNOWN_BIN:  # values outside the categories: __other__
            self.unknown = self.slots[unknown_label(profile)]

    def one(self, value: Any) -> int:
        slot = self.slots.get(value) if type(value) is str else None
        if slot is not None:
            return slot
        key = normalize_category(value)
        return self.missing if key is None else self.slots.get(key, self.unknown)

    def many(self, column: np.ndarray | list[Any], out: np.ndarray) -> None:
        values = column if type(column) is list else np.asarray(column, dtype=object).tolist()
        for value, count in Tally(values).items():
            out[self.one(value)] += count

    def from_codes(self, columns: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """For counting from the transform's output columns (``category -> column``): the
        columns and the slot of each (that category's bin, or ``__unknown__``)."""
        pairs = sorted((column, self.one(category)) for category, column in columns.items())
        return (
            np.array([c for c, _ in pairs], dtype=np.intp),
            np.array([slot for _, slot in pairs], dtype=np.intp),
        )


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
        category_columns: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self._labels = (model, version)
        self._bins: list[tuple[str, _NumericBins | _CategoricalBins]] = []
        series: list[tuple[str, str, str, str]] = []
        if drift_counters:
            for name, feature in profile.get("features", {}).items():
                kind = _NumericBins if has_edges(feature) else _CategoricalBins
                bins = kind(len(series), feature)
                self._bins.append((name, bins))
                series.extend((model, version, name, label) for label in bins.labels)
        self._slots = len(series)
        # Categorical features whose transform codes (output columns) can be counted directly.
        self._by_code: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        known_columns = category_columns or {}
        for name, bins in self._bins:
            if isinstance(bins, _CategoricalBins) and known_columns.get(name):
                self._by_code[name] = bins.from_codes(known_columns[name])
        self._block = metrics.FEATURE_BINS.block(series) if series else None
        names = list(classes) or ["value"]
        self._predicted = [metrics.PREDICTIONS.labels(model, version, c) for c in names]
        self._model = model
        self.stats = metrics.ROLLOUT.stats(model, version)
        self._imputed: dict[str, Any] = {}
        self._unknown: dict[str, Any] = {}

    def inputs(
        self,
        columns: Mapping[str, np.ndarray | list[Any]],
        rows: int,
        codes: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Count every feature value of the request into its reference bin.

        ``codes``: the transform's output column per row of the categorical features whose
        every value was a trained category as is (``TransformResult.codes``); those features
        are counted with one ``bincount`` instead of a pass over their values.
        """
        block = self._block
        if block is None:
            return
        if rows == 1:
            block.add_each([bins.one(columns[name][0]) for name, bins in self._bins])
            return
        counts = np.zeros(self._slots, dtype=np.int64)
        for name, bins in self._bins:
            known = None if codes is None else codes.get(name)
            mapping = self._by_code.get(name) if known is not None else None
            if known is not None and mapping is not None:
                output_columns, slots = mapping
                per_column = np.bincount(known, minlength=int(output_columns[-1]) + 1)
                np.add.at(counts, slots, per_column[output_columns])
            else:
                bins.many(columns[name], counts)
        block.add_counts(counts)

    def input_row(self, row: Mapping[str, Any]) -> None:
        """Count one row given as ``{feature: value}`` (Python scalars, NaN for missing)."""
        if self._block is not None:
            self._block.add_each([bins.one(row[name]) for name, bins in self._bins])

    def output_row(self, code: int, value: float) -> None:
        """Count one predicted row: its class code (0 for regression) and value."""
        self._predicted[code].inc()
        metrics.PREDICTION_VALUE.observe(self._labels, value)
        self.stats.score(value)

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
            self.stats.score(float(values[0]))
            return
        if codes is None:
            self._predicted[0].inc(rows)
        else:
            counts = np.bincount(codes, minlength=len(self._predicted))
            for index in np.flatnonzero(counts).tolist():
                self._predicted[index].inc(int(counts[index]))
        metrics.PREDICTION_VALUE.observe_many(self._labels, values)
        self.stats.scores(values)
