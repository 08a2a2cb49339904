"""The training pipeline (KFP v2 DSL) and its compilation to ``pipelines/training_pipeline.yaml``.

validate → features → train → evaluate → gate → register → ``dsl.If(verdict == "promote")`` →
deploy. register runs after every gate: it records the run in MLflow and registers the challenger
only when the gate promoted it. The pipeline's output is the gate's decision (JSON), so a local
run can report why the challenger was or was not promoted.

Caching is off for every task: the data behind a URI and the registry's champion change
between runs with identical parameters, so a cached result would be wrong.

(No ``from __future__ import annotations`` here: KFP reads the pipeline's annotations.)
"""

from pathlib import Path
from typing import Any

from kfp import compiler, dsl

from kubeloop.pipelines.components.training import build_components
from kubeloop.pipelines.image import DEFAULT_IMAGE

__all__ = [
    "CLUSTER_REGISTRY",
    "PACKAGE_PATH",
    "PIPELINE_NAME",
    "build_pipeline",
    "compile_components",
    "compile_pipeline",
]

PIPELINE_NAME = "kubeloop-training"
CLUSTER_REGISTRY = "s3://kubeloop/registry"
PACKAGE_PATH = Path("pipelines") / "training_pipeline.yaml"
S3_CREDENTIALS_MOUNT = "/var/run/secrets/kubeloop/s3"


def _object_storage(task: Any, secret: str | None, endpoint: str | None) -> None:
    """Give a step S3 access: the credentials Secret as a file, the endpoint as a variable."""
    if secret:
        from kfp import kubernetes

        kubernetes.use_secret_as_volume(task, secret_name=secret, mount_path=S3_CREDENTIALS_MOUNT)
        task.set_env_variable("AWS_SHARED_CREDENTIALS_FILE", f"{S3_CREDENTIALS_MOUNT}/credentials")
        task.set_env_variable("KUBELOOP_S3_CREDENTIALS_SECRET", secret)  # for RayJob pods
    if endpoint:
        task.set_env_variable("AWS_ENDPOINT_URL", endpoint)


def build_pipeline(
    image: str | None = None, *, s3_secret: str | None = None, s3_endpoint: str | None = None
) -> Any:
    """The training pipeline with every step running in ``image`` (default ``KUBELOOP_IMAGE``).

    Args:
        image: The project image of every step.
        s3_secret: A Secret with key ``credentials`` (an AWS shared-credentials file) mounted
            into every step, for ``s3://`` data and registry (cluster only).
        s3_endpoint: ``AWS_ENDPOINT_URL`` of every step (MinIO).
    """
    c = build_components(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate, prepare features, train (XGBoost on Ray), evaluate, gate against "
        "the champion, register and deploy a tabular model.",
    )
    def training_pipeline(
        data: str,
        target: str,
        task: str = "auto",
        normalize_labels: bool = False,
        model_name: str = "model",
        workers: str = "auto",
        num_boost_round: int = 2000,
        candidates: str = "xgboost,linear,random_forest",
        seed: int = 0,
        tune_budget: float = 0.0,
        ray_head_cpu: str = "1",
        ray_head_memory: str = "2Gi",
        ray_worker_cpu: str = "1",
        ray_worker_memory: str = "2Gi",
        ray_deadline_s: int = 3600,
        gate_margin: float = 0.0,
        registry_root: str = CLUSTER_REGISTRY,
        mlflow_uri: str = "",
        inference_service: str = "",
        namespace: str = "",
        canary_percent: int = 0,
        deploy_timeout_seconds: int = 600,
        rollout: str = "direct",
    ) -> str:
        validate = c.ingest_validate(
            data=data, target=target, task=task, seed=seed, normalize_labels=normalize_labels
        )
        splits = validate.outputs["splits"]
        features = c.prepare_features(splits=splits)
        # What train trains on and with, and evaluate records in the manifest (so in MLflow).
        training = {
            "splits": splits,
            "features": features.outputs["features"],
            "workers": workers,
            "num_boost_round": num_boost_round,
            "seed": seed,
            "tune_budget": tune_budget,
        }
        train = c.train(
            **training,
            candidate_names=candidates,
            ray_head_cpu=ray_head_cpu,
            ray_head_memory=ray_head_memory,
            ray_worker_cpu=ray_worker_cpu,
            ray_worker_memory=ray_worker_memory,
            ray_deadline_s=ray_deadline_s,
        )
        evaluate = c.evaluate(
            **training,
            candidates=train.outputs["candidates"],
            model_name=model_name,
            data=data,
            target=target,
        )
        gate = c.gate(
            splits=splits,
            bundle=evaluate.outputs["bundle"],
            registry_root=registry_root,
            model_name=model_name,
            margin=gate_margin,
        )
        register = c.register(
            bundle=evaluate.outputs["bundle"],
            decision=gate.outputs["decision"],
            registry_root=registry_root,
            model_name=model_name,
            mlflow_uri=mlflow_uri,
            rollout=rollout,
            canary_percent=canary_percent,
        )
        steps = {
            "validate": validate,
            "features": features,
            "train": train,
            "evaluate": evaluate,
            "gate": gate,
            "register": register,
        }
        with dsl.If(gate.outputs["Output"] == "promote", name="challenger-wins"):
            steps["deploy"] = c.deploy(
                version=register.output,
                registry_root=registry_root,
                model_name=model_name,
                inference_service=inference_service,
                namespace=namespace,
                canary_percent=canary_percent,
                timeout_seconds=deploy_timeout_seconds,
                rollout=rollout,
            )
        for name, step in steps.items():
            step.set_display_name(name)
            step.set_caching_options(enable_caching=False)
            _object_storage(step, s3_secret, s3_endpoint)
        return gate.outputs["decision"]

    return training_pipeline


def compile_pipeline(
    path: str | Path = PACKAGE_PATH,
    *,
    image: str = DEFAULT_IMAGE,
    s3_secret: str | None = None,
    s3_endpoint: str | None = None,
) -> Path:
    """Compile the pipeline package (deterministic: same code and settings, same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(image, s3_secret=s3_secret, s3_endpoint=s3_endpoint)
    compiler.Compiler().compile(pipeline, str(path))
    return path


def compile_components(
    directory: str | Path = "components", *, image: str = DEFAULT_IMAGE
) -> list[Path]:
    """Compile every component spec to ``<directory>/<name>.yaml``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, component in build_components(image).items():
        path = directory / f"{name}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written
