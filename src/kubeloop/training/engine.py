"""Where XGBoost trains: in this process, or over Ray Train workers -- chosen by resources.

On one machine Ray Train workers only add cost: XGBoost's own threads already use every core,
the collective adds ~9% per round and starting Ray and its actors adds seconds. So with
``workers="auto"`` (the default) and no Ray cluster configured, XGBoost trains in this process
through Ray Train's *local mode* (``ScalingConfig(num_workers=0)``: the same ``XGBoostTrainer``
and training function, no actors, no ``ray.init``, XGBoost threads on every core). With a Ray
cluster (``--ray-address``, ``RAY_ADDRESS``, a KubeRay RayJob) it trains over Ray Train workers
sized to the cluster: one worker per node that has CPUs, each with the CPUs of the smallest such
node. An explicit worker count is obeyed (``0``: in this process).

Ray's own log lines (its start-up banner, "Token authentication is enabled ..." and the like)
are held back while kubeloop uses Ray and shown only when something fails
(:func:`ray_logs_held`).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TextIO

from kubeloop.cpus import usable_cpus
from kubeloop.errors import ConfigError, TrainingError
from kubeloop.training._reaper import MARKER_ENV, start_reaper

__all__ = [
    "AUTO",
    "WORKERS_HELP",
    "Engine",
    "Workers",
    "ensure_ray",
    "parse_workers",
    "ray_logs_held",
    "resolve_engine",
    "shared_local_ray",
    "short_openmp_spin",
    "workers_arg",
]

AUTO: Literal["auto"] = "auto"
Workers = int | Literal["auto"]

_HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
_LOCAL_HEALTH_CHECK_S = "0.2"
# Set (to the Ray address) while a process shares the local Ray it started with its children.
_SHARED_ENV = "KUBELOOP_SHARED_RAY"


def parse_workers(value: str | int) -> Workers:
    """``"auto"`` or a worker count of at least 0 (the ``--workers`` option and the pipeline's
    ``workers`` parameter).

    Raises:
        ConfigError: Anything else.
    """
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise ConfigError(
            f"workers must be 'auto' or a whole number >= 0 (0 trains in this process); "
            f"got {value!r}."
        )
    return count


def short_openmp_spin() -> None:
    """Let idle OpenMP threads spin only briefly before they sleep (``GOMP_SPINCOUNT=1000``),
    unless the environment already sets ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``.

    XGBoost and scikit-learn run GNU OpenMP threads on every core; by default an idle thread
    spins ~300,000 times waiting for the next parallel region. When anything else runs on the
    machine, the spinning threads take the cores from the threads that have work. Measured on a
    2-core machine running other benchmarks, the demo's train step (XGBoost + random forest):
    8.7 s by default, 12.2 s with a spin count of 30,000, 2.3 s with ``OMP_WAIT_POLICY=PASSIVE``,
    1.8-3.4 s with spin counts of 100-2,000; on a quiet machine a spin count of 3,000 was as fast
    as the default, ``PASSIVE`` 40% slower. Called by the training commands before XGBoost is
    loaded (OpenMP reads it once, when it starts); the processes they start (pipeline steps, Ray
    workers, the demo's server) inherit it.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def workers_arg(value: str) -> Workers:
    """``argparse`` type of every ``--workers`` option (a bad value is a usage error)."""
    try:
        return parse_workers(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The help of every --workers option that trains.
WORKERS_HELP = (
    "how XGBoost trains: 'auto' (default) trains in this process (Ray Train local mode, "
    "XGBoost on every core) unless a Ray cluster is configured (--ray-address / RAY_ADDRESS / a "
    "KubeRay RayJob), then on Ray Train workers sized to the cluster; 0 = in this process; N = N "
    "Ray Train workers (one CPU each)"
)


@dataclass(frozen=True)
class Engine:
    """The chosen way to train XGBoost.

    Attributes:
        workers: Ray Train workers; ``0`` trains in this process (Ray Train local mode).
        cpus_per_worker: XGBoost threads per worker (in this process: every core).
        address: The Ray to use (``None``: a local Ray this process starts, if any).
        reason: Why this engine was chosen (shown in the progress output).
    """

    workers: int
    cpus_per_worker: int
    address: str | None
    reason: str

    @property
    def in_process(self) -> bool:
        """True when XGBoost trains in this process, without Ray actors."""
        return self.workers == 0

    def describe(self) -> str:
        """One line for the progress output: the engine and why."""
        if self.in_process:
            what = (
                f"in this process (Ray Train local mode: no Ray start, no actors), XGBoost on "
                f"{self.cpus_per_worker} thread(s)"
            )
        else:
            if self.address is None:
                where = "a local Ray started by this process"
            elif self.address == os.environ.get(_SHARED_ENV):
                where = f"the local Ray shared by consecutive runs ({self.address})"
            else:
                where = f"the Ray cluster at {self.address}"
            what = f"{self.workers} Ray Train worker(s) x {self.cpus_per_worker} CPU on {where}"
        return f"engine: {what} -- {self.reason}"


def _configured_address(ray_address: str | None) -> str | None:
    return ray_address or os.environ.get("RAY_ADDRESS") or None


def resolve_engine(workers: Workers, ray_address: str | None = None) -> Engine:
    """Choose how XGBoost trains (see the module docstring).

    With ``"auto"`` and a Ray cluster configured this connects to it (:func:`ensure_ray`) to
    see its nodes.

    Args:
        workers: ``"auto"``, ``0`` (in this process) or a Ray Train worker count.
        ray_address: A Ray cluster address; ``None`` honours ``RAY_ADDRESS``.

    Raises:
        ConfigError: ``workers`` is neither ``"auto"`` nor a count >= 0.
        TrainingError: The configured cluster could not be reached or has no CPUs.
    """
    workers = parse_workers(workers)
    address = _configured_address(ray_address)
    cores = usable_cpus()
    if workers == 0:
        return Engine(0, cores, None, "workers=0 asks for this process")
    if workers != AUTO:
        return Engine(workers, 1, address, f"workers={workers} asked for")
    if address is None:
        return Engine(
            0,
            cores,
            None,
            "workers=auto and no Ray cluster configured (no --ray-address, RAY_ADDRESS unset): "
            "on one machine Ray workers only add start-up cost",
        )
    if address == os.environ.get(_SHARED_ENV):
        return Engine(
            0,
            cores,
            None,
            f"workers=auto and RAY_ADDRESS is the local Ray shared by consecutive runs "
            f"({address}), not a cluster: on one machine Ray workers only add start-up cost",
        )
    ensure_ray(address)
    count, cpus = _cluster_shape()
    return Engine(
        count,
        cpus,
        address,
        f"workers=auto on a Ray cluster: one worker per node with CPUs ({count} node(s))",
    )


def _cluster_shape() -> tuple[int, int]:
    """(nodes with CPUs, CPUs of the smallest of them) of the connected Ray cluster."""
    import ray

    cpus = [
        int(node["Resources"].get("CPU", 0))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU", 0) >= 1
    ]
    if not cpus:
        raise TrainingError(
            "The Ray cluster has no node with a CPU to train on; add worker nodes or pass "
            "--workers N."
        )
    return len(cpus), min(cpus)


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def ray_logs_held(stream: TextIO | None = None) -> Iterator[None]:
    """Hold Ray's own log records while the body runs; write them to ``stream`` (standard
    error) only when the body raises.

    Every ``ray`` logger that has handlers of its own (``ray``, ``ray.data``...) writes to the
    holder meanwhile; loggers below ``ray`` without handlers reach it through ``ray``.
    """
    import ray  # noqa: F401 -- sets up Ray's loggers

    held = _Held()
    manager = logging.Logger.manager
    loggers = [logging.getLogger("ray")] + [
        logger
        for name, logger in list(manager.loggerDict.items())
        if name.startswith("ray.") and isinstance(logger, logging.Logger) and logger.handlers
    ]
    saved = {logger: logger.handlers[:] for logger in loggers}
    for logger in loggers:
        logger.handlers = [held]
    try:
        yield
    except BaseException:
        out = stream or sys.stderr
        for record in held.records:
            print(held.format(record), file=out)
        raise
    finally:
        for logger, handlers in saved.items():
            logger.handlers = handlers


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Connect to Ray, or start it in-process, unless this process is already connected.

    An already-initialized Ray is left exactly as it is (consecutive runs in one process, and
    tests, share one instance). A Ray started here dies with this process, even when it is
    killed with ``SIGKILL``: a small reaper process kills Ray's processes once this one is gone
    (:mod:`._reaper`). Ray's own log lines are shown only if this fails.

    Args:
        address: A Ray cluster address (``ray://...`` or ``host:port``). ``None`` honours the
            ``RAY_ADDRESS`` environment variable and otherwise starts a local Ray in-process.
        num_cpus: Logical CPUs of a local Ray (ignored when connecting to a cluster);
            ``None`` lets Ray count the machine's cores.

    Raises:
        TrainingError: Ray could not be started or reached.
    """
    import ray

    if ray.is_initialized():
        return
    address = _configured_address(address)
    try:
        with ray_logs_held():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                # Ray renices its worker processes to 15 by default; on a shared machine that
                # lets every other process starve the training workers. A local Ray trains at
                # the caller's own priority instead. Ray Train's controller polls its workers
                # every 2 s by default, which adds seconds to every short local run (measured:
                # 19.7 s -> 15.7 s for a one-round fit); the local workers inherit this
                # environment.
                os.environ.setdefault(_HEALTH_CHECK_ENV, _LOCAL_HEALTH_CHECK_S)
                _start_owned_ray(num_cpus)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise TrainingError(
            f"Could not start or reach {where}: {exc}. Check the address (or unset RAY_ADDRESS "
            "to train in-process)."
        ) from None


def _start_owned_ray(num_cpus: int | None) -> None:
    """``ray.init`` a local Ray whose every process dies with this one (see ``_reaper``).

    The marker is in the environment only while Ray's head processes start (they pass it to
    every worker); later children of this process do not carry it.
    """
    import ray

    marker = f"{os.getpid()}-{secrets.token_hex(8)}"
    previous = os.environ.get(MARKER_ENV)
    start_reaper(marker)  # first: a kill during ray.init is cleaned up too
    os.environ[MARKER_ENV] = marker
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _system_config={"worker_niceness": 0},
        )
    finally:
        if previous is None:
            os.environ.pop(MARKER_ENV, None)
        else:
            os.environ[MARKER_ENV] = previous


@contextmanager
def shared_local_ray(workers: Workers, *, tuning: bool = False) -> Iterator[str | None]:
    """Pay Ray's start once for consecutive runs (the demo's, the monitor's retraining).

    Only when the runs will use a local Ray -- Ray Train workers (an explicit worker count
    >= 1) or hyperparameter searches (``tuning``: their trials run on Ray), and no Ray cluster
    configured -- this starts that Ray once (owned: it dies with this process) and hands its
    address to the runs that follow, this process's and its children's (the pipeline steps),
    through ``RAY_ADDRESS``; each run then attaches instead of starting its own. With
    ``workers="auto"`` the runs still train XGBoost in their own process
    (:func:`resolve_engine` does not take the shared local Ray for a cluster). Otherwise
    (``"auto"`` or ``0`` without tuning, a configured cluster) nothing is started and ``None``
    is yielded.

    Yields:
        The shared Ray's address, or ``None``.
    """
    workers = parse_workers(workers)
    ray_workers = 0 if workers == AUTO else workers
    if not (ray_workers or tuning) or _configured_address(None):
        yield None
        return
    import ray

    started = not ray.is_initialized()
    ensure_ray(num_cpus=max(ray_workers, usable_cpus()))
    address = str(ray.get_runtime_context().gcs_address)
    os.environ["RAY_ADDRESS"] = os.environ[_SHARED_ENV] = address
    try:
        yield address
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.pop(_SHARED_ENV, None)
        if started:
            ray.shutdown()
