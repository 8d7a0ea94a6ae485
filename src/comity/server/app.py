"""The HTTP API: one ``POST /v1/{verb}`` per agent verb, answering the verb's JSON object.

Each endpoint's request body is a pydantic model derived from the signature of the
:class:`comity.work.Agent` method, so ``/openapi.json`` documents every argument, and
unknown fields, wrong types and malformed JSON are refused (422) before anything runs.
The agent acting is the bearer token's; the server keeps one :class:`Agent` facade per
agent in memory, so news positions and remembered contexts persist across requests.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import typing
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field, create_model

from .. import __version__
from ..errors import ComityError
from ..store import Store
from ..work import VERBS, Agent
from .auth import Authenticator, Identity, issue_token

__all__ = ["create_app", "status_of", "SUMMARIES"]

log = logging.getLogger("comity.server")

# What each verb does, for the OpenAPI document (the arguments come from the signatures).
SUMMARIES: dict[str, str] = {
    "info": "Where the store is and what it holds.",
    "whoami": "The acting agent (the token's), its session and news position.",
    "read": "A key's values (several if siblings) and the context to write with.",
    "write": "Write a value over what `context` saw (default: this agent's last read); 409 if it changed since.",
    "create": "Write a value only if the key does not exist; 409 naming the holder if it does.",
    "delete": "Leave a tombstone, if nothing changed since `context`.",
    "update": "Apply a CRDT operation (typed by `type` on the first update): merges, never stale.",
    "news": "What other sessions changed since this agent last looked.",
    "log": "The event log (the audit trail), optionally of one key.",
    "keys": "Keys under a prefix.",
    "task_add": "Add a task to the board.",
    "task_list": "Every task with its state and who holds it.",
    "task_ready": "Tasks this agent may claim now.",
    "task_show": "One task, with the context to claim it with.",
    "task_assign": "Assign a task to an agent: only that agent may then claim it.",
    "task_claim": "Claim a task (or `next`: the first ready one); answers the fencing token.",
    "task_renew": "Extend this agent's lease on a task.",
    "task_checkpoint": "Record a handoff note on a task this agent holds.",
    "task_complete": "Complete a task this agent holds (409 if its token was superseded).",
    "task_release": "Give a held task back to the queue.",
    "task_fail": "Mark a held task failed.",
    "seq_next": "The next number of a sequence: unique, increasing, never reissued.",
    "reserve_paths": "Reserve paths or globs (exclusive unless `shared`); 409 naming the holder on overlap.",
    "release_paths": "Release this agent's reservations of paths or globs.",
    "reservations": "Live path reservations.",
    "agents": "Agents seen in the log: progress, suspicion, what each holds.",
    "why": "The causal history of a task or key.",
    "heartbeat": "Tell the store this agent is alive.",
}

_ERRORS_DOC = """\
Errors answer a JSON object `{"error": CODE, "message": …, …}`:

| status | error | meaning |
|---|---|---|
| 401 | `unauthorized` | missing, malformed or unknown bearer token |
| 403 | `forbidden` | an admin-only endpoint with an agent token, or `Comity-Agent` naming another agent |
| 404 | `not_found` | nothing there |
| 409 | `stale_context`, `fenced`, `lease_expired` | refused by the state; the body carries the news |
| 413 | `invalid` | the request body is over the size cap |
| 422 | `invalid` | bad input; `field` names it |
| 503 | `unavailable` | the store cannot be reached or is busy |
| 500 | `internal` | a bug: please report it |
"""


# ------------------------------------------------------------------ answers


def _json_bytes(obj: Any) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str).encode()
    except (UnicodeEncodeError, ValueError):
        # A lone surrogate or a NaN somewhere in an error's details: escape rather than fail.
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=str).replace("NaN", "null").encode()


def _answer(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_json_bytes(obj), status_code=status, media_type="application/json", headers=headers)


def status_of(e: ComityError) -> int:
    """The HTTP status of a comity error (errors.py holds the table)."""
    return e.http_status


class ApiError(Exception):
    """An HTTP-level refusal (authentication, authorization, size)."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": code, "message": message, **details}


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str = Field(description="stable machine name: invalid, stale_context, fenced, lease_expired, not_found, unavailable, unauthorized, forbidden, internal")
    message: str = Field(description="what was wrong and what to do next")
    field: str | None = Field(default=None, description="for `invalid`: the offending field")
    news: list[dict[str, Any]] | None = Field(default=None, description="for `stale_context`: the events the caller had not seen")


class Answer(BaseModel):
    """Every verb's answer: its own fields, plus the news and the stale contexts."""

    model_config = ConfigDict(extra="allow")
    news: list[dict[str, Any]] = Field(description="what others changed, since this agent last looked, in what it touched")
    stale: list[str] = Field(description="keys this agent read whose contexts the news makes out of date")
    news_truncated: bool | None = None


