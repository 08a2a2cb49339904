"""A small real loop for the HTML report: a trained bundle in a registry, a real server with a
payload log, healthy then drifted traffic, monitor runs (Python and the real CLI), and the pages
``kubeloop monitor --report-html`` and ``kubeloop report`` write.

Training uses the linear and random-forest candidates only, so no Ray is started.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.serving.conftest import start_server

pytestmark = pytest.mark.integration

MODEL = "churn"
KUBELOOP = [sys.executable, "-c", "import sys; from kubeloop.cli import main; sys.exit(main())"]


@dataclass(frozen=True)
class Loop:
    """Where the small loop lives and the two pages written from it."""

    work: Path
    registry: Path
    state_file: Path
    payload_log: Path
    version: str
    monitor_page: Path
    report_page: Path


def _cli(*args: str) -> str:
    done = subprocess.run([*KUBELOOP, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"kubeloop {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    from kubeloop.bundle import load_bundle
    from kubeloop.data.synth import generate_churn
    from kubeloop.demo.harness import send_traffic
    from kubeloop.monitoring.monitor import MonitorConfig, run_once
    from kubeloop.registry import Registry
    from kubeloop.training import TrainConfig
    from kubeloop.training.workflow import run_training

    work = tmp_path_factory.mktemp("report")
    config = TrainConfig(
        candidates=("linear", "random_forest"), forest_trees=40, forest_max_depth=6
    )
    trained = run_training(
        generate_churn(1500, seed=0),
        target="churned",
        out=work / "bundle",
        config=config,
        name=MODEL,
    )
    registry_dir = work / "registry"
    registry = Registry(str(registry_dir))
    version = registry.register(trained.bundle.path)
    registry.promote(MODEL, version)
    schema = load_bundle(registry.fetch(MODEL)).schema
    payload, state = work / "payload.jsonl", work / "monitor-state.json"
    server = start_server(
        ["--registry", str(registry_dir), "--model", MODEL, "--payload-log", str(payload)],
        name=MODEL,
        log=work / "server.log",
    )
    try:
        send_traffic(server.url, MODEL, generate_churn(600, seed=1), schema, prefix="healthy")
        monitor = MonitorConfig(
            model=MODEL,
            state_file=state,
            registry=str(registry_dir),
            metrics_url=f"{server.url}/metrics",
            payload_log=payload,
            dry_run=True,
        )
        calm = run_once(monitor)
        assert calm.report is not None and not calm.report.drifted_features
        drifted = generate_churn(600, seed=2, covariate_shift=1.0)
        send_traffic(server.url, MODEL, drifted, schema, prefix="drifted")
        monitor_page = work / "monitor.html"
        out = _cli(
            "monitor",
            "--once",
            "--dry-run",
            "--model",
            MODEL,
            "--registry",
            str(registry_dir),
            "--metrics-url",
            f"{server.url}/metrics",
            "--payload-log",
            str(payload),
            "--state-file",
            str(state),
            "--report-html",
            str(monitor_page),
        )
        assert f"report: {monitor_page}" in out
    finally:
        server.stop()
    report_page = work / "report.html"
    out = _cli(
        "report",
        "--registry",
        str(registry_dir),
        "--model",
        MODEL,
        "--payload-log",
        str(payload),
        "--state-file",
        str(state),
        "--out",
        str(report_page),
    )
    assert str(report_page) in out
    yield Loop(work, registry_dir, state, payload, version, monitor_page, report_page)
