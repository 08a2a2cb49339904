"""The monitor as a KFP v2 component: one :func:`~kubeloop.monitoring.monitor.run_once` call.

A pipeline (e.g. a recurring KFP run instead of the CronJob) can watch a model with it: the
component reads the served model's counters (``metrics_url`` or ``prometheus_url``) or its
payload log, writes the drift report as an artifact and PSI per feature as KFP metrics, and --
unless ``dry_run`` -- starts the training pipeline through the KFP API at ``kfp_host`` under the
same cooldown / de-duplication / daily-cap rules (state in ``state_file``, which must live on
storage shared by successive runs).

(No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time.)
"""

from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Artifact, Metrics, Output

__all__ = [
    "COMPONENT_PATH",
    "build_monitor_component",
    "compile_monitor_component",
    "monitor_drift",
]

COMPONENT_PATH = Path("components") / "monitor_drift.yaml"


def monitor_drift(
    model: str,
    state_file: str,
    report: Output[Artifact],
    psi: Output[Metrics],
    registry: str = "",
    model_dir: str = "",
    metrics_url: str = "",
    prometheus_url: str = "",
    payload_log: str = "",
    window: str = "1h",
    psi_threshold: float = 0.2,
    drift_share: float = 0.3,
    cooldown_s: float = 3600.0,
    retrain_data: str = "",
    target: str = "",
    kfp_host: str = "",
    dry_run: bool = True,
) -> NamedTuple("Verdict", [("drift_share", float), ("retrain", bool)]):  # type: ignore[valid-type]
    """Run the drift monitor once; report drift and (unless ``dry_run``) start retraining."""
    import json
    import math
    from collections import namedtuple
    from pathlib import Path

    from kubeloop.console import Progress
    from kubeloop.monitoring.decision import TriggerPolicy
    from kubeloop.monitoring.monitor import MonitorConfig, run_once
    from kubeloop.monitoring.report import DriftConfig
    from kubeloop.quick_exit import exit_quickly_on_success

    config = MonitorConfig(
        model=model, state_file=Path(state_file), registry=registry or None,
        model_dir=Path(model_dir) if model_dir else None, metrics_url=metrics_url or None,
        prometheus_url=prometheus_url or None,
        payload_log=Path(payload_log) if payload_log else None, window=window,
        drift=DriftConfig(psi_threshold=psi_threshold),
        policy=TriggerPolicy(drift_share=drift_share, cooldown_s=cooldown_s),
        retrain_data=retrain_data or None, target=target or None, kfp_host=kfp_host or None,
        dry_run=dry_run,
    )  # fmt: skip
    result = run_once(config, progress=Progress(prefix="monitor"))
    content = {
        "bundle_version": result.bundle_version, "served_version": result.served_version,
        "drift": result.report.to_dict() if result.report else None,
        "decision": result.decision.to_dict() if result.decision else None,
        "error": result.error,
    }  # fmt: skip
    Path(report.path).write_text(json.dumps(content, indent=1), encoding="utf-8")
    share = result.report.drift_share if result.report else 0.0
    if result.report:
        for name, value in result.report.psi_by_feature().items():
            if not math.isnan(value):
                psi.log_metric(f"psi_{name}", float(value))
    psi.log_metric("drift_share", float(share))
    Verdict = namedtuple("Verdict", ["drift_share", "retrain"])
    exit_quickly_on_success()  # done: the step's process skips the module teardown
    return Verdict(float(share), bool(result.decision and result.decision.retrain))


def build_monitor_component(image: str | None = None) -> Any:
    """Wrap :func:`monitor_drift` as a KFP component running in the project image."""
    from kubeloop.pipelines.image import component_image

    return dsl.component(
        func=monitor_drift, base_image=image or component_image(), install_kfp_package=False
    )


def compile_monitor_component(
    path: str | Path = COMPONENT_PATH, *, image: str | None = None
) -> Path:
    """Compile the component spec (deterministic) to ``path``, by default the checked-in one.

    Regenerate after editing this module: ``python -m kubeloop.pipelines.components.monitor``.
    """
    from kubeloop.pipelines.image import DEFAULT_IMAGE

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_monitor_component(image or DEFAULT_IMAGE), str(path))
    return path


if __name__ == "__main__":  # pragma: no cover
    print(compile_monitor_component())
