"""Every Prometheus metric the model server exports, declared once (``kubeloop_`` prefix).

KServe already exports its own ``request_*_seconds`` histograms from the same registry; they are
never redeclared here. Labels are low-cardinality on purpose: model name, bundle version, class
label, feature name and the reference-profile bins of that feature. Every per-request series
carries the version that answered (or, in shadow mode, scored) the request, so a champion and a
candidate served side by side (a staged rollout) are counted apart; the per-version request
statistics (:class:`VersionStats`: outcomes, durations and the rollout moments the monitor's
sequential tests read) are plain floats under one lock, exported by :data:`ROLLOUT`.

The drift counters (``kubeloop_feature_bin_total``) use the bins of the served bundle's
``reference_profile.json`` so drift can be computed from ``/metrics`` (or PromQL) alone:
numeric bins are ``"0"``..``"k-1"`` (:func:`kubeloop.bundle.profile.assign_bins`), categorical bins
are
the category names plus ``"__unknown__"``, and missing values count under ``"missing"``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CANDIDATE_INFO",
    "FEATURE_BINS",
    "IMPUTED_VALUES",
    "INVALID_REQUESTS",
    "MODEL_INFO",
    "MODEL_LOAD_FAILURES",
    "PREDICTIONS",
    "PREDICTION_VALUE",
    "PREDICTION_VALUE_BUCKETS",
    "REQUEST_DURATION_BUCKETS",
    "ROLLOUT",
    "ROLLOUT_SIGNALS",
    "SHADOW_DROPPED",
    "UNKNOWN_CATEGORIES",
    "BlockCounter",
    "BulkHistogram",
    "CounterBlock",
    "RolloutCollector",
    "VersionStats",
]

# Probabilities get 0.05-wide buckets; regression values fall into the wider ones above 1.
PREDICTION_VALUE_BUCKETS: tuple[float, ...] = (
    *(round(0.05 * i, 2) for i in range(1, 21)),
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    1e4,
    1e5,
    1e6,
)


class BulkHistogram(Collector):
    """A labelled histogram that takes a whole batch of observations in one call.

    ``prometheus_client.Histogram.observe`` takes one value per call, which costs about a
    microsecond each: too slow for 10,000-row requests. This collector keeps per-bucket counts
    in numpy and exposes them through the ordinary collector API.

    Args:
        name: Metric name (without ``_bucket``/``_sum``/``_count``).
        documentation: Help text.
        labelnames: Label names, e.g. ``("model", "version")``.
        buckets: Finite upper bounds, strictly increasing (``+Inf`` is added).
        registry: Where to register; ``None`` leaves it unregistered.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._bounds_list = [float(b) for b in buckets]
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def _state(self, labelvalues: tuple[str, ...]) -> tuple[np.ndarray, list[float]]:
        state = self._series.get(labelvalues)
        if state is None:
            state = (np.zeros(len(self._bounds) + 1, dtype=np.int64), [0.0])
            self._series[labelvalues] = state
        return state

    def observe(self, labelvalues: tuple[str, ...], value: float) -> None:
        """Record one observation (the single-row fast path)."""
        index = bisect.bisect_left(self._bounds_list, value)
        with self._lock:
            counts, total = self._state(labelvalues)
            counts[index] += 1
            total[0] += value

    def observe_many(self, labelvalues: tuple[str, ...], values: np.ndarray) -> None:
        """Record every value of ``values`` (NaN values are skipped)."""
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        array = array[~np.isnan(array)]
        if array.size == 0:
            return
        # le-buckets: a value equal to a bound belongs to that bound's bucket.
        per_bucket = np.bincount(
            np.searchsorted(self._bounds, array, side="left"), minlength=len(self._bounds) + 1
        )
        with self._lock:
            counts, total = self._state(labelvalues)
            counts += per_bucket
            total[0] += float(array.sum())

    def describe(self) -> Iterable[Metric]:
        """Describe the family without samples (registration-time name check)."""
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        """Yield the histogram family with one cumulative series per label set."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            snapshot = [(k, c.copy(), t[0]) for k, (c, t) in self._series.items()]
        uppers = [*(repr(b) for b in self._bounds_list), "+Inf"]
        for labelvalues, counts, total in snapshot:
            cumulative = np.cumsum(counts).tolist()
            family.add_metric(
                list(labelvalues), list(zip(uppers, cumulative, strict=True)), sum_value=total
            )
        yield family


class CounterBlock:
    """A fixed set of series of one :class:`BlockCounter`, counted in a plain list of ints.

    ``prometheus_client.Counter`` takes a lock per ``inc`` (about 1.5 microseconds each), too
    slow for one increment per feature per request. A block holds the counts of a fixed list of
    label sets in a list indexed by slot; a request adds to any number of slots under one lock
    (so requests served from several threads never lose an increment), and the registry reads
    the counts at scrape time.
    """

    def __init__(self, series: Sequence[tuple[str, ...]]) -> None:
        self.series = list(series)
        self._counts = [0] * len(self.series)
        self._lock = threading.Lock()

    def add_each(self, slots: Iterable[int]) -> None:
        """Add 1 to every slot in ``slots`` (a slot may appear more than once)."""
        counts = self._counts
        with self._lock:
            for slot in slots:
                counts[slot] += 1

    def add_counts(self, counts: np.ndarray) -> None:
        """Add ``counts[i]`` to slot ``i`` (``counts`` as long as the block, non-negative)."""
        totals = self._counts
        nonzero = np.flatnonzero(counts)
        values = counts[nonzero].tolist()
        with self._lock:
            for slot, value in zip(nonzero.tolist(), values, strict=True):
                totals[slot] += value

    def snapshot(self) -> list[int]:
        """The counts now, slot by slot."""
        with self._lock:
            return list(self._counts)


class BlockCounter(Collector):
    """A labelled counter whose series live in :class:`CounterBlock` objects.

    Exported exactly like a ``prometheus_client.Counter`` of the same name (``<name>_total``,
    type counter), without the ``_created`` samples. Blocks are never dropped: a series counted
    by several blocks (e.g. the same feature bin of two bundle versions of one model) is their
    sum, so it only ever grows, as a counter must.

    Args:
        name: Metric name without ``_total``.
        documentation: Help text.
        labelnames: Label names of every series.
        registry: Where to register; ``None`` leaves it unregistered.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._blocks: list[CounterBlock] = []
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def block(self, series: Sequence[tuple[str, ...]]) -> CounterBlock:
        """A new block counting ``series`` (label values in ``labelnames`` order), all at 0."""
        for labelvalues in series:
            if len(labelvalues) != len(self._labelnames):
                raise ValueError(f"{labelvalues!r} does not match labels {self._labelnames}")
        created = CounterBlock(series)
        with self._lock:
            self._blocks.append(created)
        return created

    def describe(self) -> Iterable[Metric]:
        """Describe the family without samples (registration-time name check)."""
        return [CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        """Yield the counter family with one series per distinct label set."""
        with self._lock:
            blocks = list(self._blocks)
        totals: dict[tuple[str, ...], int] = {}
        for block in blocks:
            for labelvalues, count in zip(block.series, block.snapshot(), strict=True):
                totals[labelvalues] = totals.get(labelvalues, 0) + count
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labelvalues, count in totals.items():
            family.add_metric(list(labelvalues), float(count))
        yield family


PREDICTIONS = Counter(
    "kubeloop_predictions",
    "Rows predicted, by model, bundle version and predicted label ('value' for regression).",
    ["model", "version", "label"],
)
PREDICTION_VALUE = BulkHistogram(
    "kubeloop_prediction_value",
    "Predicted value: positive-class probability (binary), top-class probability (multiclass) "
    "or the regression value.",
    ["model", "version"],
    PREDICTION_VALUE_BUCKETS,
)
FEATURE_BINS = BlockCounter(
    "kubeloop_feature_bin",
    "Request values per feature counted into the reference-profile bins of the bundle version "
    "that scored them.",
    ["model", "version", "feature", "bin"],
)
INVALID_REQUESTS = Counter(
    "kubeloop_invalid_requests",
    "Requests refused as client mistakes (HTTP 400/413, gRPC INVALID_ARGUMENT), by reason "
    "(version: the one the request was routed to, else the champion).",
    ["model", "version", "reason"],
)
IMPUTED_VALUES = Counter(
    "kubeloop_imputed_values",
    "Missing feature values that were imputed (numeric median, categorical fill).",
    ["model", "feature"],
)
UNKNOWN_CATEGORIES = Counter(
    "kubeloop_unknown_categories",
    "Categorical values never seen in training (encoded as all zeros).",
    ["model", "feature"],
)
MODEL_INFO = Gauge(
    "kubeloop_model_info",
    "The bundle version being served (value 1; one series per served model).",
    ["model", "version"],
)
MODEL_LOAD_FAILURES = Counter(
    "kubeloop_model_load_failures",
    "Bundles that failed to load or verify; the previous model kept serving.",
    ["model"],
)
CANDIDATE_INFO = Gauge(
    "kubeloop_candidate_info",
    "The candidate version served beside the champion (value: its canary percent, 0 in shadow "
    "mode); absent when there is no candidate.",
    ["model", "version", "mode"],
)
SHADOW_DROPPED = Counter(
    "kubeloop_shadow_dropped",
    "Shadow pairs not scored: the candidate spent its share of the second, or it failed.",
    ["model", "version"],
)
CHAMPION_POLLS = Counter(
    "kubeloop_champion_polls",
    "Completed reads of the registry's champion pointer (--registry only), swap or not.",
    ["model"],
)


# -- per-version request statistics of a staged rollout --------------------------------------

ROLLOUT_SIGNALS: tuple[str, ...] = (
    "error",
    "latency_log",
    "score",
    "shadow_flip",
    "shadow_score_diff",
)
_ERROR, _LATENCY, _SCORE, _FLIP, _DIFF = range(len(ROLLOUT_SIGNALS))
_MOMENTS = ("n", "sum", "sumsq")
REQUEST_DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class VersionStats:
    """The request statistics of one bundle version of one model, in plain floats.

    One request costs one lock and a few float additions (:meth:`request`, :meth:`score`): no
    ``prometheus_client`` call on the request path. The same object serves every load of the
    same version in a process (:meth:`RolloutCollector.stats`), so its counters only grow.

    The moments are the sufficient statistics of the monitor's sequential tests: per signal the
    number of observations, their sum and their sum of squares.
    """

    __slots__ = ("_buckets", "_duration", "_lock", "_moments", "labels")

    def __init__(self, model: str, version: str) -> None:
        self.labels = (model, version)
        self._lock = threading.Lock()
        self._moments = [[0.0, 0.0, 0.0] for _ in ROLLOUT_SIGNALS]
        self._buckets = [0] * (len(REQUEST_DURATION_BUCKETS) + 1)
        self._duration = [0.0]

    def request(self, seconds: float, error: bool) -> None:
        """Count one routed request: its outcome and its duration in the model."""
        index = bisect.bisect_left(REQUEST_DURATION_BUCKETS, seconds)
        log_seconds = math.log(seconds) if seconds > 0 else math.log(1e-9)
        failed = 1.0 if error else 0.0
        with self._lock:
            moments = self._moments[_ERROR]
            moments[0] += 1.0
            moments[1] += failed
            moments[2] += failed
            moments = self._moments[_LATENCY]
            moments[0] += 1.0
            moments[1] += log_seconds
            moments[2] += log_seconds * log_seconds
            self._buckets[index] += 1
            self._duration[0] += seconds

    def score(self, value: float) -> None:
        """Add one row's score (the probability of ``classes[1]``, the top-class probability,
        or the value)."""
        if value != value:  # NaN
            return
        with self._lock:
            moments = self._moments[_SCORE]
            moments[0] += 1.0
            moments[1] += value
            moments[2] += value * value

    def scores(self, values: np.ndarray) -> None:
        """Add every row's score (NaN skipped)."""
        self._add(_SCORE, values)

    def shadow(self, flips: np.ndarray | None, differences: np.ndarray) -> None:
        """Add shadow pairs: whether each row's decision flipped (``None``: regression, no
        decision) and each row's score difference candidate - champion."""
        if flips is not None:
            self._add(_FLIP, flips)
        self._add(_DIFF, differences)

    def shadow_row(self, flip: float | None, difference: float) -> None:
        """Add one shadow pair of a single-row request (Python floats; ``flip`` ``None``:
        regression)."""
        with self._lock:
            if flip is not None:
                moments = self._moments[_FLIP]
                moments[0] += 1.0
                moments[1] += flip
                moments[2] += flip
            if difference == difference:
                moments = self._moments[_DIFF]
                moments[0] += 1.0
                moments[1] += difference
                moments[2] += difference * difference

    def _add(self, signal: int, values: np.ndarray) -> None:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        array = array[~np.isnan(array)]
        if array.size == 0:
            return
        n, total, total_sq = float(array.size), float(array.sum()), float(array @ array)
        with self._lock:
            moments = self._moments[signal]
            moments[0] += n
            moments[1] += total
            moments[2] += total_sq

    def snapshot(self) -> tuple[list[list[float]], list[int], float]:
        """The moments per signal, the duration bucket counts and the duration sum, now."""
        with self._lock:
            return [list(m) for m in self._moments], list(self._buckets), self._duration[0]


class RolloutCollector(Collector):
    """Exports every :class:`VersionStats` as ``kubeloop_requests_total{model,version,outcome}``,
    ``kubeloop_request_duration_seconds{model,version}`` (histogram) and
    ``kubeloop_rollout_moment_total{model,version,signal,moment}``.

    Args:
        registry: Where to register; ``None`` leaves it unregistered.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._stats: dict[tuple[str, str], VersionStats] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def stats(self, model: str, version: str) -> VersionStats:
        """The statistics of ``version`` of ``model`` (created at 0 on first use)."""
        with self._lock:
            found = self._stats.get((model, version))
            if found is None:
                found = self._stats[(model, version)] = VersionStats(model, version)
            return found

    def describe(self) -> Iterable[Metric]:
        """Describe the families without samples (registration-time name check)."""
        return list(self._families())

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "kubeloop_requests",
                "Inference requests routed to a version, by outcome (ok | error: any refusal or "
                "failure after routing).",
                labels=("model", "version", "outcome"),
            ),
            HistogramMetricFamily(
                "kubeloop_request_duration_seconds",
                "Seconds a routed request spent in the model (decode to encode).",
                labels=("model", "version"),
            ),
            CounterMetricFamily(
                "kubeloop_rollout_moment",
                "Sufficient statistics (n, sum, sumsq) per version of the rollout signals: "
                "error (0/1 per request), latency_log (ln seconds per request), score (per row), "
                "shadow_flip (0/1 per shadow row), shadow_score_diff (candidate - champion).",
                labels=("model", "version", "signal", "moment"),
            ),
        )

    def collect(self) -> Iterable[Metric]:
        """Yield the three families with one series set per version."""
        requests, durations, moments = self._families()
        with self._lock:
            every = list(self._stats.values())
        uppers = [*(repr(b) for b in REQUEST_DURATION_BUCKETS), "+Inf"]
        for stats in every:
            model, version = stats.labels
            signals, buckets, duration = stats.snapshot()
            n, errors = signals[_ERROR][0], signals[_ERROR][1]
            requests.add_metric([model, version, "ok"], n - errors)
            requests.add_metric([model, version, "error"], errors)
            cumulative = list(itertools.accumulate(buckets))
            durations.add_metric(
                [model, version], list(zip(uppers, cumulative, strict=True)), sum_value=duration
            )
            for signal, values in zip(ROLLOUT_SIGNALS, signals, strict=True):
                for moment, value in zip(_MOMENTS, values, strict=True):
                    moments.add_metric([model, version, signal, moment], value)
        yield requests
        yield durations
        yield moments


ROLLOUT = RolloutCollector()
