"""Baselines over shared files: ``none`` (last writer wins) and ``locks`` (advisory
lock files with a TTL, no fencing, no context checks).

The authority is a file server: files, a task list, and (for ``locks``) lock files.
It applies what it is told: a write replaces the file, a claim marks the task, a
completion marks it done.  It checks nothing, as a shared directory checks nothing.
"""

from __future__ import annotations

from typing import Any

from ..sim import Gen
from .base import (
    LOCK_TTL_S,
    STALE_AFTER_S,
    BoardView,
    Client,
    FinalState,
    FinalTask,
    Grant,
    Plan,
    Refused,
    Snapshot,
    Strategy,
    TaskView,
)

__all__ = ["NoneStrategy", "LocksStrategy", "FileServer"]

ADDRESS = "files"


class FileServer:
    """Files, a task list and lock files, in the file server's memory (durable: a
    restart loses nothing, it only makes the server unreachable for a while)."""

    def __init__(self) -> None:
        self.files: dict[str, Any] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.locks: dict[str, dict[str, Any]] = {}
        self.next_id = 0

    def restart(self) -> None:
        pass

    def add(self, title: str, work: dict[str, Any], assignee: str | None, at: float) -> str:
        self.next_id += 1
        tid = f"T-{self.next_id}"
        self.tasks[tid] = {
            "id": tid, "title": title, "work": work, "status": "open", "assignee": assignee, "claimed_by": None,
            "claims": 0, "checkpoints": [], "updated_at": at, "completions": [],
        }  # fmt: skip
        return tid

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        op, a = message["op"], message["args"]
        if op == "get":
            return {"value": self.files.get(a["key"])}
        if op == "put":
            self.files[a["key"]] = a["value"]
            return {"value": None}
        if op == "list":
            return {"value": sorted(k for k in self.files if k.startswith(a["prefix"]))}
        if op == "board":
            return {"value": [dict(t) for t in self.tasks.values()]}
        if op == "add":
            return {"value": self.add(a["title"], a["work"], a["assignee"], a["at"])}
        t = self.tasks.get(a.get("id", ""))
        if op in ("assign", "claim", "checkpoint", "done", "release") and t is None:
            return {"error": "not_found", "message": f"no task {a.get('id')}"}
        if t is not None:
            if op == "assign":
                t["assignee"] = a["to"]
                return {"value": None}
            if op == "claim":
                t["claims"] += 1
                t.update(status="claimed", claimed_by=a["by"], updated_at=a["at"])
                return {"value": t["claims"]}
            if op == "checkpoint":
                t["checkpoints"] = [*t["checkpoints"], {"agent": a["by"], "note": a["note"], "at": a["at"]}]
                t["updated_at"] = a["at"]
                return {"value": None}
            if op == "done":
                t["completions"] = [*t["completions"], {"by": a["by"], "token": a["token"]}]
                t.update(status="done", result=a["result"], updated_at=a["at"])
                return {"value": None}
            if op == "release":
                t.update(status="open", claimed_by=None, updated_at=a["at"])
                return {"value": None}
        if op == "lock_get":
            return {"value": self.locks.get(a["resource"])}
        if op == "locks":
            return {"value": {k: dict(v) for k, v in self.locks.items() if k.startswith(a["prefix"])}}
        if op == "lock_put":
            self.locks[a["resource"]] = {"holder": a["holder"], "expires": a["expires"], "gen": a["gen"]}
            return {"value": None}
        if op == "lock_del":
            lock = self.locks.get(a["resource"])
            if lock is not None and lock["holder"] == a["holder"]:
                del self.locks[a["resource"]]
            return {"value": None}
        raise ValueError(f"file server: unknown op {op!r}")  # a harness bug, not a fault

    def final_state(self) -> FinalState:
        tasks = {
            tid: FinalTask(tid, t["title"], t["status"], t["assignee"], t["claimed_by"], t["work"]) for tid, t in self.tasks.items()
        }
        return FinalState(tasks, dict(self.files))


def _view(t: dict[str, Any], stale: bool = False) -> TaskView:
    return TaskView(t["id"], t["title"], t["status"], t["assignee"], t["claimed_by"], t["work"], list(t["checkpoints"]), stale)


