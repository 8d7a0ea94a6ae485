"""The client of a comity server (``comity serve``), over HTTP with the standard library only.

:class:`RemoteAgent` has the verbs of :class:`comity.work.Agent` with the same answers,
and raises the same error types (decoded from the server's JSON error bodies), so a face
(the CLI) works unchanged against a server.  :class:`RemoteStore` is what
``comity.open("http://…", auth=TOKEN)`` returns; its sessions answer with the value types
of :class:`comity.store.Session` (``Versioned``, ``Written``, ``News``, …).

Several servers (a list, or one string separated by commas) give failover: a server that
cannot be reached is skipped for the next.  A verb is retried on another server only when
that is safe: reads; writes carrying a ``request_id`` (generated once per call, so the store
returns the recorded outcome instead of acting twice); and any verb whose request never
left (the connection was refused).  Otherwise a server lost mid-request is ``Unavailable``
saying that the outcome is unknown.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any

from .errors import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Unavailable
from .store import News, TxnResult, Versioned, Written
from .work.tasks import parse_task_id, task_key

__all__ = ["RemoteAgent", "RemoteStore", "RemoteSession", "error_from_json", "is_server_url", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 60.0  # above the store's 30 s busy timeout, so a busy store answers first

# Verbs that change nothing, or whose repetition changes nothing more: safe to send again
# to another server when the first went away mid-request.
_RETRY_SAFE = frozenset(
    {
        "info", "whoami", "read", "news", "log", "keys", "task_list", "task_ready", "task_show",
        "reservations", "agents", "why", "heartbeat", "release_paths", "task_renew",
        # these carry a request_id: a retry returns the recorded outcome
        "write", "create", "delete", "update",
    }
)  # fmt: skip

_ERRORS: dict[str, type[ComityError]] = {
    "stale_context": StaleContext,
    "fenced": Fenced,
    "lease_expired": LeaseExpired,
    "not_found": NotFound,
    "unavailable": Unavailable,
}


def is_server_url(location: object) -> bool:
    """``http://…`` or ``https://…`` (several may be joined by commas)."""
    return isinstance(location, str) and location.strip().lower().startswith(("http://", "https://"))


def error_from_json(body: dict[str, Any], status: int) -> ComityError:
    """The comity error a server's JSON error body stands for (so exit codes carry over)."""
    code = str(body.get("error", ""))
    message = str(body.get("message") or code or f"HTTP {status}")
    details = {k: v for k, v in body.items() if k not in ("error", "message")}
    if code == "invalid":
        name = str(details.pop("field", None) or "body")
        prefix = f"{name}: "
        return Invalid(name, message[len(prefix) :] if message.startswith(prefix) else message, **details)
    if code in ("unauthorized", "forbidden") or status in (401, 403):
        return Invalid("auth", message, status=status)
    if code == "stale_context":
        return StaleContext(
            message, key=details.pop("key", None), news=details.pop("news", None), rejected=details.pop("rejected", None), **details
        )
    cls = _ERRORS.get(code)
    if cls is not None:
        return cls(message, **details)
    return ComityError(f"the server answered {status}: {message}", **details)


class _NotSent(Exception):
    """The request never reached the server (it could not be connected to)."""


class _Lost(Exception):
    """The request may have reached the server, but no answer came back."""


