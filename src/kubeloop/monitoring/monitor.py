"""One monitor run, and the loop around it: read, judge, decide, maybe retrain, export.

:func:`run_once` never raises for an unreachable source: it counts the failure
(``kubeloop_monitor_errors_total{source}``), records it in the state and returns a result whose
``error`` says what happened; the next run tries again. Errors in the configuration (a missing
bundle, a bad state file) do raise -- retrying would not fix them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kubeloop.bundle import Bundle, load_bundle
from kubeloop.console import ProgressFn, quiet
from kubeloop.errors import ConfigError
from kubeloop.monitoring import metrics as m
from kubeloop.monitoring.decision import (
    Decision,
    MonitorState,
    TriggerPolicy,
    decide,
    load_state,
    save_state,
)
from kubeloop.monitoring.payload import Performance, performance_drop, read_labels, read_payload_log
from kubeloop.monitoring.report import DriftConfig, DriftReport, compare_profile, count_frame
from kubeloop.monitoring.retrain import StartRun, build_retrain_data, refresh_active_run
from kubeloop.monitoring.rollout import RolloutWatch, watch_rollout
from kubeloop.monitoring.sequential import RolloutPolicy
from kubeloop.monitoring.sources import (
    MetricsEndpoint,
    PrometheusAPI,
    Scrape,
    SourceError,
    counter_delta,
)
from kubeloop.names import check_name
from kubeloop.training.engine import AUTO, Workers, shared_local_ray

if TYPE_CHECKING:
    from kubeloop.pipelines.launch.request import RunRequest
    from kubeloop.registry import Registry

__all__ = ["MonitorConfig", "MonitorResult", "parse_window", "run_forever", "run_once"]


def parse_window(text: str) -> float:
    """Seconds of a Prometheus-style duration: ``"90s"``, ``"15m"``, ``"1h"``, ``"1d"``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError, KeyError):
        raise ConfigError(f"Window {text!r} is not a duration like 90s, 15m, 1h.") from None


