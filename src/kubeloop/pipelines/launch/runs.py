"""Start a training run — locally through ``kfp.local`` or on a cluster through the KFP API.

:func:`start_training_run` is the one entry point the CLI, the drift monitor and the demo use;
each builds one :class:`~kubeloop.pipelines.launch.request.RunRequest` for it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop.console import ProgressFn, quiet
from kubeloop.pipelines.components.pipeline import CLUSTER_REGISTRY
from kubeloop.pipelines.launch.cluster import run_state, submit_run
from kubeloop.pipelines.launch.request import RAY_RESOURCES, RunRequest
from kubeloop.pipelines.steps.gate import GateDecision
from kubeloop.registry import Registry, default_registry_root, kubeloop_home

__all__ = [
    "RunOutcome",
    "RunRequest",
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
    rollout: str = "direct"  # RunRequest.rollout
    candidate_version: str | None = None  # the registry's candidate after the run (staged)

    def summary(self) -> str:
        """One human line: the outcome and why."""
        if self.where == "cluster":
            return f"submitted KFP run {self.run_id}; {self.reason}"
        if self.promoted and self.rollout != "direct":
            return (
                f"PASSED the gate: {self.reason}. {self.candidate_version} is the {self.rollout} "
                f"candidate beside champion {self.champion_version}; the monitor promotes or "
                "rolls it back"
            )
        verdict = "PROMOTED" if self.promoted else "NOT promoted"
        return f"{verdict}: {self.reason}. Champion now: {self.champion_version}"


# Pipeline parameters passed only when set: unset, each has the pipeline's default.
_OPTIONAL = (
    "candidates",
    "tune_budget",
    "normalize_labels",
    "inference_service",
    "namespace",
    "canary_percent",
    *(f"ray_{name}" for name in RAY_RESOURCES),
)


def pipeline_arguments(request: RunRequest, *, registry_root: str | None = None) -> dict[str, Any]:
    """The pipeline's parameters for ``request`` (unset optional ones are left out).

    Where the run goes fills in what the request leaves unset: a local run's relative ``data``
    path becomes absolute (the steps may run from another directory), its registry is
    ``$KUBELOOP_REGISTRY`` or ``<kubeloop home>/registry`` and its tracking store sqlite under
    the kubeloop home; a cluster run's registry is :func:`cluster_registry` and its tracking
    store ``""`` (the steps' ``$MLFLOW_TRACKING_URI``).

    Args:
        request: The run.
        registry_root: The registry root as already resolved by the caller (a local run's
            :attr:`Registry.root <kubeloop.registry.Registry>`); ``None``: as above.
    """
    local = request.where == "local"
    if registry_root is None:
        default = default_registry_root() if local else cluster_registry()
        registry_root = request.registry_root or default
    mlflow_uri = request.mlflow_uri
    if not mlflow_uri and local:
        from kubeloop.registry.tracking import default_tracking_uri

        mlflow_uri = default_tracking_uri()
    arguments: dict[str, Any] = {
        "data": _local_data(request.data) if local else request.data,
        "target": request.target,
        "task": request.task,
        "model_name": request.model_name,
        "workers": str(request.workers),  # the pipeline parameter is a string
        "num_boost_round": request.num_boost_round,
        "seed": request.seed,
        "gate_margin": request.gate_margin,
        "registry_root": registry_root,
        "mlflow_uri": mlflow_uri or "",
    }
    for name in _OPTIONAL:
        value = getattr(request, name)
        if value:  # None, "", 0 and False: the pipeline's default applies
            arguments[name] = value
    if request.rollout != "direct":
        arguments["rollout"] = request.rollout
        arguments["canary_percent"] = request.candidate_percent
    return arguments


def cluster_registry() -> str:
    """Registry root for cluster runs: ``$KUBELOOP_REGISTRY`` or ``s3://kubeloop/registry``."""
    return os.environ.get("KUBELOOP_REGISTRY") or CLUSTER_REGISTRY


def _local_data(data: str) -> str:
    """Absolute path for local files (the steps may run from another directory)."""
    return data if "://" in data else os.path.abspath(data)


def start_training_run(request: RunRequest, *, progress: ProgressFn | None = None) -> RunOutcome:
    """Run (locally) or submit (cluster) the training pipeline.

    Args:
        request: The run, checked when it was made (:class:`RunRequest`); ``request.host``
            says where it goes: ``None`` runs it here through ``kfp.local`` and blocks until it
            finished, a KFP API endpoint gets it submitted and this returns at once.
        progress: Called with one human line per milestone.

    Returns:
        The outcome (local) or the submitted run's id (cluster).

    Raises:
        KubeloopError: A local step failed; e.g. ``DataValidationError`` from validate, with
            the registry and champion untouched.
    """
    say = progress or quiet
    if request.host:
        arguments = pipeline_arguments(request)
        run_id = submit_run(
            request.host, arguments, experiment=request.experiment, run_name=request.run_name
        )
        say(f"submitted run {run_id} to {request.host}")
        return RunOutcome(
            run_id=run_id, where="cluster", state="SUBMITTED", promoted=None,
            reason=f"follow it in the KFP UI ({request.host}); the gate decides promotion",
        )  # fmt: skip
    from kubeloop.pipelines.launch.local import run_pipeline_locally
    from kubeloop.registry.tracking import prepare_store

    registry = Registry(request.registry_root or default_registry_root())
    previous = registry.champion(request.model_name)
    arguments = pipeline_arguments(request, registry_root=registry.root)
    say(f"local run: registry {registry.root}, MLflow {arguments['mlflow_uri']}")
    # A new local MLflow store is made in the background while the steps run (the register step,
    # the only one that opens it, comes last); should that fail, the step makes it and says why.
    with ThreadPoolExecutor(1, thread_name_prefix="kubeloop-tracking-store") as background:
        background.submit(prepare_store, str(arguments["mlflow_uri"]))
        output = run_pipeline_locally(
            arguments,
            pipeline_root=kubeloop_home() / "kfp-local",
            progress=say,
            runner=request.runner,
            image=request.image,
        )
    decision = GateDecision.from_json(output)
    candidate = registry.candidate(request.model_name)
    return RunOutcome(
        run_id=f"local-{decision.challenger_version}",
        where="local",
        state="SUCCEEDED",
        promoted=decision.promote,
        challenger_version=decision.challenger_version,
        champion_version=registry.champion(request.model_name),
        previous_champion=previous,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
        reason=decision.reason,
        rollout=request.rollout,
        candidate_version=None if candidate is None else str(candidate["version"]),
    )
