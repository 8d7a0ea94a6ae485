"""The client of a comity server (``comity serve``), over HTTP with the standard library only.

:class:`RemoteAgent` has the verbs of :class:`comity.work.Agent` with the same answers,
and raises the same error types (decoded from the server's JSON error bodies), so a face
(the CLI) works unchanged against a server.  :class:`RemoteStore` is what
``comity.open("http://…", auth=TOKEN)`` returns; its sessions answer with the value types
of :class:`comity.store.Session` (``Versioned``, ``Written``, ``News``, …).

:class:`RemoteAgent`'s verbs are generated from the verb table (:mod:`comity.work.verbs`),
with the signatures of :class:`comity.work.Agent`'s methods.  An instance is one session
(docs/faces.md): it sends its session id (``Comity-Session``) with every request, so the
server keeps its news position and the contexts it read, and it remembers those contexts
itself too, so that a failover to another server loses none of them.

Several servers (a list, or one string separated by commas) give failover: a server that
cannot be reached is skipped for the next.  A verb is retried on another server only when
the table says that is safe: reads; mutations carrying a ``request_id`` (generated once per
call, so the store returns the recorded outcome instead of acting twice); and any verb whose
request never left (the connection was refused).  A call the caller itself repeats with the
same ``request_id`` sends what the first attempt sent (the context it filled in from memory
included), so it is the same request.  Without a session (``session=False``) nothing is
remembered, here or on the server.  Otherwise a server lost mid-request is
``Unavailable`` saying that the outcome is unknown.
"""

from __future__ import annotations

import http.client
import inspect
import json
import os
import socket
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Step, Unavailable
from .store import News, TxnResult, Versioned, Written
from .work.tasks import parse_task_id, task_key
from .work.numbers import Worktrees
from .work.verbs import VERB, VERBS, Verb, bind, python_annotation

__all__ = ["RemoteAgent", "RemoteStore", "RemoteSession", "error_from_json", "is_server_url", "DEFAULT_TIMEOUT_S", "SESSION_HEADER"]

