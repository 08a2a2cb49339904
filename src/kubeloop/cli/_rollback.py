"""``kubeloop rollback``: serve the previous champion (or a named version) again, in one step."""

from __future__ import annotations

import argparse
import sys

from kubeloop.names import model_name_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``rollback`` sub-command."""
    parser = subparsers.add_parser(
        "rollback",
        help="serve the previous champion (or --to VERSION) again; any candidate is dropped",
        description=(
            "Move the registry's champion pointer back to the previous champion (or to --to "
            "VERSION) and drop any canary or shadow candidate, as one operation with MLflow's "
            "'champion' and 'candidate' aliases; model servers following the registry switch "
            "at their next poll. An earlier promotion or rollback that was interrupted is "
            "completed or abandoned first. Prints one line: the champion before -> after."
        ),
    )
    parser.add_argument("--model", required=True, type=model_name_arg, help="model name")
    parser.add_argument("--to", metavar="VERSION", help="version to serve (default: previous)")
    parser.add_argument("--registry", help="registry root (default: KUBELOOP_REGISTRY / home)")
    parser.add_argument(
        "--mlflow-uri",
        help="MLflow tracking URI whose aliases follow (default: MLFLOW_TRACKING_URI, else the "
        "sqlite store under the kubeloop home when it exists)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from kubeloop.registry import Registry, default_registry_root
    from kubeloop.registry.rollout import recover, rollback_champion

    registry = Registry(args.registry or default_registry_root())
    recovered = recover(registry, args.model, tracking_uri=args.mlflow_uri)
    if recovered:
        print(f"recovered: {recovered}", file=sys.stderr)
    done = rollback_champion(registry, args.model, to=args.to, tracking_uri=args.mlflow_uri)
    if "not moved" in done.aliases or "skipped" in done.aliases:
        print(done.aliases, file=sys.stderr)
    print(done.line)
    return 0
