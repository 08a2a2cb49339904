"""Reading bin counters: Prometheus text, deltas between scrapes, the Prometheus HTTP API."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from kubeloop.monitoring.sources import (
    MetricsEndpoint,
    PrometheusAPI,
    Scrape,
    SourceError,
    counter_delta,
    increase_query,
    parse_metrics_text,
    parse_rollout_moments,
    parse_vector,
)


def _server_text(
    bins: dict[tuple[str, str], float], version: str = "v1", candidate: str | None = None
) -> str:
    """A server's text: the champion ``version`` counted ``bins``, a candidate (if any)
    counted ten times as much, another model something else."""
    registry = CollectorRegistry()
    counter = Counter(
        "kubeloop_feature_bin", "bins", ["model", "version", "feature", "bin"], registry=registry
    )
    info = Gauge("kubeloop_model_info", "info", ["model", "version"], registry=registry)
    info.labels(model="churn", version=version).set(1)
    info.labels(model="other", version="v9").set(1)
    counter.labels(model="other", version="v9", feature="tenure", bin="0").inc(1000)
    for (feature, label), value in bins.items():
        counter.labels(model="churn", version=version, feature=feature, bin=label).inc(value)
        if candidate is not None:
            counter.labels(model="churn", version=candidate, feature=feature, bin=label).inc(
                10 * value
            )
    return generate_latest(registry).decode()


def test_parse_metrics_text_reads_one_models_counters_and_version() -> None:
    scrape = parse_metrics_text(
        _server_text({("tenure", "0"): 3, ("tenure", "1"): 4, ("Contract", "__unknown__"): 2}),
        model="churn",
    )
    assert scrape.counts == {"tenure": {"0": 3.0, "1": 4.0}, "Contract": {"__unknown__": 2.0}}
    assert scrape.version == "v1"
    assert Scrape.from_dict(json.loads(json.dumps(scrape.to_dict()))) == scrape


def test_parse_metrics_text_reads_the_champion_unless_a_version_is_asked() -> None:
    text = _server_text({("tenure", "0"): 3, ("tenure", "1"): 4}, "v1", candidate="v2")
    champion = parse_metrics_text(text, model="churn")
    assert (champion.version, champion.counts) == ("v1", {"tenure": {"0": 3.0, "1": 4.0}})
    candidate = parse_metrics_text(text, model="churn", version="v2")
    assert (candidate.version, candidate.counts) == ("v2", {"tenure": {"0": 30.0, "1": 40.0}})
    assert parse_metrics_text(text, model="churn", version="v3").counts == {}


def test_parse_rollout_moments_reads_every_version_and_signal() -> None:
    from kubeloop.serving.metrics import RolloutCollector

    registry = CollectorRegistry()
    collector = RolloutCollector(registry)
    champion, candidate = collector.stats("churn", "v1"), collector.stats("churn", "v2")
    collector.stats("other", "v9").request(1.0, True)
    champion.request(0.01, False)
    champion.request(0.04, True)
    candidate.score(0.25)
    candidate.shadow(np.array([1.0, 0.0]), np.array([0.5, -0.25]))
    moments = parse_rollout_moments(generate_latest(registry).decode(), model="churn")
    assert set(moments) == {"v1", "v2"}
    assert moments["v1"]["error"] == (2.0, 1.0, 1.0)
    n, total, total_sq = moments["v1"]["latency_log"]
    assert n == 2.0 and total == pytest.approx(math.log(0.01) + math.log(0.04))
    assert total_sq == pytest.approx(math.log(0.01) ** 2 + math.log(0.04) ** 2)
    assert moments["v2"]["score"] == (1.0, 0.25, 0.0625)
    assert moments["v2"]["shadow_flip"] == (2.0, 1.0, 1.0)
    assert moments["v2"]["shadow_score_diff"] == (2.0, 0.25, 0.3125)
    assert moments["v2"]["error"] == (0.0, 0.0, 0.0)


def test_counter_delta_between_scrapes() -> None:
    first = Scrape({"tenure": {"0": 3.0, "1": 4.0}}, "v1", 1.0)
    second = Scrape({"tenure": {"0": 10.0, "1": 4.0, "2": 5.0}}, "v1", 2.0)
    assert counter_delta(None, first) == first.counts
    assert counter_delta(first, second) == {"tenure": {"0": 7.0, "1": 0.0, "2": 5.0}}
    restarted = Scrape({"tenure": {"0": 1.0}}, "v1", 3.0)
    assert counter_delta(second, restarted) == restarted.counts  # reset: counts since restart
    swapped = Scrape({"tenure": {"0": 20.0}}, "v2", 3.0)
    assert counter_delta(second, swapped) is None  # different bundle, different bins


def test_increase_query_escapes_the_model_name() -> None:
    assert increase_query('a"b', "15m") == (
        'sum by (feature, bin) (increase(kubeloop_feature_bin_total{model="a\\"b"}[15m]))'
    )
    assert increase_query("churn", "15m", "v1") == (
        'sum by (feature, bin) (increase(kubeloop_feature_bin_total{model="churn",version="v1"}'
        "[15m]))"
    )


def test_parse_vector_refuses_errors_and_matrices() -> None:
    with pytest.raises(SourceError, match="bad_data"):
        parse_vector({"status": "error", "error": "bad_data"})
    with pytest.raises(SourceError, match="vector"):
        parse_vector({"status": "success", "data": {"resultType": "matrix", "result": []}})


class _FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query like Prometheus does (a real HTTP server, canned data)."""

    queries: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)["query"][0]
        type(self).queries.append(query)
        if query.startswith("sum by"):
            result = [
                {"metric": {"feature": "tenure", "bin": "0"}, "value": [1.0, "12.5"]},
                {"metric": {"feature": "tenure", "bin": "1"}, "value": [1.0, "7"]},
            ]
        else:
            result = [
                {
                    "metric": {
                        "__name__": "kubeloop_model_info",
                        "model": "churn",
                        "version": "v7",
                    },
                    "value": [1.0, "1"],
                }
            ]
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def prometheus() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_prometheus_api_reads_increase_and_version(prometheus: str) -> None:
    scrape = PrometheusAPI(prometheus, "churn", window="30m").scrape()
    assert scrape.counts == {"tenure": {"0": 12.5, "1": 7.0}}
    assert scrape.version == "v7"
    assert _FakePrometheus.queries[-1] == increase_query("churn", "30m", "v7")


def test_unreachable_endpoint_raises_source_error_after_retries() -> None:
    endpoint = MetricsEndpoint(
        "http://127.0.0.1:9/metrics", "churn", timeout=0.5, retries=1, backoff=0.01
    )
    with pytest.raises(SourceError, match="after 2 attempts"):
        endpoint.scrape()
