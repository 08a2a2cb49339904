"""The OpenAPI document and the error-body rules, without a server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from kubeloop.bundle.schema import FeatureInfo, Schema
from kubeloop.serving._http import _check_body, _wide_json, show
from kubeloop.serving._openapi import Surface, build_openapi
from kubeloop.serving._surface import MAX_ERROR_CHARS, _error_body

SCHEMA = Schema(
    features=(
        FeatureInfo("age", "numeric", minimum=18.0, maximum=90.0),
        FeatureInfo("plan", "categorical", categories=("basic", "pro")),
    ),
    target="churned",
    task="classification",
    classes=("No", "Yes"),
)


def test_openapi_lists_only_served_routes_with_the_bundle_schema() -> None:
    document = build_openapi(Surface(name="churn", version="v1", schema=SCHEMA))
    paths = document["paths"]
    assert "/v1/models/churn:predict" in paths
    assert not any(":explain" in p or "repository" in p for p in paths)
    instance = document["components"]["schemas"]["V1Instance"]["oneOf"][0]
    assert instance["required"] == ["age", "plan"]
    assert instance["properties"]["plan"]["anyOf"][0]["enum"] == ["basic", "pro"]
    assert "18.0 to 90.0" in instance["properties"]["age"]["description"]
    served = build_openapi(
        Surface(name="churn", version="v1", schema=SCHEMA, repository=True, explain=True)
    )
    assert "/v1/models/churn:explain" in served["paths"]
    assert "/v2/repository/models/churn/unload" in served["paths"]


@pytest.mark.parametrize(
    ("raw", "status", "expected"),
    [
        (b'{"detail": "Not Found"}', 404, "Not Found: no such route"),
        (b'{"error": "x"}', 400, "x"),
        (b"plain text", 500, "plain text"),
        (orjson.dumps({"error": "k" * 10_000}), 400, "k" * 100),
    ],
)
def test_error_bodies_are_one_capped_error_field(raw: bytes, status: int, expected: str) -> None:
    body = orjson.loads(_error_body(raw, status))
    assert set(body) == {"error"}
    assert expected in body["error"]
    assert len(body["error"]) <= MAX_ERROR_CHARS


def test_json_rules() -> None:
    problem, _ = _check_body([], b'{"instances": [[NaN]]}', False)
    assert problem is not None and "NaN and Infinity are not JSON numbers" in problem
    assert _wide_json(b'{"a": [NaN]}') is None
    assert _wide_json(b'{"a": [1e400]}') is None  # never turned into null
    assert _wide_json(b"[" * 100_000 + b"]" * 100_000) is None
    assert orjson.loads(_wide_json(b'{"a": 1' + b"0" * 30 + b"}") or b"") == {"a": 1e30}
    assert show("x" * 100) == "'" + "x" * 36 + "..."


@pytest.mark.parametrize("workers", ["2", "0"])
def test_serve_refuses_more_than_one_worker_process(
    workers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubeloop.cli import main

    assert main(["serve", "--model-dir", str(tmp_path), "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert f"--workers must be 1; got {workers}" in err
    assert "scale with replicas" in err
