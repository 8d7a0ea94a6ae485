"""The dashboard's routes: pages, fragments for live refresh, the event stream, sign-in.

Every page is rendered from what the Python API answers; the only logic here is how to
show it.  Viewing needs an agent or admin token, entered once in the sign-in form: the
server keeps the token in memory under a random session id sent as an ``HttpOnly``,
``SameSite=Strict`` cookie, and checks it again (cached a few seconds) on every request,
so a rotated token stops the session too.  ``comity dashboard`` also issues one-time
sign-in links for the person on the machine.  Nothing here writes to the store.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from ...coord.liveness import PhiAccrual, activity, agents, recent_events
from ...coord.reservations import reservations
from ...errors import ComityError, Invalid, NotFound
from ...store import Session, Store
from ...work.conflicts import conflicts
from ...work.decisions import decisions
from ...work.feed import Filter, matches, recent
from ...work.tasks import STATES, Board, parse_task_id
from ...work.why import why
from ..auth import Authenticator, Identity
from .evidence import Evidence
from .pictures import bar_chart, causal_picture, sparkline, timeline_picture
from .tail import Tail, slim

__all__ = ["Dashboard", "mount", "COOKIE", "VIEWS"]

COOKIE = "comity_dash"
STATIC = Path(__file__).with_name("static")
VIEWS = [
    ("board", "/", "Board"),
    ("agents", "/agents", "Agents"),
    ("news", "/news", "Live news"),
    ("conflicts", "/conflicts", "Conflicts"),
    ("causality", "/causality", "Causality"),
    ("evidence", "/evidence", "Evidence"),
    ("repository", "/repository", "Repository"),
]
PER_COLUMN = 100
SESSION_TTL_S = 12 * 3600.0
CODE_TTL_S = 600.0
_SESSIONS_MAX = 10_000
# Board events: a task's record, its lease, its queue marker, its changes.
BOARD_PREFIXES = ("@task/", "@lease/@task/", "@open/", "@change/")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass
class _Viewer:
    identity: Identity
    token: str | None  # None: signed in with a one-time link on this machine
    expires: float


def _utc(t: float | None) -> str:
    if t is None:
        return "–"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _hlc_time(hlc: str | None) -> float | None:
    try:
        return int(str(hlc).split(".", 1)[0]) / 1000.0
    except (ValueError, TypeError):
        return None


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    s = max(0.0, now - t)
    if s < 90:
        return f"{s:.0f}s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.0f} days ago"


def _int(value: str | None, field: str, default: int | None = None, lo: int = 0, hi: int = 2**62) -> int | None:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise Invalid(field, f"must be a whole number, got {value[:40]!r}") from None
    if not lo <= n <= hi:
        raise Invalid(field, f"must be in [{lo}, {hi}], got {n}")
    return n


class Dashboard:
    """What a mounted dashboard holds: the store, the token checker, the viewers' sessions,
    the event tail and the evidence."""

    def __init__(self, store: Store, auth: Authenticator, *, evidence: str | Path | None = None,
                 secure_cookies: bool = False, poll: float = 0.05) -> None:  # fmt: skip
        self.store = store
        self.auth = auth
        self.secure_cookies = secure_cookies
        self.tail = Tail(store, poll=poll)
        self.evidence = Evidence(evidence)
        self.detector = PhiAccrual()
        self._viewers: dict[str, _Viewer] = {}
        self._codes: dict[str, float] = {}
        self._lock = threading.Lock()
        self.env = Environment(loader=PackageLoader("comity.server.dashboard", "templates"), autoescape=select_autoescape(["html"]))
        self.env.filters["utc"] = _utc
        self.env.filters["hlc_time"] = lambda h: _utc(_hlc_time(h))
        self.env.filters["tojson_attr"] = lambda v: json.dumps(v, separators=(",", ":"), default=str)
        self.env.globals["views"] = VIEWS

    # ------------------------------------------------------------------ viewers
    def one_time_link(self, base_url: str) -> str:
        """A sign-in link that works once, within ten minutes (for ``comity dashboard``)."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._codes = {c: t for c, t in self._codes.items() if t > now}
            self._codes[code] = now + CODE_TTL_S
        return f"{base_url.rstrip('/')}/signin?code={code}"

    def _new_viewer(self, identity: Identity, token: str | None) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            if len(self._viewers) >= _SESSIONS_MAX:
                self._viewers = {s: v for s, v in self._viewers.items() if v.expires > now}
                while len(self._viewers) >= _SESSIONS_MAX:
                    self._viewers.pop(next(iter(self._viewers)))
            self._viewers[sid] = _Viewer(identity, token, now + SESSION_TTL_S)
        return sid

    def viewer(self, request: Request) -> Identity | None:
        """Who is looking, from the session cookie; None if nobody signed in (or the token was
        rotated or the session expired)."""
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        with self._lock:
            v = self._viewers.get(sid)
            if v is None:
                return None
            if v.expires <= time.monotonic():
                del self._viewers[sid]
                return None
        if v.token is None:
            return v.identity
        try:
            ident = self.auth.identify(v.token)
        except ComityError:
            return None
        if ident is None:
            with self._lock:
                self._viewers.pop(sid, None)
        return ident

    def _cookie(self, response: Response, sid: str) -> None:
        response.set_cookie(COOKIE, sid, max_age=int(SESSION_TTL_S), path="/", httponly=True, samesite="strict",
                            secure=self.secure_cookies)  # fmt: skip

    # ------------------------------------------------------------------ rendering
    def render(self, name: str, http_status: int = 200, /, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**ctx)
        return HTMLResponse(html, status_code=http_status, headers=_headers())

    def session(self) -> Session:
        return self.store.session()

    # ------------------------------------------------------------------ views' data
    def board(self, q: dict[str, str]) -> dict[str, Any]:
        s = self.session()
        only = q.get("state") or None
        if only is not None and only not in STATES:
            raise Invalid("state", f"{only[:40]!r} is not a task state; use one of {', '.join(STATES)}")
        offset = _int(q.get("offset"), "offset", 0) or 0
        tasks = Board(s).tasks()
        now = s.now()
        from ...work.changes import Changes

        by_task: dict[str, list[dict[str, Any]]] = {}
        for c in Changes(s).find():
            by_task.setdefault(str(c.get("task")), []).append({"id": c["id"], "state": c["state"], "author": c.get("author")})
        state_of = {t["id"]: t["state"] for t in tasks}
        columns: dict[str, list[dict[str, Any]]] = {st: [] for st in STATES}
        for t in tasks:
            columns[t["state"]].append(self._card(t, by_task, state_of))
        shown = {}
        for st, cards in columns.items():
            if st in ("done", "failed", "submitted"):
                cards.reverse()  # the latest finished first
            start = offset if st == only else 0
            shown[st] = {"cards": cards[start : start + PER_COLUMN], "total": len(cards), "offset": start,
                         "more": max(0, len(cards) - start - PER_COLUMN)}  # fmt: skip
        states = [only] if only else list(STATES)
        return {"columns": shown, "states": states, "now": now, "total": len(tasks), "only": only}

    def _card(self, t: dict[str, Any], by_task: dict[str, list[dict[str, Any]]], state_of: dict[str, str]) -> dict[str, Any]:
        lease = t.get("lease") or {}
        cps = t.get("checkpoints") or []
        return {
            "id": t["id"], "title": t.get("title", ""), "state": t["state"], "labels": t.get("labels", []),
            "holder": lease.get("holder") or (t.get("claimed_by") if t["state"] in ("claimed", "orphaned") else None),
            "token": lease.get("token") or (t.get("done_token") if t["state"] in ("done", "submitted", "failed") else None),
            "expires": lease.get("expires"), "attempts": t.get("attempts", 0), "assignee": t.get("assignee"),
            "deps": [{"id": d, "state": state_of.get(d, "?")} for d in t.get("deps", [])],
            "handoff": cps[-1] if cps else None, "checkpoints": len(cps), "completed_by": t.get("completed_by"),
            "changes": by_task.get(t["id"], []), "reopened": t.get("reopened"), "result": (t.get("result") or "")[:200],
        }  # fmt: skip

    def task_card(self, task_id: str) -> dict[str, Any]:
        s = self.session()
        b = Board(s)
        t = b.show(task_id)
        from ...work.changes import Changes

        changes = [{"id": c["id"], "state": c["state"], "author": c.get("author")} for c in Changes(s).find(task=t["id"])]
        deps = {}
        for d in t.get("deps", []):
            try:
                deps[d] = b.show(d)["state"]
            except NotFound:
                deps[d] = "?"
        return {"card": self._card(t, {t["id"]: changes}, deps), "now": s.now()}

    def agents_view(self) -> dict[str, Any]:
        s = self.session()
        window = recent_events(s)  # one read of the log serves both
        statuses = agents(s, detector=self.detector, events=window)
        act = activity(s, detector=self.detector, events=window)
        res = reservations(s)
        now = act["now"]
        rows = []
        names = sorted({a.agent for a in statuses} | set(act["agents"]))
        by_name = {a.agent: a for a in statuses}
        for name in names:
            st = by_name.get(name)
            a = act["agents"].get(name, {})
            rows.append({
                "agent": name, "status": st, "activity": a,
                "spark": sparkline(a.get("phi", []), threshold=self.detector.threshold),
                "last_ago": _ago((a.get("last_action") or {}).get("time"), now),
                "reservations": [r for r in res if r.holder == name],
            })  # fmt: skip
        return {"rows": rows, "now": now, "threshold": self.detector.threshold, "window": act["window_events"]}

    def news_view(self, q: dict[str, str]) -> dict[str, Any]:
        f = Filter.parse(q.get("agent") or None, q.get("prefix") or None, q.get("task") or None)
        before = _int(q.get("before"), "before", None, 1)
        page = recent(self.session(), f, before=before, limit=100)
        return {**page, "f": f, "before": before}

    def conflicts_view(self, q: dict[str, str]) -> dict[str, Any]:
        before = _int(q.get("before"), "before", None, 1)
        return {"c": conflicts(self.session(), before=before), "before": before}

    def causality_view(self, q: dict[str, str]) -> dict[str, Any]:
        target = (q.get("target") or "").strip()
        s = self.session()
        suggestions: list[str] = []
        c = conflicts(s, budget=5000, limit=20)
        for item in c["refused_claims"] + c["fenced"]:
            suggestions.append(item["task"])
        for item in c["refused_writes"] + c["siblings"]:
            if item.get("key"):
                suggestions.append(item["key"])
        suggestions = list(dict.fromkeys(suggestions))[:12]
        if not target:
            return {"target": "", "suggestions": suggestions, "why": None, "picture": None}
        w = why(s, target)
        return {"target": target, "suggestions": suggestions, "why": w, "picture": causal_picture(w),
                "stream_task": w["key"].split("/", 1)[1] if w["key"].startswith("@task/") else None}  # fmt: skip

    def evidence_view(self, q: dict[str, str]) -> dict[str, Any]:
        ev = self.evidence
        ev.ensure()
        out: dict[str, Any] = {"status": ev.status(), "error": ev.error, "report": ev.report}
        if ev.report is not None:
            rows = [r for r in ev.report["rows"] if isinstance(r, dict) and "scenario" in r and "strategy" in r]
            faulted = [r for r in rows if r.get("faults", "nemesis") != "none"]
            checkers = list(dict.fromkeys(c for r in faulted for c in (r.get("anomalies") or {})))
            scenarios = list(dict.fromkeys(r["scenario"] for r in faulted))
            strategies = list(dict.fromkeys(r["strategy"] for r in faulted))
            value = {}
            for r in faulted:
                runs = r.get("runs") or 0
                hit = r.get("runs_with_anomaly")
                if hit is None:  # an older report: the largest count of any checker
                    hit = max((r.get("anomalies") or {}).values(), default=0)
                value[(r["scenario"], r["strategy"])] = round(100.0 * hit / runs, 1) if runs else 0.0
            out.update(faulted=faulted, fault_free=[r for r in rows if r.get("faults") == "none"], checkers=checkers,
                       chart=bar_chart(scenarios, strategies, value))  # fmt: skip
        scenario = q.get("scenario") or "triage_race"
        strategy = q.get("strategy") or "none"
        seed = _int(q.get("seed"), "seed", 1, 0, 2**32 - 1) or 0
        quiet = q.get("quiet") == "1"
        r = ev.run(scenario, strategy, seed, quiet)
        bad = {i for a in r["found"] for i in a.get("ops", [])}
        from ...chaos.scenarios import SCENARIOS
        from ...chaos.strategies import STRATEGIES

        out["run"] = r
        out["timeline"] = timeline_picture(r["history"], r["faults"], bad)
        out["choice"] = {"scenario": scenario, "strategy": strategy, "seed": seed, "quiet": quiet,
                         "scenarios": list(SCENARIOS), "strategies": list(STRATEGIES)}  # fmt: skip
        return out

    def repository_view(self) -> dict[str, Any]:
        from ...work.numbers import allocations

        s = self.session()
        return {"migrations": allocations(s), "decisions": [d.to_json() for d in decisions(s)],
                "reservations": [r.to_json() for r in reservations(s)], "now": s.now()}  # fmt: skip

    # ------------------------------------------------------------------ stream
    async def stream(self, request: Request, f: Filter, board: bool, after: int | None) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        sub, head = self.tail.subscribe(loop)
        try:
            yield b"retry: 1000\n\n"
            if after is not None and after < head:
                # Catch up from the log (a reconnect): at most 1,000 events, else ask for a reload.
                s = self.session()
                missed = await asyncio.to_thread(s.log, after=after, limit=1000)
                if len(missed) == 1000 and missed[-1]["pos"] < head:
                    yield b"event: reload\ndata: {}\n\n"
                    return
                for e in missed:
                    if e["pos"] <= head and self._passes(e, f, board):
                        yield _sse(slim(e))
            while True:
                try:
                    batch = await asyncio.wait_for(sub.queue.get(), timeout=15.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                if batch is None or sub.dropped:
                    return
                for e in batch:
                    if self._passes(e, f, board):
                        yield _sse(e)
        finally:
            self.tail.unsubscribe(sub)

    @staticmethod
    def _passes(e: dict[str, Any], f: Filter, board: bool) -> bool:
        if board:
            return str(e.get("key", "")).startswith(BOARD_PREFIXES)
        return matches(e, f)


def _sse(e: dict[str, Any]) -> bytes:
    data = json.dumps(e, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"id: {e['pos']}\nevent: change\ndata: {data}\n\n".encode()


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store", "X-Frame-Options": "DENY"}  # fmt: skip


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this server only."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def mount(app: FastAPI, store: Store, auth: Authenticator, *, evidence: str | Path | None = None,
          secure_cookies: bool = False, poll: float = 0.05) -> Dashboard:  # fmt: skip
    """Serve the dashboard from ``app`` at ``/`` (its assets under ``/dash/static``)."""
    dash = Dashboard(store, auth, evidence=evidence, secure_cookies=secure_cookies, poll=poll)
    app.state.dashboard = dash
    router = APIRouter(include_in_schema=False)
    app.mount("/dash/static", StaticFiles(directory=STATIC), name="dash-static")

    def signin_page(request: Request, status: int, message: str | None = None) -> HTMLResponse:
        nxt = _safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if request.url.path == "/signin":
            nxt = _safe_next(request.query_params.get("next"))
        return dash.render("signin.html", status, message=message, next=nxt, view=None, viewer=None)

    def page(name: str, build: Callable[[dict[str, str]], dict[str, Any]]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            who = dash.viewer(request)
            if who is None:
                if request.query_params.get("fragment"):
                    return JSONResponse({"error": "unauthorized", "message": "sign in first"}, 401, headers=_headers())
                return signin_page(request, 401, "Sign in with an agent or admin token to view the dashboard.")
            q = {k: v for k, v in request.query_params.items()}
            try:
                data = build(q)
            except ComityError as e:
                status = 404 if isinstance(e, NotFound) else 422
                return dash.render("error.html", status, error=e, view=name, viewer=who, q=q)
            fragment = bool(q.get("fragment"))
            return dash.render(f"{name}.html", view=name, viewer=who, q=q, fragment=fragment, query=urlencode, quote=quote,
                               ago=_ago, **data)  # fmt: skip

        endpoint.__name__ = f"dashboard_{name}"
        return endpoint

    builders: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
        "board": dash.board,
        "agents": lambda q: dash.agents_view(),
        "news": dash.news_view,
        "conflicts": dash.conflicts_view,
        "causality": dash.causality_view,
        "evidence": dash.evidence_view,
        "repository": lambda q: dash.repository_view(),
    }
    for name, path, _title in VIEWS:
        router.add_api_route(path, page(name, builders[name]), methods=["GET"], response_class=HTMLResponse)

    @router.get("/dash/task/{task_id}")
    def task_fragment(request: Request, task_id: str) -> Response:
        if dash.viewer(request) is None:
            return JSONResponse({"error": "unauthorized", "message": "sign in first"}, 401, headers=_headers())
        try:
            data = dash.task_card(parse_task_id(task_id))
        except ComityError as e:
            return JSONResponse(e.to_json(), 404 if isinstance(e, NotFound) else 422, headers=_headers())
        return dash.render("_card.html", **data)

    @router.get("/dash/stream")
    async def stream(request: Request) -> Response:
        if dash.viewer(request) is None:
            return JSONResponse({"error": "unauthorized", "message": "sign in first"}, 401, headers=_headers())
        q = request.query_params
        try:
            f = Filter.parse(q.get("agent") or None, q.get("prefix") or None, q.get("task") or None)
            last = request.headers.get("last-event-id") or q.get("after")
            after = _int(last, "after", None, 0)
        except ComityError as e:
            return JSONResponse(e.to_json(), 422, headers=_headers())
        headers = {**_headers(), "X-Accel-Buffering": "no"}
        return StreamingResponse(dash.stream(request, f, q.get("board") == "1", after), media_type="text/event-stream", headers=headers)

    @router.get("/signin")
    def signin_get(request: Request) -> Response:
        code = request.query_params.get("code")
        if code:
            with dash._lock:
                expires = dash._codes.pop(code, None)
            if expires is None or expires <= time.monotonic():
                return signin_page(request, 401, "That sign-in link was used already or has expired; run `comity dashboard` again, or sign in with a token.")
            sid = dash._new_viewer(Identity("local", True), None)
            resp = RedirectResponse("/", 303, headers=_headers())
            dash._cookie(resp, sid)
            return resp
        if dash.viewer(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")), 303, headers=_headers())
        return signin_page(request, 200)

    @router.post("/signin")
    async def signin_post(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin and origin != "null" and origin.split("://", 1)[-1] != request.headers.get("host"):
            return signin_page(request, 403, "Sign in from the dashboard's own page.")
        body = await request.body()
        form = parse_qs(body.decode("utf-8", "replace")[:4096]) if body else {}
        token = (form.get("token") or [""])[0].strip()
        nxt = _safe_next((form.get("next") or ["/"])[0])
        try:
            ident = await asyncio.to_thread(dash.auth.identify, token)
        except ComityError as e:
            return signin_page(request, 503, e.message)
        if ident is None:
            return signin_page(request, 401, "That token is unknown or malformed. Tokens come from `comity agent add NAME` (NAME.64 hex digits).")
        sid = dash._new_viewer(ident, token)
        resp = RedirectResponse(nxt, 303, headers=_headers())
        dash._cookie(resp, sid)
        return resp

    @router.post("/signout")
    def signout(request: Request) -> Response:
        sid = request.cookies.get(COOKIE)
        if sid:
            with dash._lock:
                dash._viewers.pop(sid, None)
        resp = RedirectResponse("/signin", 303, headers=_headers())
        resp.delete_cookie(COOKIE, path="/")
        return resp

    app.include_router(router)
    return dash
