"""Baseline: a publish-subscribe message pool, as in MetaGPT.

Agents publish messages to a shared pool (a task, an assignment, a claim, a
checkpoint, a completion, a file's new content, a note entry); the pool keeps them
in arrival order and pushes each to every subscriber.  An agent's picture of the
world is the fold of the messages it has received; reads are local, and nobody
arbitrates: two agents who each think a task is free both take it.  The truth at
the end is the fold of the pool's own log, in its order.  (Hong et al., "MetaGPT:
Meta Programming for a Multi-Agent Collaborative Framework", ICLR 2024: a shared
message pool with subscriptions.)
"""

from __future__ import annotations

from typing import Any

from ..sim import Gen, Process, Simulation
from .base import (
    STALE_AFTER_S,
    BoardView,
    Client,
    FinalState,
    FinalTask,
    Grant,
    Plan,
    Snapshot,
    Strategy,
    TaskView,
    nothing,
)

__all__ = ["PoolStrategy", "PoolServer", "World"]

ADDRESS = "pool"


class World:
    """The fold of pool messages: files, note lists, tasks."""

    def __init__(self) -> None:
        self.files: dict[str, Any] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    def _task(self, tid: str) -> dict[str, Any]:
        t = self.tasks.get(tid)
        if t is None:  # a message about a task whose own message has not arrived (yet)
            t = {"id": tid, "title": None, "work": {}, "status": "open", "assignee": None, "claimed_by": None,
                 "claims": 0, "checkpoints": [], "updated_at": 0.0, "completions": 0}  # fmt: skip
            self.tasks[tid] = t
            self.order.append(tid)
        return t

    def apply(self, m: dict[str, Any]) -> None:
        kind = m["t"]
        if kind == "put":
            self.files[m["key"]] = m["value"]
        elif kind == "append":
            current = self.files.get(m["key"])
            self.files[m["key"]] = [*(current if isinstance(current, list) else []), m["item"]]
        elif kind == "task":
            t = self._task(m["id"])
            t.update(title=m["title"], work=m["work"], updated_at=max(float(t["updated_at"]), float(m["at"])))
            if t["assignee"] is None:
                t["assignee"] = m["assignee"]
        else:
            t = self._task(m["id"])
            if kind == "assign":
                t["assignee"] = m["to"]
            elif kind == "claim":
                t["claims"] += 1
                if t["status"] != "done":
                    t.update(status="claimed", claimed_by=m["by"])
            elif kind == "checkpoint":
                t["checkpoints"] = [*t["checkpoints"], {"agent": m["by"], "note": m["note"], "at": m["at"]}]
            elif kind == "done":
                t["completions"] += 1
                t["status"] = "done"
            elif kind == "release":
                if t["status"] != "done":
                    t.update(status="open", claimed_by=None)
            t["updated_at"] = max(float(t["updated_at"]), float(m["at"]))

    def known_tasks(self) -> list[dict[str, Any]]:
        return [self.tasks[i] for i in self.order if self.tasks[i]["title"] is not None]


