"""Request decoding: V1/V2 bodies to feature columns, and every refusal with its reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from kubeloop.bundle.schema import FeatureInfo, Schema
from kubeloop.serving.codec import RequestDecoder, RequestError

SCHEMA = Schema(
    features=(
        FeatureInfo("tenure", "numeric", minimum=0.0, maximum=72.0),
        FeatureInfo("contract", "categorical", categories=("Month", "Year")),
        FeatureInfo("senior", "binary", categories=("0", "1")),
    ),
    target="churned",
    task="classification",
    classes=("No", "Yes"),
)
ROW = {"tenure": 3, "contract": "Month", "senior": "1"}


@pytest.fixture
def decoder() -> RequestDecoder:
    return RequestDecoder(SCHEMA)


def test_v1_single_row_fast_path(decoder: RequestDecoder) -> None:
    row = decoder.v1_row({"instances": [{**ROW, "tenure": None}]})
    assert row is not None and row["contract"] == "Month" and np.isnan(row["tenure"])
    assert decoder.v1_row({"instances": [list(ROW.values())]}) == {**ROW, "tenure": 3.0}
    # anything else goes to the general path (which decodes it or names the mistake)
    for body in (
        {"instances": [ROW, ROW]},
        {"instances": [{**ROW, "tenure": True}]},
        {"instances": [{**ROW, "tenure": "3"}]},
        {"instances": [{**ROW, "tenure": float("inf")}]},
        {"instances": [{**ROW, "contract": 1}]},
        {"instances": [{"tenure": 3, "contract": "Month"}]},
        {"instances": [{**ROW, "extra": 1}]},
        {"instances": [[3, "Month"]]},
        [ROW],
    ):
        assert decoder.v1_row(body) is None, body


def test_v1_objects_and_lists_give_the_same_columns(decoder: RequestDecoder) -> None:
    by_name, rows = decoder.from_v1({"instances": [ROW, {**ROW, "tenure": None}]})
    by_order, _ = decoder.from_v1({"instances": [list(ROW.values()), [None, "Month", "1"]]})
    assert rows == 2
    for name in ROW:
        np.testing.assert_array_equal(by_name[name], by_order[name])
    assert by_name["tenure"].dtype == np.float64 and np.isnan(by_name["tenure"][1])
    assert by_name["contract"] == ["Month"] * 2  # categorical columns: lists of the values sent


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        ([ROW], "malformed_request", r'"instances"'),
        ({"instances": []}, "malformed_request", r"non-empty list"),
        ({"instances": [1]}, "malformed_request", r"Instance 0 is int"),
        ({"instances": [ROW, [3, "Month", "1"]]}, "malformed_request", r"Instance 1 is list"),
        ({"instances": [{"tenure": 3, "senior": "1"}]}, "missing_feature", r"'contract'"),
        ({"instances": [{**ROW, "extra": 1}]}, "unknown_feature", r"'extra'.*tenure, contract"),
        ({"instances": [[3, "Month"]]}, "wrong_shape", r"2 values.*tenure, contract, senior"),
        ({"instances": [{**ROW, "tenure": "3"}]}, "wrong_type", r"'tenure' takes a number"),
        ({"instances": [{**ROW, "tenure": False}]}, "wrong_type", r"'tenure'.*bool"),
        ({"instances": [{**ROW, "contract": ["Month"]}]}, "wrong_type", r"'contract'.*list"),
        ({"instances": [{**ROW, "tenure": float("inf")}]}, "wrong_type", r"'tenure' is infinite"),
    ],
)
def test_v1_refusals_name_the_problem(
    decoder: RequestDecoder, body: Any, kind: str, message: str
) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        decoder.from_v1(body)
    assert caught.value.kind == kind


def _request(*inputs: InferInput) -> InferRequest:
    return InferRequest(model_name="m", infer_inputs=list(inputs))


def _inputs(rows: int = 1, **overrides: InferInput) -> list[InferInput]:
    base = {
        "tenure": InferInput("tenure", [rows], "FP64", [3.0] * rows),
        "contract": InferInput("contract", [rows], "BYTES", ["Month"] * rows),
        "senior": InferInput("senior", [rows], "INT64", [1] * rows),
    }
    base.update(overrides)
    return list(base.values())


def test_v2_json_binary_and_column_shapes(decoder: RequestDecoder) -> None:
    columns, rows = decoder.from_v2(_request(*_inputs(2)))
    assert rows == 2 and columns["tenure"].tolist() == [3.0, 3.0]
    assert columns["senior"] == [1, 1]  # normalised to "1" by the fast transform
    binary = InferInput("tenure", [2, 1], "FP32")
    binary.set_data_from_numpy(np.array([[1.5], [2.5]], dtype=np.float32))
    text = InferInput("contract", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"Month", b"Year"], dtype=object))
    columns, _ = decoder.from_v2(_request(*_inputs(2, tenure=binary, contract=text)))
    assert columns["tenure"].tolist() == [1.5, 2.5]
    assert columns["contract"] == ["Month", "Year"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Month", "Year", "Month"], ["Month", "Year", "Month"]),  # all trained: no type pass
        (["Month", None, "Weekly"], ["Month", None, "Weekly"]),  # missing and unseen: checked
        ([b"Month", "Year", b"Year"], ["Month", "Year", "Year"]),  # bytes are decoded
    ],
)
def test_v2_bytes_with_known_categories(values: list[Any], expected: list[Any]) -> None:
    known = RequestDecoder(SCHEMA, {"contract": ("Month", "Year"), "senior": ("0", "1")})
    rows = len(values)
    contract = InferInput("contract", [rows], "BYTES", values)
    for decoder in (known, RequestDecoder(SCHEMA)):
        columns, _ = decoder.from_v2(_request(*_inputs(rows, contract=contract)))
        assert columns["contract"] == expected


@pytest.mark.parametrize("bad", [{"a": 1}, ["Month"], float("inf")])
def test_v2_bytes_with_known_categories_still_refuses_wrong_types(bad: Any) -> None:
    known = RequestDecoder(SCHEMA, {"contract": ("Month", "Year")})
    contract = InferInput("contract", [2], "BYTES", ["Month", bad])
    with pytest.raises(RequestError) as error:
        known.from_v2(_request(*_inputs(2, contract=contract)))
    assert error.value.kind == "wrong_type" and "'contract'" in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "kind", "message"),
    [
        ({"extra": InferInput("extra", [1], "FP64", [1.0])}, "unknown_feature", r"'extra'"),
        ({"tenure": InferInput("tenure", [1], "BYTES", ["3"])}, "wrong_datatype", r"'tenure'"),
        (
            {"contract": InferInput("contract", [1], "STRING", ["x"])},
            "wrong_datatype",
            r"'contract'",
        ),
        ({"tenure": InferInput("tenure", [1, 2], "FP64", [1.0, 2.0])}, "wrong_shape", r"'tenure'"),
        (
            {"tenure": InferInput("tenure", [1], "FP64", [1.0, 2.0])},
            "wrong_shape",
            r"'tenure' declares",
        ),
        (
            {"contract": InferInput("contract", [2], "BYTES", ["a", "b"])},
            "wrong_shape",
            r"'contract' has 2",
        ),
        ({"tenure": InferInput("tenure", [1], "FP64", ["x"])}, "wrong_type", r"'tenure' takes"),
        (
            {"contract": InferInput("contract", [1], "BYTES", [b"\xff"])},
            "wrong_type",
            r"'contract'.*UTF-8",
        ),
    ],
)
def test_v2_refusals_name_the_input(
    decoder: RequestDecoder, overrides: dict[str, InferInput], kind: str, message: str
) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        decoder.from_v2(_request(*_inputs(1, **overrides)))
    assert caught.value.kind == kind


def test_v2_missing_and_duplicate_inputs(decoder: RequestDecoder) -> None:
    with pytest.raises(RequestError, match="'senior' is missing") as caught:
        decoder.from_v2(_request(*_inputs()[:2]))
    assert caught.value.kind == "missing_feature"
    with pytest.raises(RequestError, match="'tenure' appears twice"):
        decoder.from_v2(_request(*_inputs(), InferInput("tenure", [1], "FP64", [1.0])))
