"""The pipeline inside the component image, and the monitor as its CronJob runs it.

``kubeloop pipeline run --local --runner docker`` runs every step in
kubeloop/kubeloop-components:dev through kfp.local's DockerRunner against the engine's Docker API
(podman's socket here), with the data and the registry on the S3 server. The champion it
promotes is then served by the serving container and watched by ``kubeloop monitor --once`` in the
component image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeloop.bundle import load_bundle
from kubeloop.data.synth import generate_churn
from kubeloop.demo.harness import send_traffic
from kubeloop.registry import Registry

from .conftest import COMPONENTS_IMAGE, Engine, S3Server, storage_initializer
from .test_registry_s3 import _objects
from .test_serving_container import Container, remove, start_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

KUBELOOP = Path(sys.executable).with_name("kubeloop")
FAST = ["--workers", "1", "--num-boost-round", "60", "--candidates", "xgboost,linear"]


@dataclass(frozen=True)
class Loop:
    """The first containerised pipeline run and where it put things."""

    bucket: str
    data: str
    registry: str
    env: dict[str, str]
    run: subprocess.CompletedProcess[str]
    seconds: float


def pipeline_run(loop_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(KUBELOOP), "pipeline", "run", "--local", "--runner", "docker", *args]
    return subprocess.run(command, env=loop_env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def loop(s3_server: S3Server, docker_host: str, tmp_path_factory: pytest.TempPathFactory) -> Loop:
    bucket = s3_server.new_bucket()
    data = f"s3://{bucket}/data/churn.csv"
    s3_server.fs().pipe_file(
        data.removeprefix("s3://"), generate_churn(1500, seed=3).to_csv(index=False).encode()
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBELOOP_REGISTRY", "KUBELOOP_IMAGE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")
    }
    env |= s3_server.env() | {
        "DOCKER_HOST": docker_host,
        "KUBELOOP_HOME": str(tmp_path_factory.mktemp("home")),
    }
    registry = f"s3://{bucket}/registry"
    started = time.monotonic()
    run = pipeline_run(
        env, "--data", data, "--target", "churned", "--model", "churn", "--registry", registry,
        *FAST,
    )  # fmt: skip
    return Loop(bucket, data, registry, env, run, time.monotonic() - started)


def test_pipeline_steps_run_in_the_component_image_and_promote(
    loop: Loop, s3_env: S3Server
) -> None:
    assert loop.run.returncode == 0, loop.run.stdout[-3000:] + loop.run.stderr[-3000:]
    lines = loop.run.stdout.splitlines()
    assert f"steps run in containers of {COMPONENTS_IMAGE}" in loop.run.stdout + loop.run.stderr
    verdict = [line for line in lines if line.startswith(("PROMOTED", "NOT promoted"))]
    assert verdict and verdict[0].startswith("PROMOTED: "), lines[-10:]
    print(f"\npipeline in containers: {loop.seconds:.0f} s; {verdict[0]}")
    registry = Registry(loop.registry)
    (version,) = registry.versions("churn")
    assert registry.champion("churn") == version
    assert load_bundle(registry.fetch("churn")).version == version


def test_failing_step_fails_the_run_and_leaves_the_registry(loop: Loop, s3_env: S3Server) -> None:
    before = _objects(s3_env, loop.bucket)
    run = pipeline_run(
        loop.env, "--data", loop.data, "--target", "nope", "--model", "churn",
        "--registry", loop.registry, *FAST,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "'nope'" in error, f"{error}\n{run.stdout[-4000:]}"
    assert "(pipeline step 'ingest-validate')" in error
    assert "PROMOTED" not in run.stdout and "NOT promoted" not in run.stdout
    assert _objects(s3_env, loop.bucket) == before


@pytest.fixture(scope="module")
def champion_served(
    loop: Loop, engine: Engine, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Container, Path]]:
    """The champion fetched from the S3 registry by KServe's storage code, served read-only."""
    assert loop.run.returncode == 0, loop.run.stderr[-3000:]
    target = tmp_path_factory.mktemp("champion")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env().items():
            patch.setenv(name, value)
        registry = Registry(loop.registry)
        version = registry.champion("churn")
    assert version is not None
    storage_initializer(s3_server, registry.version_uri("churn", version), target)
    container = start_serving(engine, target)
    yield container, target
    remove(container)


def test_monitor_in_the_component_image_decides_to_retrain(
    loop: Loop, engine: Engine, s3_server: S3Server,
    champion_served: tuple[Container, Path], tmp_path: Path,
) -> None:  # fmt: skip
    container, bundle_dir = champion_served
    state = tmp_path / "monitor"
    state.mkdir()
    state.chmod(0o777)  # the CronJob's emptyDir: writable by the image's user 10001
    aws = [f"--env={k}={v}" for k, v in s3_server.env().items()]

    def monitor() -> dict[str, object]:
        run = engine.run(
            "run", "--rm", "--read-only", "--network", "host", *aws,
            "-v", f"{state}:/state", COMPONENTS_IMAGE,
            "kubeloop", "monitor", "--once", "--model", "churn", "--registry", loop.registry,
            "--metrics-url", f"{container.url}/metrics", "--state-file", "/state/state.json",
            "--dry-run", "--json",
        )  # fmt: skip
        return dict(json.loads(run.stdout.strip().splitlines()[-1]))

    baseline = monitor()  # the first scrape starts the window
    assert baseline["error"] is None, baseline
    schema = load_bundle(bundle_dir).schema
    for i in range(3):
        drifted = generate_churn(400, seed=10 + i, covariate_shift=1.0)
        send_traffic(container.url, "churn", drifted, schema, prefix=f"drift{i}")
    result = monitor()
    assert result["error"] is None, result
    decision = result["decision"]
    assert isinstance(decision, dict) and decision["retrain"] is True, result
    drift = result["drift"]
    assert isinstance(drift, dict) and drift["drift_share"] >= 0.3
