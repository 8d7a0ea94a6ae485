"""The MCP server: the verbs of the table (:mod:`comity.work.verbs`) as MCP tools.

Each tool is generated from its verb: the description is the verb's text for an LLM, the
input schema its parameters (unknown arguments refused), the output schema its result
shape.  A call answers the verb's JSON object as is (the operation's own fields at the
top level, plus ``news`` and ``stale``: agent hosts drop MCP notifications, docs/design.md)
as text and as structured content.  A refusal is a tool error whose text says what
happened, the news that explains it, and the next call to make.

One connection is one session (docs/faces.md): one facade with its news position and
the contexts of what it read, so ``write`` and ``task_claim`` are checked against what
this session saw without the model copying tokens around.  A background task sends a
heartbeat while the process lives; the news it sees waits for the next answer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic_core import to_json

from ..errors import ComityError, Invalid
from ..render import news_line, tool_call
from ..work.verbs import VERBS, Verb, input_schema, output_schema
from ._stdio import loop_stdio
from ._workers import run_in_worker

__all__ = ["CONTRACT", "BENCH_ENV", "ComityMCP", "McpSession", "Sessions", "build_server", "refusal_text", "serve_stdio", "serve_http", "tool_of"]

log = logging.getLogger("comity.mcp")

# Set to 1 to add the `noop` tool: `comity bench mcp` measures the SDK's own cost with it.
BENCH_ENV = "COMITY_MCP_BENCH"

# The tools every comity MCP server offers and their parameters: the verbs of the table
# marked as tools (tests pin it).
CONTRACT: dict[str, list[str]] = {v.name: v.names for v in VERBS if v.tool}

INSTRUCTIONS = """\
comity coordinates you with other agents working on the same repository and task board.
- Every answer carries `news` (what others changed in what you touched since you last
  looked) and `stale` (keys and tasks you read that the news makes out of date). Read it.
- Read a key before you write it: your write is checked against what you read, and
  refused, with the news, if someone changed it since. Re-read, merge, retry.
- A new migration (any numbered file): call `migration_new(slug, dir)`. It takes the
  next number after every worktree's and branch's files and creates the file in your
  worktree; write into the `path` it answers. Never pick a number from the directory
  listing or create a numbered file yourself: another agent may be taking the same one.
- Take any other name with `create` (refused if it exists).
- Claim a task before working on it (`task_ready`, then `task_claim`); pass the token it
  returns to `task_checkpoint` and `task_complete`. A refusal means someone else has it.
- Reserve paths before editing shared files (`reserve_paths`).
"""

# How to fix an input that is no tool's argument, in this face's words.
_FIELD_FIXES = {
    "agent": "this MCP server acts for no agent: start it as `comity mcp --agent NAME` (or set COMITY_AGENT)",
}

# What to do when the error names no next step, by its code.
_ADVICE = {
    "fenced": "stop working on this: another agent holds it now",
    "invalid": "fix that argument and call again",
    "unavailable": "the store is unreachable or busy; retry in a moment",
}


def refusal_text(e: ComityError, verb: str = "") -> str:
    """A refusal as an agent can act on it: what happened, the news that explains it, and
    the next steps as tool calls (from the error's structure: no face's words are parsed)."""
    message = e.message
    fix = _FIELD_FIXES.get(str(e.details.get("field", ""))) if e.code == "invalid" else None
    if fix:
        message += f"; {fix}"
    elif not e.next and e.code in _ADVICE:
        message += f"; {_ADVICE[e.code]}"
    lines = [f"{e.code}: {message}"]
    news = getattr(e, "news", None) or e.details.get("news") or []
    lines += [f"news: {news_line(n)}" for n in news]
    for step in e.next:
        why = f"  ({step.why})" if step.why else ""
        lines.append(f"next: {tool_call(step.verb, step.args)}{why}")
    rejected = e.details.get("rejected")
    if rejected is not None:
        lines.append(f"not written (your value, kept here so nothing is lost): {json.dumps(rejected, ensure_ascii=False)}")
    return "\n".join(lines)


class Facade(Protocol):
    """The agent verbs: :class:`comity.work.Agent` in process, ``comity.remote.RemoteAgent`` over HTTP."""

    def call(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]: ...


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

    def call(self, verb: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call ``verb`` with the tool's arguments; a refusal is a ToolError an agent can act on."""
        with self.lock:
            self.last_call = time.monotonic()
            try:
                return self.facade.call(verb, args)
            except ComityError as e:
                raise ToolError(refusal_text(e, verb)) from None

    def heartbeat(self) -> None:
        if self.agent is None:
            return
        with self.lock:
            try:
                self.facade.call("heartbeat")  # keeps the news it sees for the next answer
            except ComityError as e:
                log.warning("heartbeat refused: %s", e.message)

    def close(self) -> None:
        if self._close is not None:
            self._close()


