"""The published surface: repository extension, versions, hostile requests, limits, OpenAPI.

Every case goes through a real ``kubeloop serve`` process over HTTP and over gRPC.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from kubeloop.registry import Registry

from ._grpc_raw import call, infer_request
from .conftest import Server, build_bundle, start_server
from .test_bad_requests import GOOD, NUMERIC, V1, V2, good_request_succeeds, invalid_count, v2

pytestmark = pytest.mark.integration

V2_VERSIONED = "/v2/models/churn/versions/{}/infer"


def served_version(server: Server) -> str:
    response = httpx.post(f"{server.url}{V1}", json={"instances": [GOOD]}, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def post(server: Server, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=10,
    )


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return str(body["error"])


# -- 1. the model-repository extension ---------------------------------------------------------


@pytest.mark.parametrize("verb", ["load", "unload"])
def test_repository_is_off_by_default_over_rest_and_grpc(server: Server, verb: str) -> None:
    response = httpx.post(f"{server.url}/v2/repository/models/churn/{verb}", timeout=10)
    assert response.status_code == 403
    assert "--enable-model-repository" in error_of(response)
    method = "RepositoryModelLoad" if verb == "load" else "RepositoryModelUnload"
    request = getattr(pb, f"{method}Request")(model_name="churn")
    code, details, _ = call(server.grpc_url, method, request)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "--enable-model-repository" in details
    good_request_succeeds(server)
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}


@pytest.fixture(scope="module")
def limited(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the repository extension on, one request at a time and 1 s timeouts."""
    directory = tmp_path_factory.mktemp("limited")
    running = start_server(
        [
            "--model-dir",
            str(small_bundle),
            "--enable-model-repository",
            "--max-concurrency",
            "1",
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
        ],
        name="churn",
        log=directory / "server.log",
    )
    yield running
    running.stop()


def _readiness(server: Server) -> dict[str, Any]:
    server_ready = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
    model_ready = httpx.get(f"{server.url}/v2/models/churn/ready", timeout=10)
    v1_ready = httpx.get(f"{server.url}/v1/models/churn", timeout=10)
    _, _, grpc_server = call(server.grpc_url, "ServerReady", pb.ServerReadyRequest())
    _, _, grpc_model = call(server.grpc_url, "ModelReady", pb.ModelReadyRequest(name="churn"))
    return {
        "v2 server": server_ready.status_code == 200,
        "v2 model": model_ready.status_code == 200,
        "v1 model": v1_ready.status_code == 200 and v1_ready.json().get("ready") is True,
        "grpc server": bool(grpc_server and grpc_server.ready),
        "grpc model": bool(grpc_model and grpc_model.ready),
    }


def test_enabled_repository_unload_makes_every_readiness_false_and_load_restores(
    limited: Server,
) -> None:
    assert all(_readiness(limited).values()), _readiness(limited)
    response = httpx.post(f"{limited.url}/v2/repository/models/churn/unload", timeout=10)
    assert response.status_code == 200, response.text
    try:
        assert not any(_readiness(limited).values()), _readiness(limited)
        refused = httpx.post(f"{limited.url}{V1}", json={"instances": [GOOD]}, timeout=10)
        assert refused.status_code == 503, refused.text
        assert "error" in refused.json()
        other = httpx.post(f"{limited.url}/v2/repository/models/other/load", timeout=10)
        assert other.status_code == 404 and "'other' does not exist" in error_of(other)
    finally:
        code, details, _ = call(
            limited.grpc_url,
            "RepositoryModelLoad",
            pb.RepositoryModelLoadRequest(model_name="churn"),
        )
    assert code == grpc.StatusCode.OK, details
    assert all(_readiness(limited).values()), _readiness(limited)
    good_request_succeeds(limited)


# -- 2. versions -------------------------------------------------------------------------------


