"""The serving image run the way KServe runs it.

The bundle goes to the S3 server, KServe's storage-initializer code (``kserve-storage``) fetches
it into a directory, and the container gets that directory read-only at /mnt/models, a read-only
root filesystem and the image's own user (10001): the command of issue #11,
``podman run -d --read-only --network host -v BUNDLE:/mnt/models:ro IMAGE --model-dir
/mnt/models --http-port P --grpc-port G``.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.demo.harness import free_port
from tests.integration.serving.conftest import Endpoints
from tests.integration.serving.test_protocols import (
    ROWS,
    expected_probabilities,
    run_triton_grpc,
    v2_body,
)
from tests.waiting import wait_for

from .conftest import SERVING_IMAGE, Engine, S3Server, storage_initializer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Container(Endpoints):
    """A running serving container."""

    engine: Engine
    name: str
    http_port: int
    grpc_port: int

    def state(self) -> str:
        return self.engine.run("inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()

    def logs(self) -> str:
        result = self.engine.run("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]


def _ready(container: Container) -> bool:
    try:
        return httpx.get(f"{container.url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_serving(engine: Engine, bundle: Path, *, timeout: float = 180) -> Container:
    """``podman run`` the serving image as KServe does and wait until it is ready."""
    container = Container(
        engine, f"kubeloop-serve-{secrets.token_hex(4)}", free_port(), free_port()
    )
    engine.run(
        "run", "-d", "--name", container.name, "--read-only", "--network", "host",
        "-v", f"{bundle}:/mnt/models:ro", SERVING_IMAGE,
        "--model-dir", "/mnt/models", "--http-port", str(container.http_port),
        "--grpc-port", str(container.grpc_port),
    )  # fmt: skip

    def stopped() -> str:
        state = container.state()
        return "" if state == "running" else f"{state}:\n{container.logs()}"

    try:
        wait_for(
            lambda: _ready(container),
            what=f"container {container.name}",
            timeout=timeout,
            every=0.2,
            dead=stopped,
        )
    except BaseException:
        remove(container)
        raise
    return container


def remove(container: Container) -> None:
    container.engine.run("rm", "--force", "--time", "5", container.name, check=False)


@pytest.fixture(scope="module")
def model_dir(
    s3_server: S3Server, churn_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The bundle uploaded to S3, then fetched by KServe's storage code (as the
    storage-initializer does for an InferenceService's storageUri)."""
    bucket = s3_server.new_bucket()
    s3_server.fs().put(f"{churn_bundle}/", f"{bucket}/models/churn/", recursive=True)
    target = tmp_path_factory.mktemp("mnt-models")
    storage_initializer(s3_server, f"s3://{bucket}/models/churn", target)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        p.name for p in churn_bundle.iterdir()
    )
    load_bundle(target)  # verified against its manifest
    return target


@pytest.fixture(scope="module")
def served(engine: Engine, model_dir: Path) -> Iterator[Container]:
    container = start_serving(engine, model_dir)
    yield container
    remove(container)


def test_v1_v2_rest_and_grpc_match_the_bundle(served: Container, model_dir: Path) -> None:
    expected = expected_probabilities(model_dir, ROWS)
    v1 = httpx.post(f"{served.url}/v1/models/churn:predict", json={"instances": ROWS}, timeout=30)
    assert v1.status_code == 200, v1.text
    assert [p["probability"] for p in v1.json()["predictions"]] == pytest.approx(expected.tolist())

    numeric = set(load_bundle(model_dir).schema.numeric_features)
    v2 = httpx.post(f"{served.url}/v2/models/churn/infer", json=v2_body(ROWS, numeric), timeout=30)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["probability"]["data"] == pytest.approx(expected.tolist())

    grpc = run_triton_grpc(served, ROWS, numeric)  # type: ignore[arg-type]
    assert grpc["ready"] and grpc["probability"] == pytest.approx(expected.tolist())

    assert httpx.get(f"{served.url}/v2/models/churn/ready", timeout=10).status_code == 200
    metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert 'kubeloop_predictions_total{model="churn"' in metrics or "kubeloop_" in metrics


def test_read_only_root_and_user_10001(served: Container) -> None:
    inspect = served.engine.run(
        "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}", served.name
    ).stdout.split()
    assert inspect[0] == "true"
    assert served.engine.run("exec", served.name, "id", "-u").stdout.strip() == "10001"
    denied = served.engine.run("exec", served.name, "touch", "/opt/venv/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    mounted = served.engine.run("exec", served.name, "touch", "/mnt/models/x", check=False)
    assert mounted.returncode != 0 and "Read-only file system" in mounted.stderr


def test_the_image_healthcheck_passes(served: Container) -> None:
    if served.engine.command == "podman":
        result = served.engine.run("healthcheck", "run", served.name, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    else:  # docker has no "run it now": run the HEALTHCHECK command itself
        test = served.engine.run(
            "inspect", "--format", "{{json .Config.Healthcheck.Test}}", served.name
        ).stdout
        import json

        command = json.loads(test)
        assert command[0] == "CMD"
        assert served.engine.run("exec", served.name, *command[1:], check=False).returncode == 0


def test_sigterm_drains_the_request_in_flight(engine: Engine, model_dir: Path) -> None:
    """A request whose headers arrived (the server answered ``100 Continue``) before SIGTERM is
    still answered in full; then the server exits 0 and new connections are refused."""
    container = start_serving(engine, model_dir)
    try:
        body = httpx.Request("POST", "http://x/", json={"instances": ROWS}).read()
        conn = socket.create_connection(("127.0.0.1", container.http_port), timeout=30)
        conn.sendall(
            b"POST /v1/models/churn:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        assert conn.recv(64).startswith(b"HTTP/1.1 100")  # the request is in flight
        engine.run("kill", "--signal", "TERM", container.name)
        conn.sendall(body)
        response = _read_response(conn)
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
        assert b'"predictions"' in response

        deadline = time.monotonic() + 60
        while container.state() == "running":
            assert time.monotonic() < deadline, "the server did not exit after SIGTERM"
            time.sleep(0.2)
        code = engine.run("inspect", "--format", "{{.State.ExitCode}}", container.name)
        assert code.stdout.strip() == "0", container.logs()
    finally:
        remove(container)


def _read_response(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        None,
    )  # fmt: skip
    while length is not None and len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest
