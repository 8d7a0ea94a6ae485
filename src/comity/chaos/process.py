"""Process mode: a scenario played by real OS processes through comity's real faces.

The simulator runs comity's code in one process on virtual time.  Process mode plays
the same scenario (the same plan from the same seed, the same agent roles and their
LLM faults) with one OS process per agent, on the wall clock (``scale`` real seconds
per simulated second), against a real git repository with a worktree per agent and
comity's hooks installed, and judges the merged history with the same checkers.

Under ``comity`` the agents reach the store through its faces in turn: the CLI (one
``comity`` process per verb), MCP over stdio (the official MCP client driving
``comity mcp``), and HTTP (``comity serve`` with per-agent tokens: auth on).  Numbers
come from the real allocator (``comity migrations new --task``), migration files are
written in the agent's worktree and committed with ``git commit`` under the agent's
task and token, so the pre-commit hook refuses a duplicate number or a commit whose
lease was superseded.  Under ``none`` the agents share a directory of JSON files (the
task list, the notes, the migrations) and write them as a team without coordination
does.  A nemesis in the parent kills agents with SIGKILL (they come back with nothing,
not even a transcript), freezes them with SIGSTOP and wakes them with SIGCONT (a
zombie, when the freeze outlives its lease), and kills and restarts ``comity serve``.

Real processes are not deterministic: a seed fixes the plan, the agents' choices and
the nemesis's intentions, not the interleaving.  The embedded store trusts local
processes (any may act under any name), so impersonation is played only on the HTTP
face, with auth on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime import SeededRng
from .checkers import check
from .history import Anomaly, History
from .nemesis import Fault, Nemesis, Profile
from .scenarios import SCENARIOS, Setup, units_done
from .sim import START, Call, Crash, Idle, Sleep, Timeout
from .strategies.base import LEASE_TTL_S, FinalState
from .strategies.coordinated import ComityClient
from .strategies.files import FileServer, FilesClient

__all__ = ["ProcessResult", "play", "FACES", "STRATEGIES", "SCENARIOS_PLAYED"]

FACES = ("cli", "mcp", "http")
STRATEGIES = ("comity", "none")
SCENARIOS_PLAYED = ("migration_collision", "zombie_commit", "triage_race")
SCALE = 0.05  # real seconds per simulated second: a 60 s step of work is 3 s, a 300 s lease 15 s
PAUSE_MAX_S = 25.0  # a SIGSTOP lasts at most this long (real seconds): longer than a lease, so a zombie
MIG_DIR = "db/migrations"
CRASH_EXIT = 70
# What the agents' processes do themselves stays in the agent; what the machinery does to
# them (kills, freezes, restarts, the network) is done to the real processes by the parent.
_MACHINERY = ("drop", "dup", "delay", "restart_store", "crash", "crash_stop", "crash_after", "pause", "stall", "skew", "reset")


def comity_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("comity")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "comity.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}
    env.update(extra)
    return env


# ====================================================================== the agent side


class FaceError(Exception):
    """A refusal from a face, with its code and details."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details = code, message, details


class FaceDown(Exception):
    """The face did not answer (the server restarting, a process killed mid-call)."""


