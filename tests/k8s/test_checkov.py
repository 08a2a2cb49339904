"""checkov (offline) on everything this project ships: the chart, manifests/ and the images.

Three scans run side by side, each with only the skips its inputs justify:

- production-like values (digest-pinned images) and the Dockerfiles: no skips at all;
- the chart defaults and the other scenarios, manifests/base and the submit Job:
  CKV_K8S_43 only (an image digest exists once a release is pushed; until then the images
  are pinned by exact tag, and `images.*.digest` is how a platform team pins them);
- kind (values and overlay): CKV_K8S_43 and CKV_K8S_15, because images built locally and
  loaded with `kind load` have no registry digest and must not be pulled.

Single-resource skips live next to the resource, with their reason (the helm test pod).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.k8s import k8s_helpers as h
from tests.k8s.conftest import SCENARIO_IDS
from tests.tools import tool

SCANS: dict[str, dict[str, Any]] = {
    "strict": {"scenarios": ["production"], "manifests": [], "skip": [], "docker": True},
    "defaults": {
        "scenarios": [s for s in SCENARIO_IDS if s not in {"production", "kind"}],
        "manifests": ["base", "submit-run-job.yaml"],
        "skip": ["CKV_K8S_43"],
        "docker": False,
    },
    "kind": {
        "scenarios": ["kind"],
        "manifests": ["overlays/kind"],
        "skip": ["CKV_K8S_43", "CKV_K8S_15"],
        "docker": False,
    },
    # The scan can fail: a privileged, root, unbounded pod must be reported.
    "negative": {"scenarios": [], "manifests": [], "skip": [], "docker": False, "bad_pod": True},
}
BAD_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "bad", "namespace": "kubeloop"},
    "spec": {
        "containers": [
            {"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}
        ]
    },
}


def _prepare(
    directory: Path,
    scan: dict[str, Any],
    rendered: dict[str, list[h.Manifest]],
    built_overlays: dict[str, list[h.Manifest]],
    submit_job: h.Manifest,
) -> None:
    directory.mkdir(parents=True)
    for scenario in scan["scenarios"]:
        h.write_documents(rendered[scenario], directory / f"chart-{scenario}.yaml")
    for name in scan["manifests"]:
        objects = [submit_job] if name.endswith(".yaml") else built_overlays[name]
        h.write_documents(objects, directory / f"manifests-{name.replace('/', '-')}.yaml")
    if scan.get("bad_pod"):
        h.write_documents([BAD_POD], directory / "bad-pod.yaml")
    if scan["docker"]:
        for dockerfile in (h.ROOT / "components" / "Dockerfile", h.ROOT / "serving" / "Dockerfile"):
            if dockerfile.is_file():
                target = directory / dockerfile.parent.name / "Dockerfile"
                target.parent.mkdir()
                shutil.copy(dockerfile, target)


def _command(directory: Path, scan: dict[str, Any]) -> list[str]:
    frameworks = ["kubernetes", "dockerfile"] if scan["docker"] else ["kubernetes"]
    command = [tool("checkov"), "-d", str(directory), "--framework", *frameworks]
    command += ["--skip-download", "--quiet", "--compact", "--output", "json"]
    if scan["skip"]:
        command += ["--skip-check", ",".join(scan["skip"])]
    return command


def _failures(report: Any) -> list[str]:
    reports = report if isinstance(report, list) else [report]
    failed: list[str] = []
    for item in reports:
        for check in item.get("results", {}).get("failed_checks", []):
            failed.append(f"{check['check_id']} {check['resource']} ({check['file_path']})")
    return failed


def _passed(report: Any) -> int:
    reports = report if isinstance(report, list) else [report]
    return sum(item.get("summary", {}).get("passed", 0) for item in reports)


@pytest.fixture(scope="module")
def reports(
    tmp_path_factory: pytest.TempPathFactory,
    rendered: dict[str, list[h.Manifest]],
    built_overlays: dict[str, list[h.Manifest]],
    submit_job: h.Manifest,
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("checkov")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_NO_COLOR": "1"}
    processes = {}
    for name, scan in SCANS.items():
        directory = base / name
        _prepare(directory, scan, rendered, built_overlays, submit_job)
        processes[name] = subprocess.Popen(
            _command(directory, scan),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    out: dict[str, Any] = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        assert stdout.strip(), f"checkov {name} printed nothing: {stderr[-2000:]}"
        out[name] = json.loads(stdout)
    return out


@pytest.mark.parametrize("scan", [name for name in SCANS if name != "negative"])
def test_checkov_has_no_failed_checks(scan: str, reports: dict[str, Any]) -> None:
    assert _failures(reports[scan]) == []
    assert _passed(reports[scan]) > 50


def test_checkov_flags_an_insecure_pod(reports: dict[str, Any]) -> None:
    failed = _failures(reports["negative"])
    assert any(f.startswith("CKV_K8S_16 ") for f in failed), failed
