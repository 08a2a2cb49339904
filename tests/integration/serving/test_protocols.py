"""V1 and V2 over a real server: httpx, tritonclient (HTTP, gRPC) and KServe's own client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.features import FastTransform

from .conftest import Server

pytestmark = pytest.mark.integration

ROWS: list[dict[str, Any]] = [
    {
        "contract": "Month-to-month",
        "tenure_months": 3,
        "internet_service": "Fiber optic",
        "monthly_charges": 80.5,
        "total_charges": 241.5,
        "payment_method": "Electronic check",
        "tech_support": "No",
        "support_calls": 4,
        "data_usage_gb": 20.0,
        "age": 31.0,
        "senior": 0,
        "paperless_billing": "Yes",
        "partner": "No",
        "region": "West",
    },
    {
        "contract": "Two year",
        "tenure_months": 60,
        "internet_service": "DSL",
        "monthly_charges": 30.0,
        "total_charges": 1800.0,
        "payment_method": "Mailed check",
        "tech_support": "Yes",
        "support_calls": 0,
        "data_usage_gb": 5.5,
        "age": 64.0,
        "senior": 1,
        "paperless_billing": "No",
        "partner": "Yes",
        "region": "North",
    },
]


def expected_probabilities(bundle_path: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    """The bundle's own prediction for ``rows``, computed in this process."""
    bundle = load_bundle(bundle_path)
    columns = {
        f.name: np.array([r[f.name] for r in rows], dtype=np.float64 if f.is_numeric else object)
        for f in bundle.schema.features
    }
    return bundle.model.predict(
        FastTransform(bundle.preprocessor).transform_columns(columns).matrix
    )


def v2_body(rows: list[dict[str, Any]], numeric: set[str]) -> dict[str, Any]:
    return {
        "id": "req-1",
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "FP64" if name in numeric else "BYTES",
                "data": [r[name] if name in numeric else str(r[name]) for r in rows],
            }
            for name in rows[0]
        ],
    }


@pytest.fixture(scope="module")
def numeric(small_bundle: Any) -> set[str]:
    return set(load_bundle(small_bundle).schema.numeric_features)


def test_v1_objects_and_lists_match_the_bundle(server: Server, small_bundle: Any) -> None:
    expected = expected_probabilities(small_bundle, ROWS)
    for instances in (ROWS, [list(r.values()) for r in ROWS]):
        response = httpx.post(
            f"{server.url}/v1/models/churn:predict", json={"instances": instances}, timeout=10
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["probability"] for p in predictions] == pytest.approx(expected.tolist())
        assert [p["label"] for p in predictions] == ["Yes" if p >= 0.5 else "No" for p in expected]


def test_v2_rest_with_httpx(server: Server, small_bundle: Any, numeric: set[str]) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/churn/infer", json=v2_body(ROWS, numeric), timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "req-1"
    assert body["model_version"] == load_bundle(small_bundle).version
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [2]
    assert outputs["probability"]["data"] == pytest.approx(
        expected_probabilities(small_bundle, ROWS).tolist()
    )


def test_v2_metadata_lists_every_feature(server: Server, small_bundle: Any) -> None:
    schema = load_bundle(small_bundle).schema
    metadata = httpx.get(f"{server.url}/v2/models/churn", timeout=10).json()
    assert [i["name"] for i in metadata["inputs"]] == list(schema.feature_names)
    kinds = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    assert all(kinds[n] == "FP64" for n in schema.numeric_features)
    assert all(kinds[n] == "BYTES" for n in schema.categorical_features)
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probability"]
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}


