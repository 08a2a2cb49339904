"""A header deadline for uvicorn's HTTP protocols: slow clients cannot hold connections.

uvicorn times out idle keep-alive connections, but a client that sends one header byte every
few seconds keeps its connection (and a file descriptor) forever: any byte cancels the
keep-alive timer. Here each request's headers must be complete within ``header_timeout``
seconds of the connection opening or of the request's first byte; otherwise the server answers
408 with an ``{"error": ...}`` body and closes the connection. (The body has its own deadline,
``--body-timeout``, in :mod:`._http`.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

__all__ = ["header_deadline_protocol"]


def _timeout_response(seconds: float) -> bytes:
    body = orjson.dumps(
        {
            "error": f"The request headers did not arrive within {seconds:g} s "
            "(--header-timeout); the connection is closed."
        }
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def header_deadline_protocol(base: type[Any], header_timeout: float) -> type[Any]:
    """A subclass of uvicorn's protocol class ``base`` with the header deadline."""
    response = _timeout_response(header_timeout)

    class HeaderDeadline(base):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            waiting = before is None or before.response_complete
            if waiting and self._deadline is None:
                self._arm()  # the first byte of a request: its headers are now due
            super().data_received(data)
            if self.cycle is not before:  # a request's headers are complete
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    HeaderDeadline.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline
