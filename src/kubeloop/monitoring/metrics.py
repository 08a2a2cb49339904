"""Every Prometheus metric the monitor exports, declared once (``kubeloop_`` prefix).

They live in their own :data:`REGISTRY` rather than the process default, so ``kubeloop
monitor --metrics-port`` and ``--metrics-file`` (node-exporter textfile format, for a CronJob)
expose exactly these series, and a monitor running beside a model server in one process never
mixes the two sets.
"""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

__all__ = [
    "DRIFT_SHARE",
    "FEATURE_PSI",
    "LAST_RUN",
    "MONITOR_ERRORS",
    "REGISTRY",
    "RETRAINS",
    "RETRAIN_FAILURES",
    "ROLLOUT_DECISIONS",
    "ROLLOUT_REQUESTS",
    "ROLLOUT_SIGNAL",
    "publish_psi",
    "write_textfile",
]

REGISTRY = CollectorRegistry(auto_describe=True)

FEATURE_PSI = Gauge(
    "kubeloop_feature_psi",
    "PSI of each input feature (and __prediction__) over the last monitor window.",
    ["model", "feature"],
    registry=REGISTRY,
)
DRIFT_SHARE = Gauge(
    "kubeloop_drift_share",
    "Fraction of input features whose PSI reached their threshold in the last window.",
    ["model"],
    registry=REGISTRY,
)
RETRAINS = Counter(
    "kubeloop_retrain",
    "Retraining runs started by the monitor, by reason (drift, performance, ...).",
    ["model", "reason"],
    registry=REGISTRY,
)
RETRAIN_FAILURES = Counter(
    "kubeloop_retrain_failures",
    "Retraining runs that could not be started or failed.",
    ["model"],
    registry=REGISTRY,
)
LAST_RUN = Gauge(
    "kubeloop_monitor_last_run_timestamp_seconds",
    "Unix time at which the monitor last completed a run (with or without data).",
    ["model"],
    registry=REGISTRY,
)
MONITOR_ERRORS = Counter(
    "kubeloop_monitor_errors",
    "Monitor runs that could not read a source (server down, bad answer), by source.",
    ["model", "source"],
    registry=REGISTRY,
)

ROLLOUT_DECISIONS = Counter(
    "kubeloop_rollout_decisions",
    "Staged rollouts the monitor ended, by action (promote, rollback).",
    ["model", "action"],
    registry=REGISTRY,
)
ROLLOUT_REQUESTS = Gauge(
    "kubeloop_rollout_requests",
    "Requests (canary) or rows (shadow) the candidate has seen in the running rollout.",
    ["model", "candidate"],
    registry=REGISTRY,
)
ROLLOUT_SIGNAL = Gauge(
    "kubeloop_rollout_signal",
    "The running rollout's estimate of candidate minus champion per signal (higher is worse), "
    "with its always-valid confidence bounds (bound = estimate, low, high).",
    ["model", "signal", "bound"],
    registry=REGISTRY,
)


def publish_psi(model: str, psi_by_feature: dict[str, float]) -> None:
    """Set ``kubeloop_feature_psi`` for every judged feature (NaN values are skipped)."""
    for feature, value in psi_by_feature.items():
        if not math.isnan(value):
            FEATURE_PSI.labels(model=model, feature=feature).set(value)


def write_textfile(path: Path) -> None:
    """Write the monitor metrics in the textfile-collector format (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), REGISTRY)
