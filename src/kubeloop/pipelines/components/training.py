"""The KFP v2 components: thin wrappers that only move artifact paths in and out of the cores.

Every component runs in the one project image (``KUBELOOP_IMAGE``, default
:data:`kubeloop.pipelines.image.DEFAULT_IMAGE`, built from ``components/Dockerfile``) where
kubeloop and kfp are already
installed, so nothing is pip-installed at run time (``install_kfp_package=False``) and each
function simply imports kubeloop. The functions' source is what KFP embeds in the component
spec, hence the imports inside them. Each calls
:func:`kubeloop.quick_exit.exit_quickly_on_success` once its work is done: the step's process then
ends without the module teardown (up to 1.8 s) after KFP has written its outputs; a step that
fails, before or while the outputs are written, exits as Python does.

(This module deliberately has no ``from __future__ import annotations``: KFP reads the
parameter annotations at decoration time.)
"""

from dataclasses import dataclass
from typing import Any

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from kubeloop.pipelines.image import component_image

__all__ = ["Components", "build_components"]


def ingest_validate(
    data: str,
    target: str,
    task: str,
    seed: int,
    splits: Output[Dataset],
    report: Output[Markdown],
    normalize_labels: bool = False,
) -> None:
    """Read the data (path or s3:// URL), validate it and split it deterministically."""
    from pathlib import Path

    from kubeloop.console import Progress
    from kubeloop.pipelines.steps.data import ingest
    from kubeloop.quick_exit import exit_quickly_on_success

    summary = ingest(
        data,
        target=target,
        task=task,
        seed=seed,
        out=Path(splits.path),
        normalize_labels=normalize_labels,
        progress=Progress(prefix="validate"),
    )
    Path(report.path).write_text(summary, encoding="utf-8")
    exit_quickly_on_success()


def prepare_features(splits: Input[Dataset], features: Output[Artifact]) -> int:
    """Fit the preprocessor on the training split; write it and the model-input matrices."""
    from pathlib import Path

    from kubeloop.pipelines.steps.data import prepare_features as prepare
    from kubeloop.quick_exit import exit_quickly_on_success

    columns = prepare(Path(splits.path), out=Path(features.path))
    exit_quickly_on_success()
    return columns


def train(
    splits: Input[Dataset],
    features: Input[Artifact],
    workers: str,
    num_boost_round: int,
    seed: int,
    candidate_names: str,
    tune_budget: float,
    ray_head_cpu: str,
    ray_head_memory: str,
    ray_worker_cpu: str,
    ray_worker_memory: str,
    ray_deadline_s: int,
    candidates: Output[Model],
) -> str:
    """Train every candidate: XGBoost through Ray Train (in-process, RayCluster or RayJob)."""
    from pathlib import Path

    from kubeloop.console import Progress
    from kubeloop.pipelines.steps.rayjob import RayResources
    from kubeloop.pipelines.steps.train import train_anywhere
    from kubeloop.quick_exit import exit_quickly_on_success

    trained = train_anywhere(
        Path(splits.path),
        Path(features.path),
        out=Path(candidates.path),
        uris=(splits.uri, features.uri, candidates.uri),
        workers=workers,
        num_boost_round=num_boost_round,
        seed=seed,
        candidates=candidate_names,
        tune_budget=tune_budget,
        resources=RayResources(
            head_cpu=ray_head_cpu,
            head_memory=ray_head_memory,
            worker_cpu=ray_worker_cpu,
            worker_memory=ray_worker_memory,
            deadline_s=ray_deadline_s,
        ),
        progress=Progress(prefix="train"),
    )
    exit_quickly_on_success()
    return trained


def evaluate(
    splits: Input[Dataset],
    features: Input[Artifact],
    candidates: Input[Model],
    model_name: str,
    data: str,
    target: str,
    workers: str,
    num_boost_round: int,
    seed: int,
    tune_budget: float,
    bundle: Output[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    plots: Output[HTML],
    report: Output[Markdown],
) -> str:
    """Score the candidates on the test split, write the bundle (the pipeline's parameters in
    its manifest); returns the bundle version."""
    from pathlib import Path

    from kubeloop.console import Progress
    from kubeloop.pipelines.steps.evaluate import evaluate_and_report
    from kubeloop.quick_exit import exit_quickly_on_success

    params = {
        "data": data,
        "target": target,
        "workers": workers,
        "seed": seed,
        "num_boost_round": num_boost_round,
        "tune_budget": tune_budget,
    }
    result = evaluate_and_report(
        Path(splits.path),
        Path(features.path),
        Path(candidates.path),
        out=Path(bundle.path),
        model_name=model_name,
        params=params,
        progress=Progress(prefix="evaluate"),
    )
    for name, value in result.scalars.items():
        metrics.log_metric(name, value)
    if result.roc is not None:
        classification.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["thresholds"])
    if result.confusion is not None:
        classification.log_confusion_matrix(list(result.classes), result.confusion)
    Path(plots.path).write_text(result.html, encoding="utf-8")
    Path(report.path).write_text(result.markdown, encoding="utf-8")
    bundle.metadata["version"] = result.version
    exit_quickly_on_success()
    return result.version


