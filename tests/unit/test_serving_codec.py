"""The codec: V1 and V2 bodies decoded and answers encoded, both ways round, and its 400s."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from kubeloop.bundle.schema import FeatureInfo, Schema
from kubeloop.serving.codec import (
    RequestDecoder,
    RequestError,
    output_columns,
    v1_explain_response,
    v1_response,
    v1_row_response,
    v2_response,
)

SCHEMA = Schema(
    features=(
        FeatureInfo("tenure", "numeric", minimum=0.0, maximum=72.0),
        FeatureInfo("contract", "categorical", categories=("Month", "Year")),
    ),
    target="churned",
    task="classification",
    classes=("No", "Yes"),
)
BINARY = np.array(["No", "Yes"], dtype=object)
THREE = np.array(["a", "b", "c"], dtype=object)


def _inputs(tenure: list[Any], contract: list[Any]) -> list[InferInput]:
    return [
        InferInput("tenure", [len(tenure)], "FP64", tenure),
        InferInput("contract", [len(contract)], "BYTES", contract),
    ]


def test_v1_round_trip_binary() -> None:
    decoder = RequestDecoder(SCHEMA)
    columns, rows = decoder.from_v1({"instances": [[3, "Month"], [None, "Year"]]})
    assert rows == 2 and np.isnan(columns["tenure"][1]) and columns["contract"] == ["Month", "Year"]
    raw = np.array([0.2, 0.7])
    outputs = output_columns(BINARY, (raw >= 0.5).astype(np.intp), raw)
    assert v1_response(BINARY, outputs, version="v9") == {
        "predictions": [
            {"label": "No", "probability": 0.2},
            {"label": "Yes", "probability": 0.7},
        ],
        "model_version": "v9",
    }


def test_v1_row_answer_equals_the_columnar_answer() -> None:
    """The fast path's scalars and the columnar arrays encode the same V1 answer."""
    multi = np.array([[0.1, 0.6, 0.3]])
    cases: list[tuple[np.ndarray, np.ndarray, int, float, list[float] | None]] = [
        (BINARY, np.array([0.7]), 1, 0.7, None),
        (THREE, multi, 1, 0.6, multi[0].tolist()),
        (np.array([], dtype=object), np.array([41.5]), 0, 41.5, None),
    ]
    for classes, raw, code, value, probabilities in cases:
        codes = None if not len(classes) else np.array([code])
        columnar = v1_response(classes, output_columns(classes, codes, raw), version="v")
        row = v1_row_response(classes.tolist(), code, value, probabilities, version="v")
        assert row == columnar


def test_output_columns_of_one_row_equal_those_of_an_array() -> None:
    raw = np.array([[0.1, 0.6, 0.3]])
    one, many = output_columns(THREE, 1, raw), output_columns(THREE, np.array([1]), raw)
    assert one["label"].tolist() == many["label"].tolist() == ["b"]
    assert output_columns(np.array([], dtype=object), 0, np.array([2.0])).keys() == {"prediction"}


def test_v2_json_round_trip() -> None:
    decoder = RequestDecoder(SCHEMA)
    request = InferRequest("churn", _inputs([3.0, None], ["Month", "Year"]), request_id="r-1")
    columns, rows = decoder.from_v2(request)
    assert rows == 2 and columns["contract"] == ["Month", "Year"]
    raw = np.array([0.2, 0.7])
    outputs = output_columns(BINARY, (raw >= 0.5).astype(np.intp), raw)
    body = v2_response(request, outputs, model="churn", version="v9", request_id="log-id")
    assert isinstance(body, bytes)
    answer = orjson.loads(body)
    assert answer["id"] == "r-1" and answer["model_version"] == "v9"
    assert answer["outputs"] == [
        {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["No", "Yes"]},
        {"name": "probability", "shape": [2], "datatype": "FP64", "data": [0.2, 0.7]},
    ]


def test_v2_answer_id_falls_back_to_the_logged_id() -> None:
    request = InferRequest("churn", _inputs([3.0], ["Month"]))
    outputs = output_columns(BINARY, np.array([0]), np.array([0.2]))
    body = v2_response(request, outputs, model="churn", version="v", request_id="log-id")
    assert isinstance(body, bytes) and orjson.loads(body)["id"] == "log-id"


