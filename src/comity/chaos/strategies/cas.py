"""Baseline: ``cas``, conditional writes on a version, as object stores (``If-Match``
on an ETag) and ``git update-ref <ref> <new> <old>`` offer them.

Every file and every task record has a version; a write names the version it was
based on and is refused if another write came first.  Notes are appended over the
version read; migration files are created only if absent; a number comes from a
counter advanced by compare-and-swap; a claim is a conditional write of the task
record from the version the agent read, so a claim on a stale read is refused; before
a checkpoint, a commit or a completion the agent re-reads the task record and writes
it (or the work file) only if it still names this claim.  A task whose record has not
changed for a lease's length by the server's clock (its ``Last-Modified``) may be
taken over.  What it lacks: a write to one file cannot be made conditional on another
(the work product on the task's claim), and a number taken is not tied to the work
it is for.
"""

from __future__ import annotations

from typing import Any

from ..sim import Gen
from .base import LEASE_TTL_S, BoardView, Grant, Refused, Snapshot, TaskView
from .files import FilesClient, FileStrategy, deps_done, next_after, task_view

__all__ = ["CasStrategy", "CasClient"]

_RETRIES = 8


class CasClient(FilesClient):
    lease_ttl = LEASE_TTL_S

    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[list[Any] | None]:
        yield from self._call("put_if", key=key, value=[*basis.items, item], version=basis.context or 0)
        return None

    def create(self, key: str, value: Any) -> Gen[None]:
        yield from self._call("create", key=key, value=value)

    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        key = f"counters/{sequence}"
        for _ in range(_RETRIES):
            counter = yield from self.read(key)
            current = counter.value if isinstance(counter.value, int) else None
            if current is None:  # the counter starts above what the directory already holds
                names = yield from self._call("list", prefix=prefix)
                current = next_after(names, prefix) - 1
            try:
                yield from self._call("put_if", key=key, value=current + 1, version=counter.context or 0)
            except Refused:
                continue  # someone took a number meanwhile: read the counter again
            return current + 1
        raise Refused("stale_context", f"the counter {key} kept changing")

    # ------------------------------------------------------------ tasks
    def _lapsed(self, t: dict[str, Any], now: float) -> bool:
        return t["status"] == "claimed" and now - float(t["updated_at"]) > LEASE_TTL_S

    def board(self) -> Gen[BoardView]:
        got = yield from self._call("board")
        return BoardView([task_view(t, self._lapsed(t, got["now"])) for t in got["tasks"]])

    def ready(self) -> Gen[BoardView]:
        got = yield from self._call("board")
        tasks, now = got["tasks"], got["now"]
        by_title = {t["title"]: t for t in tasks}
        out = []
        for t in tasks:
            if t["status"] in ("done", "failed") or not deps_done(t, by_title) or t["assignee"] not in (None, self.me):
                continue
            if t["status"] == "open":
                out.append(task_view(t))
            elif self._lapsed(t, now):
                out.append(task_view(t, True))  # untouched for a lease's length (by the server's clock): take it over
        return BoardView(out)

    def _put_task(self, task_id: str, version: int, changes: dict[str, Any]) -> Gen[dict[str, Any]]:
        got: dict[str, Any] = yield from self._call("task_put_if", id=task_id, version=version, changes=changes)
        return got

    def assign(self, task: TaskView, agent: str) -> Gen[None]:
        for _ in range(_RETRIES):
            t = yield from self._call("task_get", id=task.id)
            if t["status"] in ("done", "failed"):
                raise Refused("stale_context", f"task {task.id} is {t['status']}")
            try:
                yield from self._put_task(task.id, t["version"], {"assignee": agent})
                return
            except Refused:
                continue
        raise Refused("stale_context", f"task {task.id} kept changing")

    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        version = task.context if isinstance(task.context, int) else 0
        if blind or steal:  # over whatever is there now, not over what was read
            now = yield from self._call("task_get", id=task.id)
            version = int(now["version"])
        got = yield from self._put_task(task.id, version, {"status": "claimed", "claimed_by": self.me})
        return Grant(task, int(got["claims"]), list(task.checkpoints), float(got["updated_at"]) + LEASE_TTL_S)

    def _mine(self, grant: Grant) -> Gen[dict[str, Any]]:
        """Re-read the task record: it must still name this claim."""
        t: dict[str, Any] = yield from self._call("task_get", id=grant.task.id)
        if t["status"] != "claimed" or t["claimed_by"] != self.me or t["claims"] != grant.token:
            raise Refused("fenced", f"task {grant.task.id} is no longer ours: {t['status']}, claimed by {t['claimed_by']}")
        return t

    def _fenced_update(self, grant: Grant, change: Any) -> Gen[dict[str, Any]]:
        want: dict[str, Any] | None = None
        for _ in range(_RETRIES):
            if want is not None:  # refused: did our own write land (an answer lost, a retry refused)?
                t = yield from self._call("task_get", id=grant.task.id)
                if t["claims"] == grant.token and all(t.get(k) == v for k, v in want.items()):
                    return {"version": t["version"], "claims": t["claims"], "updated_at": t["updated_at"]}
            t = yield from self._mine(grant)
            want = change(t)
            try:
                got: dict[str, Any] = yield from self._put_task(grant.task.id, t["version"], want)
                return got
            except Refused:
                continue  # the record moved (an assignment, a checkpoint, our own write): look again
        raise Refused("stale_context", f"task {grant.task.id} kept changing")

    def checkpoint(self, grant: Grant, note: str) -> Gen[float | None]:
        got = yield from self._fenced_update(grant, lambda t: {"checkpoints": [*t["checkpoints"], {"agent": self.me, "note": note}]})
        return float(got["updated_at"]) + LEASE_TTL_S

    def commit(self, grant: Grant, key: str, value: Any, basis: Snapshot) -> Gen[None]:
        yield from self._mine(grant)  # the task's record and the work file are two objects: check, then write
        yield from self._call("put_if", key=key, value=value, version=basis.context or 0)

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        yield from self._fenced_update(grant, lambda t: {"status": "done", "result": result})
        return False

    def release(self, grant: Grant) -> Gen[None]:
        yield from self._fenced_update(grant, lambda t: {"status": "open", "claimed_by": None})


class CasStrategy(FileStrategy):
    name = "cas"
    summary = (
        "conditional writes on a version (ETag If-Match, git update-ref): notes, counters and task records written"
        " over the version read, migration files created if absent, takeover after a lease's length by the server's clock"
    )
    client_class = CasClient
