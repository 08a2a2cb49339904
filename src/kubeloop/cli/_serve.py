"""``kubeloop serve``: the KServe model server for one bundle or a registry's champion.

The options are KServe's own (``kserve.model_server.parser``: ``--http_port``, ``--workers``,
``--enable_grpc``, ...) plus kubeloop's. KServe is heavy to import, so the sub-command takes its
arguments raw and builds the full parser only when ``serve`` actually runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kubeloop.names import model_name_arg

__all__ = ["build_serve_parser", "register"]

_DESCRIPTION = (
    "Serve a model bundle with KServe: V1 and V2 (Open Inference Protocol) REST on the HTTP port, "
    "V2 gRPC on the gRPC port, Prometheus metrics on /metrics. With --registry the server follows "
    "the model's champion pointer and hot-swaps to each new champion; a bundle that fails "
    "verification is refused and the current one keeps serving."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` sub-command (arguments parsed by :func:`build_serve_parser`)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a bundle (or a registry's champion) over V1/V2 REST and gRPC with KServe",
        description=_DESCRIPTION,
        add_help=False,
        prefix_chars="+",  # every "-" argument is passed through to build_serve_parser()
    )
    parser.add_argument("serve_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_run)


def build_serve_parser() -> argparse.ArgumentParser:
    """The full ``kubeloop serve`` parser, built on ``kserve.model_server.parser``."""
    from kserve.model_server import parser as kserve_parser

    from kubeloop.serving import DEFAULT_MAX_REQUEST_BYTES

    parser = argparse.ArgumentParser(
        prog="kubeloop serve",
        description=_DESCRIPTION,
        parents=[kserve_parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ours = parser.add_argument_group("kubeloop")
    source = ours.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="serve this bundle directory")
    source.add_argument("--registry", help="registry root (path or URL); follow the champion")
    ours.add_argument(
        "--model", type=model_name_arg, help="model name inside the registry (needs --registry)"
    )
    # Aliases of KServe's --http_port/--grpc_port (whose defaults, 8080/8081, apply).
    for alias, dest in (("--http-port", "http_port"), ("--grpc-port", "grpc_port")):
        ours.add_argument(
            alias, dest=dest, type=int, default=argparse.SUPPRESS, help=f"same as --{dest}"
        )
    ours.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between champion checks"
    )
    ours.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="larger request bodies get 413",
    )
    ours.add_argument(
        "--no-drift-counters",
        dest="drift_counters",
        action="store_false",
        help="do not count request values into the reference bins (kubeloop_feature_bin_total)",
    )
    ours.add_argument("--payload-log", type=Path, help="JSON Lines file of sampled requests")
    ours.add_argument(
        "--payload-sample-rate", type=float, default=1.0, help="share of requests logged"
    )
    ours.add_argument(
        "--payload-max-bytes",
        type=int,
        default=100 * 1024 * 1024,
        help="rotate the payload log to <file>.1 at this size",
    )
    ours.add_argument(
        "--grace-period", type=int, default=30, help="seconds in-flight requests get on SIGTERM"
    )
    ours.add_argument(
        "--enable-model-repository",
        dest="model_repository",
        action="store_true",
        help="answer the model-repository extension (POST /v2/repository/models/{name}/load and "
        "/unload, and the gRPC RepositoryModelLoad/Unload); off: 403 / PERMISSION_DENIED",
    )
    ours.add_argument(
        "--max-concurrency",
        type=int,
        default=0,
        help="inference requests in flight beyond which 503 + Retry-After (gRPC: "
        "RESOURCE_EXHAUSTED) is answered; 0: no limit",
    )
    ours.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client gets to send a request's headers (then 408, connection closed)",
    )
    ours.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client gets to send a request's body (then 408, connection closed)",
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "process_command", False):  # this process is the server: import less
        from kubeloop.serving.imports import slim_server_imports

        slim_server_imports()
    from kubeloop.serving import ServeOptions, serve

    parsed = build_serve_parser().parse_args(args.serve_args)
    # KServe's --model_name defaults to "model"; only an explicit other value renames the endpoint.
    name = parsed.model_name if parsed.model_name != "model" else None
    options = ServeOptions(
        model_dir=parsed.model_dir,
        registry=parsed.registry,
        model=parsed.model,
        name=name,
        http_port=parsed.http_port,
        grpc_port=parsed.grpc_port,
        enable_grpc=parsed.enable_grpc,
        workers=parsed.workers,
        poll_interval=parsed.poll_interval,
        max_request_bytes=parsed.max_request_bytes,
        drift_counters=parsed.drift_counters,
        payload_log=parsed.payload_log,
        payload_sample_rate=parsed.payload_sample_rate,
        payload_max_bytes=parsed.payload_max_bytes,
        grace_period=parsed.grace_period,
        model_repository=parsed.model_repository,
        max_concurrency=parsed.max_concurrency,
        header_timeout=parsed.header_timeout,
        body_timeout=parsed.body_timeout,
    )
    return serve(options)
