"""The MCP server: the agent verbs as MCP tools, one :class:`comity.work.Agent` per connection.

Each tool calls one verb of the agent facade and answers its JSON object as is: the
operation's own fields at the top level, plus ``news`` and ``stale``, because agent
hosts drop MCP notifications (DESIGN.md, principle 7).  A refusal is a ``ToolError``
whose text says what happened, the news that explains it, and the next call to make.

One connection is one session: the facade remembers its news position and the
contexts of what it read, so ``write`` and ``task_claim`` are checked against what
this agent saw without the model copying tokens around.  A background task sends a
heartbeat while the process lives; the news it sees waits for the next answer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Protocol

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..errors import ComityError

__all__ = ["CONTRACT", "BENCH_ENV", "McpSession", "Sessions", "build_server", "refusal_text", "serve_stdio", "serve_http"]

log = logging.getLogger("comity.mcp")

# Set to 1 to add the `noop` tool: `comity bench mcp` measures the SDK's own cost with it.
BENCH_ENV = "COMITY_MCP_BENCH"

# The tools and parameters every comity MCP server offers (the contract; tests pin it).
CONTRACT: dict[str, list[str]] = {
    "whoami": [],
    "read": ["key"],
    "write": ["key", "value", "context", "keep_both"],
    "create": ["key", "value"],
    "news": [],
    "task_add": ["title", "body", "deps", "labels"],
    "task_ready": [],
    "task_assign": ["id", "agent"],
    "task_claim": ["id", "context", "ttl", "steal"],
    "task_renew": ["id", "token"],
    "task_checkpoint": ["id", "token", "note"],
    "task_complete": ["id", "token", "result"],
    "task_release": ["id", "token"],
    "seq_next": ["name"],
    "reserve_paths": ["paths", "ttl", "shared"],
    "release_paths": ["paths"],
    "why": ["target"],
}

INSTRUCTIONS = """\
comity coordinates you with other agents working on the same repository and task board.
- Every answer carries `news` (what others changed in what you touched since you last
  looked) and `stale` (keys and tasks you read that the news makes out of date). Read it.
- Read a key before you write it: your write is checked against what you read, and
  refused, with the news, if someone changed it since. Re-read, merge, retry.
- Take a name with `create` (refused if it exists), a number with `seq_next`.
- Claim a task before working on it (`task_ready`, then `task_claim`); pass the token it
  returns to `task_checkpoint` and `task_complete`. A refusal means someone else has it.