class AgentAdd(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(description="the new agent's name", min_length=1, max_length=128)
    admin: bool = Field(default=False, description="may issue tokens itself")
    rotate: bool = Field(default=False, description="replace the agent's existing token (the old one stops working)")


class Token(BaseModel):
    agent: str
    auth_token: str = Field(description="the bearer token: shown once, stored only as a hash")
    admin: bool


_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody, "description": d}
    for s, d in [
        (401, "missing or forged token"),
        (403, "forbidden for this token"),
        (404, "nothing there"),
        (409, "refused by the state: stale context, key exists, fenced, lease expired"),
        (413, "request body over the size cap"),
        (422, "bad input: `field` names it"),
        (503, "the store is unavailable or busy"),
        (500, "internal error (a bug)"),
    ]
}


# ------------------------------------------------------------------ models

_Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _camel(verb: str) -> str:
    return "".join(part.capitalize() for part in verb.split("_"))


def args_model(verb: str) -> type[BaseModel]:
    """The request body of ``verb``: one field per parameter of ``Agent.<verb>``."""
    fn = getattr(Agent, verb)
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name == "self":
            continue
        tp = hints[name]
        if tp is int:
            tp = _Int64  # bounded: a number no store column can hold is bad input, not a crash
        fields[name] = (tp, ... if p.default is inspect.Parameter.empty else p.default)
    model: type[BaseModel] = create_model(f"{_camel(verb)}Args", __config__=_CONFIG, **fields)
    model.__doc__ = SUMMARIES.get(verb, verb)
    return model


# ------------------------------------------------------------------ state


@dataclass
class _Facade:
    agent: Agent
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server:
    """What the app holds: the store, the token checker, one Agent facade per agent."""

    def __init__(self, store: Store, auth_ttl: float) -> None:
        self.store = store
        self.auth = Authenticator(store, ttl=auth_ttl)
        self._facades: dict[str, _Facade] = {}
        self._lock = threading.Lock()

    def facade(self, agent: str) -> _Facade:
        with self._lock:
            f = self._facades.get(agent)
            if f is None:
                f = self._facades[agent] = _Facade(Agent(self.store.session(agent)))
            return f

    def refusal(self, authorization: str | None) -> Response | None:
        """The 401 (or 503) a request's Authorization header earns, or None if it is good."""
        scheme, _, token = (authorization or "").partition(" ")
        try:
            ident = self.auth.identify(token.strip()) if scheme.lower() == "bearer" else None
        except ComityError as e:
            return _answer(status_of(e), e.to_json())
        if ident is None:
            return _answer(401, {"error": "unauthorized", "message": "unknown, malformed or missing token"}, {"WWW-Authenticate": "Bearer"})
        return None


_bearer = HTTPBearer(auto_error=False, description="An agent token from `comity agent add NAME`.")


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The identity the request's bearer token proves (401 if none).  An optional
    ``Comity-Agent`` header names the agent the caller means to be: 403 unless it is the token's."""
    server: _Server = request.app.state.comity
    comity_agent = request.headers.get("comity-agent")
    if credentials is None:
        raise ApiError(401, "unauthorized", "no token: send `Authorization: Bearer TOKEN` (`comity agent add NAME` issues one)")
    try:
        ident = server.auth.identify(credentials.credentials)
    except ComityError as e:
        raise ApiError(status_of(e), e.code, e.message) from None
    if ident is None:
        raise ApiError(401, "unauthorized", "unknown or malformed token; ask an admin for one (`comity agent add NAME`)")
    if comity_agent is not None and comity_agent != ident.agent:
        raise ApiError(403, "forbidden", f"this token is {ident.agent}'s; it cannot act as {comity_agent[:128]!r}", agent=ident.agent)
    return ident


# ------------------------------------------------------------------ size cap