@dataclass(frozen=True)
class MonitorConfig:
    """What one monitor watches and how it reacts (``kubeloop monitor`` flags).

    Attributes:
        model: Model name (metric label, registry entry, endpoint).
        state_file: The JSON state shared by successive runs.
        registry: Registry root: the reference profile is the champion's.
        model_dir: Or one fixed bundle directory.
        metrics_url: The model server's ``/metrics`` (deltas between runs).
        prometheus_url: Or a Prometheus server (``increase()`` over ``window``).
        payload_log: The server's payload log (raw rows; labels join on it).
        labels: Delayed labels file (``request_id``, ``row``, ``label``).
        window: Drift window for Prometheus and the payload log (``"1h"``).
        retrain_data: Reference data for retraining; ``None`` never starts a run.
        target: Target column of ``retrain_data``.
        kfp_host: KFP API for cluster runs; ``None`` runs ``kfp.local`` in this process.
        workers: How the retraining run's train step trains XGBoost
            (:mod:`kubeloop.training.engine`): ``"auto"``, ``0`` or a Ray Train worker count.
        num_boost_round: Most XGBoost rounds of the retraining run.
        gate_margin: How much better the challenger must score to be promoted.
        candidates: Comma-separated candidates the retraining run trains (``None``: the
            pipeline's default, all three).
        tune_budget: Seconds of XGBoost hyperparameter search in the retraining run (0: none).
        mlflow_uri: MLflow tracking URI of the retraining run (``None``: the run's default).
        inference_service: InferenceService the retraining run's deploy step patches when the
            gate promotes (``None``: no cluster deploy; a local run's server hot-swaps).
        namespace: Namespace of ``inference_service``.
        rollout: How the retraining run's challenger goes live when it passes the gate:
            ``"direct"``, or ``"canary"`` / ``"shadow"`` as the registry's candidate, which this
            monitor then promotes or rolls back (:mod:`kubeloop.monitoring.rollout`).
        canary_percent: ``rollout="canary"``: the candidate's share of requests (default 10);
            ``rollout="direct"``: Knative canary traffic for the promoted model (``None``: all).
        rollout_policy: The sequential test that ends a staged rollout
            (:class:`~kubeloop.monitoring.sequential.RolloutPolicy`).
        dry_run: Decide and report, never start a run (nor end a rollout).
    """

    model: str
    state_file: Path
    registry: str | None = None
    model_dir: Path | None = None
    metrics_url: str | None = None
    prometheus_url: str | None = None
    payload_log: Path | None = None
    labels: Path | None = None
    window: str = "1h"
    drift: DriftConfig = field(default_factory=DriftConfig)
    policy: TriggerPolicy = field(default_factory=TriggerPolicy)
    retrain_data: str | None = None
    target: str | None = None
    kfp_host: str | None = None
    workers: Workers = AUTO
    num_boost_round: int = 400
    gate_margin: float = 0.0
    candidates: str | None = None
    tune_budget: float = 0.0
    mlflow_uri: str | None = None
    inference_service: str | None = None
    namespace: str | None = None
    rollout: str = "direct"
    canary_percent: int | None = None
    rollout_policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    dry_run: bool = False
    retries: int = 2

    def __post_init__(self) -> None:
        check_name(self.model, what="--model")
        if (self.registry is None) == (self.model_dir is None):
            raise ConfigError("Pass exactly one of --registry ROOT or --model-dir DIR.")
        if not (self.metrics_url or self.prometheus_url or self.payload_log):
            raise ConfigError("Pass --metrics-url, --prometheus-url or --payload-log.")
        if self.retrain_data and not self.target:
            raise ConfigError("--data needs --target COL to retrain.")
        if self.namespace and not self.inference_service:
            raise ConfigError("--namespace needs --inference-service NAME.")
        parse_window(self.window)
        if self.retrain_data:
            self.run_request(self.retrain_data)  # the run settings are checked now, not later

    def run_request(self, data: str, *, run_name: str | None = None) -> RunRequest:
        """The retraining run this monitor starts, on ``data``.

        Its deploy step redeploys the served model (``inference_service``) when the gate
        promotes; a local run's server follows the champion and hot-swaps.

        Raises:
            ConfigError: A run setting out of its range (see
                :class:`~kubeloop.pipelines.launch.request.RunRequest`).
        """
        from kubeloop.pipelines.launch.request import RunRequest

        return RunRequest(
            data=data,
            target=self.target or "",
            model_name=self.model,
            host=self.kfp_host,
            workers=self.workers,
            num_boost_round=self.num_boost_round,
            gate_margin=self.gate_margin,
            candidates=self.candidates,
            tune_budget=self.tune_budget,
            registry_root=self.registry,
            mlflow_uri=self.mlflow_uri,
            inference_service=self.inference_service,
            namespace=self.namespace,
            rollout=self.rollout,  # type: ignore[arg-type]  # checked by RunRequest
            canary_percent=self.canary_percent,
            run_name=run_name,
        )


@dataclass(frozen=True)
class MonitorResult:
    """What one run saw and did."""

    bundle_version: str | None
    served_version: str | None
    report: DriftReport | None
    performance: Performance | None
    decision: Decision | None
    outcome: Any = None
    error: str | None = None
    notes: tuple[str, ...] = ()
    counts: dict[str, dict[str, float]] | None = None
    rollout: RolloutWatch | None = None


def _registry(config: MonitorConfig) -> Registry | None:
    if config.registry is None:
        return None
    from kubeloop.registry import Registry

    return Registry(str(config.registry))


def _answered(payload: pd.DataFrame) -> pd.DataFrame:
    """The payload rows a served version answered (a shadow candidate's scores left out)."""
    if "shadow" not in payload.columns:
        return payload
    return payload[~payload["shadow"].fillna(False).astype(bool)]


def _bundle(config: MonitorConfig) -> Bundle:
    if config.model_dir is not None:
        return load_bundle(config.model_dir)
    from kubeloop.registry import Registry

    return load_bundle(Registry(str(config.registry)).fetch(config.model))


def _window_counts(
    config: MonitorConfig, state: MonitorState, bundle: Bundle, payload: pd.DataFrame | None
) -> tuple[dict[str, dict[str, float]] | None, str | None, MonitorState, str]:
    """(counts, served version, new state, note); raises SourceError."""
    if config.metrics_url:
        source = MetricsEndpoint(config.metrics_url, config.model, retries=config.retries)
        scrape = source.scrape()
        previous = Scrape.from_dict(state.last_scrape) if state.last_scrape else None
        counts = counter_delta(previous, scrape)
        state = replace(state, last_scrape=scrape.to_dict())
        note = "" if counts is not None else "served version changed; window restarts"
        return counts, scrape.version, state, note
    if config.prometheus_url:
        api = PrometheusAPI(
            config.prometheus_url, config.model, window=config.window, retries=config.retries
        )
        scrape = api.scrape()
        return scrape.counts, scrape.version, state, ""
    assert payload is not None
    answered = _answered(payload)
    rows = answered[answered["version"] == bundle.version]
    return count_frame(bundle.reference_profile, rows), bundle.version, state, ""


