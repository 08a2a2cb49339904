"""``kubeloop monitor``: watch a served model for drift and retrain when it drifts."""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
from pathlib import Path
from typing import Any

from kubeloop.console import Progress, format_table
from kubeloop.names import model_name_arg
from kubeloop.training.engine import AUTO, WORKERS_HELP, short_openmp_spin, workers_arg

__all__ = ["psi_table", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``monitor`` sub-command."""
    parser = subparsers.add_parser(
        "monitor",
        help="compare live traffic with the model's reference profile; retrain on drift",
        description=(
            "Read the served model's bin counters (its /metrics, or Prometheus), score PSI per "
            "feature against the champion's reference profile, check delayed labels, and start "
            "the training pipeline when the drift share or the performance drop crosses its "
            "threshold -- with cooldown, de-duplication and a daily cap kept in a state file."
        ),
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one run, then exit (CronJob)")
    mode.add_argument("--interval", type=float, metavar="S", help="run every S seconds")
    parser.add_argument("--model", required=True, type=model_name_arg, help="model name")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--registry", help="registry root (default: KUBELOOP_REGISTRY / home)")
    where.add_argument("--model-dir", type=Path, help="or one fixed bundle directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--metrics-url", help="model server /metrics URL (deltas between runs)")
    source.add_argument("--prometheus-url", help="Prometheus base URL (increase() over --window)")
    parser.add_argument("--window", default="1h", help="drift window for Prometheus/payload log")
    parser.add_argument("--payload-log", type=Path, help="the server's payload log (JSON Lines)")
    parser.add_argument("--labels", type=Path, help="delayed labels: request_id, row, label")
    parser.add_argument("--psi-threshold", type=float, default=0.2, help="PSI drift threshold")
    parser.add_argument(
        "--feature-threshold",
        action="append",
        default=[],
        metavar="FEATURE=PSI",
        help="per-feature PSI threshold (repeatable)",
    )
    parser.add_argument("--min-rows", type=int, default=100, help="rows needed to judge a feature")
    parser.add_argument("--drift-share", type=float, default=0.3, help="share that retrains")
    parser.add_argument(
        "--max-performance-drop",
        type=float,
        default=0.05,
        help="AUC points (or relative RMSE) lost that retrains",
    )
    parser.add_argument("--cooldown", type=float, default=3600.0, help="seconds between runs")
    parser.add_argument("--daily-cap", type=int, default=3, help="most runs per 24 hours")
    parser.add_argument("--state-file", type=Path, help="state JSON (default: under home)")
    parser.add_argument("--data", help="reference data to retrain on (path or URL)")
    parser.add_argument("--target", help="target column of --data")
    parser.add_argument("--kfp-host", help="KFP API host (default: kfp.local in this process)")
    parser.add_argument(
        "--workers",
        type=workers_arg,
        default=AUTO,
        metavar="auto|N",
        help=f"retraining runs: {WORKERS_HELP}",
    )
    parser.add_argument("--gate-margin", type=float, default=0.0, help="promotion margin")
    parser.add_argument(
        "--candidates",
        metavar="LIST",
        help="comma-separated candidates each retraining run trains (default: all three)",
    )
    parser.add_argument(
        "--tune-budget",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hyperparameter search seconds of each retraining run (default 0: none)",
    )
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI of retraining runs")
    parser.add_argument(
        "--inference-service",
        metavar="NAME",
        help="InferenceService a promoted retrained model is deployed to (cluster runs)",
    )
    parser.add_argument(
        "--namespace", metavar="NS", help="namespace of --inference-service (default: default)"
    )
    parser.add_argument(
        "--rollout",
        choices=("direct", "canary", "shadow"),
        default="direct",
        help="how a retrained model that passed the gate goes live: at once (direct, the "
        "default), or as the registry's candidate in a canary or shadow rollout that this "
        "monitor promotes or rolls back by a sequential test (docs/monitoring.md)",
    )
    parser.add_argument(
        "--canary-percent",
        type=int,
        metavar="P",
        help="--rollout canary: the candidate's share of requests, 1-99 (default 10); "
        "--rollout direct: Knative canary traffic 0-100 on deploy",
    )
    parser.add_argument(
        "--rollout-alpha",
        type=float,
        default=0.05,
        metavar="A",
        help="false-alarm rate of the rollout's sequential test: the chance of rolling back a "
        "candidate as good as the champion (default 0.05)",
    )
    parser.add_argument(
        "--rollout-min-requests",
        type=int,
        default=None,
        metavar="N",
        help="candidate requests before a rollout may be promoted",
    )
    parser.add_argument(
        "--rollout-max-duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="longest a rollout is watched; then the candidate is promoted unless harm showed",
    )
    parser.add_argument("--dry-run", action="store_true", help="decide, never start a run")
    parser.add_argument("--metrics-port", type=int, help="serve monitor metrics on this port")
    parser.add_argument("--metrics-file", type=Path, help="write monitor metrics (textfile)")
    parser.add_argument("--json", action="store_true", help="print each result as JSON")
    parser.add_argument("--report-html", type=Path, help="write the HTML report after each run")
    parser.set_defaults(func=_run)


def _rollout_policy(args: argparse.Namespace) -> Any:
    """The rollout's sequential test from the flags (unset ones keep the policy's default)."""
    from kubeloop.monitoring.sequential import RolloutPolicy

    chosen = {
        "alpha": args.rollout_alpha,
        "min_requests": args.rollout_min_requests,
        "max_duration_s": args.rollout_max_duration,
    }
    return RolloutPolicy(**{key: value for key, value in chosen.items() if value is not None})


def psi_table(report: Any) -> str:
    """PSI per feature as a plain table (a :class:`~kubeloop.monitoring.DriftReport`)."""
    items = [*report.features, *([report.prediction] if report.prediction else [])]
    rows = [
        {
            "feature": f.feature,
            "kind": f.kind,
            "rows": f.rows,
            "psi": "-" if math.isnan(f.psi) else round(f.psi, 4),
            "threshold": f.threshold,
            "drift": "DRIFT" if f.drifted else "",
            "test": f.test,
            "p_value": "-" if math.isnan(f.p_value) else f"{f.p_value:.2g}",
        }
        for f in items
    ]
    return format_table(
        rows, ("feature", "kind", "rows", "psi", "threshold", "drift", "test", "p_value")
    )


def _thresholds(pairs: list[str]) -> dict[str, float]:
    from kubeloop.errors import ConfigError

    result = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            result[name] = float(value)
        except ValueError:
            raise ConfigError(f"--feature-threshold {pair!r} is not FEATURE=NUMBER.") from None
    return result


def _result_json(result: Any) -> dict[str, Any]:
    return {
        "bundle_version": result.bundle_version,
        "served_version": result.served_version,
        "drift": result.report.to_dict() if result.report else None,
        "performance": vars(result.performance) if result.performance else None,
        "decision": result.decision.to_dict() if result.decision else None,
        "run": getattr(result.outcome, "__dict__", None),
        "rollout": result.rollout.to_dict() if result.rollout else None,
        "error": result.error,
        "notes": list(result.notes),
    }


def _run(args: argparse.Namespace) -> int:
    short_openmp_spin()  # before XGBoost or scikit-learn is imported
    from kubeloop.monitoring.decision import TriggerPolicy
    from kubeloop.monitoring.metrics import REGISTRY, write_textfile
    from kubeloop.monitoring.monitor import MonitorConfig, run_forever, run_once
    from kubeloop.monitoring.report import DriftConfig
    from kubeloop.registry import default_registry_root, kubeloop_home

    registry = None if args.model_dir else (args.registry or default_registry_root())
    config = MonitorConfig(
        model=args.model,
        state_file=args.state_file or kubeloop_home() / "monitor" / f"{args.model}-state.json",
        registry=registry,
        model_dir=args.model_dir,
        metrics_url=args.metrics_url,
        prometheus_url=args.prometheus_url,
        payload_log=args.payload_log,
        labels=args.labels,
        window=args.window,
        drift=DriftConfig(
            psi_threshold=args.psi_threshold,
            feature_thresholds=_thresholds(args.feature_threshold),
            min_rows=args.min_rows,
        ),
        policy=TriggerPolicy(
            drift_share=args.drift_share,
            max_performance_drop=args.max_performance_drop,
            cooldown_s=args.cooldown,
            daily_cap=args.daily_cap,
        ),
        retrain_data=args.data,
        target=args.target,
        kfp_host=args.kfp_host,
        workers=args.workers,
        gate_margin=args.gate_margin,
        candidates=args.candidates,
        tune_budget=args.tune_budget,
        mlflow_uri=args.mlflow_uri,
        inference_service=args.inference_service,
        namespace=args.namespace,
        rollout=args.rollout,
        canary_percent=args.canary_percent,
        rollout_policy=_rollout_policy(args),
        dry_run=args.dry_run,
    )
    progress = Progress(prefix="monitor")
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=REGISTRY)

    def show(result: Any) -> None:
        if args.metrics_file:
            write_textfile(args.metrics_file)
        if args.report_html:
            from kubeloop.report import monitor_report, write_report

            progress(f"report: {write_report(args.report_html, monitor_report(config, result))}")
        if args.json:
            print(json.dumps(_result_json(result), default=str), flush=True)
        elif result.report is not None:
            print(psi_table(result.report))
            print(f"drift share: {result.report.drift_share:.2f}", flush=True)
        for note in result.notes:
            progress(note)

    if args.once:
        result = run_once(config, progress=progress)
        show(result)
        return 1 if result.error else 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_forever(config, interval=args.interval, progress=progress, stop=stop.is_set, on_result=show)
    return 0
