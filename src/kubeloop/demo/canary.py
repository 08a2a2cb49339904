"""``kubeloop demo --canary``: a staged rollout that decides for itself, on one machine.

1. a champion is trained (the pipeline, ``kfp.local``) and served by a local model server that
   follows the registry;
2. a **bad challenger**: its retraining window has a label bug (the relationship between the
   features and the label reversed, :func:`kubeloop.data.synth.generate_churn` with
   ``concept_shift=1``). On its own held-out rows it beats the champion, so it passes the offline
   gate, and goes into a canary beside the champion;
3. live traffic (the original regime) with its delayed labels: the monitor's sequential test sees
   the candidate's live loss is worse and **rolls it back** by itself;
4. the world really changes (covariate shift and a concept change): the monitor detects drift
   and retrains on the labelled new rows, and that **good challenger** goes into a canary too;
5. on the new-regime traffic the candidate is better: the monitor **promotes** it and the server
   answers every request with it.

It succeeds only when both happened (``canary_rolled_back`` and ``canary_promoted``).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from kubeloop.bundle import load_bundle
from kubeloop.console import ProgressFn
from kubeloop.demo.harness import (
    ServerProcess,
    heartbeat,
    quiet_output,
    send_traffic,
    write_labels,
)
from kubeloop.demo.story import DemoConfig, run_demo, train_run
from kubeloop.errors import KubeloopError
from kubeloop.monitoring.decision import TriggerPolicy
from kubeloop.monitoring.monitor import MonitorConfig, MonitorResult, run_once
from kubeloop.monitoring.report import DriftConfig
from kubeloop.monitoring.sequential import RolloutPolicy
from kubeloop.registry import Registry

__all__ = ["canary_story", "run_canary_demo"]

_CHUNK_ROWS = 400  # rows of traffic (100 requests) between two monitor runs
_BATCH = 4  # rows per request: enough requests for the per-request signals
# Every version an XGBoost model: the canary also compares latency, and a linear champion
# against a 200-tree forest would be a (real) slowdown that has nothing to do with the story.
_CANDIDATES = "xgboost"
# The canary's bake time: a candidate no signal shows harmful by then is promoted. The labels
# show the good candidate better, and the bad one worse, after a few hundred requests; proving
# the error rate within its margin takes over a thousand (about 15 s of this traffic here).
_BAKE_S = 20.0


class _Clock:
    """Elapsed seconds for the timeline."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __str__(self) -> str:
        return f"t+{time.monotonic() - self.started:5.1f}s"


def _watch(
    server: ServerProcess,
    monitor: MonitorConfig,
    traffic: pd.DataFrame,
    target: str,
    schema: Any,
    *,
    prefix: str,
    labels: Path,
    clock: _Clock,
    say: ProgressFn,
    action: str,
    then: str,
    max_rounds: int = 40,
) -> tuple[MonitorResult | None, int, bool, bool]:
    """Send traffic in chunks (labels follow each) and run the monitor after each chunk until
    the rollout ends. Returns the deciding result, the requests sent meanwhile, whether the
    decision was ``action``, and whether the server then serves ``then`` alone."""
    decided, requests = None, 0
    for round_ in range(max_rounds):
        start = (round_ * _CHUNK_ROWS) % len(traffic)
        chunk = traffic.iloc[start : start + _CHUNK_ROWS].reset_index(drop=True)
        sent = send_traffic(
            server.url, monitor.model, chunk, schema, prefix=f"{prefix}{round_:03d}", batch=_BATCH
        )
        requests += len(sent)
        write_labels(labels, sent, chunk[target])
        result = run_once(monitor, progress=lambda _line: None)
        watch = result.rollout
        if watch is None:
            continue
        verdict = watch.verdict
        shown = verdict.reasons if watch.action != "continue" else verdict.reasons[:1]
        say(f"   {clock} {requests} requests sent: " + "\n      ".join(shown))
        if watch.action != "continue":
            decided = result
            break
    happened = bool(decided and decided.rollout and decided.rollout.action == action)
    return decided, requests, happened, happened and _wait_served(server, then, None)


def _baseline(server: ServerProcess, monitor: MonitorConfig) -> None:
    """Wait for the server, then take the monitor's first look (the counters' baseline)."""
    server.wait_ready()
    run_once(monitor, progress=lambda _line: None)