def _start(
    config: MonitorConfig,
    decision: Decision,
    state: MonitorState,
    recent: pd.DataFrame | None,
    start_run: StartRun | None,
    say: ProgressFn,
    now: float,
) -> tuple[MonitorState, Any, str | None]:
    run_name = f"{config.model}-retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"
    where = "cluster" if config.kfp_host else "local"
    active: dict[str, Any] = {
        "run_id": run_name,
        "where": where,
        "started": now,
        "pid": os.getpid(),
    }
    state = state.with_run_started(active, now)
    save_state(config.state_file, state)  # claim the slot before the (long) run starts
    m.RETRAINS.labels(model=config.model, reason=decision.reason).inc()
    if start_run is None:
        from kubeloop.pipelines.launch.runs import start_training_run

        start_run = start_training_run
    assert config.retrain_data is not None and config.target is not None
    try:
        data, added = build_retrain_data(
            config.retrain_data,
            target=config.target,
            recent=recent,
            out=config.state_file.parent / f"{run_name}.csv",
        )
        say(f"retraining on {data} ({added} labelled recent rows + reference) as {run_name}")
        outcome = start_run(config.run_request(data, run_name=run_name), progress=say)
    except Exception as error:  # a failed run never crashes the monitor; it is counted
        m.RETRAIN_FAILURES.labels(model=config.model).inc()
        return replace(state, active_run=None), None, f"retraining failed: {error}"
    if where == "cluster":
        active = {**active, "run_id": outcome.run_id, "host": config.kfp_host}
        return replace(state, active_run=active), outcome, None
    if getattr(outcome, "state", "SUCCEEDED") != "SUCCEEDED":
        m.RETRAIN_FAILURES.labels(model=config.model).inc()
    return replace(state, active_run=None), outcome, None


