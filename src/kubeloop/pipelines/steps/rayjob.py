"""Training on a cluster through a KubeRay ``RayJob`` (when no RayCluster address is given).

The train component decides where Ray runs (:func:`ray_mode`): ``RAY_ADDRESS`` set → connect to
that RayCluster; inside Kubernetes without it → build a ``RayJob`` (an ephemeral RayCluster in
the project image running ``python -m kubeloop.pipelines.steps.train``), submit it with the
Kubernetes ``CustomObjectsApi`` and wait; anywhere else → Ray in-process.

The RayJob's entrypoint (:func:`kubeloop.pipelines.steps.train.main`) reads the splits and
features from object storage, trains, and writes the candidates to a staging URL the component
then copies into its output artifact; :func:`download_dir` and :func:`upload_dir` move them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kubeloop.errors import ConfigError, TrainingError
from kubeloop.pipelines._k8s import custom_objects_api
from kubeloop.training.storage import download_dir, upload_dir

__all__ = [
    "RAYJOB_GROUP",
    "RAYJOB_PLURAL",
    "RAYJOB_VERSION",
    "RayJobSpec",
    "RayResources",
    "build_rayjob",
    "download_dir",
    "ray_mode",
    "storage_url",
    "submit_rayjob",
    "upload_dir",
    "wait_rayjob",
]

RAYJOB_GROUP, RAYJOB_VERSION, RAYJOB_PLURAL = "ray.io", "v1", "rayjobs"
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_CREDENTIALS_MOUNT = "/var/run/secrets/kubeloop/s3"


def ray_mode(environ: Mapping[str, str] | None = None) -> Literal["address", "rayjob", "local"]:
    """Where the train step runs Ray: a given cluster, a new RayJob, or in-process."""
    env = os.environ if environ is None else environ
    if env.get("RAY_ADDRESS"):
        return "address"
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBELOOP_RAYJOB", "1") != "0":
        return "rayjob"
    return "local"


def storage_url(uri: str) -> str:
    """KFP artifact URI → fsspec URL (KFP's MinIO scheme ``minio://b/k`` is S3 ``s3://b/k``)."""
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri


@dataclass(frozen=True)
class RayResources:
    """The sizes of a RayJob's cluster and its deadline (the pipeline's ``ray_*`` parameters).

    Attributes:
        head_cpu, head_memory: The head pod's CPU and memory (Kubernetes quantities: ``"2"``,
            ``"500m"``, ``"8Gi"``); the head runs the training driver, which holds the data.
        worker_cpu, worker_memory: Each worker pod's; Ray Train sizes its workers (and
            XGBoost its threads) to the worker pods' CPUs.
        deadline_s: Seconds the whole RayJob may run (``activeDeadlineSeconds``).
    """

    head_cpu: str = "1"
    head_memory: str = "2Gi"
    worker_cpu: str = "1"
    worker_memory: str = "2Gi"
    deadline_s: int = 3600

    def __post_init__(self) -> None:
        for name in ("head_cpu", "worker_cpu", "head_memory", "worker_memory"):
            value = str(getattr(self, name)).strip()
            pattern = _CPU if name.endswith("cpu") else _MEMORY
            if not re.fullmatch(pattern, value) or not re.search(r"[1-9]", value):
                raise ConfigError(
                    f"ray_{name} must be a positive Kubernetes quantity "
                    f"({'e.g. 2 or 500m' if name.endswith('cpu') else 'e.g. 4Gi or 512Mi'}), "
                    f"got {value!r}."
                )
            object.__setattr__(self, name, value)
        if not (isinstance(self.deadline_s, int) and self.deadline_s >= 1):
            raise ConfigError(
                f"ray_deadline_s must be a whole number >= 1, got {self.deadline_s!r}."
            )


_CPU = r"\d+(\.\d+)?m?"
_MEMORY = r"\d+(\.\d+)?([KMGTPE]i?|[kmgtpe])?"


@dataclass(frozen=True)
class RayJobSpec:
    """What the RayJob needs; everything else is fixed by :func:`build_rayjob`."""

    name: str
    namespace: str
    image: str
    entrypoint: Sequence[str]
    workers: int = 2
    ray_version: str = "2.60.0"
    resources: RayResources = field(default_factory=RayResources)
    env: Mapping[str, str] = field(default_factory=dict)
    credentials_secret: str | None = None  # Secret with key `credentials` (AWS shared file)
    service_account: str | None = None
    ttl_seconds_after_finished: int = 300


def _container(spec: RayJobSpec, name: str, cpu: str, memory: str) -> dict[str, Any]:
    env = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    container: dict[str, Any] = {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "env": env,
    }
    if spec.credentials_secret:
        env.append(
            {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{_CREDENTIALS_MOUNT}/credentials"}
        )
        container["volumeMounts"] = [
            {"name": "s3-credentials", "mountPath": _CREDENTIALS_MOUNT, "readOnly": True}
        ]
    return container


def _pod_template(spec: RayJobSpec, name: str, cpu: str, memory: str) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [_container(spec, name, cpu, memory)]}
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.credentials_secret:
        pod["volumes"] = [
            {"name": "s3-credentials", "secret": {"secretName": spec.credentials_secret}}
        ]
    labels = {"app.kubernetes.io/name": "kubeloop", "app.kubernetes.io/component": "train"}
    return {"metadata": {"labels": labels}, "spec": pod}


def build_rayjob(spec: RayJobSpec) -> dict[str, Any]:
    """The ``ray.io/v1`` RayJob manifest: a head (no tasks) plus ``workers`` worker pods.

    Raises:
        ConfigError: The name is not a DNS label or ``workers`` is not positive.
    """
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,45}[a-z0-9])?", spec.name):
        raise ConfigError(f"RayJob name {spec.name!r} must be a DNS label of at most 47 chars.")
    if spec.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {spec.workers}.")
    return {
        "apiVersion": f"{RAYJOB_GROUP}/{RAYJOB_VERSION}",
        "kind": "RayJob",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {
                "app.kubernetes.io/name": "kubeloop",
                "app.kubernetes.io/component": "train",
            },
        },
        "spec": {
            "entrypoint": " ".join(_quote(part) for part in spec.entrypoint),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "activeDeadlineSeconds": spec.resources.deadline_s,
            "backoffLimit": 0,
            "rayClusterSpec": {
                "rayVersion": spec.ray_version,
                "headGroupSpec": {
                    # the head only coordinates: every training worker gets a whole pod
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod_template(
                        spec, "ray-head", spec.resources.head_cpu, spec.resources.head_memory
                    ),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "train",
                        "replicas": spec.workers,
                        "minReplicas": spec.workers,
                        "maxReplicas": spec.workers,
                        "rayStartParams": {},
                        "template": _pod_template(
                            spec,
                            "ray-worker",
                            spec.resources.worker_cpu,
                            spec.resources.worker_memory,
                        ),
                    }
                ],
            },
        },
    }