class Sessions(Protocol):
    """Which session a tool call belongs to, and every live one (for heartbeats)."""

    def for_call(self, ctx: Context[Any, Any] | None) -> McpSession: ...

    def live(self) -> list[McpSession]: ...


class OneSession:
    """stdio: the process is the connection."""

    def __init__(self, session: McpSession) -> None:
        self.session = session

    def for_call(self, ctx: Context[Any, Any] | None) -> McpSession:
        return self.session

    def live(self) -> list[McpSession]:
        return [self.session]


def _answer(body: dict[str, Any]) -> CallToolResult:
    # Compact JSON for the model (news can be long), and the same object as structured content.
    # pydantic's encoder (the SDK's own, for the message around it) writes the same JSON as
    # json.dumps(ensure_ascii=False) without spaces, in a fifth of the time.
    text = to_json(body).decode()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=body)


def _refused(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def tool_of(verb: Verb) -> MCPTool:
    """The MCP tool of a verb: its text, its typed input schema, its output schema."""
    hints = ToolAnnotations(
        read_only_hint=not verb.mutating, destructive_hint=False if verb.mutating else None, idempotent_hint=verb.retry_safe
    )
    return MCPTool(
        name=verb.name,
        description=verb.text,
        input_schema=input_schema(verb),
        output_schema=output_schema(verb),
        annotations=hints,
    )


_NOOP = MCPTool(
    name="noop",
    description="Does nothing (the benchmark's baseline: the SDK's own cost). Example: noop()",
    input_schema={"type": "object", "properties": {}, "additionalProperties": False},
    output_schema={"type": "object", "properties": {}, "additionalProperties": True},
)


class ComityMCP(MCPServer):
    """The SDK's server with comity's tools: listed and dispatched from the verb table."""

    def __init__(self, sessions: Sessions, *, bench: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self.sessions = sessions
        self.tools = [tool_of(v) for v in VERBS if v.tool] + ([_NOOP] if bench else [])
        self._by_name = {t.name: t for t in self.tools}

    async def run_stdio_async(self) -> None:
        """The SDK's stdio transport, its bytes read and written on the event loop when
        stdin and stdout are pipes (:mod:`._stdio`), not through a thread per line."""
        from mcp.server.stdio import stdio_server

        async with loop_stdio() as pipes:
            if pipes is None:
                await super().run_stdio_async()
                return
            async with stdio_server(*pipes) as (read_stream, write_stream):
                low = self._lowlevel_server
                await low.run(read_stream, write_stream, low.create_initialization_options())

    async def list_tools(self) -> list[MCPTool]:
        return list(self.tools)

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self._by_name.get(name)
        return None if tool is None else tool.input_schema

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None) -> CallToolResult:
        if name == "noop" and name in self._by_name:
            return _answer({})
        if name not in self._by_name:
            return _refused(refusal_text(Invalid("tool", f"no tool {name[:60]!r}; the tools are: {', '.join(self._by_name)}")))
        try:
            session = self.sessions.for_call(context)
            answer = await run_in_worker(session.call, name, dict(arguments or {}))
        except ToolError as e:
            return _refused(str(e))
        return _answer(answer)


def build_server(sessions: Sessions, *, bench: bool | None = None, about: str = "") -> MCPServer:
    """The MCP server with comity's tools, each calling one verb of the caller's session;
    ``about`` opens its instructions (who the agent is, where the store is)."""
    from .. import __version__

    if bench is None:
        bench = os.environ.get(BENCH_ENV) == "1"
    text = (about.rstrip() + "\n\n" if about else "") + INSTRUCTIONS
    return ComityMCP(sessions, bench=bench, name="comity", version=__version__, instructions=text, log_level="WARNING")


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


def serve_stdio(session: McpSession, *, heartbeat: float = 30.0, about: str = "") -> None:
    """Serve one agent over stdin/stdout until the client hangs up."""
    sessions = OneSession(session)
    app = build_server(sessions, about=about)
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
    about: str = "",
    limits: Any = None,
) -> None:
    """Serve over streamable HTTP (``/mcp``) on a bound socket; ``middleware`` wraps the
    ASGI app (authentication); ``limits`` (:class:`comity.server.limits.Limits`) bound what
    clients may hold and send."""
    import uvicorn

    from ..server.limits import Limits, uvicorn_config

    app = build_server(sessions, about=about)
    host = sock.getsockname()[0]
    asgi = app.streamable_http_app(host="127.0.0.1" if host in ("127.0.0.1", "::1", "localhost") else host)
    wrapped = middleware(asgi) if middleware is not None else asgi

    async def serve() -> None:
        config = uvicorn_config(wrapped, limits or Limits(), timeout_graceful_shutdown=5)
        await uvicorn.Server(config).serve(sockets=[sock])

    anyio.run(_with_heartbeats, sessions, heartbeat, serve)