_SENT_MAX = 256  # the calls with a request id whose arguments a retry resends as sent
DEFAULT_TIMEOUT_S = 60.0  # above the store's 30 s busy timeout, so a busy store answers first
SESSION_HEADER = "Comity-Session"

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
    details = {k: v for k, v in body.items() if k not in ("error", "message", "next")}
    steps = [s for s in (Step.from_json(x) for x in body.get("next") or [] if isinstance(body.get("next"), list)) if s is not None]
    if code == "invalid":
        name = str(details.pop("field", None) or "body")
        prefix = f"{name}: "
        return Invalid(name, message[len(prefix) :] if message.startswith(prefix) else message, next=steps, **details)
    if code in ("unauthorized", "forbidden") or status in (401, 403):
        return Invalid("auth", message, status=status, next=steps)
    if code == "stale_context":
        return StaleContext(
            message, key=details.pop("key", None), news=details.pop("news", None), rejected=details.pop("rejected", None),
            next=steps, **details,
        )  # fmt: skip
    cls = _ERRORS.get(code)
    if cls is not None:
        return cls(message, next=steps, **details)
    return ComityError(f"the server answered {status}: {message}", next=steps, **details)


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
    """One agent session's verbs against a comity server: the methods and answers of
    :class:`comity.work.Agent`, generated from the verb table.  ``auth`` is the agent's
    token; the agent acting is the token's (``agent``, if given, must be the same name).
    ``session`` names the session (default: a new one for this instance; ``False``: none,
    so neither the server nor this client remembers anything between requests)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        auth: str | None,
        agent: str | None = None,
        session: str | bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
        worktrees: Worktrees | None = None,
    ) -> None:
        if not auth:
            raise Invalid("auth", "a comity server needs your agent token (`comity agent add NAME` issues one)")
        self._servers = [_Server(u) for u in _urls(urls)]
        self._auth = auth
        self.name = agent
        if session is True:
            self.session_id: str | None = "r-" + os.urandom(12).hex()
        elif session is False:
            self.session_id = None
        else:
            self.session_id = session
        self.timeout = timeout
        self.contexts: dict[str, str] = {}  # key -> the context this session last saw (none without a session)
        self._sent: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()  # what a request id's call sent
        self._current = 0
        self._lock = threading.Lock()
        self._session: RemoteSession | None = None
        # migration_new and migration_check work here, in the caller's worktree: the server only
        # takes the number (migration_take).  Default: the worktree this process runs in.
        self.worktrees = worktrees

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
        if self.session_id is not None:
            headers[SESSION_HEADER] = self.session_id
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
                    verb = path.rsplit("/", 1)[-1]
                    raise Unavailable(
                        f"{e}: the server went away during {verb}, so whether it took effect is unknown; "
                        "check before retrying, or pass a request_id so that a retry returns the recorded outcome",
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

    # ------------------------------------------------------------ verbs
    def call(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call a verb by name with JSON arguments (as :meth:`comity.work.Agent.call`): checked
        against the table here, then sent."""
        return self._invoke(VERB[verb] if verb in VERB else None, bind(verb, args))

    def _invoke(self, verb: Verb | None, args: dict[str, Any]) -> dict[str, Any]:
        assert verb is not None  # bind refused an unknown verb
        if verb.name in _IN_WORKTREE:
            return self._in_worktree(verb.name, args)
        retry: tuple[str, str] | None = None
        sent: dict[str, Any] | None = None
        if args.get("request_id") is not None and verb.mutating:
            # A call the caller retries with its request id is the same request: send what the
            # first attempt sent (the context filled in below has moved on since, with the write).
            retry = (verb.name, json.dumps(args, sort_keys=True, default=str))
            with self._lock:
                sent = self._sent.get(retry)
            if sent is not None:
                args = dict(sent)
        if retry is None or sent is None:
            if "context" in args and args["context"] is None and verb.remembers is not None and self.session_id is not None:
                args["context"] = self.contexts.get(self._memory_key(verb, args) or "")  # no session: no memory
            if "request_id" in args and args["request_id"] is None:
                args["request_id"] = "r-" + os.urandom(12).hex()  # made once: a retry below reuses it
            if verb.name == "attest" and args.get("envelope") is None:
                args["envelope"] = self._sign(str(args["id"]))  # signed here, where the key is: a server holds none
        if retry is not None:
            with self._lock:
                self._sent[retry] = dict(args)
                self._sent.move_to_end(retry)
                while len(self._sent) > _SENT_MAX:
                    self._sent.popitem(last=False)
        answer = self._post(f"/v1/{verb.name}", args, verb.retry_safe)
        if self.session_id is not None:
            self._learn(answer)
        return answer

    def _sign(self, change_id: str) -> dict[str, Any]:
        """This agent's approval of a change, signed with its key from its key directory
        (created, and its public key registered, on first use)."""
        from .work.attestations import Keyring, sign_view

        me = self.call("whoami")["agent"]
        if not me:
            raise Invalid("agent", "attesting needs an agent token")
        view = self.call("change_show", {"id": change_id})
        envelope, public = sign_view(view, view.get("store") or self.call("whoami")["store_id"], me, Keyring(), os.urandom(32))
        self.call("key_register", {"public_key": public})
        return envelope

    @staticmethod
    def _memory_key(verb: Verb, args: dict[str, Any]) -> str | None:
        name = args.get(verb.remembers or "")
        if not isinstance(name, str):
            return None
        if verb.remembers == "id":
            try:
                return task_key(parse_task_id(name))
            except Invalid:
                return None  # the server names the bad id
        return name

    def _learn(self, answer: dict[str, Any]) -> None:
        """Remember the contexts an answer carries (keys and tasks), as the server's Agent does."""
        key, ctx = answer.get("key"), answer.get("context")
        if isinstance(key, str) and isinstance(ctx, str):
            self.contexts[key] = ctx
        tasks = answer.get("tasks")
        for t in [answer, answer.get("task")] + (tasks if isinstance(tasks, list) else []):
            if isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("context"), str) and "state" in t:
                self.contexts[task_key(t["id"])] = t["context"]

    def _in_worktree(self, verb: str, args: dict[str, Any]) -> dict[str, Any]:
        """``migration_new`` and ``migration_check`` on the client: the server cannot reach the
        caller's files, so the floor is found and the file created here, in the caller's
        worktree, and only the number is taken on the server (``migration_take``)."""
        from .repo.worktree import Worktrees

        finder = self.worktrees if self.worktrees is not None else Worktrees.here(served="this client")
        wt = finder(args.get("worktree"))
        numbers = _ServerNumbers(self)
        if verb == "migration_new":
            from .work._migration_verbs import unit_of

            request_id = args.get("request_id") or "r-" + os.urandom(12).hex()
            unit = unit_of(args["slug"], args.get("task"), request_id)
            body = wt.new_migration(numbers, args["slug"], args.get("dir"), template=args.get("template"), task=args.get("task"), unit=unit)
        else:
            problems = wt.check_migrations(numbers, args.get("dir"), template=args.get("template"))
            body = {"ok": not problems, "problems": problems}
        if numbers.last is None:  # nothing asked of the server yet: ask once, for the news
            numbers.call("whoami", {})
        body["news"] = numbers.news
        body["stale"] = (numbers.last or {}).get("stale", [])
        if numbers.truncated:
            body["news_truncated"] = True
        return body

    # ------------------------------------------------------------ admin
    def agent_add(self, name: str, *, admin: bool = False, rotate: bool = False) -> dict[str, Any]:
        """Issue a token for agent ``name`` (needs an admin token): ``{"agent", "auth_token", "admin"}``."""
        return self._post("/v1/admin/agent_add", {"name": name, "admin": admin, "rotate": rotate}, False)


