"""Lifecycle: SIGTERM lets in-flight requests finish; a bad bundle is refused at start."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.waiting import wait_for

from .conftest import KUBELOOP, start_server
from .test_protocols import ROWS

pytestmark = pytest.mark.integration


def _accepted(pid: int, client_port: int) -> bool:
    """Whether the server process (or a child) holds the connection from ``client_port``."""
    server = psutil.Process(pid)
    return any(
        connection.raddr and connection.raddr.port == client_port
        for process in (server, *server.children(recursive=True))
        for connection in process.connections(kind="tcp")
    )


def test_sigterm_finishes_the_request_in_flight(small_bundle: Path, tmp_path: Path) -> None:
    server = start_server(
        ["--model-dir", str(small_bundle)], name="churn", log=tmp_path / "server.log"
    )
    body = json.dumps({"instances": ROWS}).encode()
    head = (
        f"POST /v1/models/churn:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
            sock.sendall(head + body[:10])  # the request is now in flight, its body half sent
            client_port = sock.getsockname()[1]
            wait_for(
                lambda: _accepted(server.process.pid, client_port),
                what="the server to accept the connection",
            )
            server.process.send_signal(signal.SIGTERM)
            wait_for(
                lambda: "Shutting down" in server.log.read_text(),
                what="the server to log that it shuts down",
            )
            assert server.process.poll() is None, "exited with a request in flight"
            sock.sendall(body[10:])
            response = b""
            while b"\r\n\r\n" not in response or not response.endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
        payload = json.loads(response.split(b"\r\n\r\n", 1)[1])
        assert len(payload["predictions"]) == len(ROWS)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()
    assert "Shutting down" in (tmp_path / "server.log").read_text()


def test_tampered_bundle_is_refused_at_start(small_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "tampered"
    shutil.copytree(small_bundle, bundle)
    schema = bundle / "schema.json"
    schema.write_text(schema.read_text().replace("Month-to-month", "Month-to-month "))
    completed = subprocess.run(
        [str(KUBELOOP), "serve", "--model-dir", str(bundle), "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "schema.json" in completed.stderr and "error:" in completed.stderr


def test_serve_needs_exactly_one_source() -> None:
    completed = subprocess.run(
        [str(KUBELOOP), "serve", "--registry", "/nowhere"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "--registry needs --model NAME" in completed.stderr
