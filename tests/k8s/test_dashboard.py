"""The Grafana dashboard: valid JSON, templated data source, and every query uses real metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.k8s import k8s_helpers as h

DASHBOARD = h.CHART / "files" / "dashboard.json"

# docs/architecture.md (kubeloop) plus KServe's own predict latency histogram.
METRICS = {
    "kubeloop_predictions_total",
    "kubeloop_prediction_value",
    "kubeloop_feature_bin_total",
    "kubeloop_invalid_requests_total",
    "kubeloop_imputed_values_total",
    "kubeloop_unknown_categories_total",
    "kubeloop_model_info",
    "kubeloop_model_load_failures_total",
    "kubeloop_requests_total",
    "kubeloop_request_duration_seconds",
    "kubeloop_candidate_info",
    "kubeloop_rollout_moment_total",
    "kubeloop_feature_psi",
    "kubeloop_drift_share",
    "kubeloop_retrain_total",
    "kubeloop_retrain_failures_total",
    "kubeloop_monitor_last_run_timestamp_seconds",
    "kubeloop_monitor_errors_total",
    # Staged rollout (issue 24): the server's per-version series and the monitor's judgement.
    "kubeloop_rollout_decisions_total",
    "kubeloop_rollout_requests",
    "kubeloop_rollout_signal",
    "request_predict_seconds",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "by", "without", "rate", "increase", "irate", "histogram_quantile",
    "time", "label_replace", "le", "on", "ignoring", "count", "clamp_min", "topk", "bool",
    "and", "or", "unless",
}  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]|\boffset\s+[0-9smhdwy]+", "", without_labels)
    without_grouping = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_ranges
    )
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_grouping))
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("$")}


def _base_metric(name: str) -> str:
    if name in METRICS:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in METRICS:
            return name.removesuffix(suffix)
    return name


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "kubeloop-overview"
    assert dashboard["title"].startswith("kubeloop")
    assert dashboard["schemaVersion"] >= 36


def test_datasource_is_templated(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "model"} <= set(variables)
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_are_unique_and_laid_out(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_every_query_uses_known_metrics(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = {_base_metric(n) for n in _metric_names(target["expr"])}
            assert names, target["expr"]
            assert names <= METRICS, (panel["title"], names - METRICS)
            assert 'model=~"$model"' in target["expr"] or 'model_name=~"$model"' in target["expr"]
            used |= names
    # Latency, traffic, predictions, PSI per feature, model version timeline.
    assert {
        "request_predict_seconds",
        "kubeloop_predictions_total",
        "kubeloop_prediction_value",
        "kubeloop_feature_psi",
        "kubeloop_model_info",
    } <= used


def test_required_panels(dashboard: dict[str, Any]) -> None:
    by_type = {(p["type"], p["title"]) for p in _panels(dashboard)}
    assert ("state-timeline", "Model version timeline") in by_type
    assert ("timeseries", "PSI per feature") in by_type
    assert ("timeseries", "Predict latency") in by_type


def test_rollout_panels_show_the_versions_side_by_side(dashboard: dict[str, Any]) -> None:
    # Requests, errors, p99 latency and predictions per version; the candidate; the monitor's
    # signals and decisions.
    by_title = {p["title"]: p for p in _panels(dashboard)}
    for title in (
        "Requests per version",
        "Error rate per version",
        "p99 latency per version",
        "Prediction distribution per version",
    ):
        exprs = [t["expr"] for t in by_title[title]["targets"]]
        assert all("by (version" in e for e in exprs), title
    first = {title: panel["targets"][0]["expr"] for title, panel in by_title.items()}
    assert "kubeloop_request_duration_seconds_bucket" in first["p99 latency per version"]
    assert 'outcome="error"' in first["Error rate per version"]
    assert "kubeloop_candidate_info" in first["Candidate"]
    assert "kubeloop_rollout_signal" in first["Rollout signals (candidate − champion)"]
    assert "kubeloop_rollout_decisions_total" in first["Rollout decisions"]


def test_metric_extraction_flags_unknown_names() -> None:
    names = {_base_metric(n) for n in _metric_names('sum(rate(kubeloop_typo_total{a="b"}[5m]))')}
    assert names == {"kubeloop_typo_total"}
    assert not names <= METRICS


def test_metric_list_matches_the_declared_metrics() -> None:
    # The server and monitor declare their metrics in one module each; every name the
    # dashboard may use must exist there (KServe's own histogram aside).
    declared = set()
    for module in ("serving/metrics.py", "monitoring/metrics.py"):
        path = h.ROOT / "src" / "kubeloop" / module
        if not path.is_file():
            pytest.fail(f"src/kubeloop/{module} is missing")
        declared |= set(re.findall(r'"(kubeloop_[a-z_]+)"', path.read_text()))
    counters = {m.removesuffix("_total") for m in METRICS if m.endswith("_total")}
    expected = {m for m in METRICS if m.startswith("kubeloop_") and not m.endswith("_total")}
    assert expected | counters <= declared | {m + "_total" for m in declared}
