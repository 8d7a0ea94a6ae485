"""The HTTP API: one ``POST /v1/{verb}`` per verb of the table (:mod:`comity.work.verbs`).

Each endpoint's request body is a pydantic model generated from the verb's parameters,
and its answer's schema from the verb's result shape, so ``/openapi.json`` documents
every argument and field; unknown fields, wrong types and malformed JSON are refused
(422) before anything runs.  The agent acting is the bearer token's.  A request naming a
session (``Comity-Session: ID``) is served by that session's :class:`Agent` facade, kept
in memory per (agent, session), bounded and evicted least recently used (losing one is
safe: its news position is in the store, and a write it would have checked against a
remembered context is refused as stale instead); a request naming none is a session of
its own and remembers nothing.  docs/faces.md.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field, create_model

from .. import __version__
from ..errors import ComityError, Invalid
from ..store import Store
from ..store._api import check_agent
from ..sync import Endpoint
from ..work import VERBS, Agent, Verb
from ..work.verbs import output_schema
from .auth import Authenticator, Identity, issue_token
from .limits import RequestGuard, default_max_body, identify_with

__all__ = ["create_app", "status_of", "SESSION_HEADER", "MAX_SESSIONS"]

log = logging.getLogger("comity.server")

SESSION_HEADER = "Comity-Session"
# Verbs an agent token may not call over the network: a Byzantine agent must not be able to
# lower the bar its own work is judged by (the embedded store trusts whoever opens it).
ADMIN_VERBS = frozenset({"policy_set"})
MAX_SESSIONS = 4096  # facades kept in memory; the least recently used is dropped first

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
    next: list[dict[str, Any]] | None = Field(
        default=None, description='the next steps, each a verb with its arguments: [{"verb": "read", "args": {"key": "…"}, "why": "…"}]'
    )


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

_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _camel(verb: str) -> str:
    return "".join(part.capitalize() for part in verb.split("_"))


def _annotation(kind: str, p: Any = None) -> Any:
    base = kind.rstrip("?")
    tp: Any
    if base.startswith("list["):
        tp = list[_annotation(base[5:-1])]  # type: ignore[misc]
    else:
        tp = {"str": str, "int": int, "number": float, "bool": bool, "json": Any, "object": dict[str, Any]}[base]
    if p is not None and base in ("int", "number"):
        bounds = {k: v for k, v in (("ge", p.minimum), ("le", p.maximum), ("gt", p.above)) if v is not None}
        if base == "int":
            bounds.setdefault("ge", -(2**63))
            bounds.setdefault("le", 2**63 - 1)  # a number no store column can hold is bad input, not a crash
        tp = Annotated[tp, Field(**bounds)]
    if kind.endswith("?"):
        tp = tp | None
    return tp


def args_model(verb: Verb) -> type[BaseModel]:
    """The request body of ``verb``: one field per parameter in the table."""
    fields: dict[str, Any] = {}
    for p in verb.params:
        default = ... if p.required else (list(p.default) if isinstance(p.default, tuple) else p.default)
        fields[p.name] = (_annotation(p.kind, p), Field(default, description=p.doc))
    model: type[BaseModel] = create_model(f"{_camel(verb.name)}Args", __config__=_CONFIG, **fields)
    model.__doc__ = verb.summary
    return model


# ------------------------------------------------------------------ state


@dataclass
class _Facade:
    agent: Agent
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server:
    """What the app holds: the store, the token checker, a facade per (agent, session)."""

    def __init__(self, store: Store, auth_ttl: float, max_sessions: int) -> None:
        self.store = store
        self.auth = Authenticator(store, ttl=auth_ttl)
        self.max_sessions = max_sessions
        self._facades: OrderedDict[tuple[str, str], _Facade] = OrderedDict()
        self._lock = threading.Lock()

    def facade(self, agent: str, session: str | None) -> _Facade:
        """The facade of ``agent``'s session ``session``; a fresh one, remembering nothing, for none."""
        if session is None:
            return _Facade(Agent(self.store.session(agent), signing=False))
        key = (agent, session)
        with self._lock:
            f = self._facades.get(key)
            if f is not None:
                self._facades.move_to_end(key)
                return f
        made = _Facade(Agent(self.store.session(agent, name=session), signing=False))  # the server holds no agent's key
        with self._lock:
            f = self._facades.setdefault(key, made)
            self._facades.move_to_end(key)
            while len(self._facades) > self.max_sessions:
                self._facades.popitem(last=False)
        return f

    def sessions(self) -> int:
        with self._lock:
            return len(self._facades)

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


def session_of(request: Request) -> str | None:
    """The session a request names (``Comity-Session``), checked; None if it names none."""
    sid = request.headers.get(SESSION_HEADER.lower())
    if sid is None:
        return None
    try:
        return check_agent(sid, "session")
    except Invalid as e:
        raise Invalid(SESSION_HEADER, e.message.split(": ", 1)[-1]) from None


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


# ------------------------------------------------------------------ the app


