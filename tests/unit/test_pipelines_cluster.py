"""The objects the cluster paths build, validated against their schemas (no cluster needed).

- KFP: the real ``kfp.Client`` talks HTTP to a small recording server standing in for the KFP
  API; the request bodies are checked strictly against the ``kfp_server_api`` models.
- RayJob: the manifest against the RayJob spec fields of KubeRay's API types, and its cluster
  spec against the stored RayCluster CRD schema (the same ``RayClusterSpec`` type).
- InferenceService: the chart's own predictor shape, patched, against the stored KServe CRD.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kfp_server_api
import pytest
import yaml

from kubeloop.errors import ConfigError, TrainingError
from kubeloop.pipelines.launch.cluster import kfp_cron, run_state, schedule_runs, submit_run
from kubeloop.pipelines.steps.deploy import build_storage_patch, is_ready
from kubeloop.pipelines.steps.rayjob import (
    RayJobSpec,
    RayResources,
    build_rayjob,
    download_dir,
    ray_mode,
    storage_url,
)
from kubeloop.pipelines.steps.train import rayjob_spec
from tests.k8s.k8s_helpers import crd_validator

# --- a stand-in KFP API that records what the real client sends ---------------------------


class _KfpApi(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, Any]]

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/runs/"):
            self._reply({"run_id": self.path.rsplit("/", 1)[-1], "state": "RUNNING"})
        else:
            self._reply({})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.calls.append(("POST", self.path, body))
        replies = {
            "/apis/v2beta1/experiments": {"experiment_id": "exp-1"},
            "/apis/v2beta1/runs": {"run_id": "run-1"},
            "/apis/v2beta1/recurringruns": {"recurring_run_id": "rec-1"},
        }
        self._reply(replies[self.path])

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    calls: list[tuple[str, str, Any]] = []
    handler = type("Handler", (_KfpApi,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()


def _strict(data: Any, type_name: str) -> None:
    """Fail on any field or type the kfp_server_api model does not declare."""
    if type_name in ("str", "bool", "int", "float", "object", "datetime"):
        return
    if type_name.startswith("list["):
        assert isinstance(data, list)
        for item in data:
            _strict(item, type_name[5:-1])
        return
    if type_name.startswith("dict("):
        assert isinstance(data, dict)
        value_type = type_name[5:-1].split(", ", 1)[1]
        for item in data.values():
            _strict(item, value_type)
        return
    model = getattr(kfp_server_api.models, type_name)
    if hasattr(model, "allowable_values"):  # an enum
        assert data in model.allowable_values, f"{data!r} is not a {type_name}"
        return
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    assert isinstance(data, dict), f"{type_name} must be an object"
    unknown = set(data) - set(by_json)
    assert not unknown, f"{type_name} has no fields {unknown}"
    for key, value in data.items():
        _strict(value, model.openapi_types[by_json[key]])


def test_strict_check_rejects_unknown_fields() -> None:
    with pytest.raises(AssertionError, match="no fields"):
        _strict({"display_nam": "typo"}, "V2beta1Run")
    with pytest.raises(AssertionError, match="not a"):
        _strict({"mode": "SOMETIMES"}, "V2beta1RecurringRun")


def test_submit_run_request_matches_the_kfp_api(kfp_api: tuple[str, list[Any]]) -> None:
    host, calls = kfp_api
    arguments = {"data": "s3://kubeloop/data/churn.csv", "target": "churned", "workers": 3}
    assert submit_run(host, arguments, experiment="churn-exp", run_name="nightly") == "run-1"
    posts = {path: body for method, path, body in calls if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "churn-exp"
    run = posts["/apis/v2beta1/runs"]
    _strict(run, "V2beta1Run")
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == arguments
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "kubeloop-training"
    # caching disabled for every task of the submitted spec
    tasks = run["pipeline_spec"]["root"]["dag"]["tasks"]
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    assert run_state(host, "run-1") == "RUNNING"


def test_schedule_request_is_a_daily_recurring_run(kfp_api: tuple[str, list[Any]]) -> None:
    host, calls = kfp_api
    assert schedule_runs(host, {"data": "s3://d.csv", "target": "y"}, cron="0 2 * * *") == "rec-1"
    body = next(b for m, p, b in calls if p == "/apis/v2beta1/recurringruns")
    _strict(body, "V2beta1RecurringRun")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
    assert body["no_catchup"] is True and body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"data": "s3://d.csv", "target": "y"}


@pytest.mark.parametrize(
    ("given", "expected"), [("0 2 * * *", "0 0 2 * * *"), ("30 0 2 * * 1", "30 0 2 * * 1")]
)
def test_kfp_cron(given: str, expected: str) -> None:
    assert kfp_cron(given) == expected


def test_kfp_cron_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="must have 5 fields"):
        kfp_cron("daily")


# --- RayJob -----------------------------------------------------------------------------

# RayJobSpec fields of KubeRay's ray-operator/apis/ray/v1/rayjob_types.go (ray.io/v1).
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
    "backoffLimit": {"type": "integer", "minimum": 0},
    "rayClusterSpec": {"type": "object"},
    "submitterPodTemplate": {"type": "object"},
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    "clusterSelector": {"type": "object", "additionalProperties": {"type": "string"}},
    "submitterConfig": {"type": "object"},
    "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
    "deletionStrategy": {"type": "object"},
    "entrypoint": {"type": "string"},
    "runtimeEnvYAML": {"type": "string"},
    "jobId": {"type": "string"},
    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
    "entrypointResources": {"type": "string"},
    "entrypointNumCpus": {"type": "number"},
    "entrypointNumGpus": {"type": "number"},
    "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
    "shutdownAfterJobFinishes": {"type": "boolean"},
    "suspend": {"type": "boolean"},
    "schedule": {"type": "string"},
}
RAYJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["entrypoint", "rayClusterSpec"],
            "properties": RAYJOB_SPEC_FIELDS,
        },
    },
}


def _rayjob(**overrides: Any) -> dict[str, Any]:
    spec = rayjob_spec(
        ("minio://mlpipeline/v2/artifacts/run/splits", "s3://b/features", "s3://b/out"),
        workers=3, num_boost_round=300, seed=7, candidates="xgboost,linear",
    )  # fmt: skip
    fields = {**spec.__dict__, **overrides}
    return build_rayjob(RayJobSpec(**fields))


def test_rayjob_manifest_validates() -> None:
    manifest = _rayjob(credentials_secret="minio-creds", env={"AWS_ENDPOINT_URL": "http://m:9000"})
    jsonschema.validate(manifest, RAYJOB_SCHEMA)
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "x"},
        "spec": manifest["spec"]["rayClusterSpec"],
    }
    errors = [e.message for e in crd_validator("ray.io/v1", "RayCluster").iter_errors(cluster)]
    assert errors == []
    workers = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    entry = manifest["spec"]["entrypoint"]
    assert "python -m kubeloop.pipelines.steps.train" in entry
    assert "--splits s3://mlpipeline/v2/artifacts/run/splits" in entry  # minio:// → s3://
    assert "--out s3://b/out.rayjob" in entry and "--candidates xgboost,linear" in entry
    pod = workers["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "minio-creds"
    assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_rayjob_sizes_head_and_workers_and_deadline() -> None:
    resources = RayResources(
        head_cpu="4", head_memory="16Gi", worker_cpu="500m", worker_memory="3.5Gi", deadline_s=900
    )
    manifest = _rayjob(resources=resources)
    jsonschema.validate(manifest, RAYJOB_SCHEMA)
    cluster = manifest["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    assert head["requests"] == head["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert worker["requests"] == worker["limits"] == {"cpu": "500m", "memory": "3.5Gi"}
    assert manifest["spec"]["activeDeadlineSeconds"] == 900


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("head_cpu", "0", "ray_head_cpu"),
        ("worker_cpu", "two", "ray_worker_cpu"),
        ("worker_memory", "4 GB", "ray_worker_memory"),
        ("head_memory", "", "ray_head_memory"),
        ("deadline_s", 0, "ray_deadline_s"),
    ],
)
def test_ray_resources_refuse_bad_values(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RayResources(**{field: value})


def test_download_dir_takes_only_what_is_asked(tmp_path: Path) -> None:
    source = tmp_path / "features"
    source.mkdir()
    for name in ("x_train.npy", "x_test.npy", "schema.json"):
        (source / name).write_bytes(name.encode())
    got = download_dir(str(source), tmp_path / "got", only=["x_train.npy", "schema.json"])
    assert sorted(p.name for p in got.iterdir()) == ["schema.json", "x_train.npy"]
    assert (got / "x_train.npy").read_bytes() == b"x_train.npy"
    with pytest.raises(TrainingError, match=r"x_valid\.npy"):
        download_dir(str(source), tmp_path / "again", only=["x_valid.npy"])


def test_rayjob_schema_subset_catches_mistakes() -> None:
    manifest = _rayjob()
    manifest["spec"]["shutdownAfterJobFinish"] = True  # misspelt field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, RAYJOB_SCHEMA)
    with pytest.raises(ConfigError, match="DNS label"):
        _rayjob(name="Bad_Name")


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({"RAY_ADDRESS": "ray://head:10001", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "address"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "rayjob"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBELOOP_RAYJOB": "0"}, "local"),
        ({}, "local"),
    ],
)
def test_ray_mode(env: dict[str, str], mode: str) -> None:
    assert ray_mode(env) == mode


def test_storage_url() -> None:
    assert storage_url("minio://mlpipeline/a/b") == "s3://mlpipeline/a/b"
    assert storage_url("s3://x/y") == "s3://x/y"


# --- InferenceService patch -------------------------------------------------------------

CHART_ISVC = yaml.safe_load(
    """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: churn, namespace: kubeloop, generation: 3}
