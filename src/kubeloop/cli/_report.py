"""``kubeloop report``: one self-contained HTML page of the model, its drift and the loop."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="write one self-contained HTML report: model card, drift, history of the loop",
        description=(
            "Write one HTML file (inline CSS and SVG, no script, no network) with the model "
            "card, the live distribution of every feature and of the prediction against the "
            "reference bins with PSI (drifted features first), and the loop's history: versions "
            "from the registry, the monitor's decisions, gate results and promotions."
        ),
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-dir", type=Path, help="one bundle directory")
    where.add_argument("--registry", help="registry root (with --model)")
    parser.add_argument("--model", help="model name in --registry")
    parser.add_argument("--version", help="registry version (default: the champion)")
    parser.add_argument("--metrics-url", help="the model server's /metrics (live bin counters)")
    parser.add_argument("--payload-log", type=Path, help="the server's payload log (JSON Lines)")
    parser.add_argument("--state-file", type=Path, help="the monitor's state file (its history)")
    parser.add_argument("--psi-threshold", type=float, default=0.2, help="PSI drift threshold")
    parser.add_argument("--min-rows", type=int, default=100, help="rows needed to judge a feature")
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from kubeloop.bundle import load_bundle
    from kubeloop.errors import ConfigError
    from kubeloop.monitoring.decision import load_state
    from kubeloop.monitoring.report import DriftConfig
    from kubeloop.registry import Registry, kubeloop_home
    from kubeloop.report import build_report, live_counts, write_report

    registry = None
    if args.registry:
        if not args.model:
            raise ConfigError("--registry needs --model NAME.")
        registry = Registry(args.registry)
        bundle = load_bundle(registry.fetch(args.model, args.version))
    else:
        bundle = load_bundle(args.model_dir)
    if args.payload_log is not None and not args.payload_log.is_file():
        raise ConfigError(f"--payload-log {args.payload_log} does not exist.")
    counts, source = live_counts(bundle, metrics_url=args.metrics_url, payload_log=args.payload_log)
    state_file = args.state_file or kubeloop_home() / "monitor" / f"{bundle.name}-state.json"
    if args.state_file is not None and not state_file.is_file():
        raise ConfigError(f"--state-file {state_file} does not exist.")
    state = load_state(state_file) if state_file.is_file() else None
    page = build_report(
        bundle,
        counts=counts,
        source=source,
        drift=DriftConfig(psi_threshold=args.psi_threshold, min_rows=args.min_rows),
        registry=registry,
        state=state,
    )
    print(write_report(args.out, page))
    return 0
