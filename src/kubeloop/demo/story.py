"""``kubeloop demo``: the whole closed loop on one machine, as a readable timeline.

train (KFP pipeline via ``kfp.local``) -> serve (the model server as a local process that
follows the registry champion) -> healthy traffic -> monitor: no drift -> drifted traffic
(covariate shift and a concept change) with its delayed labels -> monitor: drift -> retraining
pipeline on reference + labelled recent rows -> gate -> promote -> the server hot-swaps.

It succeeds only when the loop really closed: the server answers with the new version.
Everything lives in a temporary directory (removed at the end unless ``keep``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kubeloop.bundle import load_bundle
from kubeloop.console import ProgressFn, quiet
from kubeloop.demo.harness import (
    ServerProcess,
    drift_frame,
    heartbeat,
    quiet_output,
    send_traffic,
    write_labels,
)
from kubeloop.errors import KubeloopError
from kubeloop.monitoring.decision import TriggerPolicy, load_state
from kubeloop.monitoring.monitor import MonitorConfig, MonitorResult, run_once
from kubeloop.monitoring.report import DriftConfig
from kubeloop.registry import Registry
from kubeloop.training.engine import AUTO, Workers, shared_local_ray

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on.

    Attributes:
        data: A user's CSV/Parquet (``None``: generated churn-like data).
        target: Its target column (``churned`` for generated data).
        model: Model name in the registry and on the endpoint.
        rows: Generated reference rows.
        traffic_rows: Rows of healthy traffic, and of drifted traffic.
        workers: How each training run trains XGBoost (:mod:`kubeloop.training.engine`):
            ``"auto"`` (in the train step's process), or a Ray Train worker count (then one
            local Ray is started once and shared by both runs).
        num_boost_round: Most XGBoost rounds (early stopping applies).
        workdir: Where everything goes (default: a temporary directory).
        keep: Keep ``workdir`` at the end.
        swap_timeout: Seconds to wait for the server to switch versions.
        report_html: Where the HTML report goes (default: ``report.html`` in ``workdir`` when
            it is kept; none otherwise).
        canary_percent: The candidate's share of requests in the canaries of the staged-rollout
            story (:mod:`kubeloop.demo.canary`).
    """

    data: Path | None = None
    target: str | None = None
    model: str = "churn"
    rows: int = 4000
    traffic_rows: int = 2000
    workers: Workers = AUTO
    num_boost_round: int = 150
    workdir: Path | None = None
    keep: bool = False
    swap_timeout: float = 120.0
    report_html: Path | None = None
    canary_percent: int = 30


