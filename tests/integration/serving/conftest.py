"""Serving fixtures: small real bundles (no Ray needed) and a real ``kubeloop serve`` process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kubeloop.demo.harness import free_port
from tests.waiting import wait_for

KUBELOOP = Path(sys.executable).with_name("kubeloop")


def build_bundle(
    destination: Path,
    *,
    seed: int = 0,
    rows: int = 600,
    trees: int = 20,
    name: str = "churn",
    task: str = "classification",
) -> Path:
    """Train a small XGBoost model on generated data and write it as a real bundle."""
    import xgboost

    from kubeloop.bundle import write_bundle
    from kubeloop.bundle.models import XGBoostModel
    from kubeloop.bundle.profile import build_reference_profile
    from kubeloop.data import build_dataset
    from kubeloop.data.synth import generate_churn, generate_regression
    from kubeloop.features import FastTransform, fit_preprocessor

    if task == "classification":
        frame, target = generate_churn(rows, seed=seed), "churned"
        params: dict[str, object] = {"objective": "binary:logistic"}
    elif task == "multiclass":
        frame, target = generate_churn(rows, seed=seed), "contract"
        params = {"objective": "multi:softprob", "num_class": 3}
    else:
        frame, target = generate_regression(rows, seed=seed), "target"
        params = {"objective": "reg:squarederror"}
    dataset = build_dataset(frame, target=target)
    _, spec = fit_preprocessor(dataset.X, dataset.schema)
    matrix = FastTransform(spec).transform(dataset.X)
    booster = xgboost.train(
        {**params, "max_depth": 3, "eta": 0.2, "nthread": 1, "seed": seed},
        xgboost.DMatrix(matrix, label=dataset.y),
        num_boost_round=trees,
    )
    n_classes = len(dataset.schema.classes) or 1
    model = XGBoostModel(booster, task=dataset.schema.task, n_classes=n_classes)
    profile = build_reference_profile(dataset.X, dataset.schema, model.predict(matrix))
    return write_bundle(
        destination,
        name=name,
        schema=dataset.schema,
        preprocessor=spec,
        model=model,
        reference_profile=profile,
        metrics={},
        data_hash=dataset.data_hash,
    )


class Endpoints:
    """The URLs of a server listening on loopback (a process or a container)."""

    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass
class Server(Endpoints):
    """A running ``kubeloop serve`` process."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    name: str
    log: Path
    extra: dict[str, object] = field(default_factory=dict)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_server(args: list[str], *, name: str, log: Path, timeout: float = 300) -> Server:
    """Start ``kubeloop serve ARGS`` on free ports and wait until the model is ready."""
    http_port, grpc_port = free_port(), free_port()
    command = [str(KUBELOOP) if KUBELOOP.exists() else shutil.which("kubeloop") or "kubeloop"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    handle = log.open("wb")
    process = subprocess.Popen(
        [*command, "serve", *args, "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
    )
    server = Server(process, http_port, grpc_port, name, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited early with {process.returncode}")
        try:
            return httpx.get(f"{server.url}/v2/models/{name}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, what=f"model {name} to be ready", timeout=timeout, every=0.2)
    except AssertionError as error:
        server.stop()
        raise AssertionError(f"{error}; its log:\n{log.read_text()[-4000:]}") from None
    return server


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small binary-classification bundle named ``churn`` (read-only)."""
    return build_bundle(tmp_path_factory.mktemp("serving") / "churn", seed=0)


@pytest.fixture(scope="module")
def server(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``kubeloop serve --model-dir`` on the small bundle, with a payload log."""
    directory = tmp_path_factory.mktemp("server")
    payload = directory / "payload.jsonl"
    running = start_server(
        ["--model-dir", str(small_bundle), "--payload-log", str(payload)],
        name="churn",
        log=directory / "server.log",
    )
    running.extra["payload_log"] = payload
    yield running
    running.stop()