def gate(
    splits: Input[Dataset],
    bundle: Input[Model],
    registry_root: str,
    model_name: str,
    margin: float,
    decision: dsl.OutputPath(str),  # type: ignore[valid-type]
) -> str:
    """Challenger vs the current champion on the same held-out rows: "promote" or "keep"."""
    from pathlib import Path

    from kubeloop.pipelines.steps.gate import gate as decide
    from kubeloop.quick_exit import exit_quickly_on_success

    verdict = decide(
        Path(splits.path),
        Path(bundle.path),
        registry_root=registry_root,
        model_name=model_name,
        margin=margin,
    )
    print(f"gate: {'PROMOTE' if verdict.promote else 'KEEP the champion'}: {verdict.reason}")
    Path(decision).write_text(verdict.to_json(), encoding="utf-8")
    exit_quickly_on_success()
    return "promote" if verdict.promote else "keep"


def register(
    bundle: Input[Model],
    decision: str,
    registry_root: str,
    model_name: str,
    mlflow_uri: str,
    rollout: str,
    canary_percent: int,
) -> str:
    """Record the run in MLflow; if the gate promoted the challenger, store the bundle as a
    registry version and make it champion (``rollout`` "direct") or the canary/shadow candidate,
    moving MLflow's alias. Returns the version or ""."""
    from pathlib import Path

    from kubeloop.pipelines.steps.gate import GateDecision, record_run
    from kubeloop.quick_exit import exit_quickly_on_success

    version = record_run(
        Path(bundle.path),
        GateDecision.from_json(decision),
        registry_root=registry_root,
        model_name=model_name,
        tracking_uri=mlflow_uri or None,
        rollout=rollout,
        percent=canary_percent,
    )
    if version and rollout != "direct":
        print(f"registered {model_name} {version} as the {rollout} candidate")
    elif version:
        print(f"registered and promoted {model_name} {version}")
    else:
        print(f"recorded the run in MLflow; the champion of {model_name} stays")
    exit_quickly_on_success()
    return version


def deploy(
    version: str,
    registry_root: str,
    model_name: str,
    inference_service: str,
    namespace: str,
    canary_percent: int,
    timeout_seconds: int,
    rollout: str,
) -> str:
    """Embedded: report the pointer switch. Cluster: patch the InferenceService, wait Ready
    (a canary/shadow candidate: the servers following the registry load it themselves)."""
    from kubeloop.console import Progress
    from kubeloop.pipelines.steps.deploy import deploy_champion
    from kubeloop.quick_exit import exit_quickly_on_success

    message = deploy_champion(
        version,
        registry_root=registry_root,
        model_name=model_name,
        inference_service=inference_service,
        namespace=namespace,
        canary_percent=canary_percent,
        timeout=float(timeout_seconds),
        rollout=rollout,
        progress=Progress(prefix="deploy"),
    )
    print(message)
    exit_quickly_on_success()
    return message


_FUNCTIONS = {
    "ingest_validate": ingest_validate,
    "prepare_features": prepare_features,
    "train": train,
    "evaluate": evaluate,
    "gate": gate,
    "register": register,
    "deploy": deploy,
}


@dataclass(frozen=True)
class Components:
    """The seven components, built for one image."""

    ingest_validate: Any
    prepare_features: Any
    train: Any
    evaluate: Any
    gate: Any
    register: Any
    deploy: Any

    def items(self) -> list[tuple[str, Any]]:
        """``(name, component)`` in pipeline order (used to compile ``components/*.yaml``)."""
        return [(name, getattr(self, name)) for name in _FUNCTIONS]


def build_components(image: str | None = None) -> Components:
    """Wrap every stage function as a KFP component running in ``image``."""
    base = image or component_image()
    return Components(
        **{
            name: dsl.component(func=function, base_image=base, install_kfp_package=False)
            for name, function in _FUNCTIONS.items()
        }
    )
