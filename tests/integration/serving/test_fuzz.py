"""Property-based fuzzing: requests generated over the published OpenAPI document (schemathesis,
valid and invalid ones) and over the V2 gRPC messages (hypothesis). Nothing may answer 5xx (or
gRPC INTERNAL/UNKNOWN), every error has the ``{"error": ...}`` body, every status is documented,
and a good request still works afterwards.

The budget is fixed (examples per operation) so the test takes well under a minute.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from ._grpc_raw import call
from .conftest import Server
from .test_bad_requests import GOOD, good_request_succeeds

pytestmark = pytest.mark.integration

EXAMPLES = 25  # per operation and generation mode
GRPC_EXAMPLES = 150
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _fuzz(
    client: httpx.Client,
    operation: Any,
    mode: Any,
    statuses: Counter[int],
    problems: list[str],
) -> None:
    """Send ``EXAMPLES`` generated requests for one operation; note every broken promise."""
    documented = {int(s) for s in operation.definition.raw["responses"]}

    @_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
        response = client.request(
            case.method,
            case.formatted_path,
            params=kwargs.get("params"),
            headers=kwargs.get("headers"),
            json=kwargs.get("json"),
            content=kwargs.get("data"),
        )
        statuses[response.status_code] += 1
        label = f"{case.method} {case.formatted_path} -> {response.status_code}"
        if response.status_code >= 500 and response.status_code != 503:
            problems.append(f"{label}: {response.text[:300]}")
        if response.status_code not in documented:
            problems.append(f"{label}: status not documented")
        if response.status_code >= 400 and set(response.json()) != {"error"}:
            problems.append(f"{label}: body {response.text[:300]}")

    try:
        run()
    except Unsatisfiable:  # an operation without parameters or body has no invalid form
        assert mode == schemathesis.GenerationMode.NEGATIVE


def test_fuzzing_the_openapi_document_finds_no_5xx(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    operations = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for result in schema.get_all_operations():
            operations += 1
            for mode in schemathesis.GenerationMode:
                _fuzz(client, result.ok(), mode, statuses, problems)
    total = sum(statuses.values())
    print(f"\nfuzzed {operations} operations, {total} requests: {dict(sorted(statuses.items()))}")
    assert operations >= 14
    assert total >= 200
    assert not problems, "\n".join(problems[:20])
    assert not [s for s in statuses if s >= 500]
    good_request_succeeds(server)


_NAMES = st.sampled_from([*GOOD, "", "churn", "x" * 300, "\u00e9"])
_DATATYPES = st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "UINT8", "FP16", "", "X"])
_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def _infer_requests(draw: st.DrawFn) -> bytes:
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["churn", "churn", "other", ""])),
        model_version=draw(st.sampled_from(["", "", "v0"])),
        id=draw(st.text(max_size=5)),
    )
    for _ in range(draw(st.integers(0, 10))):
        tensor = request.inputs.add(
            name=draw(_NAMES),
            datatype=draw(_DATATYPES),
            shape=draw(st.lists(_INT64 | st.integers(0, 3), max_size=3)),
        )
        kind = draw(st.sampled_from(["fp64", "int64", "bytes", "bool", "none"]))
        if kind == "fp64":
            tensor.contents.fp64_contents.extend(draw(st.lists(st.floats(), max_size=4)))
        elif kind == "int64":
            tensor.contents.int64_contents.extend(draw(st.lists(_INT64, max_size=4)))
        elif kind == "bytes":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=4)))
        elif kind == "bool":
            tensor.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=4)))
    if draw(st.booleans()):
        for _ in request.inputs:
            request.raw_input_contents.append(draw(st.binary(max_size=24)))
    payload = request.SerializeToString()
    if draw(st.integers(0, 9)) == 0:  # now and then, bytes that are not a message at all
        payload = draw(st.binary(max_size=64))
    return payload


def test_fuzzing_grpc_finds_no_internal_errors(server: Server) -> None:
    codes: Counter[str] = Counter()
    problems: list[str] = []
    methods = ["ModelInfer", "ModelMetadata", "ModelReady", "ServerMetadata"]

    @settings(
        max_examples=GRPC_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(method=st.sampled_from(methods), payload=_infer_requests(), garbage=st.binary())
    def run(method: str, payload: bytes, garbage: bytes) -> None:
        code, details, _ = call(
            server.grpc_url, method, payload if method == "ModelInfer" else garbage
        )
        codes[code.name] += 1
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            problems.append(f"{method}: {code.name} {details[:200]}")

    run()
    print(f"\ngRPC: {sum(codes.values())} calls: {dict(sorted(codes.items()))}")
    assert sum(codes.values()) == GRPC_EXAMPLES
    assert not problems, "\n".join(problems[:20])
    good_request_succeeds(server)
