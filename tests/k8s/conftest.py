"""Fixtures of the static Kubernetes tests: each chart scenario rendered once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s import k8s_helpers as h
from tests.k8s import kustomize

# "default" plus every charts/kubeloop/ci/*-values.yaml.
SCENARIO_IDS = ["default", *(p.name.removesuffix("-values.yaml") for p in h.SCENARIOS)]
OVERLAYS = [h.MANIFESTS / "base", h.MANIFESTS / "overlays" / "kind"]


def scenario_values(scenario: str) -> dict[str, Any]:
    """The values of one scenario ({} for the chart defaults)."""
    if scenario == "default":
        return {}
    return h.load_yaml_file(h.CHART / "ci" / f"{scenario}-values.yaml")


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[h.Manifest]]:
    """scenario -> rendered objects."""
    return {s: h.render_objects(scenario_values(s)) for s in SCENARIO_IDS}


@pytest.fixture(scope="session")
def built_overlays() -> dict[str, list[h.Manifest]]:
    """manifests/ kustomization directory (relative) -> built objects."""
    return {str(d.relative_to(h.MANIFESTS)): kustomize.build(d) for d in OVERLAYS}


@pytest.fixture(scope="session")
def submit_job() -> h.Manifest:
    """manifests/submit-run-job.yaml."""
    return h.load_yaml_file(h.MANIFESTS / "submit-run-job.yaml")


def all_objects(
    rendered: dict[str, list[h.Manifest]],
    built_overlays: dict[str, list[h.Manifest]],
    submit_job: h.Manifest,
) -> list[tuple[str, h.Manifest]]:
    """(origin, object) for everything this project ships."""
    out = [(f"chart[{s}]", o) for s, objs in rendered.items() for o in objs]
    out += [(f"manifests/{d}", o) for d, objs in built_overlays.items() for o in objs]
    out.append(("manifests/submit-run-job.yaml", submit_job))
    return out


def repo_path(path: Path) -> str:
    """A path relative to the repository root, for messages."""
    return str(path.relative_to(h.ROOT))
