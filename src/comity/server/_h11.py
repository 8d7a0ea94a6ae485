"""uvicorn's h11 protocol with what it lacks: a request-head timeout and a connection limit
(see :mod:`comity.server.limits`, which makes a subclass with the limits filled in)."""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS

__all__ = ["GuardedH11Protocol"]


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": "unavailable" if status == 503 else "invalid", "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head timeout and a connection limit
    (:func:`uvicorn_config` makes a subclass with the limits filled in)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    _header_timer: asyncio.TimerHandle | None = None
    _refused: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True
            transport.write(_raw_response(503, "Service Unavailable", "the server is at its connection limit; retry shortly"))
            transport.close()
            self.logger.warning("refused a connection: %d open, the limit is %d", len(self.connections), self.max_connections)
            return
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state is h11.IDLE:
            self._arm()  # a head has begun (or a kept-alive connection's next one): it has header_timeout
        else:
            self._disarm()  # the head is in

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is on its way (pipelining); its completion re-arms what is needed
        self.logger.warning("closed a connection that did not send a request head within %gs", self.header_timeout)
        self.transport.write(_raw_response(408, "Request Timeout", f"no complete request head within {self.header_timeout:g}s"))
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle between requests is the keep-alive timeout's; a new head arms this again.
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)