_IN_WORKTREE = ("migration_new", "migration_check")


class _ServerNumbers:
    """The number authority over HTTP (:class:`comity.work.numbers.Numbers`): every answer's
    news is kept, to be handed to the caller with the verb's answer."""

    def __init__(self, remote: RemoteAgent) -> None:
        self.remote = remote
        self.news: list[dict[str, Any]] = []
        self.truncated = False
        self.last: dict[str, Any] | None = None
        self._agent = remote.name

    def call(self, verb: str, args: dict[str, Any]) -> dict[str, Any]:
        answer = self.remote._invoke(VERB[verb], bind(verb, args))
        self.news += answer.get("news", [])
        self.truncated = self.truncated or bool(answer.get("news_truncated"))
        self.last = answer
        return answer

    @property
    def agent(self) -> str | None:
        if self._agent is None:
            self._agent = self.call("whoami", {}).get("agent")
        return self._agent

    def dirs(self) -> dict[str, str]:
        return dict(self.call("migration_dirs", {})["dirs"])

    def take(self, d: str, slug: str, **kw: Any) -> dict[str, Any]:
        answer = self.call("migration_take", {"dir": d, "slug": slug, **{k: v for k, v in kw.items() if v is not None}})
        return {k: v for k, v in answer.items() if k not in ("news", "stale", "news_truncated")}