class PoolServer:
    """The pool: an ordered log of messages, fanned out to subscribers."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.log: list[dict[str, Any]] = []
        self.subscribers: dict[str, int] = {}  # pid -> messages pushed to it

    def restart(self) -> None:
        pass  # the log is durable; subscribers reconnect when they next publish

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        op, a = message["op"], message["args"]
        pid = message["pid"]
        if op == "sync":
            self.subscribers[pid] = self.subscribers.get(pid, 0)
            return {"value": list(self.log)}
        if op == "publish":
            m = a["message"]
            self.log.append(m)
            for sub in list(self.subscribers):
                if sub == pid:
                    continue
                n = self.subscribers[sub] = self.subscribers[sub] + 1
                self.sim.transport.send(ADDRESS, sub, {"point": f"push:{sub}:{n}", "message": m})
            return {"value": None}
        raise ValueError(f"pool: unknown op {op!r}")


class PoolClient(Client):
    """Publishes what the agent does; reads the world as the messages it received show it."""

    retry_safe = frozenset({"sync"})

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.world = World()
        self.synced = False
        proc: Process = ctx.proc
        proc.push = lambda m: self.world.apply(m["message"])

    def _sync(self) -> Gen[None]:
        if self.synced:
            return
        log = yield from self.ctx.call(ADDRESS, "sync", {})
        fresh = World()
        for m in log:
            fresh.apply(m)
        self.world, self.synced = fresh, True

    def _publish(self, m: dict[str, Any]) -> Gen[None]:
        yield from self._sync()
        m = {**m, "at": self.ctx.now()}
        yield from self.ctx.call(ADDRESS, "publish", {"message": m})
        self.world.apply(m)

    def read(self, key: str) -> Gen[Snapshot]:
        yield from self._sync()
        snap: Snapshot = yield from nothing(Snapshot(key, self.world.files.get(key)))
        return snap

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[list[Any] | None]:
        yield from self._publish({"t": "append", "key": key, "item": item})
        return None

    def create(self, key: str, value: Any) -> Gen[None]:
        yield from self._publish({"t": "put", "key": key, "value": value})

    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        yield from self._sync()
        numbers = [int(k[len(prefix) :]) for k in self.world.files if k.startswith(prefix) and k[len(prefix) :].isdigit()]
        return max(numbers, default=0) + 1

    def _view(self, t: dict[str, Any], stale: bool = False) -> TaskView:
        return TaskView(t["id"], t["title"], t["status"], t["assignee"], t["claimed_by"], t["work"], list(t["checkpoints"]), stale)

    def board(self) -> Gen[BoardView]:
        yield from self._sync()
        now = self.ctx.now()
        return BoardView(
            [self._view(t, t["status"] == "claimed" and now - float(t["updated_at"]) > STALE_AFTER_S) for t in self.world.known_tasks()]
        )

    def ready(self) -> Gen[BoardView]:
        yield from self._sync()
        tasks = self.world.known_tasks()
        done = {t["title"] for t in tasks if t["status"] == "done"}
        out = []
        for t in tasks:
            if t["assignee"] not in (None, self.me) or not all(d in done for d in t["work"].get("deps", ())):
                continue
            if t["status"] == "open":
                out.append(self._view(t))
            elif t["status"] == "claimed" and t["claimed_by"] != self.me and t["assignee"] == self.me:
                out.append(self._view(t, True))
        return BoardView(out)

    def add_task(self, title: str, work: dict[str, Any], assignee: str | None) -> Gen[str]:
        tid = f"{self.ctx.pid}.{self.ctx.k}"
        yield from self._publish({"t": "task", "id": tid, "title": title, "work": work, "assignee": assignee})
        return tid

    def assign(self, task: TaskView, agent: str) -> Gen[None]:
        yield from self._publish({"t": "assign", "id": task.id, "to": agent})

    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        yield from self._sync()
        token = int(self.world.tasks.get(task.id, {}).get("claims", 0)) + 1
        yield from self._publish({"t": "claim", "id": task.id, "by": self.me, "token": token})
        return Grant(task, token, list(task.checkpoints))

    def checkpoint(self, grant: Grant, note: str) -> Gen[float | None]:
        yield from self._publish({"t": "checkpoint", "id": grant.task.id, "by": self.me, "note": note})
        return None

    def commit(self, grant: Grant, key: str, value: Any, basis: Snapshot) -> Gen[None]:
        yield from self._publish({"t": "put", "key": key, "value": value})

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        yield from self._publish({"t": "done", "id": grant.task.id, "by": self.me, "token": grant.token, "result": result})
        return False

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._publish({"t": "release", "id": grant.task.id, "by": self.me})


class PoolStrategy(Strategy):
    name = "pool"
    summary = "a publish-subscribe message pool (MetaGPT): each agent acts on the messages it has received"

    def setup(self, plan: Plan) -> None:
        self.server = PoolServer(self.sim)
        self.sim.add_node(ADDRESS, self.server)
        now = self.sim.now()
        for key, value in plan.files.items():
            self.server.log.append({"t": "put", "key": key, "value": value, "at": now})
        for i, t in enumerate(plan.tasks, 1):
            work = {**t.work, "deps": list(t.deps)} if t.deps else dict(t.work)
            self.server.log.append({"t": "task", "id": f"T-{i}", "title": t.title, "work": work, "assignee": t.assignee, "at": now})

    def client(self, ctx: Any) -> Client:
        return PoolClient(ctx)

    def final_state(self) -> FinalState:
        world = World()
        for m in self.server.log:
            world.apply(m)
        tasks = {
            t["id"]: FinalTask(t["id"], t["title"], t["status"], t["assignee"], t["claimed_by"], t["work"]) for t in world.known_tasks()
        }
        return FinalState(tasks, dict(world.files))
