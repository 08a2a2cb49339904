"""Start a training run — locally through ``kfp.local`` or on a cluster through the KFP API.

:func:`start_training_run` is the one entry point the CLI and the drift monitor use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop.console import ProgressFn, quiet
from kubeloop.names import check_name
from kubeloop.pipelines.components.pipeline import CLUSTER_REGISTRY
from kubeloop.pipelines.launch.cluster import run_state, submit_run
from kubeloop.pipelines.steps.gate import GateDecision
from kubeloop.registry import Registry, default_registry_root, kubeloop_home
from kubeloop.training.engine import AUTO, Workers, parse_workers

__all__ = [
    "RunOutcome",
    "cluster_registry",
    "pipeline_arguments",
    "run_state",
    "start_training_run",
]


@dataclass(frozen=True)
class RunOutcome:
    """How a training run ended (local) or that it was submitted (cluster)."""

    run_id: str
    where: Literal["local", "cluster"]
    state: str  # local: "SUCCEEDED"; cluster: "SUBMITTED"
    promoted: bool | None
    challenger_version: str | None = None
    champion_version: str | None = None
    previous_champion: str | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    reason: str = ""

    def summary(self) -> str:
        """One human line: the outcome and why."""
        if self.where == "cluster":
            return f"submitted KFP run {self.run_id}; {self.reason}"
        verdict = "PROMOTED" if self.promoted else "NOT promoted"
        return f"{verdict}: {self.reason}. Champion now: {self.champion_version}"


def pipeline_arguments(
    data: str,
    *,
    target: str,
    model_name: str,
    task: str,
    workers: Workers,
    gate_margin: float,
    num_boost_round: int,
    registry_root: str,
    mlflow_uri: str,
    seed: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """The pipeline's parameters from the run settings (unset optional ones are left out).

    Raises:
        ConfigError: ``model_name`` breaks :data:`kubeloop.names.NAME_RULE`.
    """
    check_name(model_name)
    arguments: dict[str, Any] = {
        "data": data,
        "target": target,
        "task": task,
        "model_name": model_name,
        "workers": str(parse_workers(workers)),  # the pipeline parameter is a string
        "num_boost_round": num_boost_round,
        "seed": seed,
        "gate_margin": gate_margin,
        "registry_root": registry_root,
        "mlflow_uri": mlflow_uri,
    }
    arguments.update({key: value for key, value in extra.items() if value not in (None, "")})
    return arguments


def cluster_registry() -> str:
    """Registry root for cluster runs: ``$KUBELOOP_REGISTRY`` or ``s3://kubeloop/registry``."""
    return os.environ.get("KUBELOOP_REGISTRY") or CLUSTER_REGISTRY


def _local_data(data: str) -> str:
    """Absolute path for local files (the steps may run from another directory)."""
    return data if "://" in data else os.path.abspath(data)


def start_training_run(
    data: str,
    *,
    target: str,
    model_name: str = "model",
    host: str | None = None,
    task: str = "auto",
    workers: Workers = AUTO,
    gate_margin: float = 0.0,
    num_boost_round: int = 2000,
    registry_root: str | None = None,
    mlflow_uri: str | None = None,
    run_name: str | None = None,
    progress: ProgressFn | None = None,
    **cluster_options: Any,
) -> RunOutcome:
    """Run (locally) or submit (cluster) the training pipeline.

    Args:
        data: CSV/Parquet path or URL (``s3://`` on a cluster).
        target: The column to predict.
        model_name: Registry key and bundle name.
        host: KFP API endpoint; ``None`` runs in this process through ``kfp.local``.
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        workers: How XGBoost trains (:mod:`kubeloop.training.engine`): ``"auto"``, ``0``
            (in the train step's process) or a Ray Train worker count.
        gate_margin: How much better (validation-score units) the challenger must be.
        num_boost_round: Maximum XGBoost rounds (early stopping applies).
        registry_root: Local default ``$KUBELOOP_REGISTRY`` or ``<kubeloop home>/registry``;
            cluster default ``$KUBELOOP_REGISTRY`` or ``s3://kubeloop/registry``.
        mlflow_uri: Tracking store; local default sqlite under the kubeloop home, cluster
            default ``$MLFLOW_TRACKING_URI`` as seen by the steps.
        run_name: KFP run name (cluster only).
        progress: Called with one human line per milestone.
        **cluster_options: More pipeline parameters (``inference_service``, ``namespace``,
            ``canary_percent``, ``seed``, ``normalize_labels``); for a cluster, ``experiment``;
            for a local run, ``runner`` (``"subprocess"`` or ``"docker"``) and ``image`` (the
            docker runner's).

    Returns:
        The outcome (local) or the submitted run's id (cluster).

    Raises:
        KubeloopError: A local step failed; e.g. ``DataValidationError`` from validate, with
            the registry and champion untouched.
    """
    check_name(model_name)
    say = progress or quiet
    experiment = cluster_options.pop("experiment", "kubeloop")
    runner = cluster_options.pop("runner", "subprocess")
    image = cluster_options.pop("image", None)
    if host:
        arguments = pipeline_arguments(
            data, target=target, model_name=model_name, task=task, workers=workers,
            gate_margin=gate_margin, num_boost_round=num_boost_round,
            registry_root=registry_root or cluster_registry(), mlflow_uri=mlflow_uri or "",
            **cluster_options,
        )  # fmt: skip
        run_id = submit_run(host, arguments, experiment=experiment, run_name=run_name)
        say(f"submitted run {run_id} to {host}")
        return RunOutcome(
            run_id=run_id, where="cluster", state="SUBMITTED", promoted=None,
            reason=f"follow it in the KFP UI ({host}); the gate decides promotion",
        )  # fmt: skip
    from kubeloop.pipelines.launch.local import run_pipeline_locally
    from kubeloop.registry.tracking import default_tracking_uri

    root = registry_root or default_registry_root()
    registry = Registry(root)
    previous = registry.champion(model_name)
    arguments = pipeline_arguments(
        _local_data(data), target=target, model_name=model_name, task=task, workers=workers,
        gate_margin=gate_margin, num_boost_round=num_boost_round, registry_root=registry.root,
        mlflow_uri=mlflow_uri or default_tracking_uri(), **cluster_options,
    )  # fmt: skip
    say(f"local run: registry {registry.root}, MLflow {arguments['mlflow_uri']}")
    output = run_pipeline_locally(
        arguments,
        pipeline_root=kubeloop_home() / "kfp-local",
        progress=say,
        runner=runner,
        image=image,
    )
    decision = GateDecision.from_json(output)
    return RunOutcome(
        run_id=f"local-{decision.challenger_version}",
        where="local",
        state="SUCCEEDED",
        promoted=decision.promote,
        challenger_version=decision.challenger_version,
        champion_version=registry.champion(model_name),
        previous_champion=previous,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
        reason=decision.reason,
    )
