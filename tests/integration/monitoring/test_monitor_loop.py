"""The monitor against a real model server: no drift, drift with cooldown and de-duplication,
a server that is down, a real Prometheus, the KFP component, and a worse challenger."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubeloop.console import ProgressFn
from kubeloop.data.synth import generate_churn
from kubeloop.demo.harness import free_port, send_traffic
from kubeloop.monitoring import compare_profile
from kubeloop.monitoring.decision import MonitorState, TriggerPolicy, load_state, save_state
from kubeloop.monitoring.metrics import REGISTRY
from kubeloop.monitoring.monitor import MonitorConfig, MonitorResult, run_forever, run_once
from kubeloop.monitoring.sources import MetricsEndpoint, PrometheusAPI, Scrape, SourceError
from kubeloop.pipelines.launch.request import RunRequest
from kubeloop.pipelines.launch.runs import RunOutcome
from kubeloop.registry import Registry
from tests.tools import prometheus_scraping
from tests.waiting import wait_for

from .conftest import MODEL, TARGET, Served

pytestmark = pytest.mark.integration


class _Recorder:
    """Stands in for the pipeline where only the trigger is under test; counts the calls."""

    def __init__(self) -> None:
        self.calls: list[RunRequest] = []

    def __call__(self, request: RunRequest, /, *, progress: ProgressFn | None = None) -> RunOutcome:
        self.calls.append(request)
        return RunOutcome(
            run_id=f"local-{len(self.calls)}",
            where="local",
            state="SUCCEEDED",
            promoted=False,
            reason="recorded",
        )


def _config(served: Served, state: Path, **overrides: Any) -> MonitorConfig:
    settings: dict[str, Any] = {
        "model": MODEL,
        "state_file": state,
        "registry": str(served.registry),
        "metrics_url": f"{served.server.url}/metrics",
        "retrain_data": str(served.reference),
        "target": TARGET,
        "policy": TriggerPolicy(drift_share=0.3, cooldown_s=3600),
    }
    settings.update(overrides)
    return MonitorConfig(**settings)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": MODEL, **labels}) or 0.0


def _window_starts_now(served: Served, state: Path) -> None:
    """Save a monitor state whose last scrape is now: the next run sees only newer traffic
    (whatever other tests sent the shared server before is not in its window)."""
    scrape = MetricsEndpoint(f"{served.server.url}/metrics", MODEL).scrape()
    save_state(state, MonitorState(last_scrape=scrape.to_dict()))


def _champion_polls(served: Served) -> float:
    text = httpx.get(f"{served.server.url}/metrics", timeout=10).text
    found = re.search(rf'kubeloop_champion_polls_total{{model="{MODEL}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_no_drift_no_retrain(served: Served, tmp_path: Path) -> None:
    _window_starts_now(served, tmp_path / "state.json")
    send_traffic(
        served.server.url,
        MODEL,
        generate_churn(1000, seed=1),
        served.bundle.schema,
        prefix="healthy",
    )
    recorder = _Recorder()
    result = run_once(_config(served, tmp_path / "state.json"), start_run=recorder)
    assert result.error is None and result.report is not None
    assert result.served_version == served.bundle.version
    assert result.report.rows >= 1000 and result.report.drifted_features == ()
    assert result.decision is not None and not result.decision.retrain
    assert recorder.calls == []
    psi = result.report.psi_by_feature()["tenure_months"]
    assert _sample("kubeloop_feature_psi", feature="tenure_months") == pytest.approx(psi)
    assert _sample("kubeloop_drift_share") == 0.0
    assert _sample("kubeloop_monitor_last_run_timestamp_seconds") > time.time() - 60


def test_drift_starts_exactly_one_retrain(served: Served, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    recorder = _Recorder()
    config = _config(served, state)
    _window_starts_now(served, state)
    before = _sample("kubeloop_retrain_total", reason="drift")
    decisions = []
    for i in range(3):
        drifted = generate_churn(400, seed=10 + i, covariate_shift=1.0)
        send_traffic(served.server.url, MODEL, drifted, served.bundle.schema, prefix=f"d{i}")
        result = run_once(config, start_run=recorder)
        assert result.report is not None and result.report.drift_share >= 0.3
        decisions.append(result.decision)
    assert len(recorder.calls) == 1
    assert recorder.calls[0].model_name == MODEL and recorder.calls[0].target == TARGET
    assert [d.retrain for d in decisions if d] == [True, False, False]
    assert [d.blocked_by for d in decisions if d][1:] == ["cooldown", "cooldown"]
    assert _sample("kubeloop_retrain_total", reason="drift") == before + 1
    assert load_state(state).active_run is None and len(load_state(state).retrain_starts) == 1

    # Another monitor's run is in progress (a live process holds it): never a second run.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / "busy.json"
        save_state(
            busy, MonitorState(active_run={"run_id": "r0", "where": "local", "pid": other.pid})
        )
        run_once(_config(served, busy), start_run=recorder)
        send_traffic(
            served.server.url,
            MODEL,
            generate_churn(400, seed=20, covariate_shift=1.0),
            served.bundle.schema,
            prefix="busy",
        )
        blocked = run_once(_config(served, busy), start_run=recorder)
        assert blocked.decision is not None and blocked.decision.blocked_by == "active_run"
        assert len(recorder.calls) == 1
    finally:
        other.kill()
        other.wait()


def test_monitor_survives_the_server_being_down(served: Served, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    down = _config(served, state, metrics_url=f"http://127.0.0.1:{free_port()}/metrics", retries=1)
    errors = _sample("kubeloop_monitor_errors_total", source="metrics")
    for expected in (1, 2):
        result = run_once(down)
        assert result.error is not None and "Could not read" in result.error
        assert load_state(state).errors == expected
    assert _sample("kubeloop_monitor_errors_total", source="metrics") == errors + 2
    recovered = run_once(_config(served, state))
    assert recovered.error is None and recovered.report is not None
    cli = subprocess.run(
        [sys.executable, "-c", "import sys; from kubeloop.cli import main; sys.exit(main())",
         "monitor", "--once", "--model", MODEL, "--registry", str(served.registry),
         "--metrics-url", down.metrics_url or "", "--state-file", str(tmp_path / "cli.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    assert "source unavailable" in cli.stderr and "Traceback" not in cli.stderr


def test_run_forever_repeats_until_stopped(served: Served, tmp_path: Path) -> None:
    results: list[MonitorResult] = []
    run_forever(
        _config(served, tmp_path / "state.json", policy=TriggerPolicy(drift_share=1.0)),
        interval=0.2,
        stop=lambda: len(results) >= 2,
        on_result=results.append,
        start_run=_Recorder(),
    )
    assert len(results) == 2 and [r.error for r in results] == [None, None]


def test_real_prometheus_scraping_the_server(served: Served, tmp_path: Path) -> None:
    with prometheus_scraping(served.server.url, tmp_path) as url:
        api = PrometheusAPI(url, MODEL, window="5m", retries=0)

        def scrape() -> Scrape | None:
            try:
                return api.scrape()
            except SourceError:  # not listening yet, or no sample yet
                return None

        def first_samples() -> Scrape | None:
            answer = scrape()
            return answer if answer is not None and answer.version else None

        wait_for(first_samples, what="Prometheus's first samples", timeout=60, every=0.5)
        drifted = generate_churn(1500, seed=30, covariate_shift=1.0)
        send_traffic(served.server.url, MODEL, drifted, served.bundle.schema, prefix="p")

        def drifted_counts() -> Scrape | None:  # the drifted rows are in the window
            answer = scrape()
            rows = sum(answer.counts.get("payment_method", {}).values()) if answer else 0
            return answer if rows > 500 else None

        last = wait_for(drifted_counts, what="the drifted counters", timeout=60, every=0.5)
        report = compare_profile(served.bundle.reference_profile, last.counts)
        assert last.version == served.bundle.version
        assert "payment_method" in report.drifted_features


def test_kfp_monitoring_component_reads_the_payload_log(served: Served, tmp_path: Path) -> None:
    from kfp import local

    from kubeloop.pipelines.components.monitor import build_monitor_component

    # Drifted traffic through the real server; the component reads this test's records of the
    # server's payload log (other tests send healthy traffic to the same server).
    drifted = generate_churn(1500, seed=50, covariate_shift=1.0)
    sent = send_traffic(served.server.url, MODEL, drifted, served.bundle.schema, prefix="kfp")
    ours = {request_id for request_id, _ in sent}
    log = tmp_path / "payload.jsonl"
    log.write_text(
        "".join(
            line + "\n"
            for line in served.payload_log.read_text().splitlines()
            if json.loads(line)["request_id"] in ours
        )
    )
    assert len(log.read_text().splitlines()) == len(sent)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    component = build_monitor_component()
    task = component(
        model=MODEL,
        state_file=str(tmp_path / "state.json"),
        registry=str(served.registry),
        payload_log=str(log),
        window="1h",
        dry_run=True,
    )
    assert task.outputs["drift_share"] > 0.0
    assert task.outputs["retrain"] is True  # dry run: wanted, not started
    report = Path(task.outputs["report"].path).read_text()
    assert served.bundle.version in report and "payment_method" in report


def test_worse_challenger_is_not_promoted_and_the_server_keeps_serving(
    served: Served, tmp_path: Path
) -> None:
    from kubeloop.pipelines.launch.runs import start_training_run

    # Labels shuffled: the challenger learns nothing real. On the held-out rows of this data
    # both models score AUC ~0.5 +- 0.05, so the gate runs with a margin (0.2, about four
    # standard deviations of that noise) that only a genuinely better challenger could clear.
    noise = generate_churn(1500, seed=40)
    noise[TARGET] = noise[TARGET].sample(frac=1.0, random_state=0).to_numpy()  # no signal left
    path = tmp_path / "noise.csv"
    noise.to_csv(path, index=False)
    request = RunRequest(
        data=str(path),
        target=TARGET,
        model_name=MODEL,
        registry_root=str(served.registry),
        workers=1,
        num_boost_round=30,
        gate_margin=0.2,
    )
    outcome = start_training_run(request)
    assert outcome.promoted is False, outcome.reason
    assert "does not beat" in outcome.reason
    registry = Registry(str(served.registry))
    assert registry.champion(MODEL) == served.bundle.version
    assert len(registry.versions(MODEL)) >= 1
    polls = _champion_polls(served)  # two more complete polls: the second began after the run
    wait_for(lambda: _champion_polls(served) >= polls + 2, what="two champion polls", timeout=60)
    assert served.server.served_version() == served.bundle.version
    sent = send_traffic(
        served.server.url, MODEL, generate_churn(50, seed=41), served.bundle.schema, prefix="after"
    )
    assert sum(rows for _, rows in sent) == 50  # still answering, with the old champion
