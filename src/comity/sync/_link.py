"""A replica's line to another store, over the :class:`~comity.runtime.Transport` seam.

``connect(location)`` picks the transport: a comity server (``http://…``) over HTTP, or
another store (a path, or ``postgresql://…``) opened in this process and answered by its
:class:`~comity.sync.Endpoint` directly.  Tests and the simulator hand in their own
transport (lossy, duplicating, partitioned).  A :class:`Link` counts the bytes each way
and turns a peer that cannot be reached into :class:`~comity.errors.Unavailable`.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ComityError, Invalid, Unavailable
from ..runtime import Clock, HttpTransport, InProcessTransport, Rng, Transport, Unreachable
from ..store import Store
from ..store import open as open_store
from ._endpoint import Endpoint
from ._wire import error_in, size_of

__all__ = ["Link", "connect", "is_server", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 60.0


def is_server(location: str) -> bool:
    return location.strip().lower().startswith(("http://", "https://"))


class Link:
    """Messages to one peer.  ``call`` returns the peer's answer or raises the error it sent
    (as the comity error it names); a peer that cannot be reached is Unavailable."""

    def __init__(self, transport: Transport, src: str, dest: str, *, label: str | None = None, peer: Store | None = None) -> None:
        self.transport = transport
        self.src = src
        self.dest = dest
        self.label = label or dest
        self.peer = peer  # a store opened in this process for the link, closed with it
        self.sent_bytes = 0
        self.received_bytes = 0
        self.messages = 0

    @property
    def bytes(self) -> int:
        return self.sent_bytes + self.received_bytes

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """The raw answer (``{"ok": …}``); Unavailable if the peer cannot be reached."""
        self.sent_bytes += size_of(message)
        self.messages += 1
        try:
            answer = self.transport.request(self.src, self.dest, message)
        except Unreachable as e:
            raise Unavailable(f"{self.label} cannot be reached ({e})", peer=self.label, unreachable=True, reason=str(e)) from None
        self.received_bytes += size_of(answer)
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ComityError(f"{self.label} answered something that is not a replication answer; is it a comity server?")
        return answer

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        answer = self.request(message)
        if answer["ok"] is not True:
            raise error_in(answer.get("error"), self.label)
        return answer

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
            self.peer = None


def connect(
    location: str,
    *,
    src: str,
    auth: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    clock: Clock | None = None,
    rng: Rng | None = None,
) -> Link:
    """A link to the store or server at ``location``."""
    if not isinstance(location, str) or not location.strip():
        raise Invalid("with", "name the store to sync with: a path, a postgresql:// URL or a server's http:// URL")
    if is_server(location):
        token = auth or os.environ.get("COMITY_UPSTREAM_AUTH") or None
        return Link(HttpTransport(auth=token, timeout=timeout), src, location.strip())
    from ..store import locate

    where, _ = locate(location)
    if not isinstance(where, str) and not where.exists():
        reason = f"there is no store at {where}"
        raise Unavailable(f"{location} cannot be reached ({reason})", peer=location, unreachable=True, reason=reason)
    try:
        if isinstance(where, str):
            # A database: waiting for a connection (a link that refuses or hangs) and for its
            # write lock is bounded by the link's timeout, so a cut-off replica fails fast.
            peer = open_store(location, clock=clock, rng=rng, busy_timeout=min(timeout, 30.0))
        else:
            peer = open_store(location, clock=clock, rng=rng)
    except Unavailable as e:
        raise Unavailable(f"{location} cannot be reached ({e.message})", peer=location, unreachable=True, reason=e.message) from None
    transport = InProcessTransport()
    transport.register(peer.location, Endpoint(peer).handle)
    return Link(transport, src, peer.location, label=location, peer=peer)