- Reserve paths before editing shared files (`reserve_paths`).
"""

# The agent facade's errors speak the CLI's language; an MCP client calls tools instead.
_HINTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"`comity get ([^`]+)`"), r'read(key="\1")'),
    (re.compile(r"`comity task show ([^`]+)`"), r'task_show(id="\1")'),
    (re.compile(r"`comity task ready`"), "task_ready()"),
    (re.compile(r"`comity task list`"), "task_list()"),
    (re.compile(r"`comity reservations`"), "reservations()"),
    (re.compile(r"`comity keys`"), "keys()"),
    (re.compile(r"`comity why`"), "why(target=...)"),
    (re.compile(r"--keep-both"), "keep_both=true"),
    (re.compile(r"--steal"), "steal=true"),
    (re.compile(r"give one with --type"), "give one with type="),
    (re.compile(r"leave --type out"), "leave type out"),
    (re.compile(r"pass --agent NAME or set COMITY_AGENT"), "start the server as `comity mcp --agent NAME` (or set COMITY_AGENT)"),
]

# What to do next, when the message itself does not say.
_NEXT: dict[str, str] = {
    "fenced": "stop working on this task: another agent holds it now; call task_ready() for other work",
    "lease_expired": "call task_claim(id=...) again: you get the task back if nobody took it",
    "not_found": "check the name or id (task_list(), keys()) and call again",
    "invalid": "fix that argument and call again",
    "unavailable": "the store is unreachable or busy; retry in a moment",
}


# What to do after a refusal by the state, by the kind of verb.
_STALE_NEXT: dict[str, str] = {
    "task": "another agent got there first: call task_ready() for other work, or task_show(id=...) to see it",
    "reserve": "someone holds an overlapping reservation: wait for it, or work elsewhere (reservations())",
    "": "the state moved on: read it again and retry",
}


def _news_line(n: dict[str, Any]) -> str:
    token = f" token={n['token']}" if "token" in n else ""
    return f"{n.get('agent', '?')} {n.get('op', '?')} {n.get('key', '?')} (pos {n.get('pos', '?')}){token}"


def refusal_text(e: ComityError, verb: str = "") -> str:
    """A refusal as an agent can act on it: what happened, the news, what to do next."""
    message = e.message
    for pattern, repl in _HINTS:
        message = pattern.sub(repl, message)
    lines = [f"{e.code}: {message}"]
    advice = _NEXT.get(e.code)
    if e.code == "stale_context":
        advice = _STALE_NEXT.get(verb.split("_", 1)[0], _STALE_NEXT[""])
    if advice and not any(hint in message for hint in ("call ", "retry", "read(", "choose", "re-read", "wait", "see ")):
        lines[0] += f"; {advice}"
    news = getattr(e, "news", None) or e.details.get("news") or []
    for n in news:
        lines.append(f"news: {_news_line(n)}")
    rejected = e.details.get("rejected")
    if rejected is not None:
        lines.append(f"not written (your value, kept here so nothing is lost): {json.dumps(rejected, ensure_ascii=False)}")
    return "\n".join(lines)


class Facade(Protocol):
    """The agent verbs: :class:`comity.work.Agent` in process, ``comity.remote.RemoteAgent`` over HTTP."""

    def heartbeat(self) -> dict[str, Any]: ...


class McpSession:
    """One MCP connection's agent: the facade and a lock (the SDK runs tools on worker
    threads).  News is the facade's: every answer carries what the session collected and
    has not yet delivered, including what a refusal or a heartbeat saw."""

    def __init__(
        self, facade: Facade, agent: str | None, close: Callable[[], None] | None = None, *, session_id: str | None = None
    ) -> None:
        self.facade = facade
        self.agent = agent
        self.session_id = session_id or getattr(getattr(facade, "session", None), "id", None)
        self.lock = threading.Lock()
        self.last_call = time.monotonic()
        self._close = close

    def call(self, verb: str, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.last_call = time.monotonic()
            try:
                answer: dict[str, Any] = getattr(self.facade, verb)(**kwargs)
            except ComityError as e:
                raise ToolError(refusal_text(e, verb)) from None
            return answer

    def heartbeat(self) -> None:
        if self.agent is None:
            return
        with self.lock:
            try:
                self.facade.heartbeat()  # keeps the news it sees for the next answer
            except ComityError as e:
                log.warning("heartbeat refused: %s", e.message)

    def close(self) -> None:
        if self._close is not None:
            self._close()


class Sessions(Protocol):
    """Which session a tool call belongs to, and every live one (for heartbeats)."""

    def for_call(self, ctx: Context) -> McpSession: ...

    def live(self) -> list[McpSession]: ...


class OneSession:
    """stdio: the process is the connection."""

    def __init__(self, session: McpSession) -> None:
        self.session = session

    def for_call(self, ctx: Context) -> McpSession:
        return self.session

    def live(self) -> list[McpSession]:
        return [self.session]


# Parameter types the tools share (module level: the SDK resolves annotations in these globals).
Key = Annotated[str, Field(description="A path-like key, e.g. 'notes/auth-design' or 'files/db/migrations/0267.sql'.")]
Value = Annotated[Any, Field(description="Any JSON value: object, list, string, number, boolean or null.")]
TaskId = Annotated[str, Field(description="A task id, e.g. 'T-12'.")]
Token = Annotated[int, Field(description="The fencing token task_claim returned for this task.")]
Ttl = Annotated[float | None, Field(description="Lease length in seconds (default 300).")]
Paths = Annotated[list[str], Field(description="File paths or globs, e.g. ['src/auth/**', 'README.md'].")]


def _answer(body: dict[str, Any]) -> CallToolResult:
    # Compact JSON for the model (news can be long), and the same object as structured content.
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(body, ensure_ascii=False))], structured_content=body)


def build_server(sessions: Sessions, *, bench: bool | None = None) -> MCPServer:
    """The MCP server with comity's tools, each calling one verb of the caller's session."""
    from .. import __version__

    app = MCPServer("comity", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")

    def call(ctx: Context, verb: str, **kwargs: Any) -> CallToolResult:
        return _answer(sessions.for_call(ctx).call(verb, **kwargs))

    @app.tool()
    def whoami(ctx: Context) -> CallToolResult:
        """Who you are here: your agent name, your session, the store, and your news position.
        Call it first to check the connection. Example: whoami()"""
        return call(ctx, "whoami")

    @app.tool()
    def read(ctx: Context, key: Key) -> CallToolResult:
        """Read a key: its values and the context of your read. One value is the normal case;
        several are siblings (concurrent writes nobody resolved yet): merge them and write the
        result, which replaces them all. The server remembers what you read, so a later
        write(key=...) is checked against it. An absent key has values []. Example:
        read(key="notes/auth-design")"""
        return call(ctx, "read", key=key)

    @app.tool()
    def write(
        ctx: Context,
        key: Key,
        value: Value,
        context: Annotated[str | None, Field(description="The context of an earlier read; default: your last read of this key.")] = None,
        keep_both: Annotated[bool, Field(description="If the key changed since your read, keep your value beside the newer one as a sibling instead of failing.")] = False,
    ) -> CallToolResult:
        """Write a JSON value to a key over what you last read of it. Refused if anyone changed
        the key since your read (the error names who): read it again, merge, and retry; or pass
        keep_both=true to keep both values as siblings. A key you never read is written only if
        it is absent (to take a new name, prefer create). Example:
        write(key="notes/auth-design", value={"status": "agreed", "by": "alice"})"""
        return call(ctx, "write", key=key, value=value, context=context, keep_both=keep_both)

    @app.tool()
    def create(ctx: Context, key: Key, value: Value) -> CallToolResult:
        """Create a key only if it does not exist: the safe way to take a name (a migration
        file, a branch, a lock). Refused, naming who holds it, if it exists: pick another name
        (for numbered files take a number with seq_next). Example:
        create(key="files/db/migrations/0267_add_index.sql", value={"task": "T-12"})"""
        return call(ctx, "create", key=key, value=value)

    @app.tool()
    def update(
        ctx: Context,
        key: Key,
        op: Annotated[str, Field(description="The operation: gcounter/pncounter 'inc'/'dec', orset 'add'/'remove', lww/mvreg 'set', flag 'enable'/'disable', ormap ops.")],
        arg: Annotated[Any, Field(description="The operation's JSON argument, e.g. 1 or 'backend'.")] = None,
        type: Annotated[str | None, Field(description="The CRDT type on a key's first update: gcounter, pncounter, lww, mvreg, orset, flag, ormap.")] = None,
    ) -> CallToolResult:
        """Apply a CRDT operation to a key (counters, sets, registers): it merges with everyone
        else's and is never refused as stale. Example: update(key="labels/T-12", op="add",
        arg="backend", type="orset")"""
        return call(ctx, "update", key=key, op=op, arg=arg, type=type)

    @app.tool()
    def delete(
        ctx: Context,
        key: Key,
        context: Annotated[str | None, Field(description="The context of an earlier read; default: your last read of this key.")] = None,
    ) -> CallToolResult:
        """Delete a key you read, if nobody changed it since (it leaves a tombstone). Example:
        delete(key="notes/old-plan")"""
        return call(ctx, "delete", key=key, context=context)

    @app.tool()
    def keys(
        ctx: Context,
        prefix: Annotated[str, Field(description="Only keys starting with this, e.g. 'notes/'.")] = "",
        limit: Annotated[int, Field(description="At most this many keys.")] = 200,
    ) -> CallToolResult:
        """List keys starting with a prefix. Example: keys(prefix="notes/")"""
        return call(ctx, "keys", prefix=prefix, limit=limit)

    @app.tool()
    def news(ctx: Context) -> CallToolResult:
        """Everything other agents changed since you last looked (each answer already carries
        the news about what you touched), and agents suspected of being stuck. Example: news()"""
        return call(ctx, "news")

    @app.tool()
    def task_add(
        ctx: Context,
        title: Annotated[str, Field(description="A one-line title.")],
        body: Annotated[str, Field(description="The longer description.")] = "",
        deps: Annotated[list[str], Field(description="Ids of tasks that must be done first, e.g. ['T-3'].")] = [],  # noqa: B006 - copied by pydantic
        labels: Annotated[list[str], Field(description="Labels, e.g. ['backend'].")] = [],  # noqa: B006
    ) -> CallToolResult:
        """Add a task to the board; the answer's `id` names it. Example:
        task_add(title="Fix login timeout", body="Sessions expire after 5 min", deps=["T-3"], labels=["backend"])"""
        return call(ctx, "task_add", title=title, body=body, deps=deps, labels=labels)

    @app.tool()
    def task_list(
        ctx: Context,
        state: Annotated[str | None, Field(description="Only tasks in this state: open, claimed, orphaned, done or failed.")] = None,
    ) -> CallToolResult:
        """Every task with its state and who holds it. Example: task_list(state="claimed")"""
        return call(ctx, "task_list", state=state)

    @app.tool()
    def task_ready(ctx: Context) -> CallToolResult:
        """Tasks you may claim now: open (or orphaned by an agent that died), unassigned or
        assigned to you, dependencies done. Pick one and task_claim it. Example: task_ready()"""
        return call(ctx, "task_ready")

    @app.tool()
    def task_show(ctx: Context, id: TaskId) -> CallToolResult:
        """One task: its body, state, holder, checkpoints (handoff notes). Example: task_show(id="T-12")"""
        return call(ctx, "task_show", id=id)

    @app.tool()
    def task_assign(ctx: Context, id: TaskId, agent: Annotated[str, Field(description="The agent's name, e.g. 'bob'.")]) -> CallToolResult:
        """Assign a task to an agent: only that agent may then claim it. Example:
        task_assign(id="T-12", agent="bob")"""
        return call(ctx, "task_assign", id=id, agent=agent)

    @app.tool()
    def task_claim(
        ctx: Context,
        id: TaskId,
        context: Annotated[str | None, Field(description="The task's context as you last read it; default: your last read of the task.")] = None,
        ttl: Ttl = None,
        steal: Annotated[bool, Field(description="Take the task from an agent suspected to be stuck (see news()).")] = False,
    ) -> CallToolResult:
        """Claim a task before working on it. The answer has `token` (pass it to task_checkpoint,
        task_complete, task_release), `expires`, and `handoff`: the notes of whoever held it
        before. Refused if another agent holds it, or it changed since you read it: the error
        names who; call task_ready() for other work. Example: task_claim(id="T-12")"""
        return call(ctx, "task_claim", id=id, context=context, ttl=ttl, steal=steal)

    @app.tool()
    def task_claim_next(ctx: Context, ttl: Ttl = None) -> CallToolResult:
        """Claim the first ready task (retrying when another agent wins it first). The answer is
        task_claim's. Example: task_claim_next()"""
        return call(ctx, "task_claim", next=True, ttl=ttl)

    @app.tool()
    def task_renew(ctx: Context, id: TaskId, token: Token, ttl: Ttl = None) -> CallToolResult:
        """Extend your lease on a task during long silent work (a checkpoint renews it too).
        Example: task_renew(id="T-12", token=7)"""
        return call(ctx, "task_renew", id=id, token=token, ttl=ttl)

    @app.tool()
    def task_checkpoint(
        ctx: Context, id: TaskId, token: Token, note: Annotated[str, Field(description="What is done and what is next.")]
    ) -> CallToolResult:
        """Record progress on a task you hold: if you stop, whoever takes over gets this note.
        Renews your lease. Example: task_checkpoint(id="T-12", token=7, note="migration written; tests next")"""
        return call(ctx, "task_checkpoint", id=id, token=token, note=note)

    @app.tool()
    def task_complete(
        ctx: Context, id: TaskId, token: Token, result: Annotated[str, Field(description="What came of it: a commit, a summary.")] = ""
    ) -> CallToolResult:
        """Complete a task you hold. Refused if your token was superseded (another agent took
        over): stop, and call task_ready(). Example: task_complete(id="T-12", token=7, result="fixed in 3f2a1c")"""
        return call(ctx, "task_complete", id=id, token=token, result=result)

    @app.tool()
    def task_release(ctx: Context, id: TaskId, token: Token) -> CallToolResult:
        """Give a task you hold back to the queue, for someone else. Example: task_release(id="T-12", token=7)"""
        return call(ctx, "task_release", id=id, token=token)

    @app.tool()
    def task_fail(
        ctx: Context, id: TaskId, token: Token, reason: Annotated[str, Field(description="Why it cannot be done.")] = ""
    ) -> CallToolResult:
        """Mark a task you hold failed. Example: task_fail(id="T-12", token=7, reason="needs a product decision")"""
        return call(ctx, "task_fail", id=id, token=token, reason=reason)

    @app.tool()
    def seq_next(ctx: Context, name: Annotated[str, Field(description="The sequence, e.g. 'migrations'.")]) -> CallToolResult:
        """Take the next number of a sequence: unique and increasing, never handed out twice.
        Use it for migration numbers and ticket ids. Example: seq_next(name="migrations")"""
        return call(ctx, "seq_next", name=name)

    @app.tool()
    def reserve_paths(
        ctx: Context,
        paths: Paths,
        ttl: Annotated[float | None, Field(description="Seconds the reservation lasts (default 3600).")] = None,
        shared: Annotated[bool, Field(description="Shared: others may reserve overlapping paths shared too.")] = False,
    ) -> CallToolResult:
        """Reserve files or globs before editing them, so no one else edits them at once.
        Exclusive unless shared=true; refused, naming the holder, on overlap. Example:
        reserve_paths(paths=["src/auth/**"], ttl=1800)"""
        return call(ctx, "reserve_paths", paths=paths, ttl=ttl, shared=shared)

    @app.tool()
    def release_paths(ctx: Context, paths: Paths) -> CallToolResult:
        """Release your reservations of these paths or globs. Example: release_paths(paths=["src/auth/**"])"""
        return call(ctx, "release_paths", paths=paths)

    @app.tool()
    def reservations(ctx: Context) -> CallToolResult:
        """Every live path reservation and who holds it. Example: reservations()"""
        return call(ctx, "reservations")

    @app.tool()
    def agents(ctx: Context) -> CallToolResult:
        """Agents seen lately: their progress, whether they are suspected of being stuck, what
        they hold. Example: agents()"""
        return call(ctx, "agents")

    @app.tool()
    def why(ctx: Context, target: Annotated[str, Field(description="A task id (e.g. 'T-12') or a key.")]) -> CallToolResult:
        """The causal history of a task or key: who did what, and what each had seen. Use it to
        understand a refusal or a conflict. Example: why(target="T-12")"""
        return call(ctx, "why", target=target)

    if bench is None:
        bench = os.environ.get(BENCH_ENV) == "1"
    if bench:

        @app.tool()
        def noop() -> CallToolResult:
            """Does nothing (the benchmark's baseline: the SDK's own cost). Example: noop()"""
            return _answer({})

    return app