class Face(ABC):
    """One transport to comity's verbs: ``verb(name, args)`` answers the verb's object."""

    @abstractmethod
    def verb(self, name: str, args: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None:
        pass


class HttpFace(Face):
    def __init__(self, url: str, token: str, as_agent: Callable[[], str | None]) -> None:
        self.url, self.token, self.as_agent = url, token, as_agent

    def verb(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        other = self.as_agent()
        if other is not None:
            headers["Comity-Agent"] = other  # naming another agent: refused (403) unless it is the token's
        req = urllib.request.Request(f"{self.url}/v1/{name}", data=json.dumps(args).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read() or b"{}")
            except (ValueError, OSError, http.client.HTTPException):
                body = None  # not comity's answer (a 408 or 503 from the server's limits, a body cut off)
            if e.code >= 500 or e.code == 408 or not isinstance(body, dict):
                raise FaceDown(f"HTTP {e.code}: {body}") from None
            raise FaceError(str(body.get("error", e.code)), str(body.get("message", "")), body) from None
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as e:
            # The server killed mid-answer (a restart): a body cut off (IncompleteRead, not an
            # OSError) or not JSON.  The outcome is unknown, as for a refused connection.
            raise FaceDown(f"{type(e).__name__}: {e}") from None


class McpFace(Face):
    """The official MCP client over stdio, driving ``comity mcp`` in the agent's worktree."""

    def __init__(self, agent: str, cwd: Path) -> None:
        from anyio.from_thread import start_blocking_portal
        from mcp import Client, StdioServerParameters

        cmd = comity_cmd()
        params = StdioServerParameters(command=cmd[0], args=[*cmd[1:], "mcp", "--agent", agent], env=_env(), cwd=str(cwd))
        self._portal_cm = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self._client_cm = self.portal.wrap_async_context_manager(Client(params, read_timeout_seconds=30))
        self.client = self._client_cm.__enter__()

    def verb(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            r = self.portal.call(self.client.call_tool, name, args)
        except Exception as e:  # the server process gone: the outcome is unknown
            raise FaceDown(str(e)) from None
        if r.is_error:
            text = str(getattr(r.content[0], "text", "")) if r.content else ""
            code, _, message = text.partition(":")
            raise FaceError(code.strip() or "refused", message.strip(), {})
        return dict(r.structured_content or {})

    def close(self) -> None:
        try:
            self._client_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)


class CliFace(Face):
    """One ``comity`` process per verb, in the agent's worktree (the store in the git common dir)."""

    def __init__(self, agent: str, cwd: Path) -> None:
        self.agent, self.cwd = agent, cwd

    def run(self, args: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        env = _env(**({} if "--auth" in args else {"COMITY_AGENT": self.agent}), **(extra_env or {}))
        try:
            r = subprocess.run([*comity_cmd(), *args, "--json"], cwd=self.cwd, env=env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise FaceDown("timeout") from None
        try:
            body = json.loads(r.stdout) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            body = {}
        if r.returncode == 0:
            return body if isinstance(body, dict) else {"value": body}
        if r.returncode in (1, 5) or not isinstance(body, dict) or "error" not in body:
            raise FaceDown(r.stderr.strip()[:300])
        raise FaceError(str(body["error"]), str(body.get("message", "")), body)

    def verb(self, name: str, a: dict[str, Any]) -> dict[str, Any]:
        if name.startswith("task_") and a.get("request_id"):
            rid = a["request_id"]
            a = {k: v for k, v in a.items() if k != "request_id"}
            return self._verb(name, a, ["--request-id", rid])
        return self._verb(name, a, [])

    def _verb(self, name: str, a: dict[str, Any], more: list[str]) -> dict[str, Any]:
        j = json.dumps
        if name == "read":
            return self.run(["get", a["key"]])
        if name == "write":
            args = ["put", a["key"], j(a["value"])]
            if a.get("context"):
                args += ["--context", a["context"]]
            if a.get("task"):
                args += ["--task", a["task"], "--token", str(a["token"])]
            if a.get("request_id"):
                args += ["--request-id", a["request_id"]]
            return self.run(args)
        if name == "create":
            return self.run(["create", a["key"], j(a["value"]), *(["--request-id", a["request_id"]] if a.get("request_id") else [])])
        if name in ("task_ready", "task_list"):
            listed = self.run(["task", name.split("_")[1]])
            return {"tasks": listed.get("value", listed.get("tasks", []))}
        if name == "task_add":
            return self.run(["task", "add", a["title"], "--body", a.get("body", ""), *(["--assign", a["assignee"]] if a.get("assignee") else []), *more])
        if name == "task_assign":
            return self.run(["task", "assign", a["id"], a["agent"], *more])
        if name == "task_claim":
            args = ["task", "claim", a["id"], "--ttl", str(a["ttl"])]
            if a.get("context"):
                args += ["--context", a["context"]]
            if a.get("steal"):
                args.append("--steal")
            return self.run([*args, *more])
        if name == "task_checkpoint":
            return self.run(["task", "checkpoint", a["id"], "--token", str(a["token"]), "--note", a["note"], *more])
        if name == "task_complete":
            return self.run(["task", "done", a["id"], "--token", str(a["token"]), "--result", a.get("result", ""), *more])
        if name == "task_release":
            return self.run(["task", "release", a["id"], "--token", str(a["token"]), *more])
        raise ValueError(f"the CLI face has no mapping for {name!r}")  # a harness bug


def _virtual(spec: dict[str, Any], real: float) -> float:
    return START + (real - float(spec["t0"])) / float(spec["scale"])


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=60)


class ProcessComityClient(ComityClient):
    """The comity client of a process-mode agent: its calls go to the face, not the simulated store."""

    def _call(self, op: str, **args: Any) -> Any:
        return self.ctx.call("face", op, args)


class ComityFaceCalls:
    """What :class:`ComityClient`'s requests mean on a face: verbs, and the real allocator and
    ``git commit`` for migrations."""

    def __init__(self, spec: dict[str, Any], face: Face, world: World) -> None:
        self.spec, self.face, self.world = spec, face, world
        self.worktree = Path(spec["worktree"])
        self.migrations: dict[int, Path] = {}

    def handle(self, op: str, a: dict[str, Any]) -> Any:
        f = self.face
        if op == "read":
            r = f.verb("read", {"key": a["key"]})
            return {"values": r.get("values", []), "context": r.get("context")}
        if op == "write":
            f.verb("write", {"key": a["key"], "value": a["value"], "context": a["context"], "request_id": a["rid"]})
            return None
        if op == "create":
            if a["key"].startswith("migrations/"):
                return self.commit_migration(a)
            f.verb("create", {"key": a["key"], "value": a["value"], "request_id": a["rid"]})
            return None
        if op == "next":
            return self.allocate(a)
        if op == "ready":
            return f.verb("task_ready", {})["tasks"]
        if op == "board":
            return f.verb("task_list", {})["tasks"]
        if op == "add":
            return f.verb("task_add", {"title": a["title"], "body": json.dumps(a["work"], sort_keys=True), "assignee": a["assignee"],
                                       "request_id": a["rid"]})["id"]  # fmt: skip
        if op == "assign":
            f.verb("task_assign", {"id": a["id"], "agent": a["to"], "request_id": a["rid"]})
            return None
        if op == "claim":
            args = {"id": a["id"], "context": a["context"], "ttl": round(LEASE_TTL_S * float(self.spec["scale"]), 3), "steal": bool(a.get("steal")),
                    "request_id": a["rid"]}  # fmt: skip
            r = f.verb("task_claim", {k: v for k, v in args.items() if v is not None})
            return {"token": r["token"], "handoff": r["handoff"], "expires": _virtual(self.spec, float(r["expires"]))}
        if op == "checkpoint":
            r = f.verb("task_checkpoint", {"id": a["id"], "token": a["token"], "note": a["note"], "request_id": a["rid"]})
            lease = r.get("lease") or {}
            return None if lease.get("expires") is None else _virtual(self.spec, float(lease["expires"]))
        if op == "commit":
            f.verb("write", {"key": a["key"], "value": a["value"], "context": a["context"], "task": a["id"], "token": a["token"], "request_id": a["rid"]})
            return None
        if op == "complete":
            return bool(f.verb("task_complete", {"id": a["id"], "token": a["token"], "result": json.dumps(a["result"], sort_keys=True),
                                                 "request_id": a["rid"]}).get("replayed"))  # fmt: skip
        if op == "release":
            f.verb("task_release", {"id": a["id"], "token": a["token"], "request_id": a["rid"]})
            return None
        raise ValueError(f"process mode: unknown op {op!r}")

    def _task(self) -> tuple[str | None, int | None]:
        grant = self.world.durable.get("grant")
        if grant is None:
            return None, None
        return grant.task.id, grant.token

    def allocate(self, a: dict[str, Any]) -> int:
        """``migration_new`` on the agent's face (the CLI's ``comity migrations new``; over HTTP
        the CLI against the server, which does the worktree's half): the real allocator."""
        task, _ = self._task()
        slug = "".join(c if c.isalnum() else "_" for c in str(a["unit"]).lower())
        if self.spec["face"] == "mcp":
            r = self.face.verb("migration_new", {"slug": slug, "dir": MIG_DIR, **({"task": task} if task else {})})
        else:
            cli = CliFace(self.world.name, self.worktree)
            remote = ["--store", self.spec["url"], "--auth", self.spec["token"]] if self.spec["face"] == "http" else []
            r = cli.run([*remote, "migrations", "new", slug, "--dir", MIG_DIR, *(["--task", task] if task else [])])
        n = int(r["number"])
        self.migrations[n] = self.worktree / str(r["file"])
        return n

    def commit_migration(self, a: dict[str, Any]) -> None:
        """Write the migration into its file and commit it under the task's lease: the hooks
        refuse a duplicate number and a superseded token."""
        n = int(a["key"].rsplit("/", 1)[1])
        path = self.migrations.get(n)
        if path is None:
            raise FaceError("stale_context", f"no migration {n} was allocated here", {})
        path.write_text(f"-- {json.dumps(a['value'], sort_keys=True)}\n")
        task, token = self._task()
        env = _env(COMITY_AGENT=self.world.name, **({"COMITY_TASK": task, "COMITY_TOKEN": str(token)} if task else {}))
        add = _git(self.worktree, "add", str(path.relative_to(self.worktree)), env=env)
        done = _git(self.worktree, "commit", "-q", "-m", f"migration {n} for {a['value'].get('unit')}", env=env) if add.returncode == 0 else add
        if done.returncode != 0:
            text = done.stderr + done.stdout
            _git(self.worktree, "reset", "-q", "HEAD", "--", str(path.relative_to(self.worktree)))
            code = "fenced" if ("superseded" in text or "no longer holds" in text or "released or expired" in text) else "stale_context"
            raise FaceError(code, text.strip()[:300], {})
        return None


class SharedFiles(FileServer):
    """The ``none`` strategy on disk: one JSON file per file and per task in a shared directory,
    read and written by each agent's process as a team without coordination does (an atomic
    rename per write, so no file is torn; nothing else)."""

    def __init__(self, root: Path, now: Callable[[], float]) -> None:
        self.root = root
        self._now = now

    def now(self) -> float:
        return self._now()

    def _path(self, kind: str, name: str) -> Path:
        return self.root / kind / (name.replace("/", "~") + ".json")

    def _load(self) -> None:
        self.files, self.versions, self.tasks, self.locks = {}, {}, {}, {}
        for p in sorted((self.root / "files").glob("*.json")):
            d = json.loads(p.read_text())
            self.files[d["key"]], self.versions[d["key"]] = d["value"], d["version"]
        for p in sorted((self.root / "tasks").glob("*.json")):
            t = json.loads(p.read_text())
            self.tasks[t["id"]] = t
        self.next_id = max((int(t[2:]) for t in self.tasks), default=0)

    def _save(self, before_files: dict[str, int], before_tasks: dict[str, str]) -> None:
        for key, version in self.versions.items():
            if before_files.get(key) != version:
                _atomic(self._path("files", key), {"key": key, "value": self.files[key], "version": version})
        for tid, t in self.tasks.items():
            text = json.dumps(t, sort_keys=True)
            if before_tasks.get(tid) != text:
                _atomic(self._path("tasks", tid), t)

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        self._load()
        files = dict(self.versions)
        tasks = {tid: json.dumps(t, sort_keys=True) for tid, t in self.tasks.items()}
        out = super().handle(message)
        self._save(files, tasks)
        return out

    def snapshot(self) -> FinalState:
        self._load()
        return self.final_state()


def _atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(obj, sort_keys=True))
    os.replace(tmp, path)


class ProcessFilesClient(FilesClient):
    def _call(self, op: str, **args: Any) -> Any:
        return self.ctx.call("face", op, args)


class LocalHistory(History):
    """A history that also appends each entry to this process's file as it happens."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.out = path.open("a", buffering=1)

    def _write(self, i: int) -> None:
        self.out.write(json.dumps(self.ops[i].to_json(), sort_keys=True, default=str) + "\n")

    def invoke(self, process: str, f: str, value: dict[str, Any], time: float) -> int:
        i = super().invoke(process, f, value, time)
        self._write(i)
        return i

    def complete(self, invoke: int, type: str, result: dict[str, Any], time: float) -> int:
        i = super().complete(invoke, type, result, time)
        self._write(i)
        return i

    def note(self, process: str, f: str, value: dict[str, Any], time: float) -> int:
        i = super().note(process, f, value, time)
        self._write(i)
        return i


@dataclass
class _Proc:
    name: str
    incarnation: int
    role: str
    exempt: bool
    skew: float = 0.0
    push: Any = None

    @property
    def pid(self) -> str:
        return f"{self.name}#{self.incarnation}"


class World:
    """What an agent's context needs of a run, in one OS process on the wall clock."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name = str(spec["name"])
        scenario = SCENARIOS[spec["scenario"]]
        self.rng = SeededRng(int(spec["seed"])).fork(f"process/{self.name}/{spec['incarnation']}")
        base = scenario.profile
        p = {k: v for k, v in base.p.items() if k not in _MACHINERY}
        per_agent = {k: v for k, v in base.per_agent.items() if k not in _MACHINERY}
        if spec["face"] != "http":
            p.pop("impersonate", None)  # the embedded store trusts local processes: no auth to refuse it
            per_agent.pop("impersonate", None)
        self.nemesis = Nemesis(Profile(p, base.ranges, base.limits, per_agent), rng=self.rng.fork("nemesis"))
        self.history = LocalHistory(Path(spec["history"]))
        self.durable: dict[str, Any] = {}
        self.costs: dict[str, int] = {}
        self.sim = self
        self.strategy = self
        self.face: Face | None = None

    # the simulation's surface, on the wall clock
    def now(self) -> float:
        return _virtual(self.spec, time.time())

    def record_fault(self, fault: Fault) -> None:
        self.history.note("nemesis", fault.kind, {"point": fault.point, "arg": fault.arg}, self.now())

    def live_workers(self, role: str) -> int:
        return 2  # never 1: a process-mode agent is not stopped for good from inside

    def client(self, ctx: Any) -> Any:
        return ProcessComityClient(ctx) if self.spec["strategy"] == "comity" else ProcessFilesClient(ctx)


def agent_main(spec_path: str) -> int:
    """Run one agent's role in this process until it ends or the parent stops it."""
    from .agents import ROLES, AgentCtx, Cast

    spec = json.loads(Path(spec_path).read_text())
    world = World(spec)
    face: Face
    if spec["strategy"] == "comity":
        wt = Path(spec["worktree"])
        if spec["face"] == "http":
            face = HttpFace(spec["url"], spec["token"], lambda: ctx.acting_as)
        elif spec["face"] == "mcp":
            face = McpFace(world.name, wt)
        else:
            face = CliFace(world.name, wt)
        calls = ComityFaceCalls(spec, face, world)

        def serve(op: str, args: dict[str, Any], as_agent: str | None) -> dict[str, Any]:
            if as_agent is not None and spec["face"] != "http":
                return {"error": "forbidden", "message": "impersonation is played on the HTTP face only"}
            try:
                return {"value": calls.handle(op, args)}
            except FaceError as e:
                return {"error": e.code, "message": e.message, **{k: v for k, v in e.details.items() if k in ("holder", "assignee")}}
    else:
        files = SharedFiles(Path(spec["shared"]), world.now)

        def serve(op: str, args: dict[str, Any], as_agent: str | None) -> dict[str, Any]:
            reply = files.handle({"op": op, "args": args, "agent": as_agent or world.name, "pid": ""})
            return reply or {"value": None}

    proc = _Proc(world.name, int(spec["incarnation"]), spec["role"], bool(spec["exempt"]))
    cast = Cast(world.name, spec["role"], float(spec["start"]), dict(spec["config"]), bool(spec["exempt"]))
    ctx = AgentCtx(world, proc, cast)  # type: ignore[arg-type]
    gen = ROLES[spec["role"]](ctx)
    scale = float(spec["scale"])
    value: Any = None
    exc: BaseException | None = None
    try:
        while True:
            try:
                eff = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration:
                return 0
            value, exc = None, None
            if isinstance(eff, Call):
                try:
                    value = serve(eff.op, eff.args, eff.as_agent)
                except FaceDown:
                    time.sleep(min(1.0, 10 * scale))
                    exc = Timeout(eff.call_id)
            elif isinstance(eff, (Sleep, Idle)):
                time.sleep(max(0.0, eff.seconds * scale))
            elif isinstance(eff, Crash):
                return CRASH_EXIT  # the parent starts it again (a conversation reset, from the agent itself)
    finally:
        if spec["strategy"] == "comity":
            face.close()


# ====================================================================== the parent side


@dataclass
class ProcessResult:
    scenario: str
    strategy: str
    seed: int
    history: History
    final: FinalState
    anomalies: list[Anomaly]
    units: int
    units_done: int
    faults: list[dict[str, Any]] = field(default_factory=list)
    faces: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    settled: bool = False
    died: list[dict[str, Any]] = field(default_factory=list)  # agent processes that exited unasked (then started again)
    undone: list[dict[str, Any]] = field(default_factory=list)  # the units not done correctly, and what the final state shows of each

    @property
    def completion(self) -> float:
        return self.units_done / self.units if self.units else 1.0

    def counts(self) -> dict[str, int]:
        from .checkers import counts

        return counts(self.anomalies)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "strategy": self.strategy, "seed": self.seed, "mode": "process",
            "anomalies": self.counts(), "completion": round(self.completion, 4), "units": self.units,
            "units_done": self.units_done, "settled": self.settled, "died": self.died, "undone": self.undone, "operations": sum(1 for o in self.history if o.type == "invoke"),
            "faults": self.faults, "faces": self.faces, "wall_seconds": round(self.seconds, 1),
            "found": [a.to_json() for a in self.anomalies],
        }  # fmt: skip


class _Server:
    """``comity serve`` over the store file, restartable (SIGKILL, then a new process on the same port)."""

    def __init__(self, store: Path, log: Path) -> None:
        self.store, self.log, self.port = store, log, 0
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.start()

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen([*comity_cmd(), "--store", str(self.store), "serve", "--port", str(self.port), "--json"],
                                         stdout=subprocess.PIPE, stderr=log, text=True, env=_env())  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = json.loads(line)["url"]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _setup_repo(root: Path, agents: list[str], hooks: bool) -> tuple[Path, dict[str, Path]]:
    repo = root / "repo"
    repo.mkdir()
    env = _env(GIT_AUTHOR_NAME="chaos", GIT_AUTHOR_EMAIL="chaos@example.invalid", GIT_COMMITTER_NAME="chaos",
               GIT_COMMITTER_EMAIL="chaos@example.invalid")  # fmt: skip
    _git(repo, "init", "-q", "-b", "main", env=env)
    _git(repo, "config", "user.name", "chaos")
    _git(repo, "config", "user.email", "chaos@example.invalid")
    (repo / MIG_DIR).mkdir(parents=True)
    for k in (265, 266):
        (repo / MIG_DIR / f"{k:04d}_old_{k}.sql").write_text(f'-- {json.dumps({"wid": f"seed.{k}", "unit": f"old-{k}", "by": "history"})}\n')
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "history")
    if hooks:
        subprocess.run([*comity_cmd(), "hooks", "install"], cwd=repo, env=_env(), capture_output=True, check=True, timeout=60)
    trees = {}
    for a in agents:
        wt = root / f"wt-{a}"
        _git(repo, "worktree", "add", "-q", "-b", f"agent/{a}", str(wt))
        trees[a] = wt
    return repo, trees