class _BodyCap:
    """Refuse (413) a request body over ``limit`` bytes before anything parses it."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                      send: Callable[[MutableMapping[str, Any]], Awaitable[None]], size: str, more: bool) -> None:
        # Read (and drop) the rest of a moderately oversized body first: a client still sending
        # it would otherwise see a broken pipe instead of this answer.
        drained = 0
        while more and drained <= 64 * self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = _json_bytes({"error": "invalid", "field": "body", "message": f"body: is {size} bytes; the cap is {self.limit}"})
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.limit:
                        await self._refuse(receive, send, value.decode("latin-1"), True)
                        return
                except ValueError:
                    pass
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            more = bool(message.get("more_body", False))
            if total > self.limit:
                await self._refuse(receive, send, f"over {self.limit}", more)
                return
            chunks.append(chunk)
            if not more:
                break
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ------------------------------------------------------------------ the app


def create_app(store: Store, *, auth_ttl: float = 5.0, max_body_bytes: int | None = None) -> FastAPI:
    """The HTTP API over ``store`` (which it uses from many threads; the store is thread-safe)."""
    server = _Server(store, auth_ttl)
    app = FastAPI(
        title="comity",
        version=__version__,
        summary="Coordination for teams of AI agents: causal contexts, fencing, tasks, news.",
        description=(
            "One `POST /v1/{verb}` per agent verb; the body holds the verb's arguments and the answer is "
            "the verb's JSON object, always with `news` and `stale`. Authenticate with "
            "`Authorization: Bearer TOKEN` (from `comity agent add NAME`): the agent acting is the "
            "token's; an optional `Comity-Agent` header names the agent you mean to be, refused (403) unless it "
            "is the token's.\n\n" + _ERRORS_DOC
        ),
    )
    app.state.comity = server

    def fail(e: ComityError) -> Response:
        return _answer(status_of(e), e.to_json())

    def bug(where: str) -> Response:
        log.exception("comity server: internal error in %s", where)
        return _answer(500, {"error": "internal", "message": f"internal error in {where} (a bug: please report it)"})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _answer(exc.status, exc.body, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # Authentication comes first, even when the body is also bad.
        refused = server.refusal(request.headers.get("authorization"))
        if refused is not None:
            return refused
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            name = ".".join(loc) or "body"
            kind = str(err.get("type", ""))
            msg = str(err.get("msg", "invalid"))
            if kind == "json_invalid":
                name, msg = "body", "is not valid JSON"
            elif kind == "missing" and name == "body":
                msg = "a JSON object with the verb's arguments is required"
            elif kind == "extra_forbidden":
                msg = "is not an argument of this verb (see /openapi.json)"
            errors.append({"field": name, "message": msg, "type": kind})
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        body = {"error": "invalid", "field": first["field"], "message": f"{first['field']}: {first['message']}", "errors": errors}
        return _answer(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and methods: the same JSON shape as every other error.
        if exc.status_code == 400:  # a body FastAPI could not even decode (not UTF-8, not JSON)
            refused = server.refusal(request.headers.get("authorization"))
            if refused is not None:
                return refused
            return _answer(422, {"error": "invalid", "field": "body", "message": "body: is not valid JSON (UTF-8)"})
        code = {404: "not_found", 405: "invalid"}.get(exc.status_code, "invalid")
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path}; the verbs are POST /v1/{{verb}} (see /openapi.json)"
        else:
            message = f"{request.method} {request.url.path}: {exc.detail}"
        return _answer(exc.status_code, {"error": code, "message": message}, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("comity server: internal error", exc_info=exc)
        return _answer(500, {"error": "internal", "message": f"internal error: {type(exc).__name__} (a bug: please report it)"})

    @app.get("/v1/health", summary="Is the server up (no token needed)?", tags=["server"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    def verb_endpoint(verb: str) -> Callable[..., Response]:
        model = args_model(verb)
        optional = not any(f.is_required() for f in model.model_fields.values())

        def endpoint(args: BaseModel | None, caller: Identity) -> Response:
            facade = server.facade(caller.agent)
            try:
                given = {} if args is None else args.model_dump(exclude_unset=True)
                with facade.lock:
                    answer = facade.agent.call(verb, given)
                return _answer(200, answer)
            except ComityError as e:
                return fail(e)
            except Exception:
                return bug(verb)

        body_default = Body(None) if optional else Body(...)
        endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("args", inspect.Parameter.KEYWORD_ONLY, annotation=model | None if optional else model, default=body_default),
                inspect.Parameter("caller", inspect.Parameter.KEYWORD_ONLY, annotation=Identity, default=Depends(authenticate)),
            ],
            return_annotation=Response,
        )
        endpoint.__name__ = verb
        return endpoint

    for verb in VERBS:
        app.add_api_route(
            f"/v1/{verb}",
            verb_endpoint(verb),
            methods=["POST"],
            summary=SUMMARIES.get(verb, verb),
            operation_id=verb,
            tags=["tasks" if verb.startswith("task_") else "verbs"],
            response_model=Answer,
            responses=_RESPONSES,
        )

    @app.post("/v1/admin/agent_add", summary="Issue a token for a new agent (admin token only).", tags=["admin"],
              operation_id="agent_add", response_model=Token, responses=_RESPONSES)
    def agent_add(args: AgentAdd, caller: Annotated[Identity, Depends(authenticate)]) -> Response:
        if not caller.admin:
            return _answer(403, {"error": "forbidden", "message": f"issuing tokens needs an admin token; {caller.agent}'s is not one"})
        facade = server.facade(caller.agent)
        try:
            with facade.lock:
                issued = issue_token(facade.agent.session, args.name, admin=args.admin, rotate=args.rotate)
            server.auth.forget(args.name)
            return _answer(200, issued)
        except ComityError as e:
            return fail(e)
        except Exception:
            return bug("agent_add")

    limit = max_body_bytes if max_body_bytes is not None else 8 * store.max_value_bytes + (1 << 20)
    app.add_middleware(_BodyCap, limit=limit)
    return app