def _quote(part: str) -> str:
    import shlex

    return shlex.quote(part)


def submit_rayjob(manifest: Mapping[str, Any], *, api: Any | None = None) -> str:
    """Create the RayJob; returns its name."""
    metadata = manifest["metadata"]
    custom_objects_api(api).create_namespaced_custom_object(
        RAYJOB_GROUP, RAYJOB_VERSION, metadata["namespace"], RAYJOB_PLURAL, dict(manifest)
    )
    return str(metadata["name"])


def wait_rayjob(
    name: str,
    namespace: str,
    *,
    timeout: float = 3600.0,
    poll: float = 10.0,
    api: Any | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Poll the RayJob until its Ray job is terminal; returns ``"SUCCEEDED"``.

    Raises:
        TrainingError: The job failed or stopped, or ``timeout`` passed.
    """
    objects = custom_objects_api(api)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        obj = objects.get_namespaced_custom_object(
            RAYJOB_GROUP, RAYJOB_VERSION, namespace, RAYJOB_PLURAL, name
        )
        status = obj.get("status") or {}
        state = str(status.get("jobStatus") or status.get("jobDeploymentStatus") or "PENDING")
        if state != last and progress is not None:
            progress(f"RayJob {namespace}/{name}: {state}")
        last = state
        if state == "SUCCEEDED":
            return state
        if state in _TERMINAL or status.get("jobDeploymentStatus") == "Failed":
            raise TrainingError(
                f"RayJob {namespace}/{name} ended {state}: {status.get('message', 'no message')}; "
                f"see `kubectl -n {namespace} logs -l job-name={name}`."
            )
        if time.monotonic() > deadline:
            raise TrainingError(
                f"RayJob {namespace}/{name} did not finish within {timeout:.0f}s (last: {state})."
            )
        time.sleep(poll)