class _Server:
    """One server URL and its kept-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("store", f"{url!r} is not a server URL; use http://HOST:PORT")
        try:
            self.port = parts.port
        except ValueError:
            raise Invalid("store", f"{url!r} has a bad port") from None
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.base = parts.path.rstrip("/")
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=timeout)
        try:
            conn.connect()
            # http.client sends the headers and the body in two writes: without NODELAY the
            # second waits for the server's delayed ACK.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            conn.close()
            raise _NotSent(f"{self.url}: {e.strerror or e}") from None
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, path: str, data: bytes, headers: dict[str, str], timeout: float, reuse: bool) -> tuple[int, bytes]:
        conn = self.conn if reuse else None
        if conn is None:
            self.close()
            conn = self._connect(timeout)
        self.conn = None
        try:
            conn.request("POST", self.base + path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Lost(f"{self.url}: {type(e).__name__}: {e}") from None
        if reuse and not resp.will_close:
            self.conn = conn
        else:
            conn.close()
        return resp.status, payload


def _urls(urls: str | Sequence[str]) -> list[str]:
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = [u.strip() for u in items if isinstance(u, str) and u.strip()]
    if not out:
        raise Invalid("store", "no server URL given; use http://HOST:PORT (several separated by commas)")
    return out


class RemoteAgent:
    """One agent's verbs against a comity server: the same methods and answers as
    :class:`comity.work.Agent`.  ``auth`` is the agent's token; the agent acting is the
    token's (``agent``, if given, must be the same name)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        auth: str | None,
        agent: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not auth:
            raise Invalid("auth", "a comity server needs your agent token: pass --auth TOKEN or set COMITY_AUTH (`comity agent add NAME` issues one)")
        self._servers = [_Server(u) for u in _urls(urls)]
        self._auth = auth
        self.name = agent
        self.timeout = timeout
        self.contexts: dict[str, str] = {}  # key -> the context this client last saw
        self._current = 0
        self._lock = threading.Lock()
        self._session: RemoteSession | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self._servers]

    @property
    def session(self) -> RemoteSession:
        """This agent's session, with the store-level methods (get, put, …)."""
        if self._session is None:
            self._session = RemoteSession(self)
        return self._session

    def close(self) -> None:
        with self._lock:
            for s in self._servers:
                s.close()

    # ------------------------------------------------------------ transport
    def _post(self, path: str, body: dict[str, Any], retry_safe: bool) -> dict[str, Any]:
        data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        headers = {"Authorization": f"Bearer {self._auth}", "Content-Type": "application/json", "Accept": "application/json"}
        if self.name is not None:
            headers["Comity-Agent"] = self.name
        failures: list[str] = []
        with self._lock:
            n = len(self._servers)
            for i in range(n):
                index = (self._current + i) % n
                server = self._servers[index]
                try:
                    pooled = retry_safe and server.conn is not None
                    try:
                        status, payload = server.post(path, data, headers, self.timeout, reuse=retry_safe)
                    except _Lost:
                        if not pooled:
                            raise
                        # A kept-alive connection may have been closed while idle: once more, fresh.
                        status, payload = server.post(path, data, headers, self.timeout, reuse=False)
                except _NotSent as e:
                    failures.append(str(e))
                    continue
                except _Lost as e:
                    if retry_safe:
                        failures.append(str(e))
                        continue
                    raise Unavailable(
                        f"{e}: the server went away during {path.rsplit('/', 1)[-1]}, so whether it took effect is "
                        "unknown; check (e.g. `comity task show`) before retrying",
                        servers=self.urls,
                    ) from None
                self._current = index
                return self._decode(server, status, payload)
        raise Unavailable(f"no comity server answered: {'; '.join(failures)}", servers=self.urls)

    @staticmethod
    def _decode(server: _Server, status: int, payload: bytes) -> dict[str, Any]:
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        if status == 200 and isinstance(body, dict):
            return body
        if isinstance(body, dict) and "error" in body:
            raise error_from_json(body, status)
        if status in (502, 503, 504):
            raise Unavailable(f"{server.url} answered {status} (is a proxy in front of it?); retry")
        raise ComityError(f"{server.url} answered {status} without a comity answer; is it a comity server?")

    def call(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call a verb by name with JSON arguments (as :meth:`comity.work.Agent.call`)."""
        if not verb or not all(c.isalnum() or c == "_" for c in verb):
            raise Invalid("verb", f"unknown verb {verb!r}")
        if not isinstance(args, (dict, type(None))):
            raise Invalid("args", f"{verb}: arguments must be a JSON object")
        answer = self._post(f"/v1/{verb}", dict(args or {}), verb in _RETRY_SAFE)
        self._learn(answer)
        return answer

    def _args(self, verb: str, **args: Any) -> dict[str, Any]:
        return self.call(verb, args)

    # ------------------------------------------------------------ contexts
    def _learn(self, answer: dict[str, Any]) -> None:
        """Remember the contexts an answer carries (keys and tasks), as the server's Agent does."""
        key, ctx = answer.get("key"), answer.get("context")
        if isinstance(key, str) and isinstance(ctx, str):
            self.contexts[key] = ctx
        tasks = answer.get("tasks")
        for t in [answer, answer.get("task")] + (tasks if isinstance(tasks, list) else []):
            if isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("context"), str) and "state" in t:
                self.contexts[task_key(t["id"])] = t["context"]

    def _request_id(self, given: str | None) -> str:
        return given if given is not None else "r-" + os.urandom(12).hex()

    # ------------------------------------------------------------ identity
    def info(self) -> dict[str, Any]:
        return self._args("info")

    def whoami(self) -> dict[str, Any]:
        return self._args("whoami")

    # ------------------------------------------------------------ keys
    def read(self, key: str) -> dict[str, Any]:
        return self._args("read", key=key)

    def write(
        self, key: str, value: Any, context: str | None = None, keep_both: bool = False, request_id: str | None = None
    ) -> dict[str, Any]:
        ctx = context if context is not None else self.contexts.get(key)
        return self._args("write", key=key, value=value, context=ctx, keep_both=keep_both, request_id=self._request_id(request_id))

    def create(self, key: str, value: Any, request_id: str | None = None) -> dict[str, Any]:
        return self._args("create", key=key, value=value, request_id=self._request_id(request_id))

    def delete(self, key: str, context: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        ctx = context if context is not None else self.contexts.get(key)
        return self._args("delete", key=key, context=ctx, request_id=self._request_id(request_id))

    def update(self, key: str, op: str, arg: Any = None, type: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        return self._args("update", key=key, op=op, arg=arg, type=type, request_id=self._request_id(request_id))

    def news(self, limit: int = 50) -> dict[str, Any]:
        return self._args("news", limit=limit)

    def log(self, key: str | None = None, after: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._args("log", key=key, after=after, limit=limit)

    def keys(self, prefix: str = "", limit: int = 1000, deleted: bool = False) -> dict[str, Any]:
        return self._args("keys", prefix=prefix, limit=limit, deleted=deleted)

    # ------------------------------------------------------------ tasks
    def task_add(
        self,
        title: str,
        body: str = "",
        deps: list[str] | None = None,
        labels: list[str] | None = None,
        assignee: str | None = None,
    ) -> dict[str, Any]:
        return self._args("task_add", title=title, body=body, deps=deps, labels=labels, assignee=assignee)

    def task_list(self, state: str | None = None) -> dict[str, Any]:
        return self._args("task_list", state=state)

    def task_ready(self) -> dict[str, Any]:
        return self._args("task_ready")

    def task_show(self, id: str) -> dict[str, Any]:
        return self._args("task_show", id=id)

    def task_assign(self, id: str, agent: str | None) -> dict[str, Any]:
        return self._args("task_assign", id=id, agent=agent)

    def task_claim(
        self,
        id: str | None = None,
        context: str | None = None,
        ttl: float | None = None,
        steal: bool = False,
        next: bool = False,
    ) -> dict[str, Any]:
        if context is None and id is not None and not next:
            try:
                context = self.contexts.get(task_key(parse_task_id(id)))
            except Invalid:
                pass  # the server names the bad id
        return self._args("task_claim", id=id, context=context, ttl=ttl, steal=steal, next=next)

    def task_renew(self, id: str, token: int, ttl: float | None = None) -> dict[str, Any]:
        return self._args("task_renew", id=id, token=token, ttl=ttl)

    def task_checkpoint(self, id: str, token: int, note: str) -> dict[str, Any]:
        return self._args("task_checkpoint", id=id, token=token, note=note)

    def task_complete(self, id: str, token: int, result: str = "") -> dict[str, Any]:
        return self._args("task_complete", id=id, token=token, result=result)

    def task_release(self, id: str, token: int) -> dict[str, Any]:
        return self._args("task_release", id=id, token=token)

    def task_fail(self, id: str, token: int, reason: str = "") -> dict[str, Any]:
        return self._args("task_fail", id=id, token=token, reason=reason)

    # ------------------------------------------------------------ coordination
    def seq_next(self, name: str) -> dict[str, Any]:
        return self._args("seq_next", name=name)

    def reserve_paths(self, paths: list[str], ttl: float | None = None, shared: bool = False) -> dict[str, Any]:
        return self._args("reserve_paths", paths=paths, ttl=ttl, shared=shared)

    def release_paths(self, paths: list[str]) -> dict[str, Any]:
        return self._args("release_paths", paths=paths)

    def reservations(self) -> dict[str, Any]:
        return self._args("reservations")

    def agents(self, ttl: float = 300.0) -> dict[str, Any]:
        return self._args("agents", ttl=ttl)

    def why(self, target: str) -> dict[str, Any]:
        return self._args("why", target=target)

    def heartbeat(self) -> dict[str, Any]:
        return self._args("heartbeat")

    # ------------------------------------------------------------ admin
    def agent_add(self, name: str, *, admin: bool = False, rotate: bool = False) -> dict[str, Any]:
        """Issue a token for agent ``name`` (needs an admin token): ``{"agent", "auth_token", "admin"}``."""
        return self._post("/v1/admin/agent_add", {"name": name, "admin": admin, "rotate": rotate}, False)


class RemoteSession:
    """A session over a comity server, with the store-level methods of
    :class:`comity.store.Session` and the same value types.

    The server keeps the agent's session (its news position and the contexts it saw);
    a write without a context uses the context this agent last saw of the key."""

    def __init__(self, agent: RemoteAgent) -> None:
        self.remote = agent
        self._agent = agent.name

    @property
    def agent(self) -> str:
        """The token's agent."""
        if self._agent is None:
            self._agent = str(self.remote.whoami()["agent"])
        return self._agent

    @staticmethod
    def _news(answer: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        return list(answer.get("news", [])), bool(answer.get("news_truncated"))

    def _written(self, a: dict[str, Any]) -> Written:
        news, truncated = self._news(a)
        return Written(a["key"], a["op"], a["values"], a["context"], a["pos"], news, truncated, bool(a.get("replayed")))

    def get(self, key: str) -> Versioned:
        a = self.remote.read(key)
        news, truncated = self._news(a)
        return Versioned(a["key"], a["values"], a["context"], news, truncated, a.get("type"))

    def put(self, key: str, value: Any, *, context: str | None = None, keep_both: bool = False, request_id: str | None = None) -> Written:
        return self._written(self.remote.write(key, value, context=context, keep_both=keep_both, request_id=request_id))

    def create(self, key: str, value: Any, *, request_id: str | None = None) -> Written:
        return self._written(self.remote.create(key, value, request_id=request_id))

    def delete(self, key: str, *, context: str | None = None, request_id: str | None = None) -> Written:
        return self._written(self.remote.delete(key, context=context, request_id=request_id))

    def update(self, key: str, op: str, arg: Any = None, *, type: str | None = None, request_id: str | None = None) -> TxnResult:
        a = self.remote.update(key, op, arg, type=type, request_id=request_id)
        news, truncated = self._news(a)
        result = {k: v for k, v in a.items() if k not in ("news", "news_truncated", "stale")}
        return TxnResult(int(a["pos"]), [result], news, truncated, bool(a.get("replayed")))

    def log(self, key: str | None = None, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.remote.log(key, after=after, limit=limit)["events"])

    def keys(self, prefix: str = "", *, limit: int = 1000, deleted: bool = False) -> list[str]:
        return list(self.remote.keys(prefix, limit=limit, deleted=deleted)["keys"])

    def news(self, *, limit: int | None = None) -> News:
        a = self.remote.news(limit=50 if limit is None else limit)
        return News(list(a["news"]), bool(a.get("news_truncated")), int(a["position"]))

    def head(self) -> int:
        """The log's current position."""
        return int(self.remote.info()["head"])


class RemoteStore:
    """A comity server seen as a store: ``comity.open("http://…", auth=TOKEN)``."""

    def __init__(self, urls: str | Sequence[str], *, auth: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._urls = _urls(urls)
        self._auth = auth
        self.timeout = timeout
        self._probe = RemoteAgent(self._urls, auth=auth, timeout=timeout)  # checks the URLs and the token's presence
        self._opened: list[RemoteAgent] = [self._probe]

    @property
    def location(self) -> str:
        return ",".join(self._urls)

    def session(self, agent: str | None = None, *, name: str | None = None) -> RemoteSession:
        """The token's agent's session.  ``agent``, if given, must be the token's agent;
        ``name`` is accepted for compatibility: the server keeps one session per agent."""
        remote = RemoteAgent(self._urls, auth=self._auth, agent=agent, timeout=self.timeout)
        self._opened.append(remote)
        return remote.session

    def info(self) -> dict[str, Any]:
        return {k: v for k, v in self._probe.info().items() if k not in ("news", "stale", "news_truncated")}

    @property
    def store_id(self) -> str:
        return str(self.info()["store_id"])

    def close(self) -> None:
        for r in self._opened:
            r.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
