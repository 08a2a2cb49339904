"""What the HTTP server answers before KServe's routes see a request.

A pure ASGI middleware in front of KServe's FastAPI app (and of the body guard of
:mod:`._http`) that keeps the published surface honest:

- **model repository** (``/v2/repository/models/{name}/load|unload``): off by default, 403
  naming ``--enable-model-repository``; when on, kubeloop answers them itself: unload makes the
  model (and so every readiness route) not ready, load verifies the bundle exactly like a hot
  swap;
- **versions**: ``/v2/models/{name}/versions/{v}/...`` and ``?model_version=v`` are served when
  ``v`` is the served version and answered 404 naming the served version otherwise (KServe
  would answer 501);
- ``Content-Encoding`` other than identity (gzip, ...): 415, nothing is inflated;
- at most ``--max-concurrency`` inference requests in flight (0: no limit); more get 503 with
  ``Retry-After``;
- every error answer becomes ``{"error": "..."}`` (FastAPI's own 404/405/parse errors say
  ``{"detail": ...}``), capped to :data:`MAX_ERROR_CHARS` characters.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from kubeloop.serving import metrics
from kubeloop.serving._http import ASGIApp, Message, Receive, Scope, Send, answer, show

__all__ = [
    "MAX_ERROR_CHARS",
    "SurfaceLimits",
    "SurfacePolicy",
    "SurfaceState",
    "has_explainer",
]

MAX_ERROR_CHARS = 2000
_REPOSITORY = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")
_VERSIONED = re.compile(r"^/v2/models/([^/]+)/versions/([^/]+)(/infer|/ready)?$")
_INFERENCE_SUFFIXES = (":predict", ":explain", "/infer")


@dataclass(frozen=True)
class SurfaceLimits:
    """The HTTP surface settings of ``kubeloop serve``.

    Attributes:
        model_repository: Serve ``/v2/repository/models/{name}/load|unload``.
        max_concurrency: Inference requests in flight beyond which 503 is answered (0: none).
        header_timeout: Seconds a client gets to send a request's headers.
        body_timeout: Seconds a client gets to send a request's body.
    """

    model_repository: bool = False
    max_concurrency: int = 0
    header_timeout: float = 10.0
    body_timeout: float = 30.0


def has_explainer(model: Any) -> bool:
    """Whether ``model`` overrides KServe's ``explain`` (else ``:explain`` is not served)."""
    from kserve.model import Model

    return type(model).explain is not Model.explain


class SurfaceState:
    """What the HTTP middleware and the gRPC servicer share: the model, the settings and the
    number of inference requests in flight.

    Args:
        model: The served :class:`~kubeloop.serving.model.BundleModel`.
        limits: The surface settings.
    """

    def __init__(self, model: Any, limits: SurfaceLimits) -> None:
        self.model = model
        self.limits = limits
        self.in_flight = 0

    async def load_or_unload(self, load: bool) -> str | None:
        """Load (verified like a hot swap) or unload the model; the problem, if any."""
        if not load:
            self.model.unload()
            return None
        try:
            await asyncio.to_thread(self.model.load)
        except Exception as exc:  # a broken bundle: refused, nothing else changes
            return f"Model {self.model.name!r} was not loaded: {exc}"
        return None


