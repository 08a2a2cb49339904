"""A staged rollout through the real pieces: the pipeline puts a challenger into a canary, a real
``kubeloop serve`` process serves it beside the champion, and the monitor ends the rollout --
also when it is killed with SIGKILL at every step of a promotion and of a rollback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeloop.data.synth import generate_churn
from kubeloop.demo.harness import send_traffic, write_labels
from kubeloop.monitoring.monitor import MonitorConfig, run_once
from kubeloop.monitoring.sources import PrometheusAPI, SourceError
from kubeloop.pipelines.launch.request import RunRequest
from kubeloop.pipelines.launch.runs import start_training_run
from kubeloop.registry import Registry
from kubeloop.registry.tracking import default_tracking_uri, model_aliases, set_aliases
from tests.tools import prometheus_scraping
from tests.waiting import wait_for

from .conftest import MODEL, TARGET, Served

pytestmark = pytest.mark.integration

STEPS = ("journal", "pointer", "aliases", "done")


@dataclass(frozen=True)
class Rollout:
    """The champion and the canary candidate the pipeline made."""

    served: Served
    champion: str
    candidate: str
    registry: Registry


@pytest.fixture(scope="module")
def rollout(served: Served) -> Iterator[Rollout]:
    """A challenger trained on a changed concept (it wins the gate on its own rows) goes into
    a 50 % canary through the pipeline's rollout parameter."""
    data = served.work / "changed.csv"
    generate_churn(2000, seed=5, concept_shift=1.0).to_csv(data, index=False)
    outcome = start_training_run(
        RunRequest(
            data=str(data),
            target=TARGET,
            model_name=MODEL,
            registry_root=str(served.registry),
            workers=1,
            num_boost_round=60,
            rollout="canary",
            canary_percent=50,
        )
    )
    registry = Registry(str(served.registry))
    assert outcome.promoted and outcome.rollout == "canary", outcome
    assert outcome.candidate_version == registry.candidate(MODEL)["version"]  # type: ignore[index]
    assert outcome.champion_version == served.bundle.version  # the champion stays
    assert "canary candidate" in outcome.summary()
    yield Rollout(served, served.bundle.version, str(outcome.candidate_version), registry)


def _reset(r: Rollout) -> None:
    """Champion A with candidate B in a 50 % canary, aliases to match, the server following."""
    if r.registry.candidate(MODEL) is not None:
        r.registry.end_candidate(MODEL)
    if r.registry.champion(MODEL) != r.champion:
        r.registry.promote(MODEL, r.champion)
    r.registry.start_candidate(MODEL, r.candidate, mode="canary", percent=50)
    set_aliases(MODEL, champion_version=r.champion, candidate_version=r.candidate)
    wait_for(
        lambda: r.served.server.served_rollout() == (r.champion, r.candidate),
        what="the server to serve champion and candidate",
    )


def _state(r: Rollout) -> tuple[str | None, str | None]:
    entry = r.registry.candidate(MODEL)
    return r.registry.champion(MODEL), None if entry is None else str(entry["version"])


def _monitor(r: Rollout, tmp_path: Path, **overrides: object) -> MonitorConfig:
    settings: dict[str, object] = {
        "model": MODEL,
        "state_file": tmp_path / "state.json",
        "registry": str(r.served.registry),
        "metrics_url": f"{r.served.server.url}/metrics",
        "mlflow_uri": default_tracking_uri(),
    }
    settings.update(overrides)
    return MonitorConfig(**settings)  # type: ignore[arg-type]


def test_a_candidate_worse_on_delayed_labels_is_rolled_back_by_the_monitor(
    rollout: Rollout, tmp_path: Path
) -> None:
    _reset(rollout)
    served = rollout.served
    labels = tmp_path / "labels.csv"
    config = _monitor(rollout, tmp_path, payload_log=served.payload_log, labels=labels)
    assert run_once(config).rollout is not None  # the first look: the champion's baseline
    frame = generate_churn(800, seed=9)  # the champion's concept: the candidate's is reversed
    sent = send_traffic(served.server.url, MODEL, frame, served.bundle.schema, prefix="c", batch=2)
    write_labels(labels, sent, frame[TARGET])
    watch = run_once(config).rollout
    assert watch is not None and watch.verdict is not None
    by_name = {s.name: s for s in watch.verdict.signals}
    # both versions answered live requests, about half each (a 50 % canary, 400 requests)
    assert 140 <= by_name["error"].n_candidate <= 260 and by_name["error"].n_champion >= 140
    assert by_name["error"].estimate == 0.0  # no request failed on either version
    assert watch.action == "rollback" and "label_loss" in watch.verdict.harmful, watch.verdict
    assert watch.transition is not None and watch.transition["kind"] == "rollback_candidate"
    assert _state(rollout) == (rollout.champion, None)
    assert model_aliases(MODEL) == {"champion": rollout.champion, "candidate": None}
    wait_for(
        lambda: served.server.served_rollout() == (rollout.champion, None),
        what="the champion to serve alone again",
    )
    # the decision is on the candidate's MLflow run: its tags and the whole verdict
    from mlflow import MlflowClient

    client = MlflowClient(default_tracking_uri())
    (entry,) = [
        v
        for v in client.search_model_versions(f"name='{MODEL}'")
        if v.tags.get("kubeloop.version") == rollout.candidate
    ]
    tags = client.get_run(entry.run_id).data.tags
    assert (
        tags["kubeloop.rollout"] == "rollback" and "label_loss" in tags["kubeloop.rollout_reason"]
    )
    assert "rollout/decision.json" in [
        a.path for a in client.list_artifacts(entry.run_id, "rollout")
    ]


