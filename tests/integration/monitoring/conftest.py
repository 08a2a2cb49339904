"""Fixtures of the monitoring integration tests: a champion trained by the real pipeline
(kfp.local) and served by a real ``kubeloop serve`` process following the registry.

The pipeline's train step joins the test session's Ray (``RAY_ADDRESS``) instead of starting
its own, like the pipeline tests do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeloop.bundle import Bundle, load_bundle
from kubeloop.demo.harness import ServerProcess
from kubeloop.registry import Registry

pytestmark = pytest.mark.integration

_ENV = ("KUBELOOP_HOME", "KUBELOOP_REGISTRY", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")
MODEL = "churn"
TARGET = "churned"


@dataclass(frozen=True)
class Served:
    """The served champion and where everything lives."""

    work: Path
    registry: Path
    reference: Path
    server: ServerProcess
    bundle: Bundle
    payload_log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Iterator[Served]:
    """Train a champion through the pipeline, then serve it (stopped at module end)."""
    import ray

    from kubeloop.data.synth import generate_churn
    from kubeloop.pipelines.launch.request import RunRequest
    from kubeloop.pipelines.launch.runs import start_training_run

    work = tmp_path_factory.mktemp("monitoring")
    saved = {name: os.environ.get(name) for name in _ENV}
    os.environ["KUBELOOP_HOME"] = str(work / "home")
    os.environ.pop("KUBELOOP_REGISTRY", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    reference = work / "reference.csv"
    generate_churn(2000, seed=0).to_csv(reference, index=False)
    registry = work / "registry"
    start_training_run(
        RunRequest(
            data=str(reference),
            target=TARGET,
            model_name=MODEL,
            registry_root=str(registry),
            workers=1,
            num_boost_round=60,
        )
    )
    bundle = load_bundle(Registry(str(registry)).fetch(MODEL))
    payload_log = work / "payload.jsonl"
    server = ServerProcess(
        registry=registry, model=MODEL, payload_log=payload_log, log=work / "server.log"
    )
    try:
        server.wait_ready()
        yield Served(work, registry, reference, server, bundle, payload_log)
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
