"""Client mistakes get 400/413 naming the feature, are counted, and never break the server."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import Server
from .test_protocols import ROWS, run_triton_grpc

pytestmark = pytest.mark.integration

GOOD = ROWS[0]
NUMERIC = {
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "data_usage_gb",
    "age",
}


def v1(**changes: Any) -> dict[str, Any]:
    row = {**GOOD, **changes}
    return {"instances": [{k: v for k, v in row.items() if v is not DROP}]}


def v2(edit: Any = None) -> dict[str, Any]:
    body = {
        "inputs": [
            {
                "name": name,
                "shape": [1],
                "datatype": "FP64" if name in NUMERIC else "BYTES",
                "data": [value if name in NUMERIC else str(value)],
            }
            for name, value in GOOD.items()
        ]
    }
    if edit is not None:
        edit(body["inputs"])
    return body


def _tensor(inputs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(i for i in inputs if i["name"] == name)


DROP = object()
V1 = "/v1/models/churn:predict"
V2 = "/v2/models/churn/infer"

CASES: list[tuple[str, str, Any, int, str, str]] = [
    # (id, path, body (bytes or JSON-able), status, message pattern, counted reason)
    (
        "v1-not-json",
        V1,
        b"{instances: oops",
        400,
        r"The body is not valid JSON",
        "malformed_request",
    ),
    ("v1-no-instances", V1, {"rows": []}, 400, r'"instances"', "malformed_request"),
    ("v1-body-list", V1, [GOOD], 400, r'"instances"', "malformed_request"),
    ("v1-missing", V1, v1(contract=DROP), 400, r"missing feature 'contract'", "missing_feature"),
    (
        "v1-unknown",
        V1,
        {"instances": [{**GOOD, "colour": "red"}]},
        400,
        r"unknown feature 'colour'",
        "unknown_feature",
    ),
    (
        "v1-text-number",
        V1,
        v1(tenure_months="three"),
        400,
        r"'tenure_months' takes a number.*'three'",
        "wrong_type",
    ),
    ("v1-bool-number", V1, v1(age=True), 400, r"'age' takes a number", "wrong_type"),
    (
        "v1-object-category",
        V1,
        v1(contract={"a": 1}),
        400,
        r"'contract' takes a category",
        "wrong_type",
    ),
    (
        "v1-short-list",
        V1,
        {"instances": [[1, 2, 3]]},
        400,
        r"3 values.*contract, tenure_months",
        "wrong_shape",
    ),
    ("v2-not-json", V2, b'{"inputs": [', 400, r"not valid JSON", "malformed_request"),
    (
        "v2-no-shape",
        V2,
        v2(lambda i: _tensor(i, "age").pop("shape")),
        400,
        r"input 'age': shape",
        "malformed_request",
    ),
    (
        "v2-missing",
        V2,
        v2(lambda i: i.remove(_tensor(i, "region"))),
        400,
        r"'region' is missing",
        "missing_feature",
    ),
    (
        "v2-unknown",
        V2,
        v2(
            lambda i: i.append(
                {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}
            )
        ),
        400,
        r"'colour' is not a feature",
        "unknown_feature",
    ),
    (
        "v2-datatype",
        V2,
        v2(lambda i: _tensor(i, "tenure_months").update(datatype="BYTES", data=["3"])),
        400,
        r"'tenure_months' has datatype BYTES",
        "wrong_datatype",
    ),
    (
        "v2-unknown-datatype",
        V2,
        v2(lambda i: _tensor(i, "contract").update(datatype="STRING")),
        400,
        r"'contract' has datatype STRING",
        "wrong_datatype",
    ),
    (
        "v2-shape-2d",
        V2,
        v2(lambda i: _tensor(i, "age").update(shape=[1, 2], data=[1.0, 2.0])),
        400,
        r"'age' has shape \[1, 2\]",
        "wrong_shape",
    ),
    (
        "v2-shape-data",
        V2,
        v2(lambda i: _tensor(i, "age").update(shape=[2])),
        400,
        r"'age' has 2 rows but 'contract' has 1",
        "wrong_shape",
    ),
    (
        "v2-data-count",
        V2,
        v2(lambda i: _tensor(i, "age").update(data=[1.0, 2.0])),
        400,
        r"'age' declares 1 rows but holds 2",
        "wrong_shape",
    ),
    (
        "v2-text-in-fp64",
        V2,
        v2(lambda i: _tensor(i, "age").update(data=["old"])),
        400,
        r"'age' takes a number.*'old'",
        "wrong_type",
    ),
]


def invalid_count(server: Server, reason: str) -> float:
    """Refusals of ``reason``, every version together (the served one: one version here)."""
    labels = rf'model="churn",reason="{reason}",version="[^"]*"'
    pattern = rf"kubeloop_invalid_requests_total{{{labels}}} (\S+)"
    return sum(float(value) for value in re.findall(pattern, server.metrics()))


def good_request_succeeds(server: Server) -> None:
    response = httpx.post(f"{server.url}{V1}", json={"instances": [GOOD]}, timeout=10)
    assert response.status_code == 200, response.text
    response = httpx.post(f"{server.url}{V2}", json=v2(), timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body", "status", "message", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_request_is_refused_named_and_counted(
    server: Server, path: str, body: Any, status: int, message: str, reason: str
) -> None:
    before = invalid_count(server, reason) if reason else 0.0
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        f"{server.url}{path}",
        content=content,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == status, response.text
    if status != 200:
        assert re.search(message, response.json()["error"]), response.json()["error"]
        assert invalid_count(server, reason) == before + 1
    good_request_succeeds(server)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("Infinity", "NaN and Infinity are not JSON numbers"),
        ("1e400", "number is infinity"),
    ],
)
def test_infinite_number_is_refused(server: Server, token: str, message: str) -> None:
    body = json.dumps(v2()).replace('"data": [31.0]', f'"data": [{token}]')
    assert token in body
    response = httpx.post(
        f"{server.url}{V2}", content=body, headers={"content-type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    assert message in response.json()["error"]
    good_request_succeeds(server)


def _chunks(total: int) -> Iterator[bytes]:
    block = b" " * 65536
    for _ in range(total // len(block) + 1):
        yield block


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_gets_413(server: Server, chunked: bool) -> None:
    before = invalid_count(server, "too_large")
    size = 10 * 1024 * 1024 + 1
    content: Any = _chunks(size) if chunked else b" " * size
    response = httpx.post(f"{server.url}{V1}", content=content, timeout=30)
    assert response.status_code == 413
    assert "at most 10485760 bytes" in response.json()["error"]
    assert invalid_count(server, "too_large") == before + 1
    good_request_succeeds(server)


def test_missing_value_and_unseen_category_are_served_and_counted(server: Server) -> None:
    def counter(name: str, feature: str) -> float:
        found = re.search(rf'{name}{{feature="{feature}",model="churn"}} (\S+)', server.metrics())
        return float(found.group(1)) if found else 0.0

    imputed, unknown = (
        counter("kubeloop_imputed_values_total", "age"),
        counter("kubeloop_unknown_categories_total", "region"),
    )
    response = httpx.post(f"{server.url}{V1}", json=v1(age=None, region="Atlantis"), timeout=10)
    assert response.status_code == 200, response.text
    assert counter("kubeloop_imputed_values_total", "age") == imputed + 1
    assert counter("kubeloop_unknown_categories_total", "region") == unknown + 1


def test_grpc_mistake_is_invalid_argument_and_counted(server: Server) -> None:
    before = invalid_count(server, "missing_feature")
    rows = [{k: v for k, v in copy.deepcopy(GOOD).items() if k != "partner"}]
    result = run_triton_grpc(server, rows, NUMERIC)
    assert "INVALID_ARGUMENT" in result["status"]
    assert "'partner' is missing" in result["error"]
    assert invalid_count(server, "missing_feature") == before + 1
    assert run_triton_grpc(server, ROWS, NUMERIC)["label"]
