"""One call, every face: the agent verbs through Python, the CLI, the HTTP API and MCP
(stdio and streamable HTTP), each a real process but Python, answering one ``Outcome``.

The hardening tests send the same hostile request through each face and assert the same
refusal; the fuzz suite sends generated ones.  A face that has no way to say a request
(MCP has no ``log`` tool, the CLI no ``whoami``) is skipped for it, saying so.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import COMITY, clean_env

FACES = ["python", "cli", "http", "mcp_stdio", "mcp_http"]


@dataclass
class Outcome:
    """What a face answered: ``code`` is "ok" or the error's code (``internal`` for a bug)."""

    code: str
    field: str | None = None
    message: str = ""
    body: Any = None
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "ok"


class Unsupported(Exception):
    """This face cannot express the request (no such command, tool or parameter)."""


# ------------------------------------------------------------------ processes


def comity(*args: str, location: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMITY, *args], env=clean_env(COMITY_STORE=location, **(env or {})), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def token(location: str, name: str, *, admin: bool = False) -> str:
    r = comity("agent", "add", name, "--rotate", "--json", *(["--admin"] if admin else []), location=location)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return str(json.loads(r.stdout)["auth_token"])


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _wait_line(proc: subprocess.Popen[str], stream: Any, timeout: float, what: str, log: Path) -> str:
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"{what} printed nothing in {timeout}s: {log.read_text() if log.exists() else ''}")
    finally:
        sel.close()
    line = str(stream.readline())
    if not line:
        proc.wait(10)
        raise AssertionError(f"{what} exited {proc.returncode}: {log.read_text() if log.exists() else ''}")
    return line


def serve(location: str, workdir: Path, *extra: str, timeout: float = 30) -> Proc:
    """``comity serve --port 0 --json`` over ``location``, once it answers."""
    log = workdir / f"serve-{os.urandom(4).hex()}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*COMITY, "serve", "--port", "0", "--json", *extra], stdout=subprocess.PIPE, stderr=err, text=True,
            env=clean_env(COMITY_STORE=location),
        )  # fmt: skip
    line = _wait_line(proc, proc.stdout, timeout, "comity serve", log)
    served = Proc(json.loads(line)["url"], proc, log)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(served.url + "/v1/health", timeout=5) as r:
                if r.status == 200:
                    return served
        except OSError:
            pass
        if time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"comity serve did not answer in {timeout}s: {log.read_text()}")
        time.sleep(0.05)


