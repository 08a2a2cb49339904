"""Every `kubeloop ...` container the project ships parses with the real CLI and is wired up.

The containers come from the chart (the defaults and every `ci/*-values.yaml`), every YAML file
under `manifests/` (and the kustomizations built from them) and `serving/inferenceservice.yaml`.
Their full argument list goes through `kubeloop.cli.build_parser()` (and, for `serve`, the
KServe-based parser the sub-command hands its arguments to), so renaming or removing a flag the
cluster uses fails here. The parsed values are then checked against what the code needs on a
cluster: a KFP host and a registry for `pipeline run/schedule` (plus the S3 variables the
package compiled at submission reads, `kubeloop.pipelines.launch.cluster`), a traffic source and the
InferenceService to redeploy for the monitor, the downloaded bundle for `serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s import k8s_helpers as h
from tests.k8s.conftest import SCENARIO_IDS, repo_path, scenario_values

SERVING_ISVC = h.ROOT / "serving" / "inferenceservice.yaml"
# Image repository (suffix) -> the Dockerfile that builds it (ENTRYPOINT when no `command`).
DOCKERFILES = {
    "kubeloop-serving": h.ROOT / "serving" / "Dockerfile",
    "kubeloop-components": h.ROOT / "components" / "Dockerfile",
}


@dataclass
class Container:
    """One container that runs `kubeloop`: where it is, its argv after `kubeloop`, its env."""

    origin: str
    where: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.origin} {self.where}: `kubeloop {' '.join(self.argv)}`"


def _entrypoint(image: str) -> list[str]:
    """The ENTRYPOINT of the project image `image` (empty for other images)."""
    repository = image.split("@")[0].rsplit(":", 1)[0]
    for suffix, dockerfile in DOCKERFILES.items():
        if repository.endswith(suffix):
            lines = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile.read_text(), re.M)
            return list(json.loads(lines[-1])) if lines else []
    return []


def _kubeloop_containers(origin: str, obj: h.Manifest) -> list[Container]:
    found = []
    for where, spec in h.pod_specs(obj):
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            command = container.get("command") or _entrypoint(container.get("image", ""))
            argv = [*command, *container.get("args", [])]
            if argv[:1] != ["kubeloop"]:
                continue
            env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
            found.append(Container(origin, f"{where}/{container['name']}", argv[1:], env))
    return found


def _yaml_objects(path: Path) -> list[h.Manifest]:
    """The Kubernetes objects of one YAML file (kustomizations and values files have none)."""
    return [
        doc
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and "apiVersion" in doc and doc.get("kind") != "Kustomization"
    ]


@pytest.fixture(scope="module")
def chart_containers(rendered: dict[str, list[h.Manifest]]) -> dict[str, list[Container]]:
    """scenario -> its kubeloop containers."""
    return {
        scenario: [c for obj in objects for c in _kubeloop_containers(f"chart[{scenario}]", obj)]
        for scenario, objects in rendered.items()
    }


@pytest.fixture(scope="module")
def manifest_containers(
    built_overlays: dict[str, list[h.Manifest]],
) -> dict[str, list[Container]]:
    """origin (a file, or a built kustomization) -> its kubeloop containers."""
    out: dict[str, list[Container]] = {}
    for path in sorted(h.MANIFESTS.rglob("*.yaml")):
        origin = repo_path(path)
        out[origin] = [c for obj in _yaml_objects(path) for c in _kubeloop_containers(origin, obj)]
    for directory, objects in built_overlays.items():
        origin = f"kustomize build manifests/{directory}"
        out[origin] = [c for obj in objects for c in _kubeloop_containers(origin, obj)]
    origin = repo_path(SERVING_ISVC)
    out[origin] = [
        c for obj in _yaml_objects(SERVING_ISVC) for c in _kubeloop_containers(origin, obj)
    ]
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    """`kubeloop <argv>` through the real parsers; SystemExit when it does not parse."""
    from kubeloop.cli import build_parser

    args = build_parser().parse_args(argv)
    if args.command == "serve":
        # `serve` takes its arguments raw and parses them with the KServe-based parser.
        from kubeloop.cli._serve import build_serve_parser

        serve = build_serve_parser().parse_args(args.serve_args)
        serve.command = "serve"
        return serve
    return args


def _parse_or_fail(container: Container) -> argparse.Namespace:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parse(container.argv)
    except SystemExit:
        pytest.fail(f"{container} does not parse: {stderr.getvalue().strip()}")


def _all(
    chart_containers: dict[str, list[Container]], manifest_containers: dict[str, list[Container]]
) -> list[Container]:
    return [
        c for group in (chart_containers, manifest_containers) for cs in group.values() for c in cs
    ]


def _pipeline_wiring(container: Container, args: argparse.Namespace) -> list[str]:
    """What a cluster run/schedule needs (`kubeloop.cli._pipeline`, `pipelines.runs/cluster`)."""
    problems = []
    if not args.host:
        problems.append("no --host (a cluster submitter must use the KFP API, not --local)")
    if not (args.registry or container.env.get("KUBELOOP_REGISTRY")):
        problems.append("no registry (--registry or KUBELOOP_REGISTRY)")
    if not container.env.get("KUBELOOP_IMAGE"):
        problems.append("no KUBELOOP_IMAGE (the image the steps run in)")
    if bool(args.inference_service) != bool(args.namespace):
        problems.append("--inference-service and --namespace go together")
    return problems


def _monitor_wiring(args: argparse.Namespace) -> list[str]:
    """What a cluster monitor needs (`kubeloop.cli._monitor`, `monitoring.monitor`)."""
    problems = []
    if not (args.metrics_url or args.prometheus_url):
        problems.append("no traffic source (--metrics-url or --prometheus-url)")
    if not (args.registry or args.model_dir):
        problems.append("no reference bundle (--registry or --model-dir)")
    staged = getattr(args, "rollout", "direct") != "direct"
    if not args.dry_run:
        # A staged rollout's runs deploy nothing: the predictor follows the registry.
        deploy = () if staged else ("inference_service", "namespace")
        for flag in ("kfp_host", "data", "target", *deploy):
            if not getattr(args, flag):
                problems.append(f"retrains without --{flag.replace('_', '-')}")
    if staged:
        if args.dry_run:
            problems.append("a staged rollout with --dry-run is never promoted or rolled back")
        if not (args.metrics_url or args.prometheus_url):
            problems.append(
                "a staged rollout is judged on the servers' statistics (--metrics-url or "
                "--prometheus-url)"
            )
        if not args.registry:
            problems.append("a staged rollout needs the registry (--registry)")
    return problems


def _serve_wiring(container: Container, args: argparse.Namespace) -> list[str]:
    """Direct: KServe's storage initializer puts the bundle in /mnt/models. Registry mode
    (staged rollout): the server follows the registry's champion and candidate itself, so it
    needs the model name and no STORAGE_URI (which would bring the storage initializer)."""
    if args.registry:
        problems = []
        if not args.model:
            problems.append("--registry without --model")
        if "STORAGE_URI" in container.env:
            problems.append("STORAGE_URI set: the registry-following server downloads nothing")
        if args.registry.startswith("s3://") and not container.env.get("KUBELOOP_REGISTRY"):
            problems.append("an S3 registry without the S3 environment (kubeloop.s3Env)")
        return problems
    if str(args.model_dir) != "/mnt/models":
        return [f"--model-dir is {args.model_dir}, KServe downloads STORAGE_URI to /mnt/models"]
    return []


def test_every_kubeloop_command_parses_and_is_wired(
    chart_containers: dict[str, list[Container]],
    manifest_containers: dict[str, list[Container]],
) -> None:
    containers = _all(chart_containers, manifest_containers)
    seen = set()
    problems = []
    for container in containers:
        args = _parse_or_fail(container)
        if args.command == "pipeline":
            seen.add(f"pipeline {args.action}")
            found = _pipeline_wiring(container, args)
        elif args.command == "monitor":
            seen.add("monitor")
            found = _monitor_wiring(args)
        elif args.command == "serve":
            seen.add("serve")
            found = _serve_wiring(container, args)
        else:
            found = [f"`kubeloop {args.command}` is not expected in a cluster object"]
        problems += [f"{container}: {p}" for p in found]
    assert problems == []
    assert seen == {"pipeline run", "pipeline schedule", "monitor", "serve"}


def test_every_source_is_covered(
    chart_containers: dict[str, list[Container]],
    manifest_containers: dict[str, list[Container]],
) -> None:
    assert set(chart_containers) == set(SCENARIO_IDS)
    assert chart_containers["default"], "the default chart runs no kubeloop container"
    for origin in (
        "manifests/submit-run-job.yaml",
        "manifests/base/kubeloop.yaml",
        "kustomize build manifests/overlays/kind",
        "serving/inferenceservice.yaml",
    ):
        assert manifest_containers[origin], f"{origin}: no kubeloop container found"


def _merged(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over the chart's values.yaml (maps merge, the rest wins)."""
    out = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _expected_run_wiring(scenario: str) -> dict[str, Any]:
    """The run wiring a scenario's values ask for (release `kubeloop`, namespace `kubeloop`)."""
    v = _merged(h.load_yaml_file(h.CHART / "values.yaml"), scenario_values(scenario))
    isvc = v["inferenceService"]
    rollout = v["rollout"]["mode"]
    # Direct: the deploy step patches the InferenceService (Knative's canary on promotion).
    # Staged: no deploy target; the candidate's share goes with --rollout canary.
    deploy = isvc["enabled"] and rollout == "direct"
    canary = isvc["canaryTrafficPercent"] if isvc["deploymentMode"] == "Knative" else None
    if rollout != "direct":
        canary = v["rollout"]["canaryPercent"] if rollout == "canary" else None
    mlflow = f"http://{h.RELEASE}-mlflow.{h.NAMESPACE}.svc.cluster.local:{v['mlflow']['port']}"
    return {
        "registry": v["storage"]["registryUri"],
        "data": v["model"]["dataUri"],
        "target": v["model"]["target"],
        "model": v["model"]["name"],
        "inference_service": (isvc["name"] or v["model"]["name"]) if deploy else None,
        "namespace": h.NAMESPACE if deploy else None,
        "rollout": rollout,
        "canary_percent": canary if (deploy or rollout != "direct") else None,
        "mlflow_uri": mlflow if v["mlflow"]["enabled"] else None,
        "KUBELOOP_S3_CREDENTIALS_SECRET": v["storage"]["s3"]["credentialsSecret"] or None,
        "AWS_ENDPOINT_URL": v["storage"]["s3"]["endpoint"] or None,
        "host": v["pipelines"]["host"],
    }