def test_v2_grpc_round_trip() -> None:
    decoder = RequestDecoder(SCHEMA)
    wire = InferRequest("churn", _inputs([3.0, 4.0], ["Month", "Year"])).to_grpc()
    request = InferRequest.from_grpc(wire)
    columns, rows = decoder.from_v2(request)
    assert rows == 2 and columns["tenure"].tolist() == [3.0, 4.0]
    raw = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    response = v2_response(
        request,
        output_columns(THREE, raw.argmax(axis=1), raw),
        model="churn",
        version="v",
        request_id=None,
    )
    assert isinstance(response, InferResponse)
    back = InferResponse.from_grpc(response.to_grpc())
    by_name = {output.name: output for output in back.outputs}
    assert [v.decode() for v in by_name["label"].as_numpy().tolist()] == ["b", "a"]
    np.testing.assert_allclose(by_name["probability"].as_numpy(), raw)


def test_v2_values_handed_over_decode_like_the_tensors_own() -> None:
    """The HTTP guard's parsed ``data`` (KServe's tensors then hold none) gives the same
    columns and the same refusals."""
    decoder = RequestDecoder(SCHEMA)
    empty = InferRequest("churn", _inputs([], []))
    for tensor in empty.inputs:
        tensor.shape = [2]
    data = [[3.0, None], ["Month", "Year"]]
    handed, rows = decoder.from_v2(empty, data)
    own, _ = decoder.from_v2(InferRequest("churn", _inputs(*data)))
    assert rows == 2 and handed["contract"] == own["contract"]
    np.testing.assert_array_equal(handed["tenure"], own["tenure"])
    with pytest.raises(RequestError) as error:
        decoder.from_v2(empty, [[3.0, "x"], ["Month", "Year"]])
    assert str(error.value) == (
        "Feature 'tenure' takes a number (or null when unknown); got 'x' (str)."
    )
    assert error.value.kind == "wrong_type"


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (
            [],
            "malformed_request",
            'A V1 request is a JSON object {"instances": [...]}, one instance per row, each an '
            "object by feature name or a list in this order: tenure, contract.",
        ),
        (
            {"instances": []},
            "malformed_request",
            '"instances" must be a non-empty list with one entry per row.',
        ),
        (
            {"instances": [[1.0]]},
            "wrong_shape",
            "Instance 0 has 1 values; the model takes 2 features in this order: tenure, contract.",
        ),
        (
            {"instances": [{"tenure": 1.0}]},
            "missing_feature",
            "Instance 0 is missing feature 'contract'; send every feature (null for an unknown "
            "numeric value).",
        ),
        (
            {"instances": [{"tenure": float("inf"), "contract": "Month"}]},
            "wrong_type",
            "Feature 'tenure' is infinite; send a finite number (or null when unknown).",
        ),
    ],
)
def test_v1_refusals_keep_their_messages(body: Any, kind: str, message: str) -> None:
    with pytest.raises(RequestError) as error:
        RequestDecoder(SCHEMA).from_v1(body)
    assert (error.value.kind, str(error.value)) == (kind, message)


def test_v2_refusals_keep_their_messages() -> None:
    decoder = RequestDecoder(SCHEMA)
    with pytest.raises(RequestError) as error:
        decoder.from_v2(InferRequest("churn", _inputs([1.0], ["Month"])[:1]))
    assert (error.value.kind, str(error.value)) == (
        "missing_feature",
        "Input for feature 'contract' is missing; send one input tensor per feature.",
    )
    wrong = _inputs([1.0], ["Month"])
    wrong[1] = InferInput("contract", [1], "FP64", [1.0])
    wrong[0] = InferInput("tenure", [1], "BYTES", ["1"])
    with pytest.raises(RequestError) as error:
        decoder.from_v2(InferRequest("churn", wrong))
    assert str(error.value) == "Input 'tenure' has datatype BYTES; this feature takes FP64, " + (
        "FP32 or INT64."
    )


def test_explain_answer() -> None:
    assert v1_explain_response([{"bias": 0.1}], version="v") == {
        "explanations": [{"bias": 0.1}],
        "model_version": "v",
    }