def _verb_method(verb: Verb) -> Callable[..., dict[str, Any]]:
    """``RemoteAgent.<verb>``, with the signature of ``Agent.<verb>`` (both come from the table)."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in verb.params:
        default = inspect.Parameter.empty if p.required else p.default
        params.append(inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=python_annotation(p.kind)))
    signature = inspect.Signature(params, return_annotation="dict[str, Any]")

    def method(self: RemoteAgent, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{verb.name}{signature}: {e}") from None
        bound.apply_defaults()
        given = {k: v for k, v in bound.arguments.items() if k != "self"}
        return self._invoke(verb, bind(verb.name, given))

    method.__name__ = method.__qualname__ = verb.name
    method.__doc__ = verb.text
    method.__signature__ = signature  # type: ignore[attr-defined]
    return method


for _v in VERBS:
    setattr(RemoteAgent, _v.name, _verb_method(_v))


class RemoteSession:
    """A session over a comity server, with the store-level methods of
    :class:`comity.store.Session` and the same value types.

    The server keeps the session's news position and the contexts it saw; a write without
    a context uses the context this session last saw of the key."""

    def __init__(self, agent: RemoteAgent) -> None:
        self.remote = agent
        self._agent = agent.name

    @property
    def agent(self) -> str:
        """The token's agent."""
        if self._agent is None:
            self._agent = str(self.remote.call("whoami")["agent"])
        return self._agent

    @staticmethod
    def _news(answer: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        return list(answer.get("news", [])), bool(answer.get("news_truncated"))

    def _written(self, a: dict[str, Any]) -> Written:
        news, truncated = self._news(a)
        return Written(a["key"], a["op"], a["values"], a["context"], a["pos"], news, truncated, bool(a.get("replayed")))

    def get(self, key: str) -> Versioned:
        a = self.remote.call("read", {"key": key})
        news, truncated = self._news(a)
        return Versioned(a["key"], a["values"], a["context"], news, truncated, a.get("type"))

    def put(self, key: str, value: Any, *, context: str | None = None, keep_both: bool = False, request_id: str | None = None) -> Written:
        return self._written(self.remote.call("write", {"key": key, "value": value, "context": context, "keep_both": keep_both, "request_id": request_id}))

    def create(self, key: str, value: Any, *, request_id: str | None = None) -> Written:
        return self._written(self.remote.call("create", {"key": key, "value": value, "request_id": request_id}))

    def delete(self, key: str, *, context: str | None = None, request_id: str | None = None) -> Written:
        return self._written(self.remote.call("delete", {"key": key, "context": context, "request_id": request_id}))

    def update(self, key: str, op: str, arg: Any = None, *, type: str | None = None, request_id: str | None = None) -> TxnResult:
        a = self.remote.call("update", {"key": key, "op": op, "arg": arg, "type": type, "request_id": request_id})
        news, truncated = self._news(a)
        result = {k: v for k, v in a.items() if k not in ("news", "news_truncated", "stale")}
        return TxnResult(int(a["pos"]), [result], news, truncated, bool(a.get("replayed")))

    def log(self, key: str | None = None, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.remote.call("log", {"key": key, "after": after, "limit": limit})["events"])

    def keys(self, prefix: str = "", *, limit: int = 1000, deleted: bool = False) -> list[str]:
        return list(self.remote.call("keys", {"prefix": prefix, "limit": limit, "deleted": deleted})["keys"])

    def news(self, *, limit: int | None = None) -> News:
        a = self.remote.call("news", {} if limit is None else {"limit": limit})
        return News(list(a["news"]), bool(a.get("news_truncated")), int(a["position"]))

    def head(self) -> int:
        """The log's current position."""
        return int(self.remote.call("info")["head"])


class RemoteStore:
    """A comity server seen as a store: ``comity.open("http://…", auth=TOKEN)``."""

    def __init__(self, urls: str | Sequence[str], *, auth: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._urls = _urls(urls)
        self._auth = auth
        self.timeout = timeout
        self._probe = RemoteAgent(self._urls, auth=auth, session=False, timeout=timeout)  # checks the URLs and the token's presence
        self._opened: list[RemoteAgent] = [self._probe]

    @property
    def location(self) -> str:
        return ",".join(self._urls)

    def session(self, agent: str | None = None, *, name: str | None = None) -> RemoteSession:
        """A session of the token's agent (``agent``, if given, must be the token's agent):
        the one named ``name``, or a new one."""
        remote = RemoteAgent(self._urls, auth=self._auth, agent=agent, session=True if name is None else name, timeout=self.timeout)
        self._opened.append(remote)
        return remote.session

    def info(self) -> dict[str, Any]:
        return {k: v for k, v in self._probe.call("info").items() if k not in ("news", "stale", "news_truncated")}

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
