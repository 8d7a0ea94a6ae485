"""The ``comity`` strategy: the real store, coordination and task code.

The authority is a store process: a :class:`comity.Store` over a SQLite file on the
simulation's :class:`~comity.runtime.VirtualClock` and a seeded RNG, with one
session (and :class:`comity.work.Agent` facade) per agent process, created when the
process first speaks.  Restarting it is a crash: the connection is dropped without a
word (an open transaction is rolled back, as when the process is killed) and the file
opened again, so what survives is what the store made durable before it answered.
The client sends each verb as one request; writes carry a request id (retries under
it are answered from the recorded outcome), claims carry the context of the read the
agent decided on, every write of a task's work product is the fenced write (``write``
with the task and its token: refused in the same transaction once the token is
superseded), and migration numbers come from the
allocator (:func:`comity.coord.allocate`) with the task's unit of work, floored at
the highest number among the files.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ... import errors
from ...runtime import SeededRng
from ...coord import sequences
from ...store import Store
from ...store import open as open_store
from ...work import Agent
from ..sim import Gen, Simulation
from .base import LEASE_TTL_S, BoardView, Client, FinalState, FinalTask, Grant, Plan, Snapshot, Strategy, TaskView

__all__ = ["ComityStrategy", "StoreServer", "ComityClient"]

ADDRESS = "store"


@functools.lru_cache(maxsize=4096)
def _work(body: str) -> dict[str, Any]:
    """A task's plan, kept as JSON in its body (parsed once per distinct body; read-only)."""
    return dict(json.loads(body)) if body else {}


def _view(t: dict[str, Any]) -> TaskView:
    state = t.get("state", t["status"])
    status = "claimed" if state == "orphaned" else state
    work = _work(t.get("body") or "")
    return TaskView(t["id"], t["title"], status, t.get("assignee"), t.get("claimed_by"), work, list(t.get("checkpoints", [])),
                    state == "orphaned", t.get("context"))  # fmt: skip