def create_app(
    store: Store, *, auth_ttl: float = 5.0, max_body_bytes: int | None = None, max_sessions: int = MAX_SESSIONS,
    dashboard: bool = True, evidence: str | None = None,
) -> FastAPI:
    """The HTTP API over ``store`` (which it uses from many threads; the store is thread-safe),
    and, unless ``dashboard`` is off, the dashboard at ``/`` (``evidence``: a chaos report's JSON)."""
    server = _Server(store, auth_ttl, max_sessions)
    app = FastAPI(
        title="comity",
        version=__version__,
        summary="Coordination for teams of AI agents: causal contexts, fencing, tasks, news.",
        description=(
            "One `POST /v1/{verb}` per agent verb; the body holds the verb's arguments and the answer is "
            "the verb's JSON object, with `news` and `stale`. Authenticate with "
            "`Authorization: Bearer TOKEN` (from `comity agent add NAME`): the agent acting is the "
            "token's; an optional `Comity-Agent` header names the agent you mean to be, refused (403) unless it "
            "is the token's. `Comity-Session: ID` names the session (its news position and the contexts it "
            "read); a request naming none is a session of its own and remembers nothing.\n\n" + _ERRORS_DOC
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
            return _answer(422, {"error": "invalid", "field": "body", "message": "body: could not be parsed: send one JSON object (UTF-8) of the verb's arguments, nested at most a few hundred levels deep (see /openapi.json)"})
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

    def verb_endpoint(verb: Verb) -> Callable[..., Response]:
        model = args_model(verb)
        optional = not any(f.is_required() for f in model.model_fields.values())
        name = verb.name

        def endpoint(request: Request, args: BaseModel | None, caller: Identity) -> Response:
            if name in ADMIN_VERBS and not caller.admin:
                return _answer(403, {"error": "forbidden", "message": f"{name} needs an admin token: an acceptance policy decides"
                                     f" what accepts everyone's work; {caller.agent}'s token is not one"})
            try:
                facade = server.facade(caller.agent, session_of(request))
                given = {} if args is None else args.model_dump(exclude_unset=True)
                with facade.lock:
                    answer = facade.agent.call(name, given)
                return _answer(200, answer)
            except ComityError as e:
                return fail(e)
            except Exception:
                return bug(name)

        body_default = Body(None) if optional else Body(...)
        endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
                inspect.Parameter("args", inspect.Parameter.KEYWORD_ONLY, annotation=model | None if optional else model, default=body_default),
                inspect.Parameter("caller", inspect.Parameter.KEYWORD_ONLY, annotation=Identity, default=Depends(authenticate)),
            ],
            return_annotation=Response,
        )
        endpoint.__name__ = name
        return endpoint

    for verb in VERBS:
        ok = {"description": verb.summary, "content": {"application/json": {"schema": output_schema(verb)}}}
        app.add_api_route(
            f"/v1/{verb.name}",
            verb_endpoint(verb),
            methods=["POST"],
            summary=verb.summary,
            description=verb.text,
            operation_id=verb.name,
            tags=["tasks" if verb.name.startswith("task_") else "verbs"],
            response_model=None,
            responses={200: ok, **_RESPONSES},
        )

    @app.post("/v1/admin/agent_add", summary="Issue a token for a new agent (admin token only).", tags=["admin"],
              operation_id="agent_add", response_model=Token, responses=_RESPONSES)
    def agent_add(args: AgentAdd, caller: Annotated[Identity, Depends(authenticate)]) -> Response:
        if not caller.admin:
            return _answer(403, {"error": "forbidden", "message": f"issuing tokens needs an admin token; {caller.agent}'s is not one"})
        try:
            issued = issue_token(store.session(caller.agent), args.name, admin=args.admin, rotate=args.rotate)
            server.auth.forget(args.name)
            return _answer(200, issued)
        except ComityError as e:
            return fail(e)
        except Exception:
            return bug("agent_add")

    replication = Endpoint(store)

    @app.post("/v1/admin/sync", summary="Replication: a replica's anti-entropy and forwarded transactions (admin token only).",
              tags=["admin"], operation_id="sync", responses=_RESPONSES)
    async def sync(request: Request, caller: Annotated[Identity, Depends(authenticate)]) -> Response:
        """One replication message (``comity.sync``): ``{"type": "hello" | "pull" | "push" | "txn" | …, "store": …}``.
        A replica writes on behalf of every agent whose events it carries, so only admin tokens may."""
        if not caller.admin:
            return _answer(403, {"error": "forbidden", "message": f"replication needs an admin token; {caller.agent}'s is not one"})
        try:
            message = json.loads(await request.body())
        except ValueError:
            return _answer(422, {"error": "invalid", "field": "body", "message": "body: is not valid JSON"})
        try:
            return _answer(200, await run_in_threadpool(replication.handle, message))
        except Exception:
            return bug("sync")

    if dashboard:
        from .dashboard import mount

        mount(app, store, server.auth, evidence=evidence)

    # Authentication and the body cap come before a byte of the body is read (comity.server.limits).
    app.add_middleware(
        RequestGuard,
        max_body=max_body_bytes if max_body_bytes is not None else default_max_body(store.max_value_bytes),
        identify=identify_with(server.auth.identify),
        protect=lambda scope: scope.get("method") == "POST" and str(scope.get("path", "")).startswith("/v1/"),
        json_bodies=True,  # `curl -d '{…}'` sends no JSON content type; the API reads nothing but JSON
    )
    return app
