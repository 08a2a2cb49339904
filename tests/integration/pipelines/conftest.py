"""Fixtures of the pipeline integration tests: an isolated kubeloop home and generated data.

The pipeline's train step runs in a kfp.local subprocess; it joins the test session's Ray
(``RAY_ADDRESS`` = that instance) instead of starting its own, which saves a Ray start per run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_ENV = ("KUBELOOP_HOME", "KUBELOOP_REGISTRY", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")


@pytest.fixture(scope="module")
def loop_home(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Iterator[Path]:
    """A fresh KUBELOOP_HOME (registry, MLflow sqlite store, kfp.local outputs) per module."""
    import ray

    home = tmp_path_factory.mktemp("kubeloop-home")
    saved = {name: os.environ.get(name) for name in _ENV}
    os.environ["KUBELOOP_HOME"] = str(home)
    os.environ.pop("KUBELOOP_REGISTRY", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def churn_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 generated churn rows (target ``churned``) as CSV."""
    from kubeloop.data.synth import generate_churn

    path = tmp_path_factory.mktemp("data") / "churn.csv"
    generate_churn(1500, seed=3).to_csv(path, index=False)
    return path