class StoreServer:
    """The store process: sessions per agent process, verbs answered as JSON."""

    def __init__(self, path: Path, clock: Any, rng: SeededRng) -> None:
        self.path = path
        self.clock = clock
        self.rng = rng
        self.opens = 0
        self.store = self._open()
        self.agents: dict[str, Agent] = {}

    def _open(self) -> Store:
        self.opens += 1
        return open_store(self.path, clock=self.clock, rng=self.rng.fork(f"open/{self.opens}"))

    def restart(self) -> None:
        """The store process dies and starts again: its connection is dropped (SQLite rolls
        back whatever was not committed) and the file opened anew; sessions are gone."""
        self.store.backend.close()
        self.store = self._open()
        self.agents = {}

    def agent(self, pid: str, name: str) -> Agent:
        a = self.agents.get(pid)
        if a is None:
            a = self.agents[pid] = Agent(self.store.session(name))
        return a

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        # Auth is on, as `comity serve` runs it: a connection acts as its token's agent only.
        owner = message["pid"].split("#", 1)[0]
        if message["agent"] != owner:
            return {"error": "forbidden", "message": f"this token is {owner}'s; it cannot act as {message['agent']}"}
        agent = self.agent(message["pid"], message["agent"])
        try:
            return {"value": self.serve(agent, message["op"], message["args"])}
        except errors.Invalid:
            raise  # the harness asked for something malformed: a bug to see, not a fault to absorb
        except errors.ComityError as e:
            body = e.to_json()
            return {"error": body.pop("error"), "message": body.pop("message"), **{k: v for k, v in body.items() if k in ("holder", "key")}}

    def serve(self, agent: Agent, op: str, a: dict[str, Any]) -> Any:
        if op == "read":
            r = agent.read(a["key"])
            return {"values": r["values"], "context": r["context"]}
        if op == "write":
            agent.write(a["key"], a["value"], context=a["context"], request_id=a["rid"])
            return None
        if op == "create":
            agent.create(a["key"], a["value"], request_id=a["rid"])
            return None
        if op == "next":
            return self.allocate(agent, a)
        if op == "ready":
            return agent.board.ready(limit=a.get("limit", 24))
        if op == "board":
            return agent.board.tasks()
        if op == "add":
            return agent.task_add(a["title"], body=json.dumps(a["work"], sort_keys=True), deps=a.get("deps") or None, assignee=a["assignee"],
                                  request_id=a.get("rid"))["id"]  # fmt: skip
        if op == "assign":
            agent.task_assign(a["id"], a["to"], request_id=a.get("rid"))
            return None
        if op == "claim":
            c = agent.task_claim(a["id"], context=a["context"], ttl=LEASE_TTL_S, steal=bool(a.get("steal")), request_id=a.get("rid"))
            return {"token": c["token"], "handoff": c["handoff"], "expires": c["expires"]}
        if op == "checkpoint":
            t = agent.task_checkpoint(a["id"], a["token"], a["note"], request_id=a.get("rid"))
            return (t.get("lease") or {}).get("expires")
        if op == "commit":  # the fenced write: counts only if the claim's token is still current
            agent.write(a["key"], a["value"], context=a["context"], task=a["id"], token=a["token"], request_id=a["rid"])
            return None
        if op == "complete":
            return bool(agent.task_complete(a["id"], a["token"], result=json.dumps(a["result"], sort_keys=True), request_id=a.get("rid")).get("replayed"))
        if op == "release":
            agent.task_release(a["id"], a["token"], request_id=a.get("rid"))
            return None
        raise ValueError(f"store: unknown op {op!r}")

    def allocate(self, agent: Agent, a: dict[str, Any]) -> int:
        """A migration number, as ``comity migrations new`` takes one: floored at the highest
        number among the files, one per unit of work (the task's title here)."""
        prefix = a["prefix"]
        numbers = [int(k[len(prefix) :]) for k in agent.session.keys(prefix) if k[len(prefix) :].isdigit()]
        return sequences.allocate(agent.session, a["seq"], floor=max(numbers, default=0), unit=a["unit"]).number

    def final_state(self) -> FinalState:
        return self.state_of(self.store)

    @staticmethod
    def state_of(store: Store) -> FinalState:
        s = store.session()
        tasks = {}
        for t in Agent(s).board.tasks():
            work = _work(t.get("body") or "")
            tasks[t["id"]] = FinalTask(t["id"], t["title"], t["status"], t.get("assignee"), t.get("claimed_by"), work)
        files = {}
        for v in s.scan(""):
            if not v.key.startswith("@") and v.values:
                files[v.key] = v.values[0] if len(v.values) == 1 else {"siblings": v.values}
        return FinalState(tasks, files)

    @classmethod
    def read_final(cls, path: Path) -> FinalState:
        """The state of the store file at ``path``, read through a store of its own."""
        store = open_store(path)
        try:
            return cls.state_of(store)
        finally:
            store.close()

    def observe(self) -> FinalState:
        """The state now, read through a store of its own (the server's sessions and random
        stream untouched: observing a run mid-way does not change it)."""
        store = open_store(self.path, clock=self.clock, rng=SeededRng(0))
        try:
            return self.state_of(store)
        finally:
            store.close()


