"""manifests/: the kustomizations build and validate; the platform install is pinned."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s import k8s_helpers as h
from tests.k8s import kustomize
from tests.tools import tool

PLATFORM = h.MANIFESTS / "platform"


def _versions() -> dict[str, str]:
    pairs = {}
    for line in (PLATFORM / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def test_overlays_build_and_validate(built_overlays: dict[str, list[h.Manifest]]) -> None:
    assert set(built_overlays) == {"base", "overlays/kind"}
    for name, objects in built_overlays.items():
        assert len(objects) >= 15, name
        errors = [e for obj in objects for e in h.validation_errors(obj)]
        assert errors == [], name


def test_base_is_the_chart_without_helm(
    built_overlays: dict[str, list[h.Manifest]], rendered: dict[str, list[h.Manifest]]
) -> None:
    chart = {
        (o["kind"], o["metadata"]["name"])
        for o in rendered["default"]
        if o["metadata"].get("annotations", {}).get("helm.sh/hook") != "test"
    }
    base = {(o["kind"], o["metadata"]["name"]) for o in built_overlays["base"]}
    assert base == chart | {("Namespace", "kubeloop")}
    for obj in built_overlays["base"]:
        assert not any(k.startswith("helm.sh/") for k in obj["metadata"].get("annotations", {}))
        assert "helm.sh/chart" not in obj["metadata"].get("labels", {})


def test_kind_overlay_uses_local_images(built_overlays: dict[str, list[h.Manifest]]) -> None:
    images = set()
    for obj in built_overlays["overlays/kind"]:
        for _, spec in h.pod_specs(obj):
            for container in spec["containers"]:
                images.add(container["image"])
                assert container["imagePullPolicy"] == "IfNotPresent"
        assert obj["metadata"]["labels"]["kubeloop.dev/environment"] == "kind"
    assert images == {"kubeloop/kubeloop-serving:dev", "kubeloop/kubeloop-components:dev"}


def test_namespace_enforces_pod_security(built_overlays: dict[str, list[h.Manifest]]) -> None:
    (namespace,) = h.by_kind(built_overlays["base"], "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce"] in {"baseline", "restricted"}


def test_builder_refuses_what_it_cannot_build(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["missing.yaml"], "namePrefix": "x-"})
    )
    with pytest.raises(kustomize.KustomizeError, match="namePrefix"):
        kustomize.build(tmp_path)


def test_builder_reports_a_bad_patch(tmp_path: Path) -> None:
    base = h.MANIFESTS / "base"
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(base)],
                "patches": [
                    {
                        "target": {"kind": "CronJob", "name": "kubeloop-monitor"},
                        "patch": "- op: replace\n  path: /spec/nope/deeper\n  value: 1\n",
                    }
                ],
            }
        )
    )
    with pytest.raises(kustomize.KustomizeError, match="does not exist"):
        kustomize.build(tmp_path)


def test_platform_versions_are_exact() -> None:
    versions = _versions()
    assert set(versions) == {
        "KIND_NODE_IMAGE",
        "CERT_MANAGER_VERSION",
        "KSERVE_VERSION",
        "KFP_VERSION",
        "KUBERAY_VERSION",
        "KUBE_PROMETHEUS_STACK_VERSION",
    }
    for key, value in versions.items():
        assert "latest" not in value and re.search(r"\d+\.\d+\.\d+", value), (key, value)
    assert versions["KIND_NODE_IMAGE"].startswith(f"kindest/node:v{h.KUBE_VERSION}.")


def test_kfp_remote_bases_are_pinned_to_kfp_version() -> None:
    kfp_version = _versions()["KFP_VERSION"]
    refs = []
    for path in sorted((PLATFORM / "kfp").rglob("kustomization.yaml")):
        for resource in h.load_yaml_file(path)["resources"]:
            assert resource.startswith("github.com/kubeflow/pipelines/manifests/kustomize/")
            refs.append(resource.rsplit("?ref=", 1)[1])
    assert refs and set(refs) == {kfp_version}


def test_crd_schemas_come_from_the_pinned_releases() -> None:
    import gzip

    versions = _versions()
    expected = {
        "kserve/kserve": versions["KSERVE_VERSION"],
        "ray-project/kuberay": "v" + versions["KUBERAY_VERSION"],
    }
    for filename in h.CRD_SCHEMAS.values():
        with gzip.open(h.SCHEMAS / filename, "rt") as handle:
            source = json.load(handle)["source"]
        for repo, tag in expected.items():
            if f"github.com/{repo}/" in source:
                assert f"/blob/{tag}/" in source, (filename, source)


def test_platform_values_files_are_yaml_mappings() -> None:
    for path in sorted(PLATFORM.glob("*-values.yaml")):
        assert h.load_yaml_file(path), path


@pytest.mark.parametrize("overlay", ["base", "overlays/kind"])
def test_builder_agrees_with_kubectl_kustomize(
    overlay: str, built_overlays: dict[str, list[h.Manifest]]
) -> None:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(h.MANIFESTS / overlay)],
        capture_output=True,
        encoding="utf-8",  # the dashboards hold non-ASCII text (CI once decoded it as ASCII)
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    def key(obj: h.Manifest) -> str:
        return json.dumps(obj, sort_keys=True)

    theirs = sorted(key(o) for o in yaml.safe_load_all(result.stdout) if o)
    ours = sorted(key(o) for o in built_overlays[overlay])
    assert ours == theirs
