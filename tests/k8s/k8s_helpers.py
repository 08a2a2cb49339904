"""Static Kubernetes checks: render the chart, build kustomizations, validate every object.

No cluster is involved. The chart is rendered by Helm's own Go SDK (the `helm-python-sdk`
package bundles it); core kinds are validated with `kubernetes-validate` (the API's OpenAPI
schemas, strict: unknown fields fail); custom resources against the openAPIV3Schema of their
CRDs at the pinned platform versions (tests/k8s/schemas/, with their source in each file),
made strict the way the API server's strict field validation is.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubeloop"
MANIFESTS = ROOT / "manifests"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))

# The Kubernetes minor version of the kind node image (kind-config.yaml).
KUBE_VERSION = "1.34"
RELEASE = "kubeloop"
NAMESPACE = "kubeloop"

# (group/version, kind) -> stored CRD schema file.
CRD_SCHEMAS: dict[tuple[str, str], str] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json.gz",
    ("ray.io/v1", "RayCluster"): "raycluster-v1.json.gz",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json.gz",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json.gz",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json.gz",
}

Manifest = dict[str, Any]


def load_yaml_file(path: Path) -> dict[str, Any]:
    """One YAML mapping from a file (a values file, a kustomization)."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a YAML mapping")
    return data


def render_chart(
    values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Render the chart offline (template path -> text), validating values against the schema."""
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        return chart.render(dict(values or {}), name=name, namespace=namespace, is_install=True)


def parse_documents(texts: Mapping[str, str] | list[str]) -> list[Manifest]:
    """Every non-empty YAML document of the rendered templates (NOTES.txt is not YAML)."""
    items = texts.items() if isinstance(texts, Mapping) else enumerate(texts)
    objects: list[Manifest] = []
    for source, text in items:
        if str(source).endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document is None:
                continue
            if not isinstance(document, dict) or "kind" not in document:
                raise ValueError(f"{source}: a document without a kind: {document!r:.200}")
            objects.append(document)
    return objects


def render_objects(values: Mapping[str, Any] | None = None) -> list[Manifest]:
    """The rendered chart as a list of objects."""
    return parse_documents(render_chart(values))


def _strict(schema: Any) -> Any:
    """Reject unknown fields like the API server's strict field validation does.

    A structural schema prunes fields it does not declare; `kubectl apply
    --validate=strict` rejects them. Object schemas that list `properties` and neither
    allow extra keys nor preserve unknown fields get `additionalProperties: false`.
    """
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields", False)
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(value) for value in schema]
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """A validator for one custom resource kind, from its stored CRD schema."""
    filename = CRD_SCHEMAS[(api_version, kind)]
    with gzip.open(SCHEMAS / filename, "rt") as handle:
        stored = json.load(handle)
    schema = _strict(copy.deepcopy(stored["openAPIV3Schema"]))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def validation_errors(obj: Manifest, *, kube_version: str = KUBE_VERSION) -> list[str]:
    """Why `obj` would be rejected: empty when it validates."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    name = f"{key[1]}/{obj.get('metadata', {}).get('name')}"
    if key in CRD_SCHEMAS:
        return [
            f"{name}: {'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in crd_validator(*key).iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: no schema for {key} (neither a core kind nor a stored CRD)"]
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        return [f"{name}: {path}: {error.message}"]
    return []


def pod_specs(obj: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod an object creates, custom resources included."""
    kind = obj.get("kind")
    spec = obj.get("spec", {})
    name = f"{kind}/{obj.get('metadata', {}).get('name')}"
    if kind == "Pod":
        yield name, spec
    elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield name, spec["template"]["spec"]
    elif kind == "CronJob":
        yield name, spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "InferenceService":
        # The predictor spec is a PodSpec plus KServe's own fields.
        yield f"{name}/predictor", spec["predictor"]
    elif kind == "RayCluster":
        yield f"{name}/head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{name}/{group['groupName']}", group["template"]["spec"]


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    """The objects of one kind."""
    return [obj for obj in objects if obj.get("kind") == kind]


def write_documents(objects: list[Manifest], path: Path) -> Path:
    """Write objects as one multi-document YAML file."""
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path
