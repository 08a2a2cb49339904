"""Where live bin counts come from: the server's ``/metrics`` or the Prometheus HTTP API.

- :class:`MetricsEndpoint` scrapes the model server's own ``/metrics`` (Prometheus text) and
  keeps the cumulative ``kubeloop_feature_bin_total{model, feature, bin}`` counters; the window
  is the delta between two scrapes (:func:`counter_delta`), so no Prometheus is needed.
- :class:`PrometheusAPI` asks a Prometheus server for
  ``sum by (feature, bin) (increase(kubeloop_feature_bin_total{model="m"}[window]))``.

Both read the served version from ``kubeloop_model_info{model, version}``: bins are the served
bundle's bins, so a window that spans a model swap is not comparable and is dropped. Network
calls retry with a backoff and then raise :class:`SourceError`; the monitor counts it and goes on.
"""

from __future__ import annotations

import json
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
    "MetricsEndpoint",
    "PrometheusAPI",
    "Scrape",
    "SourceError",
    "counter_delta",
    "increase_query",
    "parse_metrics_text",
    "parse_vector",
]

BIN_COUNTER = "kubeloop_feature_bin_total"
MODEL_INFO = "kubeloop_model_info"


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


def parse_metrics_text(text: str, *, model: str) -> Scrape:
    """Read bin counters and the served version of ``model`` from Prometheus text.

    Args:
        text: A ``/metrics`` body.
        model: The model name (the ``model`` label).

    Returns:
        A :class:`Scrape` stamped with the current time.
    """
    counts: dict[str, dict[str, float]] = {}
    versions: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model:
                continue
            if sample.name == BIN_COUNTER:
                feature = counts.setdefault(labels["feature"], {})
                feature[labels["bin"]] = feature.get(labels["bin"], 0.0) + float(sample.value)
            elif sample.name == MODEL_INFO and sample.value >= 1 and "version" in labels:
                versions.append(labels["version"])
    version = sorted(versions)[-1] if versions else None
    return Scrape(counts=counts, version=version, taken_at=time.time())


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


def increase_query(model: str, window: str) -> str:
    """PromQL for the bin counts of ``model`` over ``window`` (e.g. ``"1h"``)."""
    escaped = model.replace("\\", "\\\\").replace('"', '\\"')
    return f'sum by (feature, bin) (increase({BIN_COUNTER}{{model="{escaped}"}}[{window}]))'


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

    def scrape(self) -> Scrape:
        """Bin counts of the window ending now, and the served version."""
        counts: dict[str, dict[str, float]] = {}
        for labels, value in self._query(increase_query(self.model, self.window)):
            if "feature" in labels and "bin" in labels:
                counts.setdefault(labels["feature"], {})[labels["bin"]] = value
        escaped = self.model.replace('"', '\\"')
        versions = [
            labels["version"]
            for labels, value in self._query(f'{MODEL_INFO}{{model="{escaped}"}}')
            if value >= 1 and "version" in labels
        ]
        return Scrape(
            counts=counts, version=max(versions) if versions else None, taken_at=time.time()
        )
