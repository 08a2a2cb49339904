"""The request context: what one inference request carries besides its body.

The request path (:class:`~kubeloop.serving.model.BundleModel`) takes a :class:`RequestContext`
explicitly from step to step. It is built once per request, at the start of ``predict``/
``explain``, from what KServe hands the model (the body and the headers) and from the one
hand-off below.

The hand-off: the HTTP guard (:mod:`._http`, an ASGI middleware) and the model sit on either
side of KServe, and KServe's API passes the model nothing but the decoded body and a copy of the
headers: no request object, no ASGI scope. So the two sides share one :class:`HttpExchange` per
HTTP request through one context variable, in this module only: the guard opens it
(:func:`open_exchange`) and hands over the ``data`` values of a V2 JSON body it parsed already
(KServe then reads the body without them, instead of parsing them again); the model notes on it
that a refusal was counted with its precise reason, so that the guard does not count the 400
again, and which version it routed the request to (the guard's response header). gRPC requests
and direct calls have no exchange.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from kserve.protocol.infer_type import InferRequest

__all__ = ["HttpExchange", "Protocol", "RequestContext", "current_exchange", "open_exchange"]

Protocol = Literal["v1", "v2", "grpc"]


class HttpExchange:
    """What the HTTP guard and the model tell each other about one HTTP request.

    Attributes:
        v2_data: The ``data`` list of every input of a V2 JSON body, in request order, when the
            guard parsed the body and passed KServe a copy without them; else ``None``.
        rejected: Whether the model refused the request and counted the refusal itself.
        version: The bundle version the model routed the request to (the guard sends it as the
            ``x-kubeloop-model-version`` response header); ``None`` before routing.
    """

    __slots__ = ("rejected", "v2_data", "version")

    def __init__(self) -> None:
        self.v2_data: list[Any] | None = None
        self.rejected = False
        self.version: str | None = None


# The one hand-off across KServe (see the module docstring); set per HTTP request by the guard.
_EXCHANGE: contextvars.ContextVar[HttpExchange | None] = contextvars.ContextVar(
    "kubeloop_http_exchange", default=None
)


def open_exchange() -> HttpExchange:
    """Start the exchange of the current HTTP request (the HTTP guard, before KServe runs)."""
    exchange = HttpExchange()
    _EXCHANGE.set(exchange)
    return exchange


def current_exchange() -> HttpExchange | None:
    """The exchange of the current HTTP request; ``None`` outside one (gRPC, direct calls)."""
    return _EXCHANGE.get()


class RequestContext(NamedTuple):
    """What one inference request carries besides its body, for every step of the path.

    Immutable, and a tuple: made on every request, it costs a fraction of a frozen dataclass.

    Attributes:
        protocol: ``v1`` (a JSON body), ``v2`` (a V2 request over REST) or ``grpc``.
        v2_id: The V2 request's ``id`` (``None`` when absent, and for V1).
        headers: The request headers KServe passed (``None`` for direct calls).
        v2_data: The V2 input values the HTTP guard parsed already (see :class:`HttpExchange`).
        exchange: The HTTP request's exchange, or ``None``.
    """

    protocol: Protocol
    v2_id: str | None
    headers: Mapping[str, str] | None
    v2_data: list[Any] | None
    exchange: HttpExchange | None

    @classmethod
    def of(cls, payload: Any, headers: Mapping[str, str] | None) -> RequestContext:
        """The context of a request KServe passed to the model (``payload``: a V1 body or a
        V2 ``InferRequest``)."""
        exchange = _EXCHANGE.get()
        if not isinstance(payload, InferRequest):
            return cls("v1", None, headers, None, exchange)
        v2_id = str(payload.id) if payload.id else None
        if payload.from_grpc:
            return cls("grpc", v2_id, headers, None, None)
        data = None if exchange is None else exchange.v2_data
        return cls("v2", v2_id, headers, data, exchange)

    def mark_rejected(self) -> None:
        """Note that this request's refusal was counted already (with its reason)."""
        if self.exchange is not None:
            self.exchange.rejected = True

    def request_id(self) -> str:
        """The id under which the request is logged: the V2 request's id, else the
        ``x-request-id`` header, else a new one."""
        if self.v2_id:
            return self.v2_id
        headers = self.headers
        if headers and headers.get("x-request-id"):
            return headers["x-request-id"]
        return uuid.uuid4().hex
