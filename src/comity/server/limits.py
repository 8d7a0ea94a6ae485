"""Production limits for comity's HTTP servers (``comity serve``, ``comity mcp --http``).

A server on a network meets clients that are slow, broken or hostile.  What uvicorn gives
(a keep-alive timeout, a cap on a request head's size) is kept; what it lacks is built here:

- **Header timeout.**  uvicorn never times out a request whose head has not arrived: 300
  connections sending half a request line each held their sockets for as long as they
  liked.  :class:`comity.server._h11.GuardedH11Protocol` gives every request ``header_timeout`` seconds from
  its first byte (a new connection's from its opening) to finish its head, then answers
  408 and closes.  Dripping a byte at a time does not extend it.
- **Connection limit.**  Past ``max_connections`` open connections a new one is answered
  503 at once and closed, before it can hold a file descriptor; the limit is kept below
  the process's open-file limit (which is raised to its hard limit at start), so the
  server never runs out of descriptors and stops answering everyone.
- **Body cap and authentication before the body.**  :class:`RequestGuard` refuses a
  request whose ``Content-Length`` is over the cap (413), and, for the API's verbs, one
  without a valid token (401), before a byte of its body is read; a chunked body is
  counted as it streams and cut off (413) at the cap.  Memory stays flat whatever
  unauthenticated clients send.
- **Rate-limited logging.**  :class:`RateLimitedLog` lets each kind of message (a logger and
  its template) through ``per_minute`` times a minute, then counts what it drops and says
  how many with the next one let through: a flood of broken requests cannot fill a disk.

The HTTP API also takes a JSON body without ``Content-Type`` (what ``curl -d`` sends is
``application/x-www-form-urlencoded``; the API speaks nothing but JSON).
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

__all__ = [
    "Limits",
    "limit_options",
    "RequestGuard",
    "RateLimitedLog",
    "uvicorn_config",
    "limits_from",
    "describe",
    "default_max_body",
    "identify_with",
    "exit_cleanly_on_sigterm",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_KEEPALIVE_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_LOG_PER_MINUTE",
]

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 5.0
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_LOG_PER_MINUTE = 20
_FD_RESERVE = 64  # descriptors kept for the store, logs, the listening socket, the runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("comity.server")


@dataclass(frozen=True)
class Limits:
    """What a comity HTTP server puts up with (the ``serve`` and ``mcp --http`` flags)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_body_bytes: int | None = None  # None: the face's default (from the store's value cap)
    log_per_minute: int = DEFAULT_LOG_PER_MINUTE

    def connections_allowed(self) -> int:
        """``max_connections``, kept below the open-file limit (raised to its hard limit first)."""
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if hard == resource.RLIM_INFINITY or soft < hard:
                target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                    soft = target
                except (ValueError, OSError):
                    pass
        except (ValueError, OSError):
            return self.max_connections
        return max(1, min(self.max_connections, soft - _FD_RESERVE))


F = TypeVar("F", bound=Callable[..., Any])