class ComityClient(Client):
    lease_ttl = LEASE_TTL_S
    # Every mutation carries a request id (a resend gets the recorded outcome), and an
    # allocation for a unit returns the unit's number.
    retry_safe = frozenset({"read", "ready", "board", "write", "create", "commit", "complete", "next", "add", "assign", "claim",
                            "checkpoint", "release"})  # fmt: skip

    def _call(self, op: str, **args: Any) -> Gen[Any]:
        return self.ctx.call(ADDRESS, op, args)

    def read(self, key: str) -> Gen[Snapshot]:
        r = yield from self._call("read", key=key)
        values = r["values"]
        return Snapshot(key, values[0] if len(values) == 1 else (None if not values else {"siblings": values}), r["context"])

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[list[Any] | None]:
        yield from self._call("write", key=key, value=[*basis.items, item], context=basis.context, rid=self.ctx.request_id())
        return None

    def create(self, key: str, value: Any) -> Gen[None]:
        yield from self._call("create", key=key, value=value, rid=self.ctx.request_id())

    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        n: int = yield from self._call("next", seq=sequence, prefix=prefix, unit=unit)
        return n

    def ready(self) -> Gen[BoardView]:
        tasks = yield from self._call("ready")
        return BoardView([_view(t) for t in tasks])

    def board(self) -> Gen[BoardView]:
        tasks = yield from self._call("board")
        return BoardView([_view(t) for t in tasks])

    def add_task(self, title: str, work: dict[str, Any], assignee: str | None) -> Gen[str]:
        tid: str = yield from self._call("add", title=title, work=work, assignee=assignee, rid=self.ctx.request_id())
        return tid

    def assign(self, task: TaskView, agent: str) -> Gen[None]:
        yield from self._call("assign", id=task.id, to=agent, rid=self.ctx.request_id())

    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        r = yield from self._call("claim", id=task.id, context=None if blind else task.context, steal=steal, rid=self.ctx.request_id())
        return Grant(task, int(r["token"]), list(r["handoff"]), float(r["expires"]))

    def checkpoint(self, grant: Grant, note: str) -> Gen[float | None]:
        expires = yield from self._call("checkpoint", id=grant.task.id, token=grant.token, note=note, rid=self.ctx.request_id())
        return None if expires is None else float(expires)

    def commit(self, grant: Grant, key: str, value: Any, basis: Snapshot) -> Gen[None]:
        yield from self._call("commit", id=grant.task.id, token=grant.token, key=key, value=value, context=basis.context, rid=self.ctx.request_id())

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        replayed: bool = yield from self._call("complete", id=grant.task.id, token=grant.token, result=result, rid=self.ctx.request_id())
        return replayed

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._call("release", id=grant.task.id, token=grant.token, rid=self.ctx.request_id())


class ComityStrategy(Strategy):
    name = "comity"
    summary = "comity's store: context-checked writes, a migration allocator, leases with fencing tokens, orphan takeover"
    baseline = False
    server_class: type[StoreServer] = StoreServer
    client_class: type[ComityClient] = ComityClient

    def __init__(self, sim: Simulation, rng: SeededRng, workdir: Path) -> None:
        super().__init__(sim, rng, workdir)
        self.server = self.server_class(workdir / "store.db", sim.clock, rng)

    def setup(self, plan: Plan) -> None:
        self.sim.add_node(ADDRESS, self.server)
        self.seed(self.server.store, plan)

    @classmethod
    def seed_store(cls, path: Path, plan: Plan) -> None:
        """The plan's files and tasks in the store file at ``path`` (process mode)."""
        store = open_store(path)
        try:
            cls.seed(store, plan)
        finally:
            store.close()

    @staticmethod
    def seed(store: Store, plan: Plan) -> None:
        s = store.session("setup")
        for key, value in plan.files.items():
            s.create(key, value)
        agent = Agent(s)
        ids: dict[str, str] = {}
        for t in plan.tasks:
            work = {**t.work, "deps": list(t.deps)} if t.deps else dict(t.work)
            ids[t.title] = agent.task_add(
                t.title, body=json.dumps(work, sort_keys=True), deps=[ids[d] for d in t.deps], assignee=t.assignee
            )["id"]

    def client(self, ctx: Any) -> Client:
        return self.client_class(ctx)

    def final_state(self) -> FinalState:
        return self.server.final_state()

    def observe(self) -> FinalState:
        return self.server.observe()

    def close(self) -> None:
        self.server.store.close()