async def _heartbeats(sessions: Sessions, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        for s in sessions.live():
            try:
                await anyio.to_thread.run_sync(s.heartbeat)
            except Exception:  # a missed heartbeat must not take the server down
                log.exception("heartbeat failed")


async def _with_heartbeats(sessions: Sessions, interval: float, serve: Callable[[], Awaitable[None]]) -> None:
    async with anyio.create_task_group() as tg:
        if interval > 0:
            tg.start_soon(_heartbeats, sessions, interval)
        await serve()
        tg.cancel_scope.cancel()


def serve_stdio(session: McpSession, *, heartbeat: float = 30.0) -> None:
    """Serve one agent over stdin/stdout until the client hangs up."""
    sessions = OneSession(session)
    app = build_server(sessions)
    if heartbeat > 0:
        # A first heartbeat at once: the agent is seen alive from the moment its host starts.
        session.heartbeat()
    try:
        anyio.run(_with_heartbeats, sessions, heartbeat, app.run_stdio_async)
    finally:
        session.close()


def serve_http(
    sessions: Sessions,
    sock: socket.socket,
    *,
    heartbeat: float = 30.0,
    middleware: Callable[[Any], Any] | None = None,
) -> None:
    """Serve over streamable HTTP (``/mcp``) on a bound socket; ``middleware`` wraps the
    ASGI app (authentication)."""
    import uvicorn

    app = build_server(sessions)
    host = sock.getsockname()[0]
    asgi = app.streamable_http_app(host="127.0.0.1" if host in ("127.0.0.1", "::1", "localhost") else host)
    wrapped = middleware(asgi) if middleware is not None else asgi

    async def serve() -> None:
        config = uvicorn.Config(wrapped, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        await uvicorn.Server(config).serve(sockets=[sock])

    anyio.run(_with_heartbeats, sessions, heartbeat, serve)