@contextmanager
def demo_home(path: Path) -> Iterator[None]:
    """Point KUBELOOP_HOME (kfp.local root, MLflow store) at the demo's directory."""
    saved = os.environ.get("KUBELOOP_HOME")
    os.environ["KUBELOOP_HOME"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("KUBELOOP_HOME", None)
        else:
            os.environ["KUBELOOP_HOME"] = saved


def _datasets(config: DemoConfig, work: Path) -> tuple[str, pd.DataFrame, pd.DataFrame, str]:
    """(reference path, healthy traffic, drifted traffic with labels, target)."""
    if config.data is None:
        from kubeloop.data.synth import CHURN_TARGET, generate_churn

        reference = generate_churn(config.rows, seed=0)
        healthy = generate_churn(config.traffic_rows, seed=1)
        drifted = generate_churn(
            config.traffic_rows, seed=2, covariate_shift=1.0, concept_shift=1.0
        )
        target = CHURN_TARGET
    else:
        if not config.target:
            raise KubeloopError("--data needs --target COL (the column to predict).")
        from kubeloop.data import read_table

        frame = read_table(config.data).sample(frac=1.0, random_state=0).reset_index(drop=True)
        cut = int(len(frame) * 0.6)
        reference, rest = frame.iloc[:cut], frame.iloc[cut:].reset_index(drop=True)
        half = len(rest) // 2
        healthy = rest.iloc[:half]
        drifted = drift_frame(rest.iloc[half:].reset_index(drop=True), config.target)
        target = config.target
    path = work / "reference.csv"
    reference.to_csv(path, index=False)
    return str(path), healthy, drifted, target


def train_run(
    data: str,
    target: str,
    config: DemoConfig,
    registry: Path,
    log: Path,
    say: ProgressFn,
    **settings: Any,
) -> Any:
    """One local pipeline run on ``data`` (its steps' output goes to ``log``); ``settings``:
    more :class:`~kubeloop.pipelines.launch.request.RunRequest` fields (a rollout)."""
    from kubeloop.pipelines.launch.request import RunRequest
    from kubeloop.pipelines.launch.runs import start_training_run

    request = RunRequest(
        data=data, target=target, model_name=config.model, registry_root=str(registry),
        workers=config.workers, num_boost_round=config.num_boost_round, **settings,
    )  # fmt: skip
    with quiet_output(log), heartbeat(log, say):
        return start_training_run(request, progress=say)


def _psi_line(result: MonitorResult) -> str:
    if result.report is None:
        return "no drift window"
    parts = [f"{f.feature}={f.psi:.2f}{'*' if f.drifted else ''}" for f in result.report.judged]
    return f"drift share {result.report.drift_share:.2f}; PSI " + " ".join(parts)


def _say_check(check: MonitorResult, alarm: MonitorResult, say: ProgressFn) -> None:
    if check.performance and alarm.performance:
        say(
            f"   new model, live {check.performance.metric} on new-regime traffic: "
            f"{check.performance.current:.3f} (old model: {alarm.performance.current:.3f})"
        )
    if check.decision:
        blocked = f" ({check.decision.blocked_by})" if check.decision.blocked_by else ""
        say(f"   monitor again: retrain {check.decision.retrain}{blocked}")


def _loop(config: DemoConfig, work: Path, say: ProgressFn) -> dict[str, Any]:
    registry_dir, logs = work / "registry", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reference, healthy, drifted, target = _datasets(config, work)
    say(f"1/6 data: {reference} ({len(pd.read_csv(reference))} rows), target {target!r}")
    say(
        "2/6 training pipeline (kfp.local: validate, features, XGBoost through Ray Train, "
        "evaluate, gate, register)"
    )
    first = train_run(reference, target, config, registry_dir, logs / "pipeline-1.log", say)
    registry = Registry(str(registry_dir))
    before = registry.champion(config.model)
    if before is None:
        raise KubeloopError(f"the first pipeline run promoted nothing: {first.reason}")
    bundle = load_bundle(registry.fetch(config.model, before))
    say(f"   champion {before}: test {_metrics(bundle.metrics)}")
    server = ServerProcess(
        registry=registry_dir,
        model=config.model,
        payload_log=work / "payload.jsonl",
        log=logs / "server.log",
    )
    try:
        server.wait_ready()
        say(f"3/6 model server up at {server.url}, serving {server.served_version()}")
        send_traffic(server.url, config.model, healthy, bundle.schema, prefix="healthy")
        monitor = MonitorConfig(
            model=config.model, state_file=work / "monitor-state.json",
            registry=str(registry_dir), metrics_url=f"{server.url}/metrics",
            payload_log=work / "payload.jsonl", labels=work / "labels.csv",
            drift=DriftConfig(), policy=TriggerPolicy(drift_share=0.3, cooldown_s=3600),
            retrain_data=reference, target=target, workers=config.workers,
            num_boost_round=config.num_boost_round,
        )  # fmt: skip
        calm = run_once(monitor, progress=quiet)
        say(
            f"   {len(healthy)} healthy rows sent; monitor: {_psi_line(calm)}; "
            f"retrain: {bool(calm.decision and calm.decision.retrain)}"
        )
        say("4/6 drifted traffic: covariate shift + concept change")
        drift_started = time.time()
        sent = send_traffic(server.url, config.model, drifted, bundle.schema, prefix="drifted")
        write_labels(work / "labels.csv", sent, drifted[target].reset_index(drop=True))
        say(f"   {len(drifted)} drifted rows sent; their labels arrived in labels.csv")
        say("5/6 monitor: drift check, then retraining through the pipeline and the gate")
        log = logs / "pipeline-2.log"
        with quiet_output(log), heartbeat(log, say):
            alarm = run_once(monitor, progress=say)
        say(f"   {_psi_line(alarm)}")
        if alarm.performance:
            p = alarm.performance
            say(f"   live {p.metric} {p.current:.3f} vs test {p.reference:.3f} (drop {p.drop:.3f})")
        outcome = alarm.outcome
        promoted = bool(outcome and outcome.promoted)
        after = registry.champion(config.model)
        if outcome is not None:
            say(f"   gate: {'PROMOTE' if promoted else 'KEEP'} -- {outcome.reason}")
        served = _wait_swap(server, after, before, config.swap_timeout, say)
        check = None
        if served == after and after != before:  # the new model on new-regime traffic
            sent = send_traffic(server.url, config.model, drifted, bundle.schema, prefix="after")
            write_labels(work / "labels.csv", sent, drifted[target].reset_index(drop=True))
            check = run_once(monitor, progress=quiet)
            _say_check(check, alarm, say)
    finally:
        server.stop()
    report_html = _html_report(config, work, monitor, alarm, drift_started)
    if report_html is not None:
        say(f"HTML report: {report_html}")
    return {
        "drift_detected": bool(alarm.report and alarm.report.drifted_features),
        "retrain_started": alarm.outcome is not None,
        "promoted": promoted, "version_before": before, "version_after": after,
        "served_version_before": calm.served_version, "served_version_after": served,
        "healthy_drift_share": calm.report.drift_share if calm.report else None,
        "drift_share": alarm.report.drift_share if alarm.report else None,
        "psi": alarm.report.psi_by_feature() if alarm.report else {},
        "healthy_psi": calm.report.psi_by_feature() if calm.report else {},
        "decision": alarm.decision.to_dict() if alarm.decision else None,
        "performance": vars(alarm.performance) if alarm.performance else None,
        "metrics_before": _metrics(bundle.metrics),
        "metrics_after": _metrics(load_bundle(registry.fetch(config.model, after))
                                  .metrics) if after else None,
        "challenger_score": getattr(outcome, "challenger_score", None),
        "champion_score": getattr(outcome, "champion_score", None),
        "live_metric_before": alarm.performance.current if alarm.performance else None,
        "live_metric_after": check.performance.current if check and check.performance else None,
        "retrain_runs": len(load_state(monitor.state_file).retrain_starts),
        "error": alarm.error,
        "report_html": str(report_html) if report_html else None,
    }  # fmt: skip


def _html_report(
    config: DemoConfig, work: Path, monitor: MonitorConfig, alarm: MonitorResult, since: float
) -> Path | None:
    """The HTML report of the drift alarm (the old champion, the drifted window, the history)."""
    path = config.report_html or (work / "report.html" if config.keep or config.workdir else None)
    if path is None:
        return None
    from kubeloop.report import monitor_report, write_report

    return write_report(path, monitor_report(monitor, alarm, since=since))


def _metrics(metrics: dict[str, Any]) -> dict[str, float]:
    keys = ("roc_auc", "pr_auc", "f1", "accuracy") if "roc_auc" in metrics else ("rmse", "r2")
    return {k: round(float(metrics[k]), 4) for k in keys if k in metrics}


def _wait_swap(
    server: ServerProcess, after: str | None, before: str | None, timeout: float, say: ProgressFn
) -> str | None:
    served = server.served_version()
    if after is None or after == before:
        return served
    say(f"6/6 waiting for the server to hot-swap {before} -> {after}")
    deadline = time.monotonic() + timeout
    while served != after and time.monotonic() < deadline:
        time.sleep(0.1)
        served = server.served_version()
    say(f"   server now serves {served}")
    return served


Story = Callable[[DemoConfig, Path, ProgressFn], dict[str, Any]]


def run_demo(
    config: DemoConfig,
    *,
    progress: ProgressFn | None = None,
    report: Path | None = None,
    story: Story | None = None,
) -> dict[str, Any]:
    """Run the closed loop once; returns (and writes to ``report``) what happened.

    The result's ``closed`` is true only when drift was detected, a retrain started, its
    model was promoted and the server answers with that new version. ``story`` tells another
    story in the same setting (its home, one shared local Ray, the work directory), e.g.
    :func:`kubeloop.demo.canary.canary_story`; its result carries its own ``closed``.
    """
    say = progress or quiet
    started = time.monotonic()
    work = config.workdir or Path(tempfile.mkdtemp(prefix="kubeloop-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with demo_home(work / "home"), shared_local_ray(config.workers) as ray_address:
            if ray_address:
                say(f"Ray started once at {ray_address}, shared by both training runs")
            result = (story or _loop)(config, work, say)
    finally:
        if not config.keep and config.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if story is not None:  # its result says itself whether it succeeded
        return _finish(result, config, work, started, report)
    result["closed"] = bool(
        result["drift_detected"] and result["retrain_started"] and result["promoted"]
        and result["version_after"] != result["version_before"]
        and result["served_version_after"] == result["version_after"]
    )  # fmt: skip
    return _finish(result, config, work, started, report)


def _finish(
    result: dict[str, Any], config: DemoConfig, work: Path, started: float, report: Path | None
) -> dict[str, Any]:
    """Stamp the time and where the files are; write the JSON report."""
    result["seconds"] = round(time.monotonic() - started, 1)
    result["workdir"] = str(work) if (config.keep or config.workdir) else None
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return result