class SurfacePolicy:
    """ASGI middleware: see the module docstring.

    Args:
        app: The wrapped app (the body guard around KServe's app).
        state: The shared state.
    """

    def __init__(self, app: ASGIApp, *, state: SurfaceState) -> None:
        self.app = app
        self.state = state
        self.model = state.model
        self.limits = state.limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        for key, value in scope["headers"]:
            if key == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                await self._refuse(
                    send,
                    415,
                    "unsupported_encoding",
                    f"Content-Encoding {show(value.decode('latin-1'))} is not accepted; send the "
                    "body uncompressed (nothing was inflated).",
                )
                return
        if path.startswith("/v2/repository/"):
            await self._repository(scope, send)
            return
        if path == "/v2/health/ready" and not self.model.ready:
            await answer(send, 503, f"Not ready: no model is loaded ({self.model.name!r}).")
            return
        if "/versions/" in path or b"model_version" in scope["query_string"]:
            rewritten = await self._version(scope, send)
            if rewritten is None:
                return
            scope = rewritten
        limit = self.limits.max_concurrency
        inference = limit > 0 and scope["method"] == "POST" and path.endswith(_INFERENCE_SUFFIXES)
        state = self.state
        if inference and state.in_flight >= limit:
            metrics.INVALID_REQUESTS.labels(
                self.model.name, self._champion_version(), "overloaded"
            ).inc()
            await answer(
                send,
                503,
                f"The server is busy: {limit} requests are in flight (--max-concurrency); "
                "retry after a second.",
                extra=[(b"retry-after", b"1")],
            )
            return
        if inference:
            state.in_flight += 1
        try:
            await self.app(scope, receive, _errors_as_json(send))
        finally:
            if inference:
                state.in_flight -= 1

    def _champion_version(self) -> str:
        """The champion's version (the label of refusals before routing); ``""``: none."""
        served = self.model.served
        return served.version if served is not None else ""

    async def _refuse(self, send: Send, status: int, reason: str, message: str) -> None:
        if reason:
            metrics.INVALID_REQUESTS.labels(self.model.name, self._champion_version(), reason).inc()
        await answer(send, status, message)

    async def _version(self, scope: Scope, send: Send) -> Scope | None:
        """``scope`` without the version (it is the served one), or ``None`` once answered."""
        path: str = scope["path"]
        query: list[tuple[str, str]] = []
        asked: str | None = None
        name: str | None = None
        found = _VERSIONED.match(path)
        if found is not None:
            name, asked, suffix = found.group(1), found.group(2), found.group(3) or ""
            path = f"/v2/models/{name}{suffix}"
        if b"model_version" in scope["query_string"]:
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            query = [(k, v) for k, v in pairs if k != "model_version"]
            asked = next((v for k, v in pairs if k == "model_version"), asked)
        served = self.model.served
        if asked is not None and (name is None or name == self.model.name):
            current = served.version if served is not None else None
            if asked != current:
                await self._refuse(
                    send,
                    404,
                    "unknown_version",
                    f"Model {self.model.name!r} has no version {show(asked)}; it serves version "
                    f"{current!r}. Leave the version out to use the served one.",
                )
                return None
        return {
            **scope,
            "path": path,
            "raw_path": path.encode(),
            "query_string": urlencode(query).encode(),
        }

    async def _repository(self, scope: Scope, send: Send) -> None:
        found = _REPOSITORY.match(scope["path"])
        if not self.limits.model_repository:
            await self._refuse(
                send,
                403,
                "repository_disabled",
                "The model-repository extension is off: this server does not load or unload "
                "models on request. Start it with --enable-model-repository to allow it.",
            )
            return
        if found is None or scope["method"] != "POST":
            await answer(
                send,
                404,
                "The model repository answers POST /v2/repository/models/{name}/load "
                "and /unload only.",
            )
            return
        name, verb = found.group(1), found.group(2)
        if name != self.model.name:
            await answer(
                send,
                404,
                f"Model {show(name)} does not exist; this server serves {self.model.name!r}.",
            )
            return
        problem = await self.state.load_or_unload(verb == "load")
        if problem is not None:
            await answer(send, 409, problem)
            return
        await answer(send, 200, None, body={"name": name, verb: True})


def _errors_as_json(send: Send) -> Send:
    """``send`` that turns every error answer into a capped ``{"error": "..."}`` body."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                await send(message)
                return
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = _error_body(b"".join(chunks), start["status"])
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _error_body(raw: bytes, status: int) -> bytes:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = raw.decode("utf-8", "replace")
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        message = parsed["error"]
    elif isinstance(parsed, dict) and "detail" in parsed:
        message = _detail(parsed["detail"], status)
    else:
        message = str(parsed) or f"HTTP {status}"
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return orjson.dumps({"error": message})


def _detail(detail: Any, status: int) -> str:
    text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
    hints: dict[int, Callable[[str], str]] = {
        404: lambda t: f"{t}: no such route; GET /openapi.json lists the routes served.",
        405: lambda t: f"{t}: this route does not take that method (see /openapi.json).",
        400: lambda t: (
            f"The body could not be read: {t}. Send JSON (application/json) with at "
            "most 1,000 levels of nesting and integers of at most 4,300 digits."
        ),
    }
    return hints[status](text) if status in hints else text