_RUN_FLAGS = ("registry", "data", "target", "model", "inference_service", "namespace")


def _actual_run_wiring(container: Container, args: argparse.Namespace) -> dict[str, Any]:
    host = args.kfp_host if args.command == "monitor" else args.host
    return {
        "registry": args.registry,
        "data": args.data,
        "target": args.target,
        "model": args.model,
        "inference_service": args.inference_service or None,
        "namespace": args.namespace or None,
        "rollout": args.rollout,
        "canary_percent": args.canary_percent or None,
        "mlflow_uri": args.mlflow_uri or None,
        "KUBELOOP_S3_CREDENTIALS_SECRET": container.env.get("KUBELOOP_S3_CREDENTIALS_SECRET"),
        "AWS_ENDPOINT_URL": container.env.get("AWS_ENDPOINT_URL"),
        "host": host,
    }


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_chart_runs_get_the_values_wiring(
    scenario: str, chart_containers: dict[str, list[Container]]
) -> None:
    """The schedule Job and the retraining monitor submit runs the values describe: registry,
    data, the S3 Secret and endpoint the steps need, the InferenceService to redeploy, MLflow."""
    expected = _expected_run_wiring(scenario)
    checked = 0
    for container in chart_containers[scenario]:
        args = _parse_or_fail(container)
        if args.command == "serve" or (args.command == "monitor" and args.dry_run):
            continue
        assert _actual_run_wiring(container, args) == expected, str(container)
        if args.command == "monitor":
            # The monitor reads the registry itself, through the mounted credentials file.
            assert container.env.get("KUBELOOP_REGISTRY") == expected["registry"], str(container)
        checked += 1
    v = _merged(h.load_yaml_file(h.CHART / "values.yaml"), scenario_values(scenario))
    submitters = [v["pipelines"]["schedule"]["enabled"], v["monitor"]["enabled"]]
    assert checked == sum(submitters), scenario