def _crashed_monitor(r: Rollout, tmp_path: Path, action: str, step: str) -> int:
    """``kubeloop monitor --once`` that promotes (no harm and the limit reached) or rolls back
    (too few requests by the limit) at once, killed by SIGKILL right after ``step``."""
    wanted = "0" if action == "promote" else "1000000"
    command = [
        sys.executable, "-m", "kubeloop", "monitor", "--once", "--model", MODEL,
        "--registry", str(r.served.registry), "--metrics-url", f"{r.served.server.url}/metrics",
        "--state-file", str(tmp_path / f"{action}-{step}.json"), "--rollout-max-duration", "0.001",
        "--rollout-min-requests", wanted, "--mlflow-uri", default_tracking_uri(),
    ]  # fmt: skip
    env = {**os.environ, "KUBELOOP_CRASH_AT": step}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    return done.returncode


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_a_monitor_killed_at_every_step_leaves_registry_aliases_and_server_agreeing(
    rollout: Rollout, tmp_path: Path, action: str
) -> None:
    before = (rollout.champion, rollout.candidate)
    after = (rollout.candidate, None) if action == "promote" else (rollout.champion, None)
    for step in STEPS:
        _reset(rollout)
        _crashed_monitor(rollout, tmp_path, action, step)
        committed = STEPS.index(step) >= STEPS.index("pointer")
        # the pointer is the commit point: the old state until it was written, the new after
        assert _state(rollout) == (after if committed else before), step
        served = rollout.served.server.served_rollout()
        assert served in (before, after), (step, served)
        if not committed:  # the old champion and candidate never stopped serving
            assert served == before, step
        # a restart (a dry run: it only recovers and looks) makes everything agree
        restarted = run_once(_monitor(rollout, tmp_path / step, dry_run=True))
        state = _state(rollout)
        assert state == (after if committed else before), step
        if step != "done":
            assert any("interrupted" in note for note in restarted.notes), (step, restarted.notes)
        assert model_aliases(MODEL) == {"champion": state[0], "candidate": state[1]}, step
        wait_for(
            lambda state=state: rollout.served.server.served_rollout() == state,  # type: ignore[misc]
            what=f"the server to serve {state} after a crash at {step!r}",
        )


def test_the_monitor_judges_every_replica_through_prometheus(
    rollout: Rollout, tmp_path: Path
) -> None:
    _reset(rollout)
    served = rollout.served
    with prometheus_scraping(served.server.url, tmp_path) as url:
        api = PrometheusAPI(url, MODEL, retries=0)

        def candidate_counted(least: float) -> bool:
            try:
                moments = api.rollout_moments(300)
            except SourceError:  # not listening yet
                return False
            if rollout.candidate not in moments:
                return False
            return moments[rollout.candidate].get("error", (0.0, 0.0, 0.0))[0] >= least

        # increase() counts from a series' first sample: let Prometheus see both versions first
        schema = served.bundle.schema
        warm = generate_churn(40, seed=10)
        send_traffic(served.server.url, MODEL, warm, schema, prefix="w", batch=1)
        wait_for(lambda: candidate_counted(0), what="Prometheus to scrape the candidate's series")
        frame = generate_churn(300, seed=11)
        send_traffic(served.server.url, MODEL, frame, schema, prefix="p", batch=1)
        wait_for(
            lambda: candidate_counted(100), what="Prometheus to count the candidate's requests"
        )
        config = _monitor(rollout, tmp_path, metrics_url=None, prometheus_url=url)
        watch = run_once(config).rollout
    assert watch is not None
    error = {s.name: s for s in watch.verdict.signals}["error"]
    # both versions' requests, summed over the replicas Prometheus scrapes (one here)
    assert error.n_candidate >= 100 and error.n_champion >= 100
    assert error.estimate == 0.0
