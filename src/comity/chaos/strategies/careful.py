"""Baseline: ``careful-locks``, a lock discipline as a careful team builds it.

Locks live on the file server and every lock operation is one atomic request judged
by the server's clock (as a lock service, ``SET NX PX``, or an ``O_EXCL`` lock file
whose age the server judges): take it if free, expired or already ours; refresh,
check and release it only if it is still ours.  Under the lock, the agent re-reads
what it is about to change (the task before claiming it, the notes before appending);
migration files are created exclusively; before every checkpoint, commit and
completion it checks that it still holds the task's lock.  What it lacks is fencing:
the check and the write are two requests, and nothing stops a write that arrives
after the lock was lost (a delayed or duplicated message, a pause between the two);
and nothing ties a write to the read it was based on, beyond the lock.
"""

from __future__ import annotations

from typing import Any

from .base import LOCK_TTL_S, BoardView, Grant, Refused, Snapshot, TaskView
from .files import FilesClient, FileStrategy, deps_done, next_after, task_view
from ..sim import Gen

__all__ = ["CarefulLocksStrategy", "CarefulLocksClient"]


class CarefulLocksClient(FilesClient):
    lease_ttl = LOCK_TTL_S

    def _acquire(self, resource: str, *, force: bool = False) -> Gen[float]:
        args: dict[str, Any] = {"resource": resource, "holder": self.me, "ttl": LOCK_TTL_S}
        if force:
            args["force"] = True  # the lock tool's --force: take it from whoever holds it
        expires: float = yield from self._call("lock_acquire", **args)
        return expires

    def _check(self, resource: str) -> Gen[float]:
        expires: float = yield from self._call("lock_check", resource=resource, holder=self.me)
        return expires

    def _refresh(self, resource: str) -> Gen[float]:
        expires: float = yield from self._call("lock_refresh", resource=resource, holder=self.me, ttl=LOCK_TTL_S)
        return expires

    def _release_lock(self, resource: str) -> Gen[None]:
        try:
            yield from self._call("lock_release", resource=resource, holder=self.me)
        except Refused:
            pass  # not ours any more: nothing to give back

    # ------------------------------------------------------------ files
    def read_for_update(self, key: str) -> Gen[Snapshot]:
        yield from self._acquire(f"file:{key}")
        return (yield from self.read(key))

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[list[Any] | None]:
        resource = f"file:{key}"
        try:
            yield from self._check(resource)
        except Refused:
            yield from self._acquire(resource)  # lost it while composing: take it again (or be refused)
        fresh = yield from self.read(key)  # re-read under the lock: append to what is there now
        items = fresh.items
        yield from self._call("put", key=key, value=[*items, item])
        yield from self._release_lock(resource)
        return items

    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        yield from self._acquire(f"seq:{prefix}")  # held until the file is created
        names = yield from self._call("list", prefix=prefix)
        return next_after(names, prefix)

    def create(self, key: str, value: Any) -> Gen[None]:
        prefix = key.rstrip("0123456789")
        try:
            yield from self._call("create", key=key, value=value)  # exclusive: refused if it exists
        finally:
            yield from self._release_lock(f"seq:{prefix}")

    # ------------------------------------------------------------ tasks
    def _board(self) -> Gen[tuple[list[dict[str, Any]], dict[str, Any]]]:
        tasks = yield from self._tasks()
        locks: dict[str, Any] = yield from self._call("locks", prefix="task:")
        return tasks, locks

    def board(self) -> Gen[BoardView]:
        tasks, locks = yield from self._board()
        out = []
        for t in tasks:
            lock = locks.get(f"task:{t['id']}")
            out.append(task_view(t, t["status"] == "claimed" and not (lock is not None and lock["live"])))
        return BoardView(out)

    def ready(self) -> Gen[BoardView]:
        tasks, locks = yield from self._board()
        by_title = {t["title"]: t for t in tasks}
        out = []
        for t in tasks:
            if t["status"] in ("done", "failed") or not deps_done(t, by_title) or t["assignee"] not in (None, self.me):
                continue
            lock = locks.get(f"task:{t['id']}")
            if lock is not None and lock["live"] and lock["holder"] != self.me:
                continue
            if t["status"] == "open":
                out.append(task_view(t))
            elif t["claimed_by"] != self.me or lock is None or not lock["live"]:
                out.append(task_view(t, True))  # its holder's lock lapsed (by the server's clock): take it over
        return BoardView(out)

    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        resource = f"task:{task.id}"
        expires = yield from self._acquire(resource, force=steal)
        t = yield from self._call("task_get", id=task.id)  # re-read under the lock
        why = None
        if blind:
            pass  # a blind retry does not look at what it re-read
        elif t["status"] in ("done", "failed"):
            why = f"task {task.id} is {t['status']}"
        elif t["assignee"] not in (None, self.me):
            why = f"task {task.id} is assigned to {t['assignee']}"
        if why is not None:
            yield from self._release_lock(resource)
            raise Refused("stale_context", why)
        token: int = yield from self._call("claim", id=task.id, by=self.me)
        return Grant(task, token, list(t["checkpoints"]), expires, reread=not blind)

    def _still_mine(self, grant: Grant) -> Gen[float]:
        """The ownership check before a fenced action: the task's lock is still ours."""
        expires: float = yield from self._refresh(f"task:{grant.task.id}")
        return expires

    def checkpoint(self, grant: Grant, note: str) -> Gen[float | None]:
        expires = yield from self._still_mine(grant)
        yield from self._call("checkpoint", id=grant.task.id, by=self.me, note=note)
        return expires

    def commit(self, grant: Grant, key: str, value: Any, basis: Snapshot) -> Gen[None]:
        yield from self._still_mine(grant)
        yield from self._call("put", key=key, value=value)

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        yield from self._still_mine(grant)
        yield from self._call("done", id=grant.task.id, by=self.me, token=grant.token, result=result)
        yield from self._release_lock(f"task:{grant.task.id}")
        return False

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._still_mine(grant)
        yield from self._call("release", id=grant.task.id)
        yield from self._release_lock(f"task:{grant.task.id}")


class CarefulLocksStrategy(FileStrategy):
    name = "careful-locks"
    summary = (
        f"atomic lock operations judged by the server's clock ({LOCK_TTL_S:.0f}s TTL), re-read under the lock,"
        " exclusive create of migration files, an ownership check before checkpoint, commit and completion; no tokens"
    )
    client_class = CarefulLocksClient
