"""``kubeloop demo``: train, serve, drift, retrain, promote and hot-swap on this machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kubeloop.console import Progress, format_table
from kubeloop.names import model_name_arg
from kubeloop.training.engine import AUTO, WORKERS_HELP, short_openmp_spin, workers_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole closed loop locally (no cluster) and show it as a timeline",
        description=(
            "Generate churn-like data (or use --data), run the training pipeline through "
            "kfp.local, start the model server, send healthy then drifted traffic, and watch the "
            "monitor detect drift, retrain, gate, promote and the server switch versions. Exits "
            "0 only when the new version is served."
        ),
    )
    parser.add_argument("--data", type=Path, help="your CSV/Parquet instead of generated data")
    parser.add_argument("--target", help="target column of --data")
    parser.add_argument(
        "--model", default="churn", type=model_name_arg, help="model name (default churn)"
    )
    parser.add_argument("--rows", type=int, default=4000, help="generated reference rows")
    parser.add_argument("--traffic-rows", type=int, default=2000, help="rows per traffic phase")
    parser.add_argument(
        "--workers",
        type=workers_arg,
        default=AUTO,
        metavar="auto|N",
        help=f"each training run: {WORKERS_HELP}",
    )
    parser.add_argument("--num-boost-round", type=int, default=150, help="most XGBoost rounds")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--report", type=Path, help="write the outcome as JSON here")
    parser.add_argument(
        "--canary", action="store_true",
        help="the staged-rollout story: a challenger that passes the offline gate but is worse "
        "on live traffic goes into a canary and is rolled back automatically, then a good one "
        "is promoted (exit 0 only if both happened)",
    )  # fmt: skip
    parser.add_argument(
        "--canary-percent", type=int, default=30, metavar="P",
        help="--canary: the candidate's share of requests (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--report-html",
        type=Path,
        help="write the HTML report here (default: report.html in the kept working directory)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    short_openmp_spin()  # before XGBoost or scikit-learn is imported
    from kubeloop.demo import DemoConfig, run_demo

    config = DemoConfig(
        data=args.data, target=args.target, model=args.model, rows=args.rows,
        traffic_rows=args.traffic_rows, workers=args.workers,
        num_boost_round=args.num_boost_round, workdir=args.workdir, keep=args.keep,
        report_html=args.report_html, canary_percent=args.canary_percent,
    )  # fmt: skip
    # A copy of stdout: the demo sends the pipeline steps' own output to a log file meanwhile.
    sys.stdout.flush()
    progress = Progress(os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1), prefix="demo")
    if args.canary:
        from kubeloop.demo.canary import run_canary_demo

        return _canary_summary(run_canary_demo(config, progress=progress, report=args.report))
    result = run_demo(config, progress=progress, report=args.report)
    rows = [
        {"feature": name, "psi healthy": result["healthy_psi"].get(name, float("nan")),
         "psi drifted": value, "drift": "DRIFT" if value >= 0.2 else ""}
        for name, value in result["psi"].items()
    ]  # fmt: skip
    print("\nPSI per feature (threshold 0.2):")
    print(format_table(rows, ("feature", "psi healthy", "psi drifted", "drift")))
    print(f"\nold champion, its test split:      {json.dumps(result['metrics_before'])}")
    print(f"new champion, retraining test split: {json.dumps(result['metrics_after'])}")
    if result["challenger_score"] is not None and result["champion_score"] is not None:
        print(
            f"gate, same held-out rows: new {result['challenger_score']:.4f} vs old "
            f"{result['champion_score']:.4f}"
        )
    print(
        f"versions: {result['version_before']} -> {result['version_after']}; "
        f"served now: {result['served_version_after']}"
    )
    if result.get("report_html"):
        print(f"HTML report: {result['report_html']}")
    verdict = "CLOSED" if result["closed"] else "NOT CLOSED"
    print(
        f"loop {verdict} in {result['seconds']:.0f}s"
        + ("" if result["closed"] else f" ({result.get('error') or 'see the timeline'})")
    )
    return 0 if result["closed"] else 1


def _canary_summary(result: dict[str, Any]) -> int:
    """Print the canary story's outcome; 0 only when the bad candidate was rolled back and the
    good one promoted."""
    print(
        f"\nbad candidate {result.get('bad_candidate')}: rolled back "
        f"{result['canary_rolled_back']} after {result.get('rollback_requests')} requests "
        f"({result.get('rollback_candidate_requests')} answered by it)"
    )
    print(
        f"good candidate {result.get('good_candidate')}: promoted {result['canary_promoted']} "
        f"after {result.get('promote_requests')} requests "
        f"({result.get('promote_candidate_requests')} answered by it)"
    )
    if result.get("report_html"):
        print(f"HTML report: {result['report_html']}")
    verdict = "PASSED" if result["closed"] else "FAILED"
    print(f"staged rollout {verdict} in {result['seconds']:.0f}s")
    return 0 if result["closed"] else 1
