"""Where live bin counts come from: the server's ``/metrics`` or the Prometheus HTTP API.

- :class:`MetricsEndpoint` scrapes the model server's own ``/metrics`` (Prometheus text) and
  keeps the cumulative ``kubeloop_feature_bin_total{model, version, feature, bin}`` counters of
  one version; the window is the delta between two scrapes (:func:`counter_delta`), so no
  Prometheus is needed.
- :class:`PrometheusAPI` asks a Prometheus server for
  ``sum by (feature, bin) (increase(kubeloop_feature_bin_total{model="m",version="v"}[window]))``.

Both read the champion's version from ``kubeloop_model_info{model, version}`` and count that
version's bins (a candidate served beside it is counted under its own version): bins are a
bundle's bins, so a window that spans a model swap is not comparable and is dropped.
:func:`parse_rollout_moments` reads the per-version sufficient statistics of a staged rollout
(``kubeloop_rollout_moment_total``). Network
calls retry with a backoff and then raise :class:`SourceError`; the monitor counts it and goes on.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kubeloop.errors import KubeloopError

__all__ = [
    "BIN_COUNTER",
    "MODEL_INFO",
    "ROLLOUT_MOMENTS",
    "MetricsEndpoint",
    "PrometheusAPI",
    "Scrape",
    "SourceError",
    "counter_delta",
    "increase_query",
    "parse_metrics_text",
    "parse_rollout_moments",
    "parse_vector",
]

BIN_COUNTER = "kubeloop_feature_bin_total"
MODEL_INFO = "kubeloop_model_info"
ROLLOUT_MOMENTS = "kubeloop_rollout_moment_total"


class SourceError(KubeloopError, ConnectionError):
    """A metrics source could not be read (server down, bad answer)."""


@dataclass(frozen=True)
class Scrape:
    """Cumulative bin counters of one model at one moment.

    Attributes:
        counts: ``feature -> {bin -> count}``.
        version: The version the server reports serving (``None`` when not exported).
        taken_at: Unix time of the scrape.
    """

    counts: dict[str, dict[str, float]] = field(default_factory=dict)
    version: str | None = None
    taken_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (for the monitor's state file)."""
        return {"counts": self.counts, "version": self.version, "taken_at": self.taken_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scrape:
        """Inverse of :meth:`to_dict`."""
        counts = {f: {b: float(v) for b, v in bins.items()} for f, bins in data["counts"].items()}
        return cls(counts=counts, version=data.get("version"), taken_at=float(data["taken_at"]))


def _get(url: str, *, timeout: float, retries: int, backoff: float) -> bytes:
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return bytes(response.read())
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            last = error
            if attempt < retries:
                time.sleep(backoff * 2**attempt)
    raise SourceError(
        f"Could not read {url} after {retries + 1} attempts ({last}); check that the model "
        "server (or Prometheus) is running and the URL is right."
    )


def parse_metrics_text(text: str, *, model: str, version: str | None = None) -> Scrape:
    """Read the bin counters of one version of ``model`` from Prometheus text.

    Args:
        text: A ``/metrics`` body.
        model: The model name (the ``model`` label).
        version: The version whose bins are read; default: the champion's, i.e. the version
            of ``kubeloop_model_info`` (a candidate served beside it has its own bins).

    Returns:
        A :class:`Scrape` of that version (``version`` ``None`` when the server exports no
        champion and none was asked), stamped with the current time.
    """
    by_version: dict[str | None, dict[str, dict[str, float]]] = {}
    champions: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model:
                continue
            if sample.name == BIN_COUNTER:
                counts = by_version.setdefault(labels.get("version"), {})
                feature = counts.setdefault(labels["feature"], {})
                feature[labels["bin"]] = feature.get(labels["bin"], 0.0) + float(sample.value)
            elif sample.name == MODEL_INFO and sample.value >= 1 and "version" in labels:
                champions.append(labels["version"])
    if version is None:
        version = sorted(champions)[-1] if champions else None
    return Scrape(counts=by_version.get(version, {}), version=version, taken_at=time.time())


def parse_rollout_moments(
    text: str, *, model: str
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """The rollout moments of every version of ``model`` in Prometheus text.

    Args:
        text: A ``/metrics`` body.
        model: The model name (the ``model`` label).

    Returns:
        ``version -> signal -> (n, sum, sumsq)`` from ``kubeloop_rollout_moment_total``
        (signals ``error``, ``latency_log``, ``score``, ``shadow_flip``, ``shadow_score_diff``;
        cumulative since the server started).
    """
    found: dict[str, dict[str, list[float]]] = {}
    index = {"n": 0, "sum": 1, "sumsq": 2}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name != ROLLOUT_MOMENTS or labels.get("model") != model:
                continue
            slot = index.get(labels.get("moment", ""))
            if slot is None or "version" not in labels or "signal" not in labels:
                continue
            signals = found.setdefault(labels["version"], {})
            signals.setdefault(labels["signal"], [0.0, 0.0, 0.0])[slot] += float(sample.value)
    return {
        version: {signal: (m[0], m[1], m[2]) for signal, m in signals.items()}
        for version, signals in found.items()
    }


def counter_delta(previous: Scrape | None, current: Scrape) -> dict[str, dict[str, float]] | None:
    """Counts observed between two scrapes.

    Returns ``current.counts`` when there is no previous scrape or the counters went down (the
    server restarted, so the counters restarted at zero), and ``None`` when the served version
    changed between the scrapes (the bins belong to different bundles).
    """
    if previous is None:
        return current.counts
    if previous.version != current.version:
        return None
    reset = any(
        value < previous.counts.get(feature, {}).get(label, 0.0)
        for feature, bins in current.counts.items()
        for label, value in bins.items()
    )
    if reset:
        return current.counts
    return {
        feature: {
            label: value - previous.counts.get(feature, {}).get(label, 0.0)
            for label, value in bins.items()
        }
        for feature, bins in current.counts.items()
    }


@dataclass(frozen=True)
class MetricsEndpoint:
    """The model server's ``/metrics`` URL, scraped directly.

    Attributes:
        url: e.g. ``http://127.0.0.1:8080/metrics``.
        model: Model name (the ``model`` label).
        timeout: Seconds per attempt.
        retries: Extra attempts after the first.
        backoff: First wait between attempts, doubled each time.
    """

    url: str
    model: str
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.5

    def text(self) -> str:
        """The ``/metrics`` body now. Raises :class:`SourceError` when unreachable."""
        body = _get(self.url, timeout=self.timeout, retries=self.retries, backoff=self.backoff)
        return body.decode("utf-8", errors="replace")

    def scrape(self) -> Scrape:
        """Read the counters now. Raises :class:`SourceError` when unreachable."""
        text = self.text()
        try:
            return parse_metrics_text(text, model=self.model)
        except (ValueError, KeyError) as error:
            raise SourceError(f"{self.url} did not answer Prometheus text: {error}") from error


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def increase_query(model: str, window: str, version: str | None = None) -> str:
    """PromQL for the bin counts of ``model`` (of one ``version`` when given) over ``window``
    (e.g. ``"1h"``)."""
    selector = f'model="{_quoted(model)}"'
    if version is not None:
        selector += f',version="{_quoted(version)}"'
    return f"sum by (feature, bin) (increase({BIN_COUNTER}{{{selector}}}[{window}]))"


def parse_vector(payload: Mapping[str, Any]) -> list[tuple[dict[str, str], float]]:
    """The ``(labels, value)`` pairs of a Prometheus instant-vector API answer."""
    if payload.get("status") != "success":
        raise SourceError(f"Prometheus answered {payload.get('status')}: {payload.get('error')}")
    data = payload.get("data", {})
    if data.get("resultType") != "vector":
        raise SourceError(f"expected a vector result, got {data.get('resultType')!r}")
    return [(dict(item["metric"]), float(item["value"][1])) for item in data.get("result", [])]


@dataclass(frozen=True)
class PrometheusAPI:
    """A Prometheus server's HTTP API (``/api/v1/query``).

    Attributes:
        url: Base URL, e.g. ``http://prometheus:9090``.
        model: Model name.
        window: PromQL range of the drift window, e.g. ``"1h"``.
    """

    url: str
    model: str
    window: str = "1h"
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5

    def _query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        query = urllib.parse.urlencode({"query": promql})
        url = f"{self.url.rstrip('/')}/api/v1/query?{query}"
        body = _get(url, timeout=self.timeout, retries=self.retries, backoff=self.backoff)
        try:
            return parse_vector(json.loads(body))
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise SourceError(f"{url} did not answer a Prometheus API result: {error}") from error

    def rollout_moments(self, seconds: float) -> dict[str, dict[str, tuple[float, float, float]]]:
        """The increase of ``kubeloop_rollout_moment_total`` over the last ``seconds`` (since a
        candidate started), summed over every replica: ``version -> signal -> (n, sum, sumsq)``.

        Prometheus takes each series' counter resets into account (``increase``); the range is
        at least a minute (a scrape interval or two), so a candidate only seconds old is judged
        with a little of the champion's earlier traffic.
        """
        selector = f'model="{_quoted(self.model)}"'
        window = f"{max(60, math.ceil(seconds))}s"
        promql = (
            f"sum by (version, signal, moment) "
            f"(increase({ROLLOUT_MOMENTS}{{{selector}}}[{window}]))"
        )
        found: dict[str, dict[str, list[float]]] = {}
        index = {"n": 0, "sum": 1, "sumsq": 2}
        for labels, value in self._query(promql):
            slot = index.get(labels.get("moment", ""))
            if slot is None or "version" not in labels or "signal" not in labels:
                continue
            triple = found.setdefault(labels["version"], {}).setdefault(
                labels["signal"], [0.0, 0.0, 0.0]
            )
            triple[slot] = value
        return {v: {s: (t[0], t[1], t[2]) for s, t in sig.items()} for v, sig in found.items()}

    def scrape(self) -> Scrape:
        """Bin counts of the champion's version over the window ending now, and that version."""
        versions = [
            labels["version"]
            for labels, value in self._query(f'{MODEL_INFO}{{model="{_quoted(self.model)}"}}')
            if value >= 1 and "version" in labels
        ]
        version = max(versions) if versions else None
        counts: dict[str, dict[str, float]] = {}
        for labels, value in self._query(increase_query(self.model, self.window, version)):
            if "feature" in labels and "bin" in labels:
                counts.setdefault(labels["feature"], {})[labels["bin"]] = value
        return Scrape(counts=counts, version=version, taken_at=time.time())