def _wait_served(
    server: ServerProcess, champion: str, candidate: str | None, *, timeout: float = 60.0
) -> bool:
    """Wait until the server serves ``champion`` with ``candidate`` beside it (or none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.served_rollout() == (champion, candidate):
            return True
        time.sleep(0.1)
    return False


def run_canary_demo(
    config: DemoConfig, *, progress: ProgressFn | None = None, report: Path | None = None
) -> dict[str, Any]:
    """``kubeloop demo --canary``: the staged-rollout story; returns (and writes to ``report``)
    what happened. ``closed`` is true only when the bad candidate was rolled back and the good
    one promoted (and served)."""
    return run_demo(config, progress=progress, report=report, story=canary_story)


def canary_story(config: DemoConfig, work: Path, say: ProgressFn) -> dict[str, Any]:
    """The canary demo's timeline (see the module docstring); returns what happened."""
    from kubeloop.data.synth import CHURN_TARGET, generate_churn

    if config.data is not None:
        raise KubeloopError(
            "kubeloop demo --canary runs on generated data (it needs a challenger with a known "
            "label bug); drop --data."
        )
    clock = _Clock()
    registry_dir, logs, labels = work / "registry", work / "logs", work / "labels.csv"
    logs.mkdir(parents=True, exist_ok=True)
    target, percent = CHURN_TARGET, config.canary_percent
    paths = {}
    for name, frame in {
        "reference": generate_churn(config.rows, seed=0),
        "label-bug": generate_churn(config.rows, seed=3, concept_shift=1.0),
    }.items():
        paths[name] = str(work / f"{name}.csv")
        frame.to_csv(paths[name], index=False)
    live = generate_churn(config.traffic_rows, seed=1)
    drifted = generate_churn(config.traffic_rows, seed=2, covariate_shift=1.0, concept_shift=1.0)
    say(f"1/5 {clock} champion: training pipeline on {config.rows} generated rows")
    train_run(
        paths["reference"], target, config, registry_dir, logs / "pipeline-1.log", say,
        candidates=_CANDIDATES,
    )  # fmt: skip
    registry = Registry(str(registry_dir))
    champion = registry.champion(config.model)
    if champion is None:
        raise KubeloopError("the first pipeline run promoted nothing")
    server = ServerProcess(
        registry=registry_dir, model=config.model, payload_log=work / "payload.jsonl",
        log=logs / "server.log",
    )  # fmt: skip
    monitor = MonitorConfig(
        model=config.model, state_file=work / "monitor-state.json", registry=str(registry_dir),
        metrics_url=f"{server.url}/metrics", payload_log=work / "payload.jsonl", labels=labels,
        drift=DriftConfig(), policy=TriggerPolicy(drift_share=0.3, cooldown_s=3600.0),
        retrain_data=paths["reference"], target=target, workers=config.workers,
        num_boost_round=config.num_boost_round, rollout="canary", canary_percent=percent,
        rollout_policy=RolloutPolicy(max_duration_s=_BAKE_S), candidates=_CANDIDATES,
    )  # fmt: skip
    result: dict[str, Any] = {"champion_first": champion, "canary_percent": percent}
    decided: MonitorResult | None = None
    schema = load_bundle(registry.fetch(config.model, champion)).schema
    try:
        say(f"   {clock} model server starting at {server.url}, serving {champion}")
        say(
            f"2/5 {clock} a challenger whose retraining window has a label bug: pipeline with "
            f"--rollout canary --canary-percent {percent}"
        )
        # The server starts, and the monitor takes its baseline, while the pipeline runs (no
        # traffic is sent before the canary).
        with ThreadPoolExecutor(1, thread_name_prefix="demo-baseline") as pool:
            baseline = pool.submit(_baseline, server, monitor)
            bad = train_run(
                paths["label-bug"], target, config, registry_dir, logs / "pipeline-2.log", say,
                rollout="canary", canary_percent=percent, candidates=_CANDIDATES,
            )  # fmt: skip
            baseline.result()
        say(f"   {clock} gate: {'PASS' if bad.promoted else 'KEEP'} -- {bad.reason}")
        result["bad_candidate"] = bad.candidate_version
        if not bad.promoted or bad.candidate_version is None:
            raise KubeloopError(f"the label-bug challenger did not pass the gate: {bad.reason}")
        _wait_served(server, champion, bad.candidate_version)
        say(f"3/5 {clock} canary: {bad.candidate_version} answers ~{percent}% of live requests")
        decided, requests, rolled_back, restored = _watch(
            server, monitor, live, target, schema, prefix="live", labels=labels,
            clock=clock, say=say, action="rollback", then=champion,
        )  # fmt: skip
        result.update(
            canary_rolled_back=rolled_back and restored,
            rollback_requests=requests,
            rollback_candidate_requests=_requests(decided),
        )
        say(
            f"   {clock} {'ROLLED BACK' if rolled_back else 'NOT rolled back'}; the server "
            f"serves {server.served_rollout()[0]} alone: {restored}"
        )
        say(f"4/5 {clock} the world changes: drifted traffic, its labels, the monitor retrains")
        sent = send_traffic(
            server.url, config.model, drifted, schema, prefix="drifted", batch=_BATCH
        )
        write_labels(labels, sent, drifted[target])
        log = logs / "pipeline-3.log"
        with quiet_output(log), heartbeat(log, say):
            alarm = run_once(monitor, progress=say)
        good = alarm.outcome
        result["good_candidate"] = getattr(good, "candidate_version", None)
        say(f"   {clock} {good.summary() if good else alarm.decision}")
        if good is None or good.candidate_version is None:
            raise KubeloopError("the drift alarm put no candidate into the canary")
        _wait_served(server, champion, good.candidate_version)
        say(f"5/5 {clock} canary: {good.candidate_version} on the new-regime traffic")
        decided, requests, promoted, served = _watch(
            server, monitor, drifted, target, schema, prefix="new", labels=labels,
            clock=clock, say=say, action="promote", then=good.candidate_version,
        )  # fmt: skip
        result.update(
            canary_promoted=promoted and served,
            promote_requests=requests,
            promote_candidate_requests=_requests(decided),
            champion_final=registry.champion(config.model),
            served_final=server.served_rollout()[0],
        )
        say(
            f"   {clock} {'PROMOTED' if promoted else 'NOT promoted'}; the server serves "
            f"{result['served_final']} to every request: {served}"
        )
    finally:
        server.stop()
    result.setdefault("canary_rolled_back", False)
    result.setdefault("canary_promoted", False)
    result["closed"] = bool(result["canary_rolled_back"] and result["canary_promoted"])
    path = config.report_html or (work / "report.html" if config.keep or config.workdir else None)
    if path is not None and decided is not None:
        from kubeloop.report import monitor_report, write_report

        result["report_html"] = str(write_report(path, monitor_report(monitor, decided)))
    return result


def _requests(result: MonitorResult | None) -> float | None:
    """The candidate requests the deciding verdict was based on."""
    if result is None or result.rollout is None:
        return None
    return float(result.rollout.verdict.requests)
