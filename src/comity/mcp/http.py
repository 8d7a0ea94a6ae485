"""``comity mcp --http``: the same tools over streamable HTTP (``/mcp``), many agents at once.

Each request carries ``Authorization: Bearer TOKEN``, an agent token issued by
``comity agent add NAME`` (:mod:`comity.server.auth`); the token, not a header the
client picks, says which agent acts.  A request without a valid token is answered 401
before it reaches the MCP layer.  A session is one agent token and ``Mcp-Session-Id``
(protocol revisions that have one), or the ``Comity-Session`` header a client sends;
protocol revisions without session ids (2026-07-28: each POST stands alone) and no
header get one session per agent token (docs/faces.md).  Facades are kept, bounded and
evicted least recently used, and one left idle for an hour is dropped (losing one is
safe: its news position is in the store).  Against a comity server (``--store http://…``) the token is passed
on, and the server checks it; who a token is is remembered for a few seconds, in a
bounded cache.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ..clikit import Ctx, err
from ..errors import ComityError, Invalid
from ..server.limits import NO_TOKEN_HINT, Limits, RequestGuard, default_max_body, describe, identify_with
from ..store._codec import DEFAULT_MAX_VALUE_BYTES
from ..store._api import check_agent
from .server import McpSession, serve_http

__all__ = ["HttpSessions", "BearerGate", "TokenCache", "serve"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDLE_S = 3600.0
MAX_SESSIONS = 1024  # live sessions kept; the least recently used is dropped first
_NO_TOKEN = NO_TOKEN_HINT


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class HttpSessions:
    """A session per (agent token, ``Mcp-Session-Id``), made on first use, bounded."""

    def __init__(
        self,
        identify: Callable[[str], str | None],
        make: Callable[[str, str, str | None], McpSession],
        *,
        idle: float = IDLE_S,
        limit: int = MAX_SESSIONS,
    ) -> None:
        self.identify = identify
        self.make = make
        self.idle = idle
        self.limit = limit
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, str], McpSession] = OrderedDict()

    def for_call(self, ctx: Context[Any, Any] | None) -> McpSession:
        headers = (ctx.headers if ctx is not None else None) or {}
        token = bearer(headers.get("authorization"))
        agent = self.identify(token) if token else None
        if token is None or agent is None:
            raise ToolError(f"unauthorized: {_NO_TOKEN}")
        digest = hashlib.sha256(token.encode()).hexdigest()
        sid = headers.get("mcp-session-id") or headers.get("comity-session")
        if not sid:
            # No session on the wire (the stateless protocol): the token's own session, kept
            # in the store under a name derived from the token.
            sid = f"mcp.{digest[:24]}"
        try:
            check_agent(sid, "session")
        except Invalid:
            raise ToolError(f"invalid: session id {sid[:40]!r} is not one comity can keep (letters, digits and _ . - @ + :)") from None
        key = (digest, sid)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
        self.live()  # drop idle sessions before adding one
        made = self.make(agent, token, sid)
        dropped: list[McpSession] = []
        with self._lock:
            session = self._sessions.setdefault(key, made)
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.limit:
                dropped.append(self._sessions.popitem(last=False)[1])
        if session is not made:
            dropped.append(made)
        for s in dropped:
            s.close()
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
    """ASGI middleware in front of the MCP app: OAuth discovery paths answer 404.  The agent
    token itself is checked before this, by :class:`~comity.server.limits.RequestGuard`
    (with the same words), so it is looked up once per request."""

    def __init__(self, app: ASGIApp, identify: Callable[[str], str | None]) -> None:
        self.app = app
        self.identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/.well-known/"):
            # OAuth discovery (RFC 9728 protected-resource, RFC 8414 authorization-server
            # metadata): there is none, so a client holding a bearer token connects with it
            # instead of starting an OAuth flow; 404, not 401, says "no OAuth here".
            await _json(send, 404, {"error": "not_found", "message": f"comity does not use OAuth: {_NO_TOKEN}"})
            return
        await self.app(scope, receive, send)


async def _json(send: Send, status: int, obj: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenCache:
    """Remembers who a token is for a few seconds (a rotated token stops working soon after),
    for at most ``limit`` tokens, the least recently used dropped first: a stream of forged
    tokens costs a lookup each, never memory."""

    def __init__(
        self, identify: Callable[[str], str | None], ttl: float = 5.0, limit: int = 1024, *, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._identify = identify
        self.ttl = ttl
        self.limit = limit
        self._now = now
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    def __call__(self, token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._now()
        with self._lock:
            hit = self._seen.get(digest)
            if hit is not None and now - hit[1] < self.ttl:
                self._seen.move_to_end(digest)
                return hit[0]
        agent = self._identify(token)
        with self._lock:
            self._seen[digest] = (agent, now)
            self._seen.move_to_end(digest)
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
        return agent

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def serve(obj: Ctx, *, host: str, port: int, heartbeat: float, limits: Limits | None = None) -> None:
    """Serve streamable HTTP, each agent authenticated by its own token, within ``limits``
    (:mod:`comity.server.limits`)."""
    from ..work import Agent

    identify: Callable[[str], str | None]
    make: Callable[[str, str, str | None], McpSession]
    if obj.remote:
        from ..remote import RemoteAgent

        upstream = obj.store_location or ""  # the comity server's URLs (never this MCP server's own)

        def identify_remote(token: str) -> str | None:
            probe = RemoteAgent(upstream, auth=token, session=False)
            try:
                return str(probe.call("whoami")["agent"])
            except ComityError:
                return None
            finally:
                probe.close()

        def make_remote(agent: str, token: str, sid: str | None) -> McpSession:
            remote = RemoteAgent(upstream, auth=token, agent=agent, session=sid or False)
            return McpSession(remote, agent, close=remote.close, session_id=sid)

        identify, make = TokenCache(identify_remote), make_remote
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

        from ..repo.worktree import Worktrees

        worktrees = Worktrees.serving(served="comity mcp --http")  # many agents, each in a worktree of its own

        def make_local(agent: str, token: str, sid: str | None) -> McpSession:
            return McpSession(Agent(store.session(agent, name=sid), signing=False, worktrees=worktrees), agent, session_id=sid)  # a server holds no agent's key

        identify, make = identify_local, make_local
    sessions = HttpSessions(identify, make)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/mcp"
    limits = limits or Limits()
    max_body = limits.max_body_bytes or default_max_body(obj.store().max_value_bytes if not obj.remote else DEFAULT_MAX_VALUE_BYTES)
    err.print(f"comity mcp: serving {url}; each agent sends `Authorization: Bearer TOKEN`", markup=False)
    err.print(f"comity mcp: limits: {describe(limits, max_body)}", markup=False)

    def guarded(app: Any) -> Any:
        # The token and the body's declared size are checked before a byte of the body is read.
        return RequestGuard(BearerGate(app, identify), max_body=max_body, identify=identify_with(identify),
                            protect=lambda scope: not str(scope.get("path", "")).startswith("/.well-known/"))  # fmt: skip

    serve_http(sessions, sock, heartbeat=heartbeat, middleware=guarded, limits=limits)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=128)
        # Accepted connections inherit it: an answer written in two pieces (headers, then the
        # body, as the stateless protocol's JSON answers are) must not wait for the client's
        # delayed ACK (Nagle's algorithm), which cost every call of a default-mode client ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as e:
        raise Invalid("port", f"cannot listen on {host}:{port}: {e.strerror or e}") from None
