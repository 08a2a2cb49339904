"""Assemble and run the model server: one :class:`BundleModel` in ``kserve.ModelServer``.

``kserve.ModelServer`` provides the REST (V1 + V2) and gRPC (V2) endpoints, ``/metrics`` from
the default Prometheus registry (where :mod:`kubeloop.serving.metrics` registers), and graceful
shutdown: on SIGTERM uvicorn stops accepting connections and finishes the requests in flight
(up to ``grace_period`` seconds) before the gRPC server is stopped and the model unloaded.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubeloop.bundle import verify_bundle
from kubeloop.errors import ConfigError
from kubeloop.names import check_name
from kubeloop.serving._grpc import install_servers
from kubeloop.serving._http import install_http_guards
from kubeloop.serving._openapi import install_openapi
from kubeloop.serving._payload_log import PayloadLogger
from kubeloop.serving._surface import SurfaceLimits, SurfacePolicy, SurfaceState
from kubeloop.serving.model import BundleModel

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kubeloop.serving._swap import ChampionWatcher

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "ServeOptions", "build_model", "serve"]

DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
_log = logging.getLogger("kubeloop.serving")


@dataclass(frozen=True)
class ServeOptions:
    """What ``kubeloop serve`` was asked to do.

    Attributes:
        model_dir: Serve this one bundle directory ...
        registry: ... or follow the champion of ``model`` in this registry (path or URL).
        model: Model name inside the registry (also the endpoint name by default).
        name: Endpoint name; default: ``model``, else the bundle's own name.
        http_port: REST port. grpc_port: gRPC port (``enable_grpc`` off: none).
        workers: Must be 1 (one process per pod; scale with replicas).
        poll_interval: Seconds between reads of the champion pointer.
        max_request_bytes: Larger request bodies are refused with 413.
        drift_counters: Count request values into the reference bins.
        payload_log: JSON Lines file of sampled requests, or ``None``.
        payload_sample_rate: Share of requests logged.
        payload_max_bytes: Size at which the payload log rotates.
        grace_period: Seconds in-flight requests get at shutdown.
        model_repository: Serve the model-repository extension (load/unload).
        max_concurrency: Inference requests in flight beyond which 503 is answered (0: none).
        header_timeout: Seconds a client gets to send a request's headers (then 408).
        body_timeout: Seconds a client gets to send a request's body (then 408).
    """

    model_dir: Path | None = None
    registry: str | None = None
    model: str | None = None
    name: str | None = None
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    workers: int = 1
    poll_interval: float = 2.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    drift_counters: bool = True
    payload_log: Path | None = None
    payload_sample_rate: float = 1.0
    payload_max_bytes: int = 100 * 1024 * 1024
    grace_period: int = 30
    model_repository: bool = False
    max_concurrency: int = 0
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __post_init__(self) -> None:
        if (self.model_dir is None) == (self.registry is None):
            raise ConfigError("Pass exactly one of --model-dir DIR or --registry DIR --model NAME.")
        if self.registry is not None and not self.model:
            raise ConfigError("--registry needs --model NAME (the model inside the registry).")
        if self.model is not None:
            check_name(self.model, what="--model")
        if self.name is not None:
            check_name(self.name, what="--model_name")
        if self.poll_interval <= 0:
            raise ConfigError(f"--poll-interval must be positive; got {self.poll_interval}.")
        if self.max_request_bytes <= 0:
            raise ConfigError(
                f"--max-request-bytes must be positive; got {self.max_request_bytes}."
            )
        if self.workers != 1:
            raise ConfigError(
                f"--workers must be 1; got {self.workers}. kubeloop serves one process per pod, "
                "so that every request rule (the gRPC checks, the header and body timeouts, the "
                "concurrency limit) applies to every request; scale with replicas instead."
            )
        if self.max_concurrency < 0:
            raise ConfigError(
                f"--max-concurrency must be 0 (no limit) or more; got {self.max_concurrency}."
            )
        for flag, seconds in (
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
        ):
            if not seconds > 0:
                raise ConfigError(f"{flag} must be a positive number of seconds; got {seconds}.")

    @property
    def limits(self) -> SurfaceLimits:
        """The HTTP/gRPC surface settings."""
        return SurfaceLimits(
            model_repository=self.model_repository,
            max_concurrency=self.max_concurrency,
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
        )


def _bundle_name(model_dir: Path) -> str:
    # Verified first: a link or a bad name in the bundle is refused before the name is used.
    return str(verify_bundle(model_dir)["name"])


def build_model(options: ServeOptions, *, hold_forest: bool = False) -> BundleModel:
    """Create the (not yet loaded) model with its watcher and payload log wired in
    (``hold_forest``: see :class:`BundleModel`)."""
    payload_log = None
    if options.payload_log is not None:
        payload_log = PayloadLogger(
            options.payload_log,
            sample_rate=options.payload_sample_rate,
            max_bytes=options.payload_max_bytes,
        )
    if options.model_dir is not None:
        model_dir = Path(options.model_dir)
        name = options.name or _bundle_name(model_dir)
        model = BundleModel(
            name,
            lambda: model_dir,
            drift_counters=options.drift_counters,
            payload_log=payload_log,
            hold_forest=hold_forest,
        )
    else:
        assert options.registry is not None and options.model is not None
        model = _registry_model(options, payload_log, hold_forest)
    return model


def _registry_model(
    options: ServeOptions, payload_log: PayloadLogger | None, hold_forest: bool
) -> BundleModel:
    from kubeloop.serving._swap import ChampionWatcher  # fsspec: only for a registry

    holder: list[ChampionWatcher] = []
    model = BundleModel(
        options.name or str(options.model),
        lambda: holder[0].champion_path(),
        drift_counters=options.drift_counters,
        payload_log=payload_log,
        hold_forest=hold_forest,
    )
    watcher = ChampionWatcher(
        model, str(options.registry), str(options.model), interval=options.poll_interval
    )
    holder.append(watcher)
    model.on_start = watcher.start
    model.on_stop = watcher.stop
    return model


def _install_surface(app: FastAPI, model: BundleModel, options: ServeOptions) -> SurfaceState:
    """The HTTP guards, the surface policy (outermost) and the OpenAPI document on ``app``."""
    install_http_guards(
        app,
        model=model.name,
        max_body_bytes=options.max_request_bytes,
        body_timeout=options.body_timeout,
        version=lambda: model.served.version if model.served is not None else "",
    )
    state = SurfaceState(model, options.limits)
    if not getattr(app.state, "kubeloop_surface", False):
        app.state.kubeloop_surface = True
        app.add_middleware(SurfacePolicy, state=state)
        install_openapi(app, state)
    return state


def _share_kserve_logging() -> None:
    """Send kubeloop's log lines (swaps, refused bundles) where KServe sends its own."""
    kserve_logger = logging.getLogger("kserve")
    ours = logging.getLogger("kubeloop")
    if kserve_logger.handlers and not ours.handlers:
        for handler in kserve_logger.handlers:
            ours.addHandler(handler)
        ours.setLevel(kserve_logger.level or logging.INFO)
        ours.propagate = False


def serve(options: ServeOptions) -> int:
    """Load the bundle and run the server until SIGTERM/SIGINT.

    Raises:
        BundleError: the bundle fails verification.
        RegistryError: the registry has no champion for the model.
    """
    from kserve.model_server import ModelServer, app

    # The trees are compiled once the server listens: the start ends when the bundle is verified.
    model = build_model(options, hold_forest=True)
    model.load()
    state = _install_surface(app, model, options)
    install_servers(state)
    server = ModelServer(
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        enable_grpc=options.enable_grpc,
        grace_period=options.grace_period,
    )
    _share_kserve_logging()
    _log.info(
        "kubeloop serve: model %s version %s on http :%d%s",
        model.name,
        model.served.version if model.served else "?",
        options.http_port,
        f", grpc :{options.grpc_port}" if options.enable_grpc else "",
    )
    # Everything loaded so far lives for the whole process: keep it out of every future garbage
    # collection (a full collection over KServe and XGBoost objects costs milliseconds). No
    # collection first: here it would free under a hundred objects, for ~40 ms of the start.
    gc.freeze()
    server.start([model])
    return 0
