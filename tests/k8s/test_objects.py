"""Every object this project ships validates, and every pod is locked down and bounded."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.k8s import k8s_helpers as h
from tests.k8s.conftest import all_objects


@pytest.fixture(scope="module")
def shipped(
    rendered: dict[str, list[h.Manifest]],
    built_overlays: dict[str, list[h.Manifest]],
    submit_job: h.Manifest,
) -> list[tuple[str, h.Manifest]]:
    return all_objects(rendered, built_overlays, submit_job)


def test_every_object_validates(shipped: list[tuple[str, h.Manifest]]) -> None:
    errors = [f"{origin}: {e}" for origin, obj in shipped for e in h.validation_errors(obj)]
    assert errors == []


def test_custom_resources_are_checked_against_their_crds(
    shipped: list[tuple[str, h.Manifest]],
) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for _, o in shipped}
    assert set(h.CRD_SCHEMAS) <= kinds, "a stored CRD schema is not exercised by any scenario"


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        ("InferenceService", lambda o: o["spec"]["predictor"].update(replicas=2), "replicas"),
        ("InferenceService", lambda o: o["spec"]["predictor"].update(minReplicas="two"), "two"),
        ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0].update(prot="x"), "prot"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0].pop("name"), "name"),
        ("CronJob", lambda o: o["spec"].update(schedule=5), "schedule"),
        ("NetworkPolicy", lambda o: o["spec"].update(podSelectors={}), "podSelectors"),
        ("Role", lambda o: o["rules"][0].update(verb=["get"]), "verb"),
    ],
)
def test_validation_rejects_broken_objects(
    rendered: dict[str, list[h.Manifest]], kind: str, mutate: Any, message: str
) -> None:
    obj = copy.deepcopy(h.by_kind(rendered["default"], kind)[0])
    mutate(obj)
    errors = h.validation_errors(obj)
    assert errors and any(message in e for e in errors), errors


def test_raycluster_is_validated(rendered: dict[str, list[h.Manifest]]) -> None:
    (ray,) = h.by_kind(rendered["production"], "RayCluster")
    broken = copy.deepcopy(ray)
    broken["spec"]["workerGroupSpecs"][0]["replica"] = 2
    assert h.validation_errors(ray) == []
    assert h.validation_errors(broken)


def _pods(shipped: list[tuple[str, h.Manifest]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{origin} {where}", spec) for origin, o in shipped for where, spec in h.pod_specs(o)]


def test_pods_meet_pod_security_restricted(shipped: list[tuple[str, h.Manifest]]) -> None:
    problems: list[str] = []
    pods = _pods(shipped)
    assert len(pods) >= 10
    for where, spec in pods:
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod runAsNonRoot")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{where}: {key}")
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{where}: hostPath volume {volume['name']}")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            name = f"{where} container {c['name']}"
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: readOnlyRootFilesystem")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
                problems.append(f"{name}: capabilities must drop ALL and add none")
            if sc.get("privileged"):
                problems.append(f"{name}: privileged")
            if sc.get("runAsUser", psc.get("runAsUser", 0)) < 10000:
                problems.append(f"{name}: runAsUser must be >= 10000")
            if any(p.get("hostPort") for p in c.get("ports", [])):
                problems.append(f"{name}: hostPort")
            resources = c.get("resources", {})
            for bound in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in resources.get(bound, {}):
                        problems.append(f"{name}: {bound}.{res} missing")
            image = c.get("image", "")
            if image.endswith(":latest") or (":" not in image.split("/")[-1] and "@" not in image):
                problems.append(f"{name}: image {image!r} is not pinned")
    assert problems == []


def test_only_kfp_clients_get_a_token_and_only_for_kfp(
    rendered: dict[str, list[h.Manifest]], submit_job: h.Manifest
) -> None:
    # No pod gets a Kubernetes API token; the KFP clients (monitor, run submitters) get a
    # projected token whose audience is KFP's API only.
    with_token: set[str] = set()
    for obj in [*rendered["production"], submit_job]:
        for where, spec in h.pod_specs(obj):
            for volume in spec.get("volumes", []):
                for source in volume.get("projected", {}).get("sources", []):
                    if "serviceAccountToken" in source:
                        assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
                        with_token.add(where.split("/")[0])
    assert with_token == {"CronJob", "Job"}


def test_pipeline_image_is_the_running_image(shipped: list[tuple[str, h.Manifest]]) -> None:
    # Runs are compiled with KUBELOOP_IMAGE: it must be the image the submitter itself runs,
    # or a kind cluster would start steps in an image it does not have.
    checked = 0
    for origin, obj in shipped:
        for where, spec in h.pod_specs(obj):
            for container in spec["containers"]:
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if "KUBELOOP_IMAGE" in env:
                    checked += 1
                    assert env["KUBELOOP_IMAGE"] == container["image"], f"{origin} {where}"
    assert checked >= 10


def test_serving_example_validates() -> None:
    # serving/inferenceservice.yaml (the serving image's own example) is a real InferenceService.
    import yaml

    path = h.ROOT / "serving" / "inferenceservice.yaml"
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    assert [e for d in documents for e in h.validation_errors(d)] == []