def limit_options(fn: F) -> F:
    """The limit flags of ``comity serve`` and ``comity mcp --http`` (each with its env variable)."""
    options = [
        click.option("--header-timeout", type=click.FloatRange(0.1, 3600), default=DEFAULT_HEADER_TIMEOUT_S, show_default=True,
                     envvar="COMITY_HEADER_TIMEOUT", help="Seconds a request has, from its first byte, to send its whole head (then 408) [env COMITY_HEADER_TIMEOUT]."),
        click.option("--keepalive-timeout", type=click.FloatRange(0.1, 3600), default=DEFAULT_KEEPALIVE_TIMEOUT_S, show_default=True,
                     envvar="COMITY_KEEPALIVE_TIMEOUT", help="Seconds an idle kept-alive connection stays open [env COMITY_KEEPALIVE_TIMEOUT]."),
        click.option("--max-connections", type=click.IntRange(1, 1_000_000), default=DEFAULT_MAX_CONNECTIONS, show_default=True,
                     envvar="COMITY_MAX_CONNECTIONS", help="Open connections at most; past it a new one gets 503 and is closed (kept below the open-file limit) [env COMITY_MAX_CONNECTIONS]."),
        click.option("--max-body-bytes", type=click.IntRange(1024, 1 << 34), default=None,
                     envvar="COMITY_MAX_BODY_BYTES", help="Request bodies over this get 413, checked before reading [default: 8 x the store's value cap + 1 MiB] [env COMITY_MAX_BODY_BYTES]."),
        click.option("--log-per-minute", type=click.IntRange(1, 1_000_000), default=DEFAULT_LOG_PER_MINUTE, show_default=True,
                     envvar="COMITY_LOG_PER_MINUTE", help="Log lines of one kind (e.g. a malformed request) per minute; the rest are counted [env COMITY_LOG_PER_MINUTE]."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def limits_from(options: dict[str, Any]) -> Limits:
    """The :class:`Limits` the flags of :func:`limit_options` chose (popped from ``options``)."""
    return Limits(
        header_timeout=float(options.pop("header_timeout")),
        keepalive_timeout=float(options.pop("keepalive_timeout")),
        max_connections=int(options.pop("max_connections")),
        max_body_bytes=options.pop("max_body_bytes"),
        log_per_minute=int(options.pop("log_per_minute")),
    )


def default_max_body(max_value_bytes: int) -> int:
    """The body cap when none is given: room for a transaction's worth of values."""
    return 8 * max_value_bytes + (1 << 20)


def describe(limits: Limits, max_body: int) -> str:
    """The limits in force, for a server's banner."""
    return (
        f"request head within {limits.header_timeout:g}s, idle kept-alive connections closed after"
        f" {limits.keepalive_timeout:g}s, at most {limits.connections_allowed()} connections, bodies up to"
        f" {max_body} bytes, at most {limits.log_per_minute} log lines of a kind a minute"
    )


# ------------------------------------------------------------------ logging


class RateLimitedLog(logging.Filter):
    """At most ``per_minute`` records of each kind (logger, message template) a minute; the
    next one let through says how many were dropped."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.per_minute = per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str], list[float]] = {}  # [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None or now - state[0] >= 60.0:
                dropped = int(state[2]) if state is not None else 0
                state = self._kinds[kind] = [now, 0.0, 0.0]
                if len(self._kinds) > 1000:  # bounded: the oldest kinds go
                    for old in sorted(self._kinds, key=lambda k: self._kinds[k][0])[:500]:
                        del self._kinds[old]
                    self._kinds[kind] = state
            else:
                dropped = 0
            if state[1] >= self.per_minute:
                state[2] += 1
                return False
            state[1] += 1
            dropped += int(state[2])
            state[2] = 0
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar line(s) dropped in the last minute)"
            record.args = None
        return True

    def install(self, names: Iterable[str] = ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "comity.server", "comity.mcp")) -> None:
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RateLimitedLog) for f in logger.filters):
                logger.addFilter(self)


# ------------------------------------------------------------------ connections


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM end the process through its cleanup (the store closed, every named
    session saved with the keys it read), not past it.

    uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    handler that was installed before it started; under the default one the process dies
    right there, before the command closes its store.  Under this one the signal raises
    ``SystemExit`` (status 143, as a death by SIGTERM reports), and the cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def uvicorn_config(app: ASGIApp, limits: Limits, **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` with ``limits`` (and rate-limited logs); SIGTERM then
    stops the server and closes the store (:func:`exit_cleanly_on_sigterm`)."""
    import uvicorn

    exit_cleanly_on_sigterm()

    from ._h11 import GuardedH11Protocol

    protocol = type(
        "ComityH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": limits.header_timeout, "max_connections": limits.connections_allowed()},
    )
    RateLimitedLog(limits.log_per_minute).install()
    return uvicorn.Config(
        app,
        http=protocol,
        timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]  # uvicorn takes a float
        log_level="warning",
        access_log=False,
        **kwargs,
    )