def test_versions_are_answered_from_the_served_version_over_rest(server: Server) -> None:
    version = served_version(server)
    ok = httpx.post(f"{server.url}{V2_VERSIONED.format(version)}", json=v2(), timeout=10)
    assert ok.status_code == 200 and ok.json()["model_version"] == version
    query = httpx.post(
        f"{server.url}{V1}", params={"model_version": version}, json={"instances": [GOOD]}
    )
    assert query.status_code == 200
    for route in ("", "/ready"):
        got = httpx.get(f"{server.url}/v2/models/churn/versions/{version}{route}", timeout=10)
        assert got.status_code == 200, got.text
    for response in (
        httpx.post(f"{server.url}{V2_VERSIONED.format('v0')}", json=v2(), timeout=10),
        httpx.get(f"{server.url}/v2/models/churn/versions/v0", timeout=10),
        httpx.get(f"{server.url}/v2/models/churn/versions/v0/ready", timeout=10),
        httpx.post(f"{server.url}{V2}?model_version=v0", json=v2(), timeout=10),
        httpx.post(f"{server.url}{V1}?model_version=v0", json={"instances": [GOOD]}),
    ):
        assert response.status_code == 404, response.text
        assert f"no version 'v0'; it serves version {version!r}" in error_of(response)
    good_request_succeeds(server)


