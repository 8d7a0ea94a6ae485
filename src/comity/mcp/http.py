"""``comity mcp --http``: the same tools over streamable HTTP (``/mcp``), many agents at once.

Each request carries ``Authorization: Bearer TOKEN``, an agent token issued by
``comity agent add NAME`` (:mod:`comity.server.auth`); the token, not a header the
client picks, says which agent acts.  A request without a valid token is answered 401
before it reaches the MCP layer.  Sessions are one per agent and ``Mcp-Session-Id``
(protocol revisions without session ids share one session per agent); one left idle
for an hour is dropped.  Against a comity server (``--store http://…``) the token is
passed on, and the server checks it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ..errors import ComityError, Invalid
from .server import McpSession, serve_http

if TYPE_CHECKING:
    from ..cli import Ctx

__all__ = ["HttpSessions", "BearerGate", "serve"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDLE_S = 3600.0
_NO_TOKEN = "send `Authorization: Bearer TOKEN` with your agent token (`comity agent add NAME` issues one)"


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class HttpSessions:
    """A session per (agent token, ``Mcp-Session-Id``), made on first use."""

    def __init__(self, identify: Callable[[str], str | None], make: Callable[[str, str], McpSession], *, idle: float = IDLE_S) -> None:
        self.identify = identify
        self.make = make
        self.idle = idle
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], McpSession] = {}

    def for_call(self, ctx: Context) -> McpSession:
        headers = ctx.headers or {}
        token = bearer(headers.get("authorization"))
        agent = self.identify(token) if token else None
        if token is None or agent is None:
            raise ToolError(f"unauthorized: {_NO_TOKEN}")
        key = (hashlib.sha256(token.encode()).hexdigest(), headers.get("mcp-session-id", ""))
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            self.live()  # drop idle sessions before adding one
            made = self.make(agent, token)
            with self._lock:
                session = self._sessions.setdefault(key, made)
            if session is not made:
                made.close()
        return session

    def live(self) -> list[McpSession]:
        now = time.monotonic()
        with self._lock:
            idle = [k for k, s in self._sessions.items() if now - s.last_call > self.idle]
            gone = [self._sessions.pop(k) for k in idle]
            live = list(self._sessions.values())
        for s in gone:
            s.close()
        return live


class BearerGate:
    """ASGI middleware: HTTP requests without a valid agent token get 401 (JSON)."""

    def __init__(self, app: ASGIApp, identify: Callable[[str], str | None]) -> None:
        self.app = app
        self.identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = bearer(headers.get("authorization"))
        agent = await anyio.to_thread.run_sync(self.identify, token) if token else None
        if agent is None:
            body = json.dumps({"error": "unauthorized", "message": f"no valid agent token: {_NO_TOKEN}"}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"), (b"content-length", str(len(body)).encode()),
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class _Cache:
    """Remembers who a token is for a few seconds (a rotated token stops working soon after)."""

    def __init__(self, identify: Callable[[str], str | None], ttl: float = 5.0) -> None:
        self._identify = identify
        self.ttl = ttl
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str | None, float]] = {}

    def __call__(self, token: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(token)
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        agent = self._identify(token)
        with self._lock:
            self._seen[token] = (agent, now)
        return agent


def serve(obj: Ctx, *, host: str, port: int, heartbeat: float) -> None:
    """Serve streamable HTTP, each agent authenticated by its own token."""
    from ..work import Agent

    identify: Callable[[str], str | None]
    make: Callable[[str, str], McpSession]
    if obj.remote:
        from ..remote import RemoteAgent

        url = obj.store_location or ""

        def identify_remote(token: str) -> str | None:
            try:
                return str(RemoteAgent(url, auth=token).whoami()["agent"])
            except ComityError:
                return None

        def make_remote(agent: str, token: str) -> McpSession:
            remote = RemoteAgent(url, auth=token, agent=agent)
            return McpSession(remote, agent, close=remote.close, session_id=remote.whoami().get("session"))

        identify, make = _Cache(identify_remote), make_remote
    else:
        try:
            from ..server.auth import Authenticator
        except ImportError:
            raise Invalid("--http", "agent tokens need comity's server module (comity.server.auth); install comity[server]") from None
        store = obj.store()
        authenticator = Authenticator(store)

        def identify_local(token: str) -> str | None:
            ident = authenticator.identify(token)
            return None if ident is None else ident.agent

        def make_local(agent: str, token: str) -> McpSession:
            return McpSession(Agent(store.session(agent)), agent)

        identify, make = identify_local, make_local
    sessions = HttpSessions(identify, make)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/mcp"
    from ..cli import err

    err.print(f"comity mcp: serving {url}; each agent sends `Authorization: Bearer TOKEN`", markup=False)
    serve_http(sessions, sock, heartbeat=heartbeat, middleware=lambda app: BearerGate(app, identify))


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise Invalid("port", f"cannot listen on {host}:{port}: {e.strerror or e}") from None