def _deps_done(t: dict[str, Any], by_title: dict[str, dict[str, Any]]) -> bool:
    return all(by_title.get(d, {}).get("status") == "done" for d in t["work"].get("deps", ()))


class FilesClient(Client):
    """Shared files and a shared task list: read it, write it, nothing checked."""

    locking = False

    def _call(self, op: str, **args: Any) -> Gen[Any]:
        return self.ctx.call(ADDRESS, op, args)

    def read(self, key: str) -> Gen[Snapshot]:
        value = yield from self._call("get", key=key)
        return Snapshot(key, value)

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[None]:
        yield from self._call("put", key=key, value=[*basis.items, item])

    def create(self, key: str, value: Any) -> Gen[None]:
        yield from self._call("put", key=key, value=value)  # a plain file write: whoever writes last wins

    def next_number(self, sequence: str, prefix: str) -> Gen[int]:
        names = yield from self._call("list", prefix=prefix)
        return _next_after(names, prefix)

    def _tasks(self) -> Gen[list[dict[str, Any]]]:
        tasks: list[dict[str, Any]] = yield from self._call("board")
        return tasks

    def _stale(self, t: dict[str, Any]) -> bool:
        return t["status"] == "claimed" and self.ctx.now() - float(t["updated_at"]) > STALE_AFTER_S

    def board(self) -> Gen[BoardView]:
        tasks = yield from self._tasks()
        return BoardView([_view(t, self._stale(t)) for t in tasks])

    def ready(self) -> Gen[BoardView]:
        tasks = yield from self._tasks()
        by_title = {t["title"]: t for t in tasks}
        out = []
        for t in tasks:
            if not _deps_done(t, by_title) or t["assignee"] not in (None, self.me):
                continue
            if t["status"] == "open":
                out.append(_view(t))
            elif t["status"] == "claimed" and t["claimed_by"] != self.me and t["assignee"] == self.me:
                out.append(_view(t, True))  # reassigned to me: mine now
        return BoardView(out)

    def add_task(self, title: str, work: dict[str, Any], assignee: str | None) -> Gen[str]:
        tid: str = yield from self._call("add", title=title, work=work, assignee=assignee, at=self.ctx.now())
        return tid

    def assign(self, task: TaskView, agent: str) -> Gen[None]:
        yield from self._call("assign", id=task.id, to=agent)

    def claim(self, task: TaskView) -> Gen[Grant]:
        token: int = yield from self._call("claim", id=task.id, by=self.me, at=self.ctx.now())
        return Grant(task, token, list(task.checkpoints))

    def checkpoint(self, grant: Grant, note: str) -> Gen[None]:
        yield from self._call("checkpoint", id=grant.task.id, by=self.me, note=note, at=self.ctx.now())

    def commit(self, grant: Grant, key: str, value: Any, basis: Snapshot) -> Gen[None]:
        yield from self._call("put", key=key, value=value)

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        yield from self._call("done", id=grant.task.id, by=self.me, token=grant.token, result=result, at=self.ctx.now())
        return False

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._call("release", id=grant.task.id, at=self.ctx.now())


def _next_after(names: list[str], prefix: str) -> int:
    numbers = [int(n[len(prefix) :]) for n in names if n[len(prefix) :].isdigit()]
    return max(numbers, default=0) + 1


