"""End to end on a real cluster: `make kind-e2e` (kind + Docker); skipped where they are absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MISSING = [tool for tool in ("docker", "kind", "kubectl", "helm") if shutil.which(tool) is None]


def _docker_engine_up() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.mark.e2e
@pytest.mark.timeout(7200)
@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} on PATH (kind e2e)")
def test_kind_end_to_end() -> None:
    if not _docker_engine_up():
        pytest.skip("the Docker engine is not reachable (`docker info` fails)")
    if os.environ.get("KUBELOOP_E2E") != "1":
        pytest.skip("set KUBELOOP_E2E=1 to create a kind cluster (about 30 minutes)")
    result = subprocess.run(["make", "kind-e2e"], cwd=ROOT, timeout=7000, check=False)
    assert result.returncode == 0
