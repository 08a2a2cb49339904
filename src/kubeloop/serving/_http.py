"""HTTP guards added to KServe's FastAPI app: body-size limit (413) and 400 for bad V2 bodies.

KServe answers FastAPI's request-validation errors (a V2 body that is not JSON, or lacks
``inputs``/``shape``/...) with FastAPI's default 422; the bad-input policy says 400, so a handler
turns them into 400 with a readable message naming the input. The body limit is enforced before
any parsing: the declared ``Content-Length`` first, then the bytes actually received.

Every 400/413 is counted once in ``kubeloop_invalid_requests_total``: the model counts the
mistakes it finds itself (with a precise reason and the version it routed the request to) and
marks the request's :class:`~kubeloop.serving._context.HttpExchange`; the middleware counts the
rest as ``malformed_request`` under the champion's version. Every answer of a request the model
routed carries the ``x-kubeloop-model-version`` header naming the version that answered.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kubeloop.serving import metrics
from kubeloop.serving._context import current_exchange, open_exchange

__all__ = ["VERSION_HEADER", "answer", "install_http_guards", "show"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")
_HEADER_LENGTH = b"inference-header-content-length"
VERSION_HEADER = b"x-kubeloop-model-version"
_NOT_JSON = "The body is not valid JSON"
_NOT_JSON_TOKENS = re.compile(rb"(?<![\w\"])(-?Infinity|NaN)(?![\w\"])")


def show(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: what a message may echo of client input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def answer(
    send: Send,
    status: int,
    error: str | None,
    *,
    body: Any = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send one complete JSON answer: ``{"error": error}``, or ``body`` when ``error`` is None."""
    content = orjson.dumps({"error": error} if error is not None else body)
    headers = [_JSON, (b"content-length", str(len(content)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class _BodyLimit:
    """Pure ASGI middleware: 413 for bodies over ``limit`` bytes; counts unmarked 400s."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        model: str,
        body_timeout: float,
        version: Callable[[], str],
    ) -> None:
        self.app = app
        self.limit = limit
        self.model = model
        self.body_timeout = body_timeout
        self.version = version

    def _count(self, reason: str) -> None:
        metrics.INVALID_REQUESTS.labels(self.model, self.version(), reason).inc()

    async def _refuse(self, send: Send, size: str) -> None:
        self._count("too_large")
        await answer(
            send,
            413,
            f"Request body is {size} bytes; the server accepts at most {self.limit} "
            "bytes (--max-request-bytes). Split the rows over several requests.",
            extra=[_CLOSE],
        )

    async def _malformed(self, send: Send, message: str) -> None:
        self._count("malformed_request")
        await answer(send, 400, message)

    async def _read(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or ``None`` once refused (413, 408) or the client went away."""
        chunks: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # client went away
                        return None
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > self.limit:
                        await self._refuse(send, f"more than {self.limit}")
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            self._count("timeout")
            await answer(
                send,
                408,
                f"The request body did not arrive within {self.body_timeout:g} s "
                f"(--body-timeout); {total} bytes were received.",
                extra=[_CLOSE],
            )
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = open_exchange()
        json_typed = binary = False
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send, value.decode())
                return
            if key == b"content-type":
                json_typed = value.startswith(b"application/json")
            binary = binary or key == _HEADER_LENGTH
        if binary and json_typed:  # the binary extension whatever Content-Type says
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/octet-stream")]}
        elif not (json_typed or binary) and scope["method"] == "POST":
            # An inference body is JSON whatever its Content-Type says (tritonclient sends none,
            # curl -d sends a form type); otherwise FastAPI would hand KServe raw bytes and
            # KServe would refuse them without saying why.
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, _JSON]}
        body = await self._read(receive, send)
        if body is None:
            return
        path: str = scope["path"]
        infer = path.endswith("/infer")
        parsed = None
        if scope["method"] == "POST" and (infer or path.endswith((":predict", ":explain"))):
            problem, parsed = _check_body(scope["headers"], body, infer)
            if problem is not None and problem.startswith(_NOT_JSON):
                wide = _wide_json(body)  # valid JSON with integers orjson cannot hold?
                if wide is not None:
                    body = wide
                    problem, parsed = _check_body(scope["headers"], body, infer)
                    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                    length = (b"content-length", str(len(body)).encode())
                    scope = {**scope, "headers": [*headers, length]}
            if problem is not None:
                await self._malformed(send, problem)
                return
        if parsed is not None:
            # Well-formed V2 JSON goes to KServe's orjson reader (the binary-extension entry
            # with an empty binary part) instead of FastAPI's json.loads + pydantic: 5-7x faster
            # for large requests. Anything else keeps FastAPI's validation and its 400 answers.
            # The body was parsed here already: KServe gets it without the input values
            # (empty "data" lists, so it does not parse them again) and the model takes them
            # from this request's exchange (RequestContext.v2_data).
            exchange.v2_data = [item["data"] for item in parsed["inputs"]]
            body = orjson.dumps(
                {**parsed, "inputs": [{**item, "data": []} for item in parsed["inputs"]]}
            )
            size = str(len(body)).encode()
            headers = [
                (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")
            ]
            headers += [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", size),
                (b"inference-header-content-length", size),
            ]
            scope = {**scope, "headers": headers}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 400 and not exchange.rejected:
                    self._count("malformed_request")
                headers = list(message.get("headers", []))
                names = {key.lower() for key, _ in headers}
                extra = []
                if infer and not names & {b"content-type", b"inference-header-content-length"}:
                    # V2 JSON answers are serialised by the model and sent by KServe as bytes
                    extra.append(_JSON)
                if exchange.version is not None:
                    extra.append((VERSION_HEADER, exchange.version.encode()))
                if extra:
                    message = {**message, "headers": [*headers, *extra]}
            await send(message)

        await self.app(scope, replay, counting_send)


def _check_body(
    headers: list[tuple[bytes, bytes]], body: bytes, infer: bool
) -> tuple[str | None, dict[str, Any] | None]:
    """``(problem, plain)``: what is wrong with an inference body (``None``: nothing found here),
    and the parsed body when it is a V2 JSON request KServe's byte reader can take."""
    for key, value in headers:
        if key == _HEADER_LENGTH:
            return _binary_problem(value, body), None
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _json_problem(body, exc), None
    return None, _plain_v2_json(request) if infer else None


def _wide_json(body: bytes) -> bytes | None:
    """``body`` re-encoded for orjson when it is JSON that orjson cannot read only because of
    integers beyond 64 bits (they become floats); ``None`` when it is not JSON at all."""

    def refuse(token: str) -> Any:
        raise ValueError(token)

    def narrow(value: Any) -> Any:
        if type(value) is int and not -(2**63) <= value < 2**64:
            return float(value)  # OverflowError beyond the float range
        if type(value) is float and not math.isfinite(value):
            raise ValueError("1e400 and the like overflow to infinity")  # never null
        if type(value) is list:
            return [narrow(v) for v in value]
        if type(value) is dict:
            return {k: narrow(v) for k, v in value.items()}
        return value

    try:
        return orjson.dumps(narrow(json.loads(body, parse_constant=refuse)))
    except (ValueError, RecursionError, OverflowError, orjson.JSONEncodeError):
        return None


def _json_problem(body: bytes, error: orjson.JSONDecodeError) -> str:
    """The 400 message for a body that is not JSON (one rule for V1 and V2)."""
    reason = str(error)
    if _NOT_JSON_TOKENS.search(body[max(0, error.pos - 10) : error.pos + 10]):
        reason = (
            "NaN and Infinity are not JSON numbers; send null for a missing value (it is "
            "imputed), and only finite numbers"
        )
    return f"{_NOT_JSON}: {show(reason, 200)}."


def _binary_problem(value: bytes, body: bytes) -> str | None:
    """The 400 message for a bad binary-extension header (None when it is usable)."""
    text = value.decode("latin-1").strip()
    if not text.isdigit() or int(text) > len(body):
        return (
            f"Header Inference-Header-Content-Length is {show(text)}; it must be the byte "
            f"length of the JSON part of the body (a whole number at most {len(body)})."
        )
    return _binary_tensors_problem(body, int(text))


def _binary_tensors_problem(body: bytes, json_length: int) -> str | None:
    """The 400 message for a binary-extension body KServe cannot read (None when it can).

    The body is read here exactly as KServe will read it; any failure (a JSON part that is not
    an object of inputs, a BYTES element whose length prefix runs past its data, a size that
    does not match the shape) is the client's.
    """
    from kserve.protocol.infer_type import InferRequest

    try:
        request = InferRequest.from_bytes(body, json_length, "model")
        for tensor in request.inputs:
            tensor.as_numpy()
    except Exception as exc:  # every way the client's bytes can be wrong
        reason = str(exc) or type(exc).__name__
        return (
            f"The binary request cannot be read ({type(exc).__name__}: {show(reason, 200)}). "
            'Send a JSON part {"inputs": [{"name", "shape", "datatype", "parameters": '
            '{"binary_data_size"}}]} of Inference-Header-Content-Length bytes, then each '
            "tensor's bytes (BYTES elements: a 4-byte little-endian length, then the bytes)."
        )
    return None


def _plain_v2_json(request: Any) -> dict[str, Any] | None:
    """``request`` when it is a V2 JSON request whose every field KServe's byte reader can
    take; else ``None``."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        return None
    if not isinstance(request.get("id", ""), str):
        return None
    if not isinstance(request.get("parameters", {}), dict):
        return None
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        return None
    plain = all(
        isinstance(i, dict)
        and isinstance(i.get("name"), str)
        and isinstance(i.get("shape"), list)
        and isinstance(i.get("datatype"), str)
        and isinstance(i.get("data"), list)
        and isinstance(i.get("parameters", {}), dict)
        for i in request["inputs"]
    )
    return request if plain else None


def _describe(error: RequestValidationError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    raw_inputs = body.get("inputs")
    inputs: list[Any] = raw_inputs if isinstance(raw_inputs, list) else []
    parts = []
    # FastAPI tries InferenceRequest, then raw bytes; the bytes branch's error says nothing.
    errors = [e for e in error.errors() if "bytes" not in tuple(e.get("loc", ()))[:2]]
    for item in (errors or error.errors())[:3]:
        location = [p for p in item.get("loc", ()) if p not in ("body", "InferenceRequest")]
        if item.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({item.get('msg', '')})")
            continue
        if len(location) >= 2 and location[0] == "inputs" and isinstance(location[1], int):
            index = location[1]
            named = inputs[index] if index < len(inputs) else None
            name = named.get("name") if isinstance(named, dict) else None
            where = f"input {name!r}" if name else f"input #{index}"
            field = ".".join(str(p) for p in location[2:]) or "the input"
            parts.append(f"{where}: {field}: {item.get('msg', 'invalid')}")
        else:
            where = ".".join(str(p) for p in location) or "request"
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return (
        "Invalid V2 inference request: "
        + "; ".join(parts)
        + '. Send {"inputs": [{"name", "shape", "datatype", "data"}, ...]}.'
    )


def install_http_guards(
    app: FastAPI,
    *,
    model: str,
    max_body_bytes: int,
    body_timeout: float = 30.0,
    version: Callable[[], str] = lambda: "",
) -> None:
    """Add the body limit and the 400 handler to KServe's app (before the server starts).

    Args:
        app: ``kserve.model_server.app``.
        model: The served model name (label of the invalid-request counter).
        max_body_bytes: Largest accepted request body.
        body_timeout: Seconds a client gets to send the body (then 408).
        version: The champion's version now (the ``version`` label of refusals counted
            before the model routed the request).
    """
    if getattr(app.state, "kubeloop_guards", False):
        return
    app.state.kubeloop_guards = True
    app.add_middleware(
        _BodyLimit, limit=max_body_bytes, model=model, body_timeout=body_timeout, version=version
    )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        metrics.INVALID_REQUESTS.labels(model, version(), "malformed_request").inc()
        exchange = current_exchange()
        if exchange is not None:
            exchange.rejected = True
        return JSONResponse(status_code=400, content={"error": _describe(exc)})

    app.add_exception_handler(RequestValidationError, validation_error)