spec:
  predictor:
    minReplicas: 2
    containers:
      - name: kserve-container
        image: ghcr.io/kubeloop/kubeloop-serving:0.1.0
        args: [--model-dir=/mnt/models]
        env:
          - {name: KUBELOOP_MODEL, value: churn}
          - {name: STORAGE_URI, value: s3://kubeloop/registry/churn/versions/initial}
"""
)
MODEL_ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "churn", "namespace": "kubeloop"},
    "spec": {
        "predictor": {
            "model": {"modelFormat": {"name": "kubeloop"}, "storageUri": "s3://old"},
        }
    },
}
NEW = "s3://kubeloop/registry/churn/versions/v20260101000000-abcdef"


def _json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply RFC 6902 replace/add operations (all this module emits)."""
    result = copy.deepcopy(obj)
    for op in ops:
        assert op["op"] in ("replace", "add")
        *parents, last = [int(p) if p.isdigit() else p for p in op["path"].strip("/").split("/")]
        target = result
        for part in parents:
            target = target[part]
        if op["op"] == "replace":
            target[last]
        target[last] = op["value"]
    return result


def _merge_patch(obj: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(obj) if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _isvc_errors(obj: dict[str, Any]) -> list[str]:
    validator = crd_validator("serving.kserve.io/v1beta1", "InferenceService")
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("canary", [None, 10])
def test_patch_of_the_chart_predictor(canary: int | None) -> None:
    assert _isvc_errors(CHART_ISVC) == []
    patch = build_storage_patch(CHART_ISVC, NEW, canary_percent=canary)
    assert patch.kind == "json"
    patched = _json_patch(CHART_ISVC, patch.body)
    assert _isvc_errors(patched) == []
    env = {e["name"]: e["value"] for e in patched["spec"]["predictor"]["containers"][0]["env"]}
    assert env == {"KUBELOOP_MODEL": "churn", "STORAGE_URI": NEW}
    assert patched["spec"]["predictor"].get("canaryTrafficPercent") == canary


@pytest.mark.parametrize("canary", [0, 25])
def test_patch_of_a_model_predictor(canary: int) -> None:
    patch = build_storage_patch(MODEL_ISVC, NEW, canary_percent=canary)
    assert patch.kind == "merge"
    patched = _merge_patch(MODEL_ISVC, patch.body)
    assert _isvc_errors(patched) == []
    assert patched["spec"]["predictor"]["model"] == {
        "modelFormat": {"name": "kubeloop"},
        "storageUri": NEW,
    }
    assert patched["spec"]["predictor"].get("canaryTrafficPercent") == (canary or None)


def test_patch_refuses_unknown_predictors_and_bad_canary() -> None:
    bare = {"metadata": {"name": "x"}, "spec": {"predictor": {"containers": [{"name": "c"}]}}}
    with pytest.raises(ConfigError, match="STORAGE_URI"):
        build_storage_patch(bare, NEW)
    with pytest.raises(ConfigError, match="0-100"):
        build_storage_patch(MODEL_ISVC, NEW, canary_percent=150)


@pytest.mark.parametrize(
    ("status", "generation", "ready"),
    [
        ({"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 4}, 4, True),
        ({"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 3}, 4, False),
        ({"conditions": [{"type": "Ready", "status": "False"}]}, 4, False),
        ({}, 1, False),
    ],
)
def test_is_ready(status: dict[str, Any], generation: int, ready: bool) -> None:
    assert is_ready({"metadata": {"generation": generation}, "status": status}) is ready


def test_version_uris_name_the_registry_layout() -> None:
    from kubeloop.registry import Registry

    uri = Registry("memory://kubeloop/registry").version_uri("churn", "v1-abc")
    assert re.fullmatch(r"memory://+kubeloop/registry/churn/versions/v1-abc", uri)


def test_cli_submits_and_schedules(
    kfp_api: tuple[str, list[Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubeloop.cli import main

    monkeypatch.delenv("KUBELOOP_REGISTRY", raising=False)
    host, calls = kfp_api
    common = ["--data", "s3://kubeloop/data/churn.csv", "--target", "churned", "--model", "churn"]
    tuned = ["--gate-margin", "0.01", "--tune-budget", "60"]
    assert main(["pipeline", "run", "--host", host, *common, *tuned]) == 0
    assert "submitted KFP run run-1" in capsys.readouterr().out
    run = next(b for m, p, b in calls if p == "/apis/v2beta1/runs")
    parameters = run["runtime_config"]["parameters"]
    assert parameters["tune_budget"] == 60.0
    assert parameters["registry_root"] == "s3://kubeloop/registry"
    assert parameters["gate_margin"] == 0.01 and parameters["model_name"] == "churn"
    monkeypatch.setenv("KUBELOOP_REGISTRY", "s3://mlpipeline/kubeloop/registry")
    assert main(["pipeline", "schedule", "--host", host, "--cron", "15 3 * * *", *common]) == 0
    assert "recurring run rec-1" in capsys.readouterr().out
    recurring = next(b for m, p, b in calls if p == "/apis/v2beta1/recurringruns")
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 15 3 * * *"
    scheduled = recurring["runtime_config"]["parameters"]
    assert scheduled["registry_root"] == "s3://mlpipeline/kubeloop/registry"


def test_s3_access_is_compiled_in_from_the_submitter_env(
    kfp_api: tuple[str, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBELOOP_S3_CREDENTIALS_SECRET", "minio-creds")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.kubeflow:9000")
    monkeypatch.setenv("KUBELOOP_IMAGE", "registry.local/kubeloop-components:dev")
    host, calls = kfp_api
    submit_run(host, {"data": "s3://kubeloop/d.csv", "target": "y"})
    run = next(b for m, p, b in calls if p == "/apis/v2beta1/runs")
    _strict(run, "V2beta1Run")
    # with a platform spec the client sends {"pipeline_spec": ..., "platform_spec": ...}
    executors = run["pipeline_spec"]["pipeline_spec"]["deploymentSpec"]["executors"]
    platform = run["pipeline_spec"]["platform_spec"]
    mounted = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(mounted) == set(executors)  # every step gets the credentials
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == "registry.local/kubeloop-components:dev"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"] == "http://minio.kubeflow:9000"
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/var/run/secrets/kubeloop/s3/credentials"
        assert mounted[name]["secretAsVolume"][0]["secretName"] == "minio-creds"


def test_cli_schedules_the_batch_scoring_pipeline(
    kfp_api: tuple[str, list[Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubeloop.cli import main

    monkeypatch.delenv("KUBELOOP_REGISTRY", raising=False)
    host, calls = kfp_api
    batch = [
        "pipeline", "schedule", "--batch", "--host", host, "--cron", "0 3 * * *",
        "--model", "churn", "--data", "s3://kubeloop/new.parquet",
        "--out", "s3://kubeloop/scores/churn-{time}.parquet", "--keep", "customerID",
    ]  # fmt: skip
    assert main(batch) == 0
    assert "recurring batch-scoring run rec-1" in capsys.readouterr().out
    body = next(b for m, p, b in calls if p == "/apis/v2beta1/recurringruns")
    _strict(body, "V2beta1RecurringRun")
    assert body["display_name"] == "kubeloop-batch-scoring-churn"
    assert body["runtime_config"]["parameters"] == {
        "data": "s3://kubeloop/new.parquet",
        "out": "s3://kubeloop/scores/churn-{time}.parquet",
        "model_name": "churn",
        "registry_root": "s3://kubeloop/registry",
        "keep": "customerID",
        "chunk_rows": 100_000,
    }
    spec = body["pipeline_spec"]
    spec = spec.get("pipeline_spec", spec)
    assert spec["pipelineInfo"]["name"] == "kubeloop-batch-scoring"
    assert list(spec["root"]["dag"]["tasks"]) == ["batch-predict"]
    # without --batch a schedule still needs --target; with it, --out
    assert main(["pipeline", "schedule", "--host", host, "--data", "s3://d.csv"]) == 2
    assert "--target is required" in capsys.readouterr().err
    assert main(["pipeline", "schedule", "--batch", "--host", host, "--data", "s3://d.csv"]) == 2
    assert "--batch needs --out" in capsys.readouterr().err


def test_rayjob_passes_the_tune_budget_to_the_cluster() -> None:
    uris = ("s3://b/splits", "s3://b/features", "s3://b/out")
    tuned = rayjob_spec(uris, workers=2, num_boost_round=300, seed=7, tune_budget=90.0)
    assert tuned.entrypoint[-2:] == ["--tune-budget", "90"]
    plain = rayjob_spec(uris, workers=2, num_boost_round=300, seed=7)
    assert "--tune-budget" not in plain.entrypoint