# ------------------------------------------------------------------ requests


def _json(status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> tuple[Message, Message]:
    payload = json.dumps(body, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(extra or [])]
    return {"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": payload}


NO_TOKEN_HINT = _UNAUTHORIZED = ("send `Authorization: Bearer TOKEN` with your agent token; the store's owner issues one with "
                 "`comity agent add NAME` (an admin token can issue them over HTTP)")
_JSON_TYPES = (b"", b"application/x-www-form-urlencoded", b"text/plain")


class RequestGuard:
    """ASGI middleware: authentication (``identify``, for ``protect``ed requests) and the
    ``Content-Length`` cap before any of the body is read; a streamed body cut off at the
    cap; with ``json_bodies``, a body sent without a JSON content type read as JSON."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        identify: Callable[[str], Awaitable[int | None]] | None = None,
        protect: Callable[[Scope], bool] = lambda scope: True,
        json_bodies: bool = False,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.identify = identify
        self.protect = protect
        self.json_bodies = json_bodies

    async def _answer(self, send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
        start, payload = _json(status, body, [(b"connection", b"close"), *(extra or [])])
        await send(start)
        await send(payload)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        if self.identify is not None and self.protect(scope):
            authorization = next((v for k, v in headers if k == b"authorization"), b"").decode("latin-1")
            scheme, _, token = authorization.partition(" ")
            status = await self.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else 401
            if status == 401:
                said = "no Authorization header" if not authorization.strip() else (
                    "that token is not an agent token of this store" if scheme.lower() == "bearer" else "the Authorization header is not `Bearer TOKEN`")
                message = f"{said}: {_UNAUTHORIZED}"
                challenge = f'Bearer realm="comity", error="invalid_token", error_description="{message.replace(chr(34), chr(39))}"'
                await self._answer(send, 401, {"error": "unauthorized", "message": message},
                                   [(b"www-authenticate", challenge.encode("latin-1", "replace"))])  # fmt: skip
                return
            if status is not None:
                await self._answer(send, status, {"error": "unavailable", "message": "the store cannot be reached to check the token; retry"})
                return
        declared = next((v for k, v in headers if k == b"content-length"), None)
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                await self._answer(send, 400, {"error": "invalid", "field": "body", "message": "body: Content-Length is not a number"})
                return
            if size > self.max_body:
                await self._answer(send, 413, {"error": "invalid", "field": "body",
                                               "message": f"body: is {size} bytes; the cap is {self.max_body}"})  # fmt: skip
                return
        if self.json_bodies and scope.get("method") == "POST":
            ctype = next((v for k, v in headers if k == b"content-type"), b"").split(b";")[0].strip().lower()
            if ctype in _JSON_TYPES:
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", b"application/json")]
        read = 0
        refused = False
        started = False

        async def counted() -> Message:
            nonlocal read, refused
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body and not refused:
                    refused = True
                    if not started:
                        await self._answer(send, 413, {"error": "invalid", "field": "body",
                                                       "message": f"body: is over {self.max_body} bytes, the cap"})  # fmt: skip
                    return {"type": "http.disconnect"}
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; the app's own answer has no one to go to
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, sending)


def identify_with(check: Callable[[str], Any]) -> Callable[[str], Awaitable[int | None]]:
    """An ``identify`` for :class:`RequestGuard` from a blocking token check: None when good,
    401 when the token proves nobody, 503 when the store cannot say."""
    import anyio.to_thread

    from ..errors import ComityError

    async def identify(token: str) -> int | None:
        try:
            who = await anyio.to_thread.run_sync(check, token)
        except ComityError as e:
            return e.http_status if e.http_status >= 500 else 401
        return None if who is not None else 401

    return identify
