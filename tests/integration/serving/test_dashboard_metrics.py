"""The Grafana dashboard's queries use metrics (and labels) the real server and monitor export.

tests/k8s/test_dashboard.py checks the queries against a list of names; here the names come from
a running ``kubeloop serve`` (after real requests, good and bad) and from a real monitor run, so a
panel for a metric or a label that does not exist fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.k8s.test_dashboard import DASHBOARD, _metric_names

from .conftest import Server, start_server
from .test_protocols import ROWS

pytestmark = pytest.mark.integration

# Labels Prometheus adds from the scrape target (PodMonitor/ServiceMonitor), not the exporter.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "container", "service"}
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")


def _exported(text: str) -> dict[str, set[str]]:
    """Every series name a Prometheus scrape of ``text`` would store, with its label names."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "summary": ("_count", "_sum"),
        }.get(family.type, ("",))
        for suffix in suffixes:  # declared, even before its first labelled sample
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def _queries() -> list[tuple[str, str]]:
    dashboard = json.loads(Path(DASHBOARD).read_text(encoding="utf-8"))
    found = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    variables = dashboard.get("templating", {}).get("list", [])
    for variable in variables:
        query = variable.get("query")
        if isinstance(query, dict) and "label_values(" in query.get("query", ""):
            inner = query["query"].split("label_values(", 1)[1].rsplit(",", 1)[0]
            found.append((f"variable {variable['name']}", inner))
    return found


@pytest.fixture(scope="module")
def dashboard_server(
    small_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``kubeloop serve --model-dir`` on the small bundle (a generous start-up deadline: the
    first start compiles the forest kernel, slow on a busy machine)."""
    directory = tmp_path_factory.mktemp("dashboard-server")
    running = start_server(
        ["--model-dir", str(small_bundle)], name="churn", log=directory / "server.log", timeout=300
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def exported(
    dashboard_server: Server, small_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """Names exported by the server after real traffic, plus the monitor's after one run."""
    from kubeloop.monitoring import metrics as monitor_metrics
    from kubeloop.monitoring.monitor import MonitorConfig, run_once

    server = dashboard_server

    url = f"{server.url}/v1/models/{server.name}:predict"
    good = httpx.post(url, json={"instances": ROWS}, timeout=30)
    assert good.status_code == 200, good.text
    missing = {**ROWS[0], "tenure_months": None}  # imputed and counted
    assert httpx.post(url, json={"instances": [missing]}, timeout=30).status_code == 200
    unknown = {**ROWS[0], "contract": "Lifetime"}
    assert httpx.post(url, json={"instances": [unknown]}, timeout=30).status_code == 200
    bad = httpx.post(url, json={"instances": [{**ROWS[0], "colour": "red"}]}, timeout=30)
    assert bad.status_code == 400
    names = _exported(server.metrics())
    state = tmp_path_factory.mktemp("monitor") / "state.json"
    config = MonitorConfig(
        model=server.name,
        state_file=state,
        model_dir=small_bundle,
        metrics_url=f"{server.url}/metrics",
        dry_run=True,
    )
    result = run_once(config)
    assert result.error is None, result.error
    for name, labels in _exported(generate_latest(monitor_metrics.REGISTRY).decode()).items():
        names.setdefault(name, set()).update(labels)
    return names


def test_server_exports_what_the_docs_promise(exported: dict[str, set[str]]) -> None:
    for name in (
        "kubeloop_predictions_total",
        "kubeloop_feature_bin_total",
        "kubeloop_prediction_value_bucket",
        "kubeloop_model_info",
        "kubeloop_invalid_requests_total",
        "kubeloop_imputed_values_total",
        "kubeloop_unknown_categories_total",
        "kubeloop_requests_total",
        "kubeloop_request_duration_seconds_bucket",
        "kubeloop_rollout_moment_total",
    ):
        assert exported.get(name), f"{name} has no series after real requests"


@pytest.mark.parametrize(("panel", "expr"), _queries(), ids=lambda value: str(value)[:40])
def test_every_dashboard_query_uses_exported_metrics(
    exported: dict[str, set[str]], panel: str, expr: str
) -> None:
    names = _metric_names(expr)
    assert names, f"{panel}: no metric in {expr!r}"
    unknown = sorted(n for n in names if n not in exported)
    assert not unknown, f"panel {panel!r} queries metrics nobody exports: {unknown}"
    for metric, selector in _SELECTOR.findall(expr):
        if not exported.get(metric):
            continue  # declared without a series yet: its labels are unknown
        used = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
        missing = used - exported[metric] - TARGET_LABELS
        assert not missing, f"panel {panel!r}: {metric} has no label(s) {sorted(missing)}"