def test_submit_job_matches_the_kind_install(
    chart_containers: dict[str, list[Container]],
    manifest_containers: dict[str, list[Container]],
) -> None:
    """manifests/submit-run-job.yaml submits what the kind install's schedule Job does."""
    (submit,) = manifest_containers["manifests/submit-run-job.yaml"]
    (schedule,) = [c for c in chart_containers["kind"] if c.argv[:2] == ["pipeline", "schedule"]]
    ours, theirs = _parse_or_fail(submit), _parse_or_fail(schedule)
    assert ours.action == "run"
    assert _actual_run_wiring(submit, ours) == _actual_run_wiring(schedule, theirs)
    assert submit.env.get("KUBELOOP_S3_CREDENTIALS_SECRET") == "kubeloop-s3"
    assert (
        submit.env.get("AWS_ENDPOINT_URL") == "http://minio-service.kubeflow.svc.cluster.local:9000"
    )
    assert ours.registry == "s3://mlpipeline/kubeloop/registry"


def test_kind_overlay_runs_like_the_kind_chart(
    chart_containers: dict[str, list[Container]],
    manifest_containers: dict[str, list[Container]],
) -> None:
    """`kubectl apply -k manifests/overlays/kind` and `helm install -f ci/kind-values.yaml`
    run the same kubeloop commands with the same environment."""

    def key(containers: list[Container]) -> dict[str, tuple[list[str], dict[str, str]]]:
        return {c.where: (c.argv, c.env) for c in containers if not c.where.startswith("Pod/")}

    overlay = key(manifest_containers["kustomize build manifests/overlays/kind"])
    chart = key(chart_containers["kind"])
    assert set(chart) >= {"CronJob/kubeloop-monitor/monitor", "Job/kubeloop-schedule/schedule"}
    assert overlay == chart