def _final_comity(store_path: Path, trees: dict[str, Path], repo: Path) -> FinalState:
    from .strategies.coordinated import StoreServer

    final = StoreServer.read_final(store_path)
    files = dict(final.files)
    by_number: dict[str, Any] = {}
    for wt in [repo, *trees.values()]:
        for p in sorted((wt / MIG_DIR).glob("*.sql")):
            try:
                content = json.loads(p.read_text().removeprefix("-- "))
            except (ValueError, OSError):
                continue
            by_number.setdefault(f"migrations/{p.name[:4]}", {})[p.name] = content
    for key, named in by_number.items():
        if len(named) == 1:
            files[key] = next(iter(named.values()))
        else:  # two files under one number: the later merge silently wins, as `cp` into main would
            files[key] = named[sorted(named)[-1]]
    return FinalState(final.tasks, files)


def play(
    scenario: str,
    strategy: str,
    seed: int,
    *,
    scale: float = SCALE,
    limit_s: float = 300.0,
    faults: bool | list[dict[str, Any]] = True,
    workdir: Path | None = None,
) -> ProcessResult:
    """Play ``scenario`` under ``strategy`` (comity or none) with seed ``seed`` in real processes.

    ``faults``: the seed's random plan of kills, freezes and server restarts (True), none
    (False), or exactly these (``{"at": simulated s, "kind": "crash"|"pause"|"restart_store",
    "agent": NAME, "arg": simulated s}``)."""
    from .strategies.coordinated import ComityStrategy

    sc = SCENARIOS[scenario]
    rng = SeededRng(seed)
    setup: Setup = sc.build(rng.fork("plan"))
    root = Path(tempfile.mkdtemp(prefix="comity-process-", dir=workdir))
    started = time.monotonic()
    server: _Server | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopped: dict[str, float] = {}
    t0 = time.time()
    nemesis_log = History()
    faces: dict[str, str] = {}
    try:
        workers = [c.name for c in setup.cast]
        repo, trees = _setup_repo(root, workers, hooks=strategy == "comity")
        shared = root / "shared"
        store_path = repo / ".git" / "comity" / "store.db"
        tokens: dict[str, str] = {}
        if strategy == "comity":
            ComityStrategy.seed_store(store_path, setup.plan)
            non_exempt = [c for c in setup.cast if not c.exempt]
            for i, c in enumerate(setup.cast):
                faces[c.name] = "cli" if c.exempt else FACES[non_exempt.index(c) % len(FACES)]
            if "http" in faces.values():
                server = _Server(store_path, root / "serve.log")
                for name, face in faces.items():
                    if face == "http":
                        r = subprocess.run([*comity_cmd(), "--store", str(store_path), "agent", "add", name, "--json"], env=_env(),
                                           capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
                        tokens[name] = json.loads(r.stdout)["auth_token"]
        else:
            files = SharedFiles(shared, lambda: _virtual({"t0": t0, "scale": scale}, time.time()))
            files._load()
            for key, value in setup.plan.files.items():
                files._write(key, value)
            for t in setup.plan.tasks:
                work = {**t.work, "deps": list(t.deps)} if t.deps else dict(t.work)
                files.add(t.title, work, t.assignee, None)
            files._save({}, {})
            faces = {c.name: "files" for c in setup.cast}
        incarnation: dict[str, int] = {}

        def spawn(c: Any) -> None:
            incarnation[c.name] = incarnation.get(c.name, 0) + 1
            spec = {
                "name": c.name, "role": c.role, "start": c.start, "config": c.config, "exempt": c.exempt, "scenario": scenario,
                "seed": seed, "strategy": strategy, "incarnation": incarnation[c.name], "face": faces[c.name],
                "worktree": str(trees[c.name]), "shared": str(shared), "url": server.url if server else "", "token": tokens.get(c.name, ""),
                "t0": t0, "scale": scale, "history": str(root / f"history-{c.name}-{incarnation[c.name]}.jsonl"),
            }  # fmt: skip
            path = root / f"spec-{c.name}-{incarnation[c.name]}.json"
            path.write_text(json.dumps(spec))
            procs[c.name] = subprocess.Popen([sys.executable, "-m", "comity.chaos.process", str(path)], env=_env(), cwd=trees[c.name],
                                             stdout=subprocess.DEVNULL, stderr=(root / f"agent-{c.name}.log").open("a"))  # fmt: skip

        cast = {c.name: c for c in setup.cast}
        pending = sorted(setup.cast, key=lambda c: c.start)
        if isinstance(faults, list):
            schedule = sorted((dict(f) for f in faults), key=lambda f: f["at"])
        else:
            schedule = _external_faults(sc.profile, setup, rng.fork("process-nemesis"), scale, server is not None) if faults else []
        restarts: list[tuple[float, str]] = []
        died: list[dict[str, Any]] = []
        settled = False
        while time.monotonic() - started < limit_s:
            now = time.time()
            while pending and now >= t0 + pending[0].start * scale:
                spawn(pending.pop(0))
            for name, p in list(procs.items()):
                if name in stopped and now >= stopped[name]:
                    os.kill(p.pid, signal.SIGCONT)
                    del stopped[name]
                if p.poll() is not None and not cast[name].exempt and name not in [n for _, n in restarts]:
                    if p.returncode == CRASH_EXIT:
                        spawn(cast[name])
                    elif p.returncode != 0 and sum(d["agent"] == name for d in died) < 10:
                        # Not the agent's own crash and not the nemesis's kill: the process died
                        # (an exception in the harness, see agent-NAME.log).  Left dead, the tasks
                        # triage assigned it would wait for it for ever; it is started again, as a
                        # supervisor would, and the exit is reported in the run's "died".
                        died.append({"agent": name, "incarnation": incarnation[name], "returncode": p.returncode,
                                     "at": _virtual({"t0": t0, "scale": scale}, now)})  # fmt: skip
                        spawn(cast[name])
            for when, name in list(restarts):
                if now >= when:
                    restarts.remove((when, name))
                    spawn(cast[name])
            while schedule and now >= t0 + schedule[0]["at"] * scale:
                f = schedule.pop(0)
                target = f.get("agent")
                v = _virtual({"t0": t0, "scale": scale}, now)
                if f["kind"] == "restart_store" and server is not None:
                    nemesis_log.note("nemesis", "restart_store", {"point": "server", "arg": 0.0}, v)
                    server.kill()
                    nemesis_log.note("store", "restart", {}, _virtual({"t0": t0, "scale": scale}, time.time()))
                    server.start()
                elif f["kind"] == "pause" and f.get("tries", 0) < 40 and not _holds(strategy, store_path, shared, str(target)):
                    # A freeze that matters: wait until the agent holds a task (a zombie-to-be).
                    schedule.append({**f, "at": f["at"] + 40, "tries": f.get("tries", 0) + 1})
                    schedule.sort(key=lambda x: x["at"])
                elif target in procs and procs[target].poll() is None and target not in stopped:
                    nemesis_log.note("nemesis", f["kind"], {"point": f"proc:{target}#{incarnation[target]}", "arg": f["arg"]}, v)
                    if f["kind"] == "crash":
                        procs[target].kill()
                        procs[target].wait()
                        restarts.append((now + f["arg"] * scale, target))
                    elif f["kind"] == "pause":
                        os.kill(procs[target].pid, signal.SIGSTOP)
                        stopped[target] = now + min(f["arg"] * scale, PAUSE_MAX_S)
            if not pending and time.monotonic() - started > 2.0 and _settled(strategy, setup, store_path, shared):
                settled = True
                break
            time.sleep(0.1)
        for name, p in procs.items():
            if name in stopped:
                os.kill(p.pid, signal.SIGCONT)
            if p.poll() is None:
                p.kill()
                p.wait()
        if server is not None:
            server.stop()
            server = None
        final = _final_comity(store_path, trees, repo) if strategy == "comity" else SharedFiles(shared, time.time).snapshot()
        history = merge([nemesis_log], sorted(root.glob("history-*.jsonl")))
        history.note("observer", "final", final.to_json(), _virtual({"t0": t0, "scale": scale}, time.time()))
        anomalies = check(history, final)
        done = units_done(setup.units, final)
        injected = [o.to_json() for o in history if o.process == "nemesis"]
        return ProcessResult(scenario, strategy, seed, history, final, anomalies, len(setup.units), done, injected, faces,
                             time.monotonic() - started, settled, died, _undone(setup, final))  # fmt: skip
    finally:
        for p in procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                p.kill()
                p.wait()
        if server is not None:
            server.kill()
        if not os.environ.get("COMITY_CHAOS_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def _settled(strategy: str, setup: Setup, store_path: Path, shared: Path) -> bool:
    """Nothing more will happen: every task is done or failed and, where a reviewer could still
    file a redo, every unit of work is done correctly.  Without a reviewer a task completed
    with wrong work (an agent's hallucinated success) stays as it is: the run ends, and its
    completion and ``undone`` say so, rather than waiting for the wall-clock limit."""
    from .strategies.coordinated import StoreServer

    try:
        final = StoreServer.read_final(store_path) if strategy == "comity" else SharedFiles(shared, time.time).snapshot()
    except Exception:  # the store busy a moment: look again next time
        return False
    if len(final.tasks) < setup.expected_tasks or any(t.status not in ("done", "failed") for t in final.tasks.values()):
        return False
    if not any(c.role == "reviewer" for c in setup.cast):
        return True
    tasks_only = [u for u in setup.units if u[0] != "migration"]
    return units_done(tasks_only, final) == len(tasks_only)


def _undone(setup: Setup, final: FinalState) -> list[dict[str, Any]]:
    """Each unit of work not done correctly, with what the final state shows of it: the task's
    status and its work's author and correctness (``wrong work``: done, but with wrong work)."""
    out: list[dict[str, Any]] = []
    for u in setup.units:
        if units_done([u], final):
            continue
        row: dict[str, Any] = {"unit": list(u)}
        if u[0] == "task":
            art = final.files.get(f"work/{u[1]}")
            statuses = sorted({t.status for t in final.tasks.values() if str(t.work.get("redo") or t.title) == u[1]})
            row["task"] = statuses
            if isinstance(art, dict):
                row.update({"by": art.get("by"), "correct": bool(art.get("correct"))})
            row["why"] = "wrong work" if "done" in statuses and isinstance(art, dict) and not art.get("correct") else "not done"
        else:
            row["why"] = "not done"
        out.append(row)
    return out


def _holds(strategy: str, store_path: Path, shared: Path, agent: str) -> bool:
    from .strategies.coordinated import StoreServer

    try:
        final = StoreServer.read_final(store_path) if strategy == "comity" else SharedFiles(shared, time.time).snapshot()
    except Exception:
        return False
    return any(t.status == "claimed" and t.claimed_by == agent for t in final.tasks.values())


def _external_faults(profile: Profile, setup: Setup, rng: SeededRng, scale: float, server: bool) -> list[dict[str, Any]]:
    """What the parent does to the agents' processes and the server: a seeded plan of times."""
    out: list[dict[str, Any]] = []
    workers = [c for c in setup.cast if not c.exempt]
    span = 1200.0  # simulated seconds over which the faults fall: the busy part of a small scenario
    for c in workers:
        for kind, chance in (("crash", min(0.9, 8 * profile.probability("crash"))), ("pause", min(0.9, 12 * profile.probability("pause")))):
            if rng.random() < chance:
                lo, hi = profile.span(kind)
                out.append({"at": c.start + 60 + span * rng.random(), "kind": kind, "agent": c.name, "arg": round(lo + (hi - lo) * rng.random(), 1)})
    if server and rng.random() < 0.5:
        out.append({"at": 120 + span * rng.random(), "kind": "restart_store", "arg": 0.0})
    return sorted(out, key=lambda f: f["at"])


def merge(extra: list[History], paths: list[Path]) -> History:
    """One history from each process's file: ordered by time, indices renumbered, each
    invocation and each read a claim was based on pointing at its new index."""
    entries: list[tuple[float, int, int, dict[str, Any]]] = []
    for src, path in enumerate(paths, 1):
        for line in path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                entries.append((float(d["time"]), src, int(d["index"]), d))
    for h in extra:
        for o in h:
            entries.append((o.time, 0, o.index, o.to_json()))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    new: dict[tuple[int, int], int] = {(src, i): n for n, (_, src, i, _) in enumerate(entries)}
    out = History()
    for _, src, _, d in entries:
        value = dict(d["value"])
        if isinstance(value.get("basis"), int) and value["basis"] >= 0:
            value["basis"] = new.get((src, value["basis"]), -1)
        if "invoke" in d:
            inv = new[(src, int(d["invoke"]))]
            i = len(out.ops)
            from .history import Op

            out.ops.append(Op(i, d["process"], d["type"], d["f"], value, float(d["time"]), inv))
            out._completion[inv] = i
        else:
            from .history import Op

            out.ops.append(Op(len(out.ops), d["process"], d["type"], d["f"], value, float(d["time"])))
    return out


if __name__ == "__main__":
    sys.exit(agent_main(sys.argv[1]))