class LocksClient(FilesClient):
    """Shared files guarded by advisory lock files with a TTL.

    Taking a lock is two round trips (read the lock file; if it is absent, expired by
    *this agent's* clock, or ours, write ours), as lock files are taken; a holder
    refreshes its lock at every checkpoint.  No fencing: a write does not ask whether
    its writer still holds the lock.  No context checks: a claim does not ask whether
    the task changed since the agent read it."""

    locking = True

    def _lock(self, resource: str) -> Gen[int]:
        lock = yield from self._call("lock_get", resource=resource)
        now = self.ctx.now()
        if lock is not None and lock["holder"] != self.me and float(lock["expires"]) > now:
            raise Refused("locked", f"{resource} is locked by {lock['holder']}", holder=lock["holder"])
        gen = (int(lock["gen"]) if lock is not None else 0) + 1
        yield from self._call("lock_put", resource=resource, holder=self.me, expires=now + LOCK_TTL_S, gen=gen)
        return gen

    def _unlock(self, resource: str) -> Gen[None]:
        yield from self._call("lock_del", resource=resource, holder=self.me)

    def read_for_update(self, key: str) -> Gen[Snapshot]:
        yield from self._lock(f"file:{key}")
        return (yield from self.read(key))

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[None]:
        yield from self._lock(f"file:{key}")  # ours already, unless it expired: then it is retaken, blind
        yield from self._call("put", key=key, value=[*basis.items, item])
        yield from self._unlock(f"file:{key}")

    def next_number(self, sequence: str, prefix: str) -> Gen[int]:
        yield from self._lock(f"seq:{prefix}")  # held until the file is written (create)
        names = yield from self._call("list", prefix=prefix)
        return _next_after(names, prefix)

    def create(self, key: str, value: Any) -> Gen[None]:
        yield from self._call("put", key=key, value=value)
        prefix = key.rstrip("0123456789")
        yield from self._unlock(f"seq:{prefix}")

    def ready(self) -> Gen[BoardView]:
        tasks = yield from self._tasks()
        locks = yield from self._call("locks", prefix="task:")
        by_title = {t["title"]: t for t in tasks}
        now = self.ctx.now()
        out = []
        for t in tasks:
            if t["status"] in ("done", "failed") or not _deps_done(t, by_title) or t["assignee"] not in (None, self.me):
                continue
            lock = locks.get(f"task:{t['id']}")
            free = lock is None or lock["holder"] == self.me or float(lock["expires"]) <= now
            if not free:
                continue
            if t["status"] == "open":
                out.append(_view(t))
            elif t["claimed_by"] != self.me:
                out.append(_view(t, True))  # its holder's lock expired: take it over
        return BoardView(out)

    def _stale(self, t: dict[str, Any]) -> bool:
        return t["status"] == "claimed" and self.ctx.now() - float(t["updated_at"]) > LOCK_TTL_S

    def claim(self, task: TaskView) -> Gen[Grant]:
        yield from self._lock(f"task:{task.id}")
        token: int = yield from self._call("claim", id=task.id, by=self.me, at=self.ctx.now())
        return Grant(task, token, list(task.checkpoints))

    def checkpoint(self, grant: Grant, note: str) -> Gen[None]:
        yield from self._call("checkpoint", id=grant.task.id, by=self.me, note=note, at=self.ctx.now())
        # Refresh the lock file, as a holder does: written blind, like every lock write here.
        now = self.ctx.now()
        yield from self._call("lock_put", resource=f"task:{grant.task.id}", holder=self.me, expires=now + LOCK_TTL_S, gen=grant.token)

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        yield from self._call("done", id=grant.task.id, by=self.me, token=grant.token, result=result, at=self.ctx.now())
        yield from self._unlock(f"task:{grant.task.id}")
        return False

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._call("release", id=grant.task.id, at=self.ctx.now())
        yield from self._unlock(f"task:{grant.task.id}")


class NoneStrategy(Strategy):
    name = "none"
    summary = "shared files and a task list: last writer wins, nothing checked"
    client_class: type[FilesClient] = FilesClient

    def setup(self, plan: Plan) -> None:
        self.server = FileServer()
        self.sim.add_node(ADDRESS, self.server)
        self.server.files.update(plan.files)
        for t in plan.tasks:
            work = {**t.work, "deps": list(t.deps)} if t.deps else dict(t.work)
            self.server.add(t.title, work, t.assignee, self.sim.now())

    def client(self, ctx: Any) -> Client:
        return self.client_class(ctx)

    def final_state(self) -> FinalState:
        return self.server.final_state()


class LocksStrategy(NoneStrategy):
    name = "locks"
    summary = f"advisory lock files with a {LOCK_TTL_S:.0f}s TTL, refreshed by checkpoints; no fencing, no context checks"
    client_class = LocksClient