def test_a_renamed_flag_fails_the_parse(chart_containers: dict[str, list[Container]]) -> None:
    """The check has teeth: the chart's own monitor command with one flag renamed is refused."""
    (monitor,) = [c for c in chart_containers["default"] if c.argv[:1] == ["monitor"]]
    assert any(a.startswith("--inference-service=") for a in monitor.argv)
    renamed = [a.replace("--inference-service=", "--isvc=") for a in monitor.argv]
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parse(renamed)
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parse(["serve", "--model-dir=/mnt/models", "--no-such-flag"])


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_rollout_settings_reach_the_server_and_the_monitor(
    scenario: str, chart_containers: dict[str, list[Container]]
) -> None:
    """`rollout.*`: a staged rollout's predictor follows the registry (champion and candidate)
    and its monitor judges with the values' sequential test; direct mode keeps the downloaded
    bundle and the monitor's defaults."""
    v = _merged(h.load_yaml_file(h.CHART / "values.yaml"), scenario_values(scenario))
    rollout = v["rollout"]
    staged = rollout["mode"] != "direct"
    seen = set()
    for container in chart_containers[scenario]:
        args = _parse_or_fail(container)
        if args.command == "serve":
            seen.add("serve")
            if staged:
                assert (args.registry, args.model) == (
                    v["storage"]["registryUri"],
                    v["model"]["name"],
                ), str(container)
                assert args.model_dir is None, str(container)
            else:
                assert args.registry is None, str(container)
        elif args.command == "monitor" and not args.dry_run:
            seen.add("monitor")
            judged = (args.rollout, args.rollout_alpha)
            limits = (args.rollout_min_requests, args.rollout_max_duration)
            if staged:
                assert judged == (rollout["mode"], rollout["alpha"]), str(container)
                assert limits == (
                    rollout.get("minRequests"),
                    rollout.get("maxDurationSeconds"),
                ), str(container)
            else:
                assert judged == ("direct", 0.05) and limits == (None, None), str(container)
    if staged:
        assert seen == {"serve", "monitor"}, scenario
