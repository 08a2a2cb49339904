"""The RayJob and InferenceService calls against an in-memory stand-in for the Kubernetes API.

No API server exists here; the stand-in keeps objects by (group, version, namespace, plural,
name), applies merge and JSON patches, and lets a test script the status the controller
(KubeRay, KServe) would write.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from kubeloop.errors import TrainingError
from kubeloop.pipelines.steps.deploy import DeployTimeoutError, deploy_inference_service
from kubeloop.pipelines.steps.rayjob import RayJobSpec, build_rayjob, submit_rayjob, wait_rayjob
from tests.unit.test_pipelines_cluster import CHART_ISVC, _json_patch, _merge_patch

Key = tuple[str, str, str, str, str]


class _ApiClient:
    def __init__(self) -> None:
        self.default_headers: dict[str, str] = {}

    def set_default_header(self, name: str, value: str) -> None:
        self.default_headers[name] = value


class FakeCustomObjects:
    """create/get/patch of CustomObjectsApi; ``on_get`` plays the controller."""

    def __init__(self, on_get: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.api_client = _ApiClient()
        self.patches: list[tuple[str, Any]] = []
        self._on_get = on_get

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        key = (group, version, namespace, plural, body["metadata"]["name"])
        assert key not in self.objects, "AlreadyExists"
        self.objects[key] = copy.deepcopy(body)
        return body

    def get_namespaced_custom_object(self, *key: str) -> dict[str, Any]:
        obj = self.objects[key]  # type: ignore[index]
        if self._on_get is not None:
            self._on_get(obj)
        return copy.deepcopy(obj)

    def patch_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        *key, body = args
        content_type = self.api_client.default_headers.get(
            "Content-Type", "application/merge-patch+json"
        )
        self.patches.append((content_type, body))
        current = self.objects[tuple(key)]  # type: ignore[index]
        if content_type == "application/json-patch+json":
            patched = _json_patch(current, body)
        else:
            patched = _merge_patch(current, body)
        patched["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self.objects[tuple(key)] = patched  # type: ignore[index]
        return patched


SPEC = RayJobSpec(name="kubeloop-train-1", namespace="kubeflow", image="img", entrypoint=["true"])


def _scripted(states: list[dict[str, str]]) -> Callable[[dict[str, Any]], None]:
    def controller(obj: dict[str, Any]) -> None:
        obj["status"] = states.pop(0) if len(states) > 1 else states[0]

    return controller


def test_rayjob_is_created_and_waited_for() -> None:
    states = [{}, {"jobDeploymentStatus": "Initializing"}, {"jobStatus": "RUNNING"},
              {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}]  # fmt: skip
    api = FakeCustomObjects(_scripted(states))
    name = submit_rayjob(build_rayjob(SPEC), api=api)
    seen: list[str] = []
    assert wait_rayjob(name, "kubeflow", poll=0, api=api, progress=seen.append) == "SUCCEEDED"
    assert seen[-1] == "RayJob kubeflow/kubeloop-train-1: SUCCEEDED"
    assert ("ray.io", "v1", "kubeflow", "rayjobs", name) in api.objects


@pytest.mark.parametrize(
    "status",
    [{"jobStatus": "FAILED", "message": "OOMKilled"}, {"jobDeploymentStatus": "Failed"}],
)
def test_failed_rayjob_raises(status: dict[str, str]) -> None:
    api = FakeCustomObjects(_scripted([status]))
    submit_rayjob(build_rayjob(SPEC), api=api)
    with pytest.raises(TrainingError, match="kubeflow/kubeloop-train-1 ended"):
        wait_rayjob(SPEC.name, "kubeflow", poll=0, api=api)


def test_rayjob_timeout() -> None:
    api = FakeCustomObjects(_scripted([{"jobStatus": "RUNNING"}]))
    submit_rayjob(build_rayjob(SPEC), api=api)
    with pytest.raises(TrainingError, match="did not finish within 0s"):
        wait_rayjob(SPEC.name, "kubeflow", timeout=0, poll=0, api=api)


def _isvc_api(ready_after_patch: bool) -> FakeCustomObjects:
    def controller(obj: dict[str, Any]) -> None:
        generation = obj["metadata"]["generation"]
        if ready_after_patch and generation > 3:
            obj["status"] = {
                "observedGeneration": generation,
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        else:  # still reporting the old generation
            obj["status"] = {
                "observedGeneration": 3,
                "conditions": [{"type": "Ready", "status": "True"}],
            }

    api = FakeCustomObjects(controller)
    api.objects[("serving.kserve.io", "v1beta1", "kubeloop", "inferenceservices", "churn")] = (
        copy.deepcopy(CHART_ISVC)
    )
    return api


def test_deploy_patches_storage_uri_and_waits_for_ready() -> None:
    api = _isvc_api(ready_after_patch=True)
    message = deploy_inference_service(
        "churn", "kubeloop", "s3://kubeloop/registry/churn/versions/v2", canary_percent=20,
        poll=0, api=api,
    )  # fmt: skip
    assert message == (
        "InferenceService kubeloop/churn Ready with s3://kubeloop/registry/churn/versions/v2, "
        "canary 20%"
    )
    ((content_type, _),) = api.patches
    assert content_type == "application/json-patch+json"
    assert "Content-Type" not in api.api_client.default_headers  # not left behind
    stored = api.objects[("serving.kserve.io", "v1beta1", "kubeloop", "inferenceservices", "churn")]
    env = {e["name"]: e["value"] for e in stored["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == "s3://kubeloop/registry/churn/versions/v2"
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_deploy_times_out_while_the_old_generation_serves() -> None:
    api = _isvc_api(ready_after_patch=False)
    with pytest.raises(DeployTimeoutError, match="not Ready after 0s"):
        deploy_inference_service("churn", "kubeloop", "s3://x", timeout=0, poll=0, api=api)