def test_versions_are_answered_from_the_served_version_over_grpc(server: Server) -> None:
    version = served_version(server)
    code, details, reply = call(
        server.grpc_url, "ModelInfer", infer_request(GOOD, NUMERIC, model_version=version)
    )
    assert code == grpc.StatusCode.OK, details
    assert reply.model_version == version
    code, details, _ = call(
        server.grpc_url, "ModelInfer", infer_request(GOOD, NUMERIC, model_version="v0")
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert f"it serves version {version!r}" in details
    code, _, metadata = call(
        server.grpc_url, "ModelMetadata", pb.ModelMetadataRequest(name="churn")
    )
    assert code == grpc.StatusCode.OK and list(metadata.versions) == [version]
    for method, request in (
        ("ModelMetadata", pb.ModelMetadataRequest(name="churn", version="v0")),
        ("ModelReady", pb.ModelReadyRequest(name="churn", version="v0")),
    ):
        assert call(server.grpc_url, method, request)[0] == grpc.StatusCode.NOT_FOUND
    assert (
        call(server.grpc_url, "ModelInfer", infer_request(GOOD, NUMERIC))[0] == grpc.StatusCode.OK
    )


# -- 3. hostile requests: never 5xx, always {"error": ...} ---------------------------------------


def _bytes_tensor_body(prefix: int, data: bytes) -> tuple[bytes, int]:
    """A binary-extension V2 body whose 'contract' BYTES element claims ``prefix`` bytes."""
    body = v2()
    raw = struct.pack("<I", prefix) + data
    for item in body["inputs"]:
        if item["name"] == "contract":
            item.pop("data")
            item["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(body).encode()
    return head + raw, len(head)


HOSTILE: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    # (id, path, body, extra headers, status, message pattern)
    ("explain", "/v1/models/churn:explain", b'{"instances": []}', {}, 400, "non-empty list"),
    (
        "header-length-abc",
        V2,
        b"{}",
        {"inference-header-content-length": "abc"},
        400,
        "Inference-Header-Content-Length is 'abc'",
    ),
    (
        "gzip",
        V2,
        gzip.compress(json.dumps(v2()).encode()),
        {"content-encoding": "gzip"},
        415,
        "Content-Encoding 'gzip' is not accepted",
    ),
    (
        "5000-digit-integer",
        V2,
        json.dumps(v2()).replace("31.0", "9" * 5000).encode(),
        {},
        400,
        "not valid JSON",
    ),
    (
        "deep-nesting",
        V2,
        b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        {},
        400,
        "not valid JSON",
    ),
    (
        "v1-deep-nesting",
        V1,
        b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        {},
        400,
        "not valid JSON",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [c[1:] for c in HOSTILE],
    ids=[c[0] for c in HOSTILE],
)
def test_hostile_request_gets_a_4xx_error_body(
    server: Server, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response = post(server, path, body, **headers)
    assert response.status_code == status, response.text
    assert message in error_of(response)
    good_request_succeeds(server)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_nan_and_infinity_tokens_follow_one_rule(server: Server, token: str, protocol: str) -> None:
    if protocol == "v1":
        path, body = V1, json.dumps({"instances": [GOOD]}).replace("31", token, 1)
    else:
        path, body = V2, json.dumps(v2()).replace("31.0", token)
    assert token in body
    response = post(server, path, body.encode())
    assert response.status_code == 400, response.text
    assert "NaN and Infinity are not JSON numbers; send null for a missing value" in error_of(
        response
    )


@pytest.mark.parametrize("path", [V1, V2])
def test_integers_beyond_64_bits_are_json_and_served(server: Server, path: str) -> None:
    if path == V1:
        body = json.dumps({"instances": [{**GOOD, "age": 10**30}]})
    else:
        body = json.dumps(v2()).replace("31.0", str(10**30))
    response = post(server, path, body.encode())
    assert response.status_code == 200, response.text


def test_bytes_length_prefix_past_its_data_is_400_over_rest(server: Server) -> None:
    body, head = _bytes_tensor_body(1000, b"Month-to-month")
    response = post(server, V2, body, **{"inference-header-content-length": str(head)})
    assert response.status_code == 400, response.text
    assert "binary request cannot be read" in error_of(response)
    body, head = _bytes_tensor_body(len(b"Month-to-month"), b"Month-to-month")
    good = post(server, V2, body, **{"inference-header-content-length": str(head)})
    assert good.status_code == 200, good.text


def test_bytes_length_prefix_and_malformed_protobuf_are_invalid_argument_over_grpc(
    server: Server,
) -> None:
    request = infer_request(GOOD, NUMERIC)
    for tensor in request.inputs:
        tensor.ClearField("contents")
        if tensor.name == "contract":
            request.raw_input_contents.append(struct.pack("<I", 1000) + b"Month")
        else:
            value = float(GOOD[tensor.name]) if tensor.name in NUMERIC else str(GOOD[tensor.name])
            request.raw_input_contents.append(
                struct.pack("<d", value)
                if isinstance(value, float)
                else struct.pack("<I", len(value)) + value.encode()
            )
    code, details, _ = call(server.grpc_url, "ModelInfer", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    for garbage in (b"\xff\xff\xff", b"\x0a\x05ab", bytes(range(256))):
        code, details, _ = call(server.grpc_url, "ModelInfer", garbage)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (garbage, code, details)
        assert "not a valid protobuf message" in details
    assert (
        call(server.grpc_url, "ModelInfer", infer_request(GOOD, NUMERIC))[0] == grpc.StatusCode.OK
    )


def test_echoed_values_are_capped(server: Server) -> None:
    key = "k" * 1_000_000
    response = httpx.post(f"{server.url}{V1}", json={"instances": [{**GOOD, key: 1}]}, timeout=30)
    assert response.status_code == 400
    assert "unknown feature 'kkkk" in error_of(response)
    assert len(response.content) < 2000
    tensor = {"name": key, "shape": [1], "datatype": "FP64", "data": [1.0]}
    body = v2()
    body["inputs"].append(tensor)
    response = httpx.post(f"{server.url}{V2}", json=body, timeout=30)
    assert response.status_code == 400 and len(response.content) < 2000
    assert key[:100] not in server.log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/no/such/route", 404), ("DELETE", V1, 405), ("GET", "/v2/models/other", 404)],
)
def test_unknown_routes_and_methods_get_error_bodies(
    server: Server, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, f"{server.url}{path}", timeout=10)
    assert response.status_code == status
    assert error_of(response)


# -- 3b. overload and slow clients --------------------------------------------------------------


def _raw(server: Server, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    sock.sendall(data)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_overload_gets_503_with_retry_after_only_beyond_the_limit(limited: Server) -> None:
    body = json.dumps({"instances": [GOOD]}).encode()
    head = (
        f"POST {V1} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    before = invalid_count(limited, "overloaded")
    held = _raw(limited, head + body[:5])  # in flight until the rest of the body arrives
    try:
        deadline = time.monotonic() + 20
        while True:  # the held request is counted once its headers are read
            busy = httpx.post(f"{limited.url}{V1}", json={"instances": [GOOD]}, timeout=10)
            if busy.status_code == 503 or time.monotonic() > deadline:
                break
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        assert "--max-concurrency" in error_of(busy)
        held.sendall(body[5:])
        assert b" 200 OK" in held.recv(65536).split(b"\r\n", 1)[0]
    finally:
        held.close()
    assert invalid_count(limited, "overloaded") >= before + 1
    good_request_succeeds(limited)


def test_slow_headers_and_slow_body_get_408_and_are_closed(limited: Server) -> None:
    started = time.monotonic()
    slow_headers = _raw(limited, f"POST {V1} HTTP/1.1\r\nhost: x\r\n".encode())
    answer = _read_all(slow_headers)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"--header-timeout" in answer
    slow_body = _raw(
        limited,
        f"POST {V1} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{".encode(),
    )
    answer = _read_all(slow_body)
    assert b" 408 " in answer.split(b"\r\n", 1)[0], answer
    assert b"--body-timeout" in answer
    assert time.monotonic() - started < 20
    good_request_succeeds(limited)


# -- 4. the OpenAPI document -------------------------------------------------------------------


def test_openapi_describes_the_served_model_and_every_error(server: Server) -> None:
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    version = served_version(server)
    assert document["info"]["version"] == version
    paths = document["paths"]
    assert "/v1/models/churn:predict" in paths and "/v2/models/churn/infer" in paths
    assert "/v1/models/churn:explain" in paths  # served: kubeloop.serving.explain
    assert not any("/repository/" in p for p in paths)
    schemas = document["components"]["schemas"]
    instance = schemas["V1Instance"]["oneOf"][0]
    assert set(instance["required"]) == set(GOOD)
    contract = instance["properties"]["contract"]["anyOf"][0]["enum"]
    assert "Month-to-month" in contract
    assert instance["properties"]["age"]["type"] == ["number", "null"]
    inputs = schemas["V2Request"]["properties"]["inputs"]["items"]["oneOf"]
    assert {i["properties"]["name"]["const"] for i in inputs} == set(GOOD)
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method == "post":
                assert {"400", "404", "413"} <= set(operation["responses"]), (path, method)
            for status, answer in operation["responses"].items():
                if status != "200":
                    assert answer["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }
            # every listed route is served (an unserved one would be 404 with no model name)
            url = server.url + path.replace("{version}", version)
            if method == "get":
                assert httpx.get(url, timeout=10).status_code == 200, path
    docs = httpx.get(f"{server.url}/docs", timeout=10)
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def test_openapi_follows_a_hot_swap(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    first = registry.register(build_bundle(tmp_path / "a", seed=1))
    second = registry.register(build_bundle(tmp_path / "b", seed=2, task="regression"))
    registry.promote("churn", first)
    server = start_server(
        [
            "--registry",
            str(tmp_path / "registry"),
            "--model",
            "churn",
            "--poll-interval",
            "0.1",
            "--enable-model-repository",
        ],
        name="churn",
        log=tmp_path / "server.log",
    )
    try:
        document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        assert document["info"]["version"] == first
        assert "/v2/repository/models/churn/unload" in document["paths"]
        assert "contract" in document["components"]["schemas"]["V1Instance"]["oneOf"][0]["required"]
        registry.promote("churn", second)
        deadline = time.monotonic() + 60
        while document["info"]["version"] != second and time.monotonic() < deadline:
            document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        assert document["info"]["version"] == second
        required = document["components"]["schemas"]["V1Instance"]["oneOf"][0]["required"]
        assert "x1" in required and "contract" not in required
        assert document["components"]["schemas"]["V1Response"]["properties"]["predictions"][
            "items"
        ] == {"type": "number"}
    finally:
        server.stop()