def serve_mcp_http(location: str, workdir: Path, *extra: str, timeout: float = 30) -> Proc:
    """``comity mcp --http --port 0`` over ``location``; its URL is on the banner line."""
    log = workdir / f"mcp-{os.urandom(4).hex()}.log"
    proc = subprocess.Popen(
        [*COMITY, "mcp", "--http", "--port", "0", "--heartbeat", "0", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(COMITY_STORE=location),
    )  # fmt: skip
    line = _wait_line(proc, proc.stderr, timeout, "comity mcp --http", log)
    m = re.search(r"serving (\S+?);", line)
    assert m, line
    return Proc(m.group(1), proc, log)


# ------------------------------------------------------------------ faces


class Face:
    name = "?"

    def call(self, verb: str, args: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        pass


def library_outcome(call: Callable[[], Any]) -> Outcome:
    """What a call of the Python API answered (``comity.work.Agent`` or ``RemoteAgent``)."""
    from comity.errors import ComityError

    try:
        return Outcome("ok", body=call())
    except ComityError as e:
        return Outcome(e.code, e.details.get("field"), e.message, e.to_json())
    except Exception as e:  # a bug: the test says which
        return Outcome("internal", None, f"{type(e).__name__}: {e}")


class PythonFace(Face):
    """The agent facade in process: what ``comity.work.Agent`` answers.  ``session`` names
    the store session; ``None`` makes each call a session of its own (a request that names
    no session).  ``store`` shares an open store (one process, many sessions)."""

    name = "python"

    def __init__(self, location: str, agent: str, *, session: str | None = "", store: Any = None) -> None:
        import comity

        self._own = store is None
        self.store = comity.open(location) if store is None else store
        self.agent_name = agent
        self.session = session
        self.agent = None if session is None else self._agent(session or None)

    def _agent(self, name: str | None) -> Any:
        from comity.work import Agent

        return Agent(self.store.session(self.agent_name, name=name))

    def call(self, verb: str, args: dict[str, Any]) -> Outcome:
        agent = self.agent if self.agent is not None else self._agent(None)
        return library_outcome(lambda: agent.call(verb, args))

    def close(self) -> None:
        if self._own:
            self.store.close()


class RemoteFace(Face):
    """``comity.remote.RemoteAgent`` against a ``comity serve``: one instance, one session
    (``session=None``: a client that names none, so the server remembers nothing)."""

    name = "remote"

    def __init__(self, url: str, token: str, *, session: str | None = "") -> None:
        from comity.remote import RemoteAgent

        self.agent = RemoteAgent(url, auth=token, session=False if session is None else (session or True))

    def call(self, verb: str, args: dict[str, Any]) -> Outcome:
        return library_outcome(lambda: self.agent.call(verb, args))

    def close(self) -> None:
        self.agent.close()


def _j(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def cli_argv(verb: str, a: dict[str, Any], *, extra: bool = False) -> list[str]:
    """The ``comity`` command line that asks for ``verb(**a)`` (Unsupported if none does).
    ``extra``: an argument the command line has no place for is passed as an option of its
    name (the CLI then refuses it, as the conformance suite asks); else it is left out."""

    def opt(flag: str, name: str, conv: Callable[[Any], str] = str) -> list[str]:
        return [flag, conv(a[name])] if a.get(name) is not None else []

    def flag(f: str, name: str) -> list[str]:
        return [f] if a.get(name) else []

    known: dict[str, Callable[[], list[str]]] = {
        "info": lambda: ["init"],
        "read": lambda: ["get", str(a["key"])],
        "write": lambda: ["put", str(a["key"]), _j(a["value"]), *opt("--context", "context"), *flag("--keep-both", "keep_both")],
        "create": lambda: ["create", str(a["key"]), _j(a["value"])],
        "update": lambda: ["update", str(a["key"]), str(a["op"]), *([_j(a["arg"])] if a.get("arg") is not None else []), *opt("--type", "type")],
        "delete": lambda: ["delete", str(a["key"]), *opt("--context", "context")],
        "log": lambda: ["log", *([str(a["key"])] if a.get("key") is not None else []), *opt("--after", "after"), *opt("--limit", "limit")],
        "keys": lambda: ["keys", str(a.get("prefix", "")), *opt("--limit", "limit"), *flag("--deleted", "deleted")],
        "news": lambda: ["news", *opt("--limit", "limit")],
        "task_add": lambda: ["task", "add", str(a["title"]), *opt("--body", "body"), *opt("--assign", "assignee")],
        "task_list": lambda: ["task", "list", *opt("--state", "state")],
        "task_ready": lambda: ["task", "ready"],
        "task_show": lambda: ["task", "show", str(a["id"])],
        "task_assign": lambda: ["task", "assign", str(a["id"]), str(a["agent"])],
        "task_claim": lambda: ["task", "claim", str(a["id"]), *opt("--ttl", "ttl"), *opt("--context", "context"), *flag("--steal", "steal")],
        "task_renew": lambda: ["task", "renew", str(a["id"]), "--token", str(a["token"]), *opt("--ttl", "ttl")],
        "task_checkpoint": lambda: ["task", "checkpoint", str(a["id"]), "--token", str(a["token"]), "--note", str(a["note"])],
        "task_complete": lambda: ["task", "done", str(a["id"]), "--token", str(a["token"]), *opt("--result", "result")],
        "task_release": lambda: ["task", "release", str(a["id"]), "--token", str(a["token"])],
        "seq_next": lambda: ["seq", "next", str(a["name"])],
        "reserve_paths": lambda: ["reserve", *map(str, a["paths"]), *opt("--ttl", "ttl"), *flag("--shared", "shared")],
        "agents": lambda: ["agents", *opt("--ttl", "ttl")],
        "why": lambda: ["why", str(a["target"])],
    }
    if verb not in known:
        raise Unsupported(f"the CLI has no command for {verb}")
    argv = known[verb]()
    if not extra:
        return argv
    if a.get("request_id") is not None:
        argv += ["--request-id", str(a["request_id"])]
    # An argument no command line above spells is passed as the option it would be, so that
    # the command refuses it as a face must (the CLI's own unknown-option error).
    spelled = {"key", "value", "context", "keep_both", "op", "arg", "type", "prefix", "limit", "deleted", "after", "title", "body",
               "assignee", "state", "id", "agent", "ttl", "steal", "token", "note", "result", "name", "paths", "shared", "target",
               "request_id"}  # fmt: skip
    for k, v in a.items():
        if k not in spelled and v is not None and v is not False:
            argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [_j(v) if isinstance(v, (list, dict)) else str(v)])
    return argv


_EXIT_CODES = {0: "ok", 1: "internal", 2: "invalid", 3: "refused", 4: "not_found", 5: "unavailable"}


class CliFace(Face):
    """The ``comity`` command, one process per call, ``--json``."""

    name = "cli"

    def __init__(
        self, location: str, agent: str | None, *, session: str | None = "fz", env: dict[str, str] | None = None, extra: bool = False
    ) -> None:
        self.location = location
        self.agent = agent
        self.session = session
        self.env = env
        self.extra = extra  # pass arguments the command has no place for (cli_argv)

    def call(self, verb: str, args: dict[str, Any]) -> Outcome:
        who = ["--agent", self.agent] if self.agent else []
        argv = [*who, *(["--session", self.session] if self.session else []), *cli_argv(verb, args, extra=self.extra), "--json"]
        return self.run(argv)

    def run(self, argv: list[str]) -> Outcome:
        r = comity(*argv, location=self.location, env=self.env)
        raw = f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        code = _EXIT_CODES.get(r.returncode, f"exit {r.returncode}")
        if "Traceback" in r.stderr or "Traceback" in r.stdout:
            code = "internal"
        body: Any = None
        try:
            body = json.loads(r.stdout) if r.stdout.strip() else None
        except ValueError:
            pass
        if code == "ok":
            return Outcome("ok", message=r.stderr.strip(), body=body, raw=raw)  # news is on stderr
        field = body.get("field") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("error"), str) and code != "internal":
            code = body["error"] if code != "refused" else body["error"]
        return Outcome(code, field, r.stderr.strip(), body, raw)


class HttpFace(Face):
    """``POST /v1/{verb}`` on a real ``comity serve``."""

    name = "http"

    def __init__(self, url: str, token: str, *, session: str | None = None) -> None:
        self.url = url
        self.token = token
        self.session = session  # sent as Comity-Session; None: a request that names no session

    def post(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
        h = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}", **(headers or {})}
        if self.session is not None:
            h.setdefault("Comity-Session", self.session)
        req = urllib.request.Request(self.url + path, data=data, headers=h, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        text = payload.decode("utf-8", "replace")
        try:
            return status, json.loads(payload), text
        except ValueError:
            return status, None, text

    def call(self, verb: str, args: dict[str, Any]) -> Outcome:
        status, body, text = self.post(f"/v1/{verb}", json.dumps(args).encode())
        if status == 200:
            return Outcome("ok", body=body, raw=text)
        if status >= 500 or not isinstance(body, dict):
            return Outcome("internal" if status == 500 else f"http {status}", None, text, body, text)
        return Outcome(str(body.get("error")), body.get("field"), str(body.get("message", "")), body, f"{status} {text}")


# The MCP tools and the verbs they call (a tool has the verb's name unless listed).
_MCP_TOOLS = {
    "whoami", "read", "write", "create", "update", "delete", "keys", "news", "task_add", "task_list", "task_ready",
    "task_show", "task_assign", "task_claim", "task_renew", "task_checkpoint", "task_complete", "task_release",
    "task_fail", "seq_next", "reserve_paths", "release_paths", "reservations", "agents", "why",
    "change_submit", "change_show", "change_list", "verify", "refute", "attest",
}  # fmt: skip


def mcp_outcome(result: Any) -> Outcome:
    text = "".join(getattr(c, "text", "") for c in result.content)
    if not result.is_error:
        return Outcome("ok", body=result.structured_content, raw=text)
    text = re.sub(r"^Error executing tool \w+: ", "", text)
    m = re.match(r"([a-z_]+): (?:([A-Za-z0-9_.\[\]]+): )?", text)
    if not m or m.group(1) not in ("invalid", "stale_context", "fenced", "lease_expired", "not_found", "unavailable", "unauthorized"):
        # the SDK's own argument validation ("Error executing tool …: validation error") is bad input too,
        # provided it says what was wrong
        if "validation error" in text.lower():
            return Outcome("invalid", None, text, raw=text)
        return Outcome("internal", None, text, raw=text)
    return Outcome(m.group(1), m.group(2), text, raw=text)


class McpFace(Face):
    """The official MCP client over stdio (``comity mcp``) or streamable HTTP (``comity mcp --http``)."""

    def __init__(self, name: str, client_factory: Callable[[], Any]) -> None:
        from anyio.from_thread import start_blocking_portal

        self.name = name
        self._cm = start_blocking_portal()
        self.portal = self._cm.__enter__()
        self.client = client_factory()
        # The client's task group must be entered and left by one task: the portal keeps one.
        self._client_cm = self.portal.wrap_async_context_manager(self.client)
        self._client_cm.__enter__()

    def call(self, verb: str, args: dict[str, Any]) -> Outcome:
        if verb not in _MCP_TOOLS:
            raise Unsupported(f"MCP has no tool for {verb}")
        result = self.portal.call(self.client.call_tool, verb, args)
        return mcp_outcome(result)

    def close(self) -> None:
        try:
            self._client_cm.__exit__(None, None, None)
        finally:
            self._cm.__exit__(None, None, None)


def mcp_stdio(location: str, agent: str | None, *, auth: str | None = None, name: str = "mcp_stdio") -> McpFace:
    """``comity mcp`` over stdio: on the store at ``location`` as ``agent``, or, with ``auth``,
    against the comity server at ``location`` as that token's agent."""
    from mcp import Client, StdioServerParameters

    def make() -> Any:
        who = ["--agent", agent] if agent else []
        env = clean_env(COMITY_STORE=location, **({"COMITY_AUTH": auth} if auth else {}))
        params = StdioServerParameters(command=COMITY[0], args=[*COMITY[1:], "mcp", *who, "--heartbeat", "0"], env=env)
        return Client(params, read_timeout_seconds=60)

    return McpFace(name, make)


def mcp_http(url: str, tok: str, *, session: str | None = None, name: str = "mcp_http") -> McpFace:
    """The MCP client over streamable HTTP with an agent token (and ``Comity-Session``, if given)."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {tok}", **({"Comity-Session": session} if session else {})}

    def make() -> Any:
        return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=60)))

    return McpFace(name, make)


@contextmanager
def open_face(name: str, location: str, workdir: Path, agent: str = "alice") -> Iterator[Face]:
    """The face ``name`` acting as ``agent`` over the store at ``location``."""
    procs: list[Proc] = []
    face: Face
    if name == "python":
        face = PythonFace(location, agent)
    elif name == "cli":
        face = CliFace(location, agent)
    elif name == "http":
        tok = token(location, agent)
        procs.append(serve(location, workdir))
        face = HttpFace(procs[0].url, tok)
    elif name == "mcp_stdio":
        face = mcp_stdio(location, agent)
    elif name == "mcp_http":
        tok = token(location, agent)
        procs.append(serve_mcp_http(location, workdir))
        face = mcp_http(procs[0].url, tok)
    else:
        raise ValueError(name)
    try:
        yield face
    finally:
        face.close()
        for p in procs:
            p.stop()


def head(location: str) -> int:
    """The store's log position, read by a separate connection."""
    import comity

    with comity.open(location) as s:
        return s.session().head()