def run_once(
    config: MonitorConfig,
    *,
    start_run: StartRun | None = None,
    run_state: Callable[[str, str], str] | None = None,
    progress: ProgressFn | None = None,
    now: float | None = None,
) -> MonitorResult:
    """One monitor run (what ``kubeloop monitor --once`` and each ``--interval`` tick do).

    Args:
        config: What to watch.
        start_run: Starts a training run; default :func:`kubeloop.pipelines.start_training_run`.
        run_state: Reads a cluster run's state; default :func:`kubeloop.pipelines.run_state`.
        progress: One human line per step.
        now: Current Unix time (tests).
    """
    say = progress or quiet
    now = time.time() if now is None else now
    state = load_state(config.state_file)
    active, note = refresh_active_run(state.active_run, run_state=run_state)
    state = replace(state, active_run=active)
    notes = [note] if note else []
    registry = _registry(config)
    if registry is not None:
        from kubeloop.registry.rollout import recover

        recovered = recover(registry, config.model, tracking_uri=config.mlflow_uri)
        if recovered:
            say(recovered)
            notes.append(recovered)
    bundle = _bundle(config)
    payload = None
    if config.payload_log and Path(config.payload_log).exists():
        payload = read_payload_log(
            config.payload_log,
            model=config.model,
            since=now - parse_window(config.window),
            shadow=True,  # a shadow candidate's scores, for the rollout; else _answered()
        )
    source = (
        "metrics" if config.metrics_url else "prometheus" if config.prometheus_url else "payload"
    )
    try:
        counts, served, state, note = _window_counts(config, state, bundle, payload)
    except SourceError as unreachable:
        m.MONITOR_ERRORS.labels(model=config.model, source=source).inc()
        state = replace(state, errors=state.errors + 1)
        state = state.with_history(
            {"at": now, "bundle_version": bundle.version, "error": str(unreachable)}
        )
        save_state(config.state_file, state)
        m.LAST_RUN.labels(model=config.model).set(now)
        say(f"source unavailable: {unreachable}")
        return MonitorResult(
            bundle.version, None, None, None, None, error=str(unreachable), notes=tuple(notes)
        )
    notes += [note] if note else []
    report = None
    if counts is not None and served in (None, bundle.version):
        report = compare_profile(bundle.reference_profile, counts, config=config.drift)
        m.publish_psi(config.model, report.psi_by_feature())
        if report.judged:
            m.DRIFT_SHARE.labels(model=config.model).set(report.drift_share)
    elif served is not None and served != bundle.version:
        notes.append(f"server serves {served}, champion is {bundle.version}: waiting for the swap")
    performance, recent, labels = None, None, None
    if payload is not None and config.labels and Path(config.labels).exists():
        labels = read_labels(config.labels)
        answered = _answered(payload)
        performance = performance_drop(
            bundle, answered[answered["version"] == bundle.version], labels
        )
        recent = answered.merge(labels, on=["request_id", "row"], how="inner")
    watch = None
    if registry is not None:
        try:
            state, watch = watch_rollout(
                config, registry, state, payload=payload, labels=labels, now=now, say=say,
                act=not config.dry_run,
            )  # fmt: skip
        except SourceError as unreachable:
            notes.append(f"rollout not judged this time: {unreachable}")
    judged = report is not None and bool(report.judged)
    if watch is not None and watch.transition is not None:  # the next run judges the new state
        state = replace(state, rollout={"candidate": watch.candidate, "ended": watch.action})
    decision = decide(
        drift_share=report.drift_share if judged and report else None,
        drifted_features=report.drifted_features if report else (),
        performance_drop=performance.drop if performance else None,
        state=state,
        policy=config.policy,
        now=now,
    )
    say(
        f"decision: {'RETRAIN' if decision.retrain else 'no retrain'} -- "
        + "; ".join(decision.details)
        + (f" [{decision.blocked_by}]" if decision.blocked_by else "")
    )
    outcome, error = None, None
    if decision.retrain and config.retrain_data and not config.dry_run:
        state, outcome, error = _start(config, decision, state, recent, start_run, say, now)
    if state.rollout is not None and "ended" in state.rollout:
        state = replace(state, rollout=None)
    state = replace(state, last_decision={**decision.to_dict(), "at": now, "error": error})
    record = _history_record(
        now, bundle.version, served, report, performance, decision, outcome, error
    )
    state = state.with_history({**record, "rollout": watch.to_dict() if watch else None})
    save_state(config.state_file, state)
    m.LAST_RUN.labels(model=config.model).set(now)
    return MonitorResult(
        bundle.version, served, report, performance, decision, outcome, error, tuple(notes),
        counts, watch,
    )  # fmt: skip


def _history_record(
    now: float,
    bundle_version: str,
    served: str | None,
    report: DriftReport | None,
    performance: Performance | None,
    decision: Decision,
    outcome: Any,
    error: str | None,
) -> dict[str, Any]:
    """One line of the monitor's history: what it saw, decided and what the run's gate did."""
    run = asdict(outcome) if is_dataclass(outcome) and not isinstance(outcome, type) else None
    return {
        "at": now,
        "bundle_version": bundle_version,
        "served_version": served,
        "rows": report.rows if report else None,
        "drift_share": report.drift_share if report and report.judged else None,
        "drifted_features": list(report.drifted_features) if report else [],
        "performance": vars(performance) if performance else None,
        "decision": decision.to_dict(),
        "run": run,
        "error": error,
    }


def run_forever(
    config: MonitorConfig,
    *,
    interval: float,
    progress: ProgressFn | None = None,
    stop: Callable[[], bool] = lambda: False,
    on_result: Callable[[MonitorResult], None] | None = None,
    **kwargs: Any,
) -> None:
    """Call :func:`run_once` every ``interval`` seconds until ``stop()`` is true.

    ``on_result`` sees every result (the CLI prints it and writes the metrics file). When local
    retraining runs use a local Ray (Ray Train workers: an explicit worker count; or a tuning
    budget; and no Ray cluster), one local Ray is started here and shared by every run
    (:func:`shared_local_ray`).
    """
    local_runs = bool(config.retrain_data) and not config.kfp_host and not config.dry_run
    with shared_local_ray(
        config.workers if local_runs else AUTO, tuning=local_runs and config.tune_budget > 0
    ):
        while not stop():
            started = time.monotonic()
            result = run_once(config, progress=progress, **kwargs)
            if on_result is not None:
                on_result(result)
            while not stop() and time.monotonic() - started < interval:
                time.sleep(min(0.5, interval))
