"""Raw gRPC calls to the V2 service with KServe's own protobuf messages (no tritonclient here:
its generated modules clash with KServe's in one process)."""

from __future__ import annotations

from typing import Any

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"


def call(url: str, method: str, request: Any, response: type[Any] | None = None) -> Any:
    """Call ``method`` with ``request`` (a message, or raw bytes sent as they are).

    Returns:
        ``(status code, details, response message or None)``.
    """
    reply = response or getattr(pb, f"{method}Response")
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    with grpc.insecure_channel(url) as channel:
        stub = channel.unary_unary(SERVICE + method, response_deserializer=reply.FromString)
        try:
            message = stub(payload, timeout=30)
        except grpc.RpcError as error:
            return error.code(), error.details(), None
    return grpc.StatusCode.OK, "", message


def infer_request(row: dict[str, Any], numeric: set[str], **fields: Any) -> Any:
    """A one-row ``ModelInferRequest`` with typed contents (FP64 / BYTES)."""
    request = pb.ModelInferRequest(model_name="churn", **fields)
    for name, value in row.items():
        tensor = request.inputs.add(name=name, shape=[1])
        if name in numeric:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(float(value))
        else:
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.append(str(value).encode())
    return request
