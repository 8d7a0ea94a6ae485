"""Baselines over a shared file server: ``none`` (last writer wins) and ``naive-locks``
(advisory lock files as they are often written: taken in two round trips, judged by
each agent's own clock, refreshed by overwriting, no fencing, no context checks).

The authority is a file server: files (each with a version, as an object store's
etag), a task list, and lock files.  It offers plain writes, and also what the careful
baselines build on (``careful.py``, ``cas.py``): an exclusive create, conditional
writes on a version, and atomic lock operations judged by the server's own clock.
Which of these a strategy uses is its client's choice; the server applies what it is
told.
"""

from __future__ import annotations

from typing import Any

from ..sim import Gen, Simulation
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

__all__ = ["NoneStrategy", "NaiveLocksStrategy", "FileServer", "FilesClient", "NaiveLocksClient", "next_after"]

ADDRESS = "files"


class FileServer:
    """Files, a task list and lock files, in the file server's memory (durable: a
    restart loses nothing, it only makes the server unreachable for a while).  Its
    clock is the simulation's: the server's own, as an object store's ``Date``."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.files: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.locks: dict[str, dict[str, Any]] = {}
        self.next_id = 0

    def restart(self) -> None:
        pass

    def now(self) -> float:
        return self.sim.now()

    def add(self, title: str, work: dict[str, Any], assignee: str | None, at: float | None) -> str:
        self.next_id += 1
        tid = f"T-{self.next_id}"
        self.tasks[tid] = {
            "id": tid, "title": title, "work": work, "status": "open", "assignee": assignee, "claimed_by": None,
            "claims": 0, "checkpoints": [], "updated_at": self.now() if at is None else at, "completions": [], "version": 1,
        }  # fmt: skip
        return tid

    def _write(self, key: str, value: Any) -> dict[str, Any]:
        self.files[key] = value
        self.versions[key] = self.versions.get(key, 0) + 1
        return {"value": self.versions[key]}

    def _touch(self, t: dict[str, Any], at: Any) -> None:
        t["version"] += 1
        t["updated_at"] = self.now() if at is None else at

    def _lock_live(self, lock: dict[str, Any] | None) -> bool:
        return lock is not None and float(lock["expires"]) > self.now()

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        op, a = message["op"], message["args"]
        # ------------------------------------------------------------ files
        if op == "get":
            return {"value": {"v": self.files.get(a["key"]), "version": self.versions.get(a["key"], 0)}}
        if op == "put":
            return self._write(a["key"], a["value"])
        if op == "put_if":  # a conditional write: the version read (0: absent) must still be current
            current = self.versions.get(a["key"], 0) if a["key"] in self.files else 0
            if current != a["version"]:
                return {"error": "stale_context", "message": f"{a['key']} is at version {current}, not {a['version']}"}
            return self._write(a["key"], a["value"])
        if op == "create":  # an exclusive create (O_EXCL, If-None-Match: *)
            if a["key"] in self.files:
                return {"error": "stale_context", "message": f"{a['key']} exists"}
            return self._write(a["key"], a["value"])
        if op == "list":
            return {"value": sorted(k for k in self.files if k.startswith(a["prefix"]))}
        # ------------------------------------------------------------ tasks
        if op == "board":
            return {"value": {"tasks": [dict(t) for t in self.tasks.values()], "now": self.now()}}
        if op == "add":
            return {"value": self.add(a["title"], a["work"], a["assignee"], a.get("at"))}
        t = self.tasks.get(a.get("id", ""))
        if op in ("task_get", "task_put_if", "assign", "claim", "checkpoint", "done", "release") and t is None:
            return {"error": "not_found", "message": f"no task {a.get('id')}"}
        if t is not None:
            at = a.get("at")
            if op == "task_get":
                return {"value": {**t, "now": self.now()}}
            if op == "task_put_if":
                if t["version"] != a["version"]:
                    return {"error": "stale_context", "message": f"task {t['id']} is at version {t['version']}, not {a['version']}"}
                changes = dict(a["changes"])
                if changes.get("status") == "claimed" and changes.get("claimed_by") is not None:
                    t["claims"] += 1
                if changes.get("status") == "done":
                    t["completions"] = [*t["completions"], {"by": message["agent"], "token": t["claims"]}]
                t.update(changes)
                self._touch(t, None)
                return {"value": {"version": t["version"], "claims": t["claims"], "updated_at": t["updated_at"]}}
            if op == "assign":
                t["assignee"] = a["to"]
                self._touch(t, at if at is not None else t["updated_at"])
                return {"value": None}
            if op == "claim":
                t["claims"] += 1
                t.update(status="claimed", claimed_by=a["by"])
                self._touch(t, at)
                return {"value": t["claims"]}
            if op == "checkpoint":
                t["checkpoints"] = [*t["checkpoints"], {"agent": a["by"], "note": a["note"], "at": at}]
                self._touch(t, at)
                return {"value": None}
            if op == "done":
                t["completions"] = [*t["completions"], {"by": a["by"], "token": a["token"]}]
                t.update(status="done", result=a["result"])
                self._touch(t, at)
                return {"value": None}
            if op == "release":
                t.update(status="open", claimed_by=None)
                self._touch(t, at)
                return {"value": None}
        # ------------------------------------------------------------ locks
        if op == "lock_get":
            return {"value": self.locks.get(a["resource"])}
        if op == "locks":
            now = self.now()
            return {"value": {k: {**v, "live": float(v["expires"]) > now} for k, v in self.locks.items() if k.startswith(a["prefix"])}}
        if op == "lock_put":  # a lock file written blind
            self.locks[a["resource"]] = {"holder": a["holder"], "expires": a["expires"], "gen": a["gen"]}
            return {"value": None}
        if op == "lock_del":
            lock = self.locks.get(a["resource"])
            if lock is not None and lock["holder"] == a["holder"]:
                del self.locks[a["resource"]]
            return {"value": None}
        if op == "lock_acquire":  # atomic: free, expired by the server's clock, or already ours (or forced)
            lock = self.locks.get(a["resource"])
            if not a.get("force") and self._lock_live(lock) and lock is not None and lock["holder"] != a["holder"]:
                return {"error": "locked", "message": f"{a['resource']} is locked by {lock['holder']}", "holder": lock["holder"]}
            gen = (int(lock["gen"]) if lock is not None else 0) + 1
            self.locks[a["resource"]] = {"holder": a["holder"], "expires": self.now() + float(a["ttl"]), "gen": gen}
            return {"value": self.locks[a["resource"]]["expires"]}
        if op in ("lock_refresh", "lock_check", "lock_release"):  # atomic, and only by the lock's holder
            lock = self.locks.get(a["resource"])
            if lock is None or lock["holder"] != a["holder"]:
                holder = None if lock is None else lock["holder"]
                return {"error": "fenced", "message": f"{a['resource']} is not locked by {a['holder']} (held by {holder})", "holder": holder}
            if op == "lock_refresh":
                lock["expires"] = self.now() + float(a["ttl"])
                return {"value": lock["expires"]}
            if op == "lock_release":
                del self.locks[a["resource"]]
            return {"value": lock["expires"]}
        raise ValueError(f"file server: unknown op {op!r}")  # a harness bug, not a fault

    def final_state(self) -> FinalState:
        tasks = {
            tid: FinalTask(tid, t["title"], t["status"], t["assignee"], t["claimed_by"], t["work"]) for tid, t in self.tasks.items()
        }
        return FinalState(tasks, dict(self.files))


def task_view(t: dict[str, Any], stale: bool = False) -> TaskView:
    return TaskView(t["id"], t["title"], t["status"], t["assignee"], t["claimed_by"], t["work"], list(t["checkpoints"]), stale,
                    t.get("version"))  # fmt: skip


def deps_done(t: dict[str, Any], by_title: dict[str, dict[str, Any]]) -> bool:
    return all(by_title.get(d, {}).get("status") == "done" for d in t["work"].get("deps", ()))


def next_after(names: list[str], prefix: str) -> int:
    numbers = [int(n[len(prefix) :]) for n in names if n[len(prefix) :].isdigit()]
    return max(numbers, default=0) + 1


class FilesClient(Client):
    """Shared files and a shared task list: read it, write it, nothing checked."""

    retry_safe = frozenset({"get", "list", "board", "task_get", "locks", "lock_get"})

    def _call(self, op: str, **args: Any) -> Gen[Any]:
        return self.ctx.call(ADDRESS, op, args)

    def read(self, key: str) -> Gen[Snapshot]:
        got = yield from self._call("get", key=key)
        return Snapshot(key, got["v"], got["version"])

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[list[Any] | None]:
        yield from self._call("put", key=key, value=[*basis.items, item])
        return None

    def create(self, key: str, value: Any) -> Gen[None]:
        yield from self._call("put", key=key, value=value)  # a plain file write: whoever writes last wins

    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        names = yield from self._call("list", prefix=prefix)
        return next_after(names, prefix)

    def _tasks(self) -> Gen[list[dict[str, Any]]]:
        got = yield from self._call("board")
        tasks: list[dict[str, Any]] = got["tasks"]
        return tasks

    def _stale(self, t: dict[str, Any]) -> bool:
        return t["status"] == "claimed" and self.ctx.now() - float(t["updated_at"]) > STALE_AFTER_S

    def board(self) -> Gen[BoardView]:
        tasks = yield from self._tasks()
        return BoardView([task_view(t, self._stale(t)) for t in tasks])

    def ready(self) -> Gen[BoardView]:
        tasks = yield from self._tasks()
        by_title = {t["title"]: t for t in tasks}
        out = []
        for t in tasks:
            if not deps_done(t, by_title) or t["assignee"] not in (None, self.me):
                continue
            if t["status"] == "open":
                out.append(task_view(t))
            elif t["status"] == "claimed" and t["claimed_by"] != self.me and t["assignee"] == self.me:
                out.append(task_view(t, True))  # reassigned to me: mine now
        return BoardView(out)

    def add_task(self, title: str, work: dict[str, Any], assignee: str | None) -> Gen[str]:
        tid: str = yield from self._call("add", title=title, work=work, assignee=assignee, at=self.ctx.now())
        return tid

    def assign(self, task: TaskView, agent: str) -> Gen[None]:
        yield from self._call("assign", id=task.id, to=agent)

    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        token: int = yield from self._call("claim", id=task.id, by=self.me, at=self.ctx.now())
        return Grant(task, token, list(task.checkpoints))

    def checkpoint(self, grant: Grant, note: str) -> Gen[float | None]:
        yield from self._call("checkpoint", id=grant.task.id, by=self.me, note=note, at=self.ctx.now())
        return None

    def commit(self, grant: Grant, key: str, value: Any, basis: Snapshot) -> Gen[None]:
        yield from self._call("put", key=key, value=value)

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        yield from self._call("done", id=grant.task.id, by=self.me, token=grant.token, result=result, at=self.ctx.now())
        return False

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._call("release", id=grant.task.id, at=self.ctx.now())


class NaiveLocksClient(FilesClient):
    """Shared files guarded by advisory lock files with a TTL, as they are often written.

    Taking a lock is two round trips (read the lock file; if it is absent, expired by
    *this agent's* clock, or ours, write ours); a holder refreshes its lock at every
    checkpoint by overwriting it.  No fencing: a write does not ask whether its writer
    still holds the lock.  No context checks: a claim does not re-read the task.  A
    migration file is written blind.  (``careful-locks`` fixes each of these.)"""

    lease_ttl = LOCK_TTL_S

    def _lock(self, resource: str, *, force: bool = False) -> Gen[float]:
        lock = yield from self._call("lock_get", resource=resource)
        now = self.ctx.now()
        if not force and lock is not None and lock["holder"] != self.me and float(lock["expires"]) > now:
            raise Refused("locked", f"{resource} is locked by {lock['holder']}", holder=lock["holder"])
        gen = (int(lock["gen"]) if lock is not None else 0) + 1
        expires = now + LOCK_TTL_S
        yield from self._call("lock_put", resource=resource, holder=self.me, expires=expires, gen=gen)
        return expires - self.ctx.skew  # when it lapses in the simulation's time, as this agent believes

    def _unlock(self, resource: str) -> Gen[None]:
        yield from self._call("lock_del", resource=resource, holder=self.me)

    def read_for_update(self, key: str) -> Gen[Snapshot]:
        yield from self._lock(f"file:{key}")
        return (yield from self.read(key))

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[list[Any] | None]:
        yield from self._lock(f"file:{key}")  # ours already, unless it expired: then it is retaken, blind
        yield from self._call("put", key=key, value=[*basis.items, item])
        yield from self._unlock(f"file:{key}")
        return None

    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        yield from self._lock(f"seq:{prefix}")  # held until the file is written (create)
        names = yield from self._call("list", prefix=prefix)
        return next_after(names, prefix)

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
            if t["status"] in ("done", "failed") or not deps_done(t, by_title) or t["assignee"] not in (None, self.me):
                continue
            lock = locks.get(f"task:{t['id']}")
            free = lock is None or lock["holder"] == self.me or float(lock["expires"]) <= now
            if not free:
                continue
            if t["status"] == "open":
                out.append(task_view(t))
            elif t["claimed_by"] != self.me:
                out.append(task_view(t, True))  # its holder's lock expired: take it over
        return BoardView(out)

    def _stale(self, t: dict[str, Any]) -> bool:
        return t["status"] == "claimed" and self.ctx.now() - float(t["updated_at"]) > LOCK_TTL_S

    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        expires = yield from self._lock(f"task:{task.id}", force=steal)
        token: int = yield from self._call("claim", id=task.id, by=self.me, at=self.ctx.now())
        return Grant(task, token, list(task.checkpoints), expires)

    def checkpoint(self, grant: Grant, note: str) -> Gen[float | None]:
        yield from self._call("checkpoint", id=grant.task.id, by=self.me, note=note, at=self.ctx.now())
        # Refresh the lock file, as a holder does: written blind, like every lock write here.
        expires = self.ctx.now() + LOCK_TTL_S
        yield from self._call("lock_put", resource=f"task:{grant.task.id}", holder=self.me, expires=expires, gen=grant.token)
        return expires - self.ctx.skew

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        yield from self._call("done", id=grant.task.id, by=self.me, token=grant.token, result=result, at=self.ctx.now())
        yield from self._unlock(f"task:{grant.task.id}")
        return False

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._call("release", id=grant.task.id, at=self.ctx.now())
        yield from self._unlock(f"task:{grant.task.id}")


class FileStrategy(Strategy):
    """A strategy whose authority is the file server; subclasses choose the client."""

    client_class: type[FilesClient] = FilesClient

    def setup(self, plan: Plan) -> None:
        self.server = FileServer(self.sim)
        self.sim.add_node(ADDRESS, self.server)
        for key, value in plan.files.items():
            self.server._write(key, value)
        for t in plan.tasks:
            work = {**t.work, "deps": list(t.deps)} if t.deps else dict(t.work)
            self.server.add(t.title, work, t.assignee, None)

    def client(self, ctx: Any) -> Client:
        return self.client_class(ctx)

    def final_state(self) -> FinalState:
        return self.server.final_state()


class NoneStrategy(FileStrategy):
    name = "none"
    summary = "shared files and a task list: last writer wins, nothing checked"


class NaiveLocksStrategy(FileStrategy):
    name = "naive-locks"
    summary = (
        f"advisory lock files ({LOCK_TTL_S:.0f}s TTL) taken in two round trips and judged by each agent's clock,"
        " refreshed by overwriting; no re-read, no exclusive create, no ownership check, no fencing"
    )
    client_class = NaiveLocksClient
