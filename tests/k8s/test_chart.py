"""The Helm chart renders for every scenario, lints clean and its schema rejects bad values."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.k8s import k8s_helpers as h
from tests.k8s.conftest import SCENARIO_IDS, scenario_values


def _lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    import helm_python

    return helm_python.lint(str(h.CHART), values or {}, strict=True, kube_version="v1.34.0")


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_helm_lint_passes(scenario: str) -> None:
    report = _lint(scenario_values(scenario))
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_helm_lint_catches_a_broken_template(tmp_path: Any) -> None:
    # The lint check can fail: a copy of the chart with a template error is reported.
    import shutil

    import helm_python

    broken = tmp_path / "kubeloop"
    shutil.copytree(h.CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.nope.missing }}\n")
    report = helm_python.lint(str(broken), {}, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_scenario_renders_expected_kinds(
    scenario: str, rendered: dict[str, list[h.Manifest]]
) -> None:
    kinds = {o["kind"] for o in rendered[scenario]}
    assert "InferenceService" in kinds
    values = scenario_values(scenario)
    monitor = values.get("monitor", {})
    monitor_kind = monitor.get("kind", "CronJob") if monitor.get("enabled", True) else None
    assert ("CronJob" in kinds) == (monitor_kind == "CronJob")
    assert ("Deployment" in kinds) == (
        monitor_kind == "Deployment" or values.get("mlflow", {}).get("enabled", False)
    )
    assert ("RayCluster" in kinds) == values.get("rayCluster", {}).get("enabled", False)
    assert ("NetworkPolicy" in kinds) == values.get("networkPolicy", {}).get("enabled", True)
    for obj in rendered[scenario]:
        # Only the train step's Role/RoleBinding live in KFP's namespace, where its pods run.
        expected = "kubeflow" if obj["metadata"]["name"].endswith("-train") else h.NAMESPACE
        assert obj["metadata"].get("namespace") == expected, obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubeloop"


def test_defaults_are_standard_mode_with_storage_uri(rendered: dict[str, list[h.Manifest]]) -> None:
    (isvc,) = h.by_kind(rendered["default"], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    container = isvc["spec"]["predictor"]["containers"][0]
    # The deploy step patches env[0]; it must stay STORAGE_URI.
    assert container["env"][0] == {
        "name": "STORAGE_URI",
        "value": "s3://kubeloop/registry/churn/versions/initial",
    }
    assert container["command"] == ["kubeloop", "serve"]
    assert "--model-dir=/mnt/models" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]


def test_knative_canary(rendered: dict[str, list[h.Manifest]]) -> None:
    (isvc,) = h.by_kind(rendered["knative-canary"], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # Knative refuses more than one container port (and KServe routes only the first).
    assert [p["name"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]] == ["http1"]


def test_staged_rollout_predictor_follows_the_registry(
    rendered: dict[str, list[h.Manifest]],
) -> None:
    """rollout.mode canary: `kubeloop serve --registry`, no STORAGE_URI (so no storage
    initializer), and the S3 endpoint and credentials file the monitor uses."""
    values = scenario_values("canary")
    (isvc,) = h.by_kind(rendered["canary"], "InferenceService")
    predictor = isvc["spec"]["predictor"]
    container = predictor["containers"][0]
    assert container["args"][:2] == [
        f"--registry={values['storage']['registryUri']}",
        "--model=churn",
    ]
    assert not any(a.startswith("--model-dir") for a in container["args"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "STORAGE_URI" not in env
    assert env["AWS_ENDPOINT_URL"] == values["storage"]["s3"]["endpoint"]
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/var/run/secrets/kubeloop/s3/credentials"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["s3-credentials"]["readOnly"] is True
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert volumes["s3-credentials"]["secret"]["secretName"] == "kubeloop-s3"
    # The monitor mounts the same file: one helper, one wiring.
    (monitor,) = h.by_kind(rendered["canary"], "Deployment")
    monitor_container = monitor["spec"]["template"]["spec"]["containers"][0]
    assert mounts["s3-credentials"] in monitor_container["volumeMounts"]
    monitor_env = {e["name"]: e.get("value") for e in monitor_container["env"]}
    for name in ("KUBELOOP_REGISTRY", "AWS_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE"):
        assert env[name] == monitor_env[name], name
    # No storage initializer: the predictor's account lists no Secret for it.
    (account,) = [
        o
        for o in h.by_kind(rendered["canary"], "ServiceAccount")
        if o["metadata"]["name"].endswith("-predictor")
    ]
    assert "secrets" not in account


def test_staged_rollout_deploys_nothing(rendered: dict[str, list[h.Manifest]]) -> None:
    """In a staged rollout promotion and rollback are pointer writes in S3: no run patches the
    InferenceService, so the deploy Role and its binding are not rendered."""
    names = {o["metadata"]["name"] for o in rendered["canary"]}
    assert "kubeloop-deploy" not in names
    assert "kubeloop-deploy" in {o["metadata"]["name"] for o in rendered["default"]}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"monitor": {"enabled": False}}, "needs monitor.enabled=true"),
        ({"monitor": {"retrain": False}}, "needs monitor.retrain=true"),
        ({"monitor": {"source": "metrics"}}, "needs monitor.source=prometheus"),
    ],
    ids=["no-monitor", "dry-run-monitor", "one-replica-scrape"],
)
def test_staged_rollout_refuses_a_monitor_that_cannot_end_it(
    values: dict[str, Any], message: str
) -> None:
    import helm_python

    for mode in ("canary", "shadow"):
        with pytest.raises(helm_python.HelmError, match=message):
            h.render_chart({**values, "rollout": {"mode": mode}})
        h.render_chart({**values, "rollout": {"mode": "direct"}})


def test_digest_pins_the_image(rendered: dict[str, list[h.Manifest]]) -> None:
    values = scenario_values("production")
    digest = values["images"]["serving"]["digest"]
    (isvc,) = h.by_kind(rendered["production"], "InferenceService")
    assert isvc["spec"]["predictor"]["containers"][0]["image"].endswith("@" + digest)


def test_prometheus_rule_is_the_rules_file(rendered: dict[str, list[h.Manifest]]) -> None:
    (rule,) = h.by_kind(rendered["default"], "PrometheusRule")
    source = h.load_yaml_file(h.CHART / "files" / "alert-rules.yaml")
    assert rule["spec"]["groups"] == source["groups"]


def test_dashboard_configmap_is_the_dashboard_file(rendered: dict[str, list[h.Manifest]]) -> None:
    (cm,) = [
        o
        for o in h.by_kind(rendered["default"], "ConfigMap")
        if "dashboard" in o["metadata"]["name"]
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = json.loads((h.CHART / "files" / "dashboard.json").read_text())
    assert json.loads(cm["data"]["kubeloop.json"]) == source


def _set(values: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(values)
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


BAD_VALUES = [
    ("unknownTopLevel", True, "additional propert"),
    ("inferenceService.replicas", 3, "additional propert"),
    ("inferenceService.deploymentMode", "RawDeploymentX", "inferenceService/deploymentMode"),
    ("inferenceService.canaryTrafficPercent", 150, "canaryTrafficPercent"),
    ("inferenceService.storageUri", "/local/path", "storageUri"),
    # null deletes a default in Helm: a pod without limits is refused.
    ("inferenceService.resources.limits", None, "limits"),
    ("monitor.resources.requests.memory", "lots", "memory"),
    ("images.serving.tag", "latest", "tag"),
    ("images.serving.digest", "sha256:abc", "digest"),
    ("images.components.pullPolicy", "Sometimes", "pullPolicy"),
    ("model.name", "Churn_Model", "model/name"),
    ("monitor.schedule", "every ten minutes", "schedule"),
    ("monitor.source", "logs", "source"),
    ("networkPolicy.s3Egress.ports", [], "ports"),
    ("networkPolicy.predictorIngressFrom", [{"cidr": "0.0.0.0/0"}], "predictorIngressFrom"),
    ("metrics.podMonitor.interval", "30 seconds", "interval"),
    ("rollout.mode", "bluegreen", "rollout/mode"),
    ("rollout.canaryPercent", 0, "canaryPercent"),
    ("rollout.canaryPercent", 100, "canaryPercent"),
    ("rollout.alpha", 1, "alpha"),
    ("rollout.minRequests", 0, "minRequests"),
    ("rollout.maxDurationSeconds", "1h", "maxDurationSeconds"),
]


@pytest.mark.parametrize(("key", "value", "where"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_schema_rejects_bad_values(key: str, value: Any, where: str) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=where):
        h.render_chart(_set({}, key, value))


def test_schema_is_draft07_and_closed() -> None:
    schema = json.loads((h.CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, where
            for key, child in node.items():
                walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}/{i}")

    walk(schema, "#")


def test_defaults_validate_against_schema() -> None:
    import helm_python

    with helm_python.Chart.load(str(h.CHART)) as chart:
        chart.validate_schema({})
        for scenario in SCENARIO_IDS:
            chart.validate_schema(scenario_values(scenario))


def test_manifests_base_is_rendered_from_the_chart() -> None:
    import runpy

    module = runpy.run_path(str(h.ROOT / "hack" / "render-manifests.py"))
    assert (h.MANIFESTS / "base" / "kubeloop.yaml").read_text() == module["render"](), (
        "manifests/base/kubeloop.yaml is out of date: run .venv/bin/python hack/render-manifests.py"
    )