def _triton_inputs(module: Any, numeric: set[str], binary: bool) -> list[Any]:
    inputs = []
    for name in ROWS[0]:
        if name in numeric:
            tensor = module.InferInput(name, [2], "FP64")
            values = np.array([r[name] for r in ROWS], dtype=np.float64)
        else:
            tensor = module.InferInput(name, [2], "BYTES")
            values = np.array([str(r[name]).encode() for r in ROWS], dtype=object)
        if binary:
            tensor.set_data_from_numpy(values)
        else:
            tensor.set_data_from_numpy(values, binary_data=False)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http(
    server: Server, small_bundle: Any, numeric: set[str], binary: bool
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        assert client.is_model_ready("churn")
        result = client.infer("churn", _triton_inputs(triton, numeric, binary))
        probability = result.as_numpy("probability")
        labels = result.as_numpy("label")
    finally:
        client.close()
    assert probability == pytest.approx(expected_probabilities(small_bundle, ROWS))
    assert [v.decode() if isinstance(v, bytes) else v for v in labels.tolist()] == [
        "Yes" if p >= 0.5 else "No" for p in probability
    ]


def run_triton_grpc(server: Server, rows: list[dict[str, Any]], numeric: set[str]) -> Any:
    """tritonclient.grpc in a subprocess (its protobufs clash with KServe's in one process)."""
    script = Path(__file__).with_name("_triton_grpc_client.py")
    completed = subprocess.run(
        [
            sys.executable,
            str(script),
            server.grpc_url,
            "churn",
            json.dumps(rows),
            json.dumps(sorted(numeric)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_tritonclient_grpc(server: Server, small_bundle: Any, numeric: set[str]) -> None:
    result = run_triton_grpc(server, ROWS, numeric)
    assert result["ready"] and result["inputs"] == list(ROWS[0])
    assert result["version"] == load_bundle(small_bundle).version
    expected = expected_probabilities(small_bundle, ROWS)
    assert result["probability"] == pytest.approx(expected.tolist())
    assert result["label"] == ["Yes" if p >= 0.5 else "No" for p in expected]


def test_kserve_rest_client_v1_and_v2(server: Server, small_bundle: Any, numeric: set[str]) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run() -> tuple[Any, Any]:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            first = await v1.infer(server.url, {"instances": ROWS}, model_name="churn")
            inputs = []
            for name in ROWS[0]:
                if name in numeric:
                    tensor = InferInput(name, [2], "FP64")
                    tensor.set_data_from_numpy(np.array([r[name] for r in ROWS], dtype=np.float64))
                else:
                    tensor = InferInput(name, [2], "BYTES")
                    tensor.set_data_from_numpy(np.array([str(r[name]) for r in ROWS], dtype=object))
                inputs.append(tensor)
            request = InferRequest(model_name="churn", infer_inputs=inputs, request_id="k-1")
            second = await v2.infer(server.url, request, model_name="churn")
            return first, second
        finally:
            await v1.close()
            await v2.close()

    first, second = asyncio.run(run())
    expected = expected_probabilities(small_bundle, ROWS)
    assert [p["probability"] for p in first["predictions"]] == pytest.approx(expected.tolist())
    assert second.get_output_by_name("probability").as_numpy() == pytest.approx(expected)


def test_payload_log_has_inputs_outputs_and_version(server: Server, small_bundle: Any) -> None:
    httpx.post(
        f"{server.url}/v1/models/churn:predict",
        json={"instances": ROWS[:1]},
        headers={"x-request-id": "payload-check"},
        timeout=10,
    ).raise_for_status()
    lines = [json.loads(x) for x in server.extra["payload_log"].read_text().splitlines()]  # type: ignore[union-attr]
    record = next(r for r in lines if r["request_id"] == "payload-check")
    assert record["version"] == load_bundle(small_bundle).version
    assert record["rows"] == 1 and record["inputs"]["contract"] == ["Month-to-month"]
    assert record["outputs"]["label"] in (["Yes"], ["No"])
    assert 0.0 <= record["outputs"]["probability"][0] <= 1.0


@pytest.mark.parametrize(
    ("example", "path"),
    [
        ("v1-request.json", "/v1/models/churn:predict"),
        ("v1-request-lists.json", "/v1/models/churn:predict"),
        ("v2-request.json", "/v2/models/churn/infer"),
    ],
)
def test_example_requests_in_serving_dir_work(server: Server, example: str, path: str) -> None:
    body = (Path(__file__).parents[3] / "serving" / "examples" / example).read_bytes()
    response = httpx.post(
        f"{server.url}{path}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    result = response.json()
    rows = result["predictions"] if "predictions" in result else result["outputs"][0]["data"]
    assert len(rows) == (1 if "lists" in example else 2)
