"""The task board: add, assign, claim, checkpoint, complete, with takeover of orphaned work.

A task is a system key ``@task/T-n`` holding its record; while it waits to be
claimed, a marker key ``@open/…`` lists it in the ready queue (a range scan on the
store's live-key index).  A claim is one guarded transaction: the task's context is
still current, the lease ``@task/T-n`` is free or expired (a strictly greater fencing
token), the record says who claimed it, the marker goes.  Every fenced action
(checkpoint, done, release, fail) checks the token in the same transaction as its
write.  An expired lease leaves the task *orphaned*: claimable again, and its next
claimant gets a greater token and the last checkpoint as its handoff.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from ..coord.leases import DEFAULT_TTL_S, Lease, Leases
from ..coord.liveness import PhiAccrual, agents
from ..coord.sequences import next_number
from ..errors import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Step
from ..store._api import Stored, check_agent
from ..store import AUTH_PREFIX, Acquire, Create, Delete, Holds, Note, Put, Release, Renew, Session, Versioned, Written
from ..store._codec import check_key

__all__ = ["Board", "Claim", "Request", "STATES", "TASK_PREFIX", "OPEN_PREFIX", "task_key", "parse_task_id"]

TASK_PREFIX = "@task/"
OPEN_PREFIX = "@open/"
_ID = re.compile(r"(?:T-)?([1-9][0-9]{0,11})")
_RETRIES = 64
# claim_next picks among the first this many ready tasks (8 agents on PostgreSQL lost 0.57
# races a claim picking among 8, 0.13 among 32: docs/throughput.md).
_SPREAD = 32
STATES = ("open", "claimed", "orphaned", "submitted", "done", "failed")
_TITLE_MAX = 500
_BODY_MAX = 100_000
_NOTE_MAX = 20_000
# Changes that matter to a claim made on an old read: the task was closed, assigned or claimed.
_MATTERS = {"task.assign", "task.claim", "task.done", "task.fail", "task.release", "task.submitted", "task.reopen"}
_READY = Step("task_ready", {}, "find other work")


def _list_step() -> Step:
    return Step("task_list", {}, "see the board")


def what_changed(e: dict[str, Any]) -> str:
    """A task event in words a model can act on: "assigned to alice by triage"."""
    who, op = e.get("agent", "someone"), str(e.get("op", ""))
    raw = e.get("value")
    value: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if op == "task.assign":
        return f"assigned to {value.get('assignee') or 'nobody'} by {who}"
    done = {"task.claim": "claimed", "task.done": "completed", "task.fail": "failed", "task.release": "released",
            "task.submitted": "submitted for verification", "task.reopen": "reopened"}  # fmt: skip
    return f"{done.get(op, op.removeprefix('task.'))} by {who}"


def _then(e: ComityError, *steps: Step) -> ComityError:
    """The error with next steps, if the layer that raised it gave none."""
    if not e.next:
        e.next = tuple(steps)
    return e


def parse_task_id(task_id: object, field: str = "id") -> str:
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or _ID.fullmatch(task_id.strip()) is None:
        raise Invalid(field, f"{task_id!r} is not a task id; ids look like T-12 (or 12)")
    m = _ID.fullmatch(task_id.strip())
    assert m is not None
    return f"T-{int(m.group(1))}"


def task_key(task_id: str) -> str:
    return TASK_PREFIX + task_id


def _open_key(task_id: str) -> str:
    return f"{OPEN_PREFIX}{int(task_id[2:]):012d}"


def _marker(record: dict[str, Any]) -> dict[str, Any]:
    """What the ready queue needs without reading the task: who may claim it, what it waits on."""
    return {"id": record["id"], "assignee": record.get("assignee"), "deps": record.get("deps", [])}


def _text(value: object, field: str, cap: int, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise Invalid(field, "must be a non-empty string" if required else "must be a string")
    if len(value) > cap:
        raise Invalid(field, f"is {len(value)} characters; the cap is {cap}")
    return value


def _token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 1:
        raise Invalid("token", f"must be the fencing token your claim returned, got {token!r}")
    return token


def _assignee(agent: object, field: str = "assignee") -> str | None:
    return None if agent is None else check_agent(agent, field)


def _ttl(ttl: object) -> float:
    if ttl is None:
        return DEFAULT_TTL_S
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= 7 * 24 * 3600:
        raise Invalid("ttl", f"must be seconds in (0, 604800], got {ttl!r}")
    return float(ttl)


@dataclass(slots=True)
class Claim:
    task: dict[str, Any]
    token: int
    expires: float
    handoff: list[dict[str, Any]]
    news: list[dict[str, Any]]
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        out = {"task": self.task, "token": self.token, "expires": self.expires, "handoff": self.handoff, "news": self.news}
        if self.replayed:
            out["replayed"] = True
        return out


@dataclass(frozen=True, slots=True)
class _ClaimRead:
    """What a claim decides on (Board._claim_read): one snapshot's task, marker and lease."""

    task: Versioned
    marker: Versioned
    lease: dict[str, Any] | None
    now: float
    waits: list[str]  # its dependencies not done


@dataclass(frozen=True, slots=True)
class Request:
    """A caller's request id and what makes a retry "the same request" (the digest of the
    verb and its arguments as the caller gave them): the transaction that acts records its
    outcome under the id, and a retry is answered from that record instead of acting twice."""

    id: str
    digest: str

    def derived(self, step: str) -> Request:
        """The id of an earlier step of the same request (a sequence number it takes first)."""
        return Request(f"{self.id[:100]}#{step}", self.digest)


def _txn_request(request: Request | None) -> dict[str, Any]:
    """The keyword arguments of Session.txn that make it record ``request``'s outcome."""
    return {} if request is None else {"request_id": request.id, "digest": request.digest}


class Board:
    """One agent's view of the task board, over one store session."""

    def __init__(self, session: Session, *, detector: PhiAccrual | None = None) -> None:
        self.session = session
        self.detector = detector or PhiAccrual()
        self.leases = Leases(session, system=True)  # a task's lease is on its key, @task/T-n

    # ------------------------------------------------------------------ reads
    def _read(self, task_id: str) -> Versioned:
        v = self.session.get(task_key(task_id))
        if not v.values:
            raise NotFound(f"no task {task_id}", id=task_id, next=[_list_step()])
        return v

    def _view(self, record: dict[str, Any], lease: dict[str, Any] | None, now: float, context: str | None = None) -> dict[str, Any]:
        """A task as an agent sees it: its record, its effective status, its lease."""
        out = dict(record)
        status = record["status"]
        if status == "claimed" and lease is not None:
            if lease["holder"] is None or lease["expires"] <= now:
                status = "orphaned"
        out["state"] = status
        out["lease"] = None if lease is None or status != "claimed" else {
            "holder": lease["holder"], "token": lease["token"], "expires": lease["expires"]
        }
        if context is not None:
            out["context"] = context
        return out

    @staticmethod
    def _brief(lease: Lease) -> dict[str, Any]:
        return {"holder": lease.holder, "token": lease.token, "expires": lease.expires}

    def _leases(self) -> tuple[dict[str, dict[str, Any]], float]:
        leases, now = self.leases.under(TASK_PREFIX)
        return {x.resource[len(TASK_PREFIX) :]: self._brief(x) for x in leases}, now

    def _lease(self, task_id: str) -> tuple[dict[str, Any] | None, float]:
        lease, now = self.leases.get(task_key(task_id))
        return (None if lease is None else self._brief(lease)), now

    def show(self, task_id: str) -> dict[str, Any]:
        task_id = parse_task_id(task_id)
        with self.session.snapshot():  # the record and its lease as of one moment
            v = self._read(task_id)
            lease, now = self._lease(task_id)
        return self._view(v.values[0], lease, now, v.context)

    def tasks(self, *, status: str | None = None) -> list[dict[str, Any]]:
        if status is not None and status not in STATES:
            raise Invalid("state", f"{status!r:.40} is not a task state; use one of: {', '.join(STATES)} (or none for every task)")
        with self.session.snapshot():  # the records and their leases as of one moment
            leases, now = self._leases()
            records = self.session.scan(TASK_PREFIX)
        views = [self._view(v.values[0], leases.get(v.key[len(TASK_PREFIX) :]), now, v.context) for v in records if v.values]
        views.sort(key=lambda t: int(t["id"][2:]))
        return [t for t in views if status is None or t["state"] == status]

    def ready(self, *, limit: int = 1000, full: bool = True) -> list[dict[str, Any]]:
        """Claimable by this agent: open or orphaned, unassigned or assigned to it, dependencies done.

        Without ``full``, open tasks come as the queue knows them (id, assignee, deps), unread."""
        with self.session.snapshot():  # one read transaction for the whole list
            return self._ready(limit, full)

    def _ready(self, limit: int, full: bool) -> list[dict[str, Any]]:
        me = self.session.agent
        done_cache: dict[str, bool] = {}
        out, now = self._orphans(limit, done_cache)
        for page in self._marker_pages(limit):  # on past markers this agent may not claim
            if len(out) >= limit:
                break
            for _, stored in page:
                marker = self._claimable(stored, me, done_cache)
                if marker is not None:
                    out.append(marker)
                    if len(out) >= limit:
                        break
        out = out[:limit]
        if full:
            stubs = [i for i, t in enumerate(out) if "title" not in t]
            for i, v in zip(stubs, self.session.get_many([task_key(out[i]["id"]) for i in stubs])):
                if v.values:
                    out[i] = self._view(v.values[0], None, now, v.context)
        return out

    def _orphans(self, limit: int, done_cache: dict[str, bool]) -> tuple[list[dict[str, Any]], float]:
        """Claimed tasks whose lease expired that this agent may claim, and the authority's time."""
        me = self.session.agent
        expired, now = self.session.expired_leases(TASK_PREFIX, limit=limit)
        orphan_ids = sorted((r.resource[len(TASK_PREFIX) :] for r in expired), key=lambda t: int(t[2:]))
        leases = {r.resource[len(TASK_PREFIX) :]: {"holder": r.holder, "token": r.token, "expires": r.expires} for r in expired}
        out: list[dict[str, Any]] = []
        for v in self.session.get_many([task_key(t) for t in orphan_ids]):
            if v.values:
                view = self._view(v.values[0], leases.get(v.values[0]["id"]), now, v.context)
                if view["state"] == "orphaned" and view.get("assignee") in (None, me) and self._deps_done(view, done_cache):
                    out.append(view)
        return out, now

    def _claimable(self, stored: Stored, me: str | None, done_cache: dict[str, bool]) -> dict[str, Any] | None:
        """An open task's marker as the ready list shows it, if this agent may claim it."""
        values = stored.values
        if not values:
            return None
        marker = values[0]
        if marker.get("assignee") not in (None, me) or not self._deps_done(marker, done_cache):
            return None
        return {"id": marker["id"], "state": "open", "assignee": marker.get("assignee"), "deps": marker.get("deps", [])}

    def _pick(self, tried: set[str]) -> dict[str, Any] | None:
        """A ready task for claim_next, not one of ``tried``: at random among the claimable ones
        of the first _SPREAD markers (with the orphans), so that agents claiming at once rarely
        race for one (a lost race costs a refused write and a read again).  The markers are
        decoded in the order drawn, only until one is claimable."""
        me, rng = self.session.agent, self.session.store.rng
        done_cache: dict[str, bool] = {}
        orphans, _ = self._orphans(_SPREAD, done_cache)
        skip = {_open_key(t) for t in tried}
        candidates: list[dict[str, Any] | Stored] = [o for o in orphans if o["id"] not in tried]
        for page in self._marker_pages(_SPREAD):
            candidates += [stored for key, stored in page if key not in skip]
            while candidates:
                c = candidates.pop(rng.randint(0, len(candidates) - 1))
                got = c if isinstance(c, dict) else self._claimable(c, me, done_cache)
                if got is not None:
                    return got
        return None

    def _marker_pages(self, size: int) -> Iterator[list[tuple[str, Stored]]]:
        """The open tasks' markers in order, ``size`` at a time, read as they are asked for."""
        after: str | None = None
        while True:
            page = self.session.scan_stored(OPEN_PREFIX, limit=size, after=after)
            if page:
                yield page
            if len(page) < size:
                return
            after = page[-1][0]

    def _deps_done(self, task: dict[str, Any], cache: dict[str, bool]) -> bool:
        return all(self._is_done(d, cache) for d in task.get("deps", []))

    def _is_done(self, dep: str, cache: dict[str, bool]) -> bool:
        if dep not in cache:
            v = self.session.get(task_key(dep))
            cache[dep] = bool(v.values) and v.values[0]["status"] == "done"
        return cache[dep]

    # ----------------------------------------------------------------- writes
    def _agent(self) -> str:
        if self.session.agent is None:
            raise Invalid("agent", "task changes need an agent name")
        return self.session.agent

    def add(
        self,
        title: str,
        *,
        body: str = "",
        deps: Iterable[str] = (),
        labels: Iterable[str] = (),
        assignee: str | None = None,
        request: Request | None = None,
    ) -> dict[str, Any]:
        me = self._agent()
        prior = self._prior(request)
        if prior is not None:
            made = prior["results"][0]
            return {**made["values"][0], "state": "open", "lease": None, "context": made["context"], "news": [], "replayed": True}
        title = _text(title, "title", _TITLE_MAX, required=True)
        body = _text(body, "body", _BODY_MAX)
        dep_ids = [parse_task_id(d, "deps") for d in deps]
        for d in dep_ids:
            if not self.session.get(task_key(d)).values:
                raise NotFound(f"dependency {d} does not exist; add it first", field="deps")
        assignee = _assignee(assignee)
        label_list = list(dict.fromkeys(labels))
        if not all(isinstance(lab, str) and 0 < len(lab) <= 64 for lab in label_list):
            raise Invalid("labels", "each label is a string of 1 to 64 characters")
        # With a request id the number is taken under an id of its own: a retry takes the same one.
        seq = None if request is None else request.derived("seq")
        task_id = f"T-{next_number(self.session, 'tasks', request_id=None if seq is None else seq.id, digest=None if seq is None else seq.digest)}"
        record = {
            "id": task_id,
            "title": title,
            "body": body,
            "labels": label_list,
            "deps": dep_ids,
            "status": "open",
            "assignee": assignee,
            "claimed_by": None,
            "checkpoints": [],
            "result": None,
            "created_by": me,
            "completed_by": None,
            "done_token": None,
            "attempts": 0,
        }
        r = self.session.txn(
            ops=[
                Create(task_key(task_id), record, label="task.add"),
                Create(_open_key(task_id), _marker(record), label="task.open"),
            ],
            system=True,
            **_txn_request(request),
        )
        record = r.results[0]["values"][0]  # a retry racing the first attempt gets the first's
        return self._warn_unknown(assignee, {**record, "state": "open", "lease": None, "context": r.results[0]["context"], "news": r.news})

    def _update(
        self,
        task_id: str,
        change: Any,
        label: str,
        *,
        guards: list[Any] | None = None,
        extra_ops: Any = None,
        first: Versioned | None = None,
        request: Request | None = None,
    ) -> dict[str, Any]:
        """Re-read, recompute and write with the fresh context until no one wrote between."""
        for _ in range(_RETRIES):
            v = first if first is not None else self._read(task_id)
            first = None
            record = dict(v.values[0])
            new = change(record)
            ops: list[Any] = [Put(task_key(task_id), new, context=v.context, label=label)]
            if extra_ops is not None:
                ops += extra_ops(record, new)
            try:
                r = self.session.txn(guards=guards or [], ops=ops, system=True, **_txn_request(request))
            except StaleContext as e:
                if e.key == task_key(task_id):
                    continue
                raise
            if r.replayed:  # the same request, applied meanwhile by a retry racing this one
                return {**self._view_of(r.results), "news": r.news, "replayed": True}
            granted = [x for x in r.results if "token" in x and x.get("holder")]
            if new["status"] == "claimed" and not granted:
                lease, now = self._lease(task_id)
            else:  # the transaction itself says what the lease now is
                lease, now = (granted[0] if granted else None), 0.0
            return {**self._view(new, lease, now, r.results[0]["context"]), "news": r.news}
        raise StaleContext(f"task {task_id} kept changing under contention; retry", key=task_key(task_id))

    def assign(self, task_id: str, agent: str | None, *, request: Request | None = None) -> dict[str, Any]:
        self._agent()
        prior = self._prior(request)
        if prior is not None:
            return {**self._view_of(prior["results"]), "news": [], "replayed": True}
        task_id = parse_task_id(task_id)
        agent = _assignee(agent)

        def change(rec: dict[str, Any]) -> dict[str, Any]:
            if rec["status"] in ("done", "failed"):
                raise StaleContext(
                    f"task {task_id} is {rec['status']} (by {rec.get('completed_by')}); it cannot be assigned",
                    key=task_key(task_id),
                )
            return {**rec, "assignee": agent}

        def marker(old: dict[str, Any], new: dict[str, Any]) -> list[Any]:
            m = self.session.get(_open_key(task_id))
            if m.values:
                return [Put(_open_key(task_id), _marker(new), context=m.context, label="task.open")]
            return []

        return self._warn_unknown(agent, self._update(task_id, change, "task.assign", extra_ops=marker, request=request))

    def _warn_unknown(self, agent: str | None, task: dict[str, Any]) -> dict[str, Any]:
        """Assigning to a name that has never acted here (nor been issued a token) is allowed,
        since an agent may be assigned work before it starts, but the answer says so: a typo
        would leave the task claimable by nobody."""
        if agent is None or agent == self.session.agent or self.session.acted(agent):
            return task
        if self.session.get(AUTH_PREFIX + agent, secrets=True).values:
            return task
        task["warning"] = (
            f"no agent named {agent!r} has acted in this store yet; the task waits for it."
            " If that is not the name you meant, assign it again"
        )
        return task

    def _refusal(
        self, task_id: str, message: str, news: list[dict[str, Any]], seen: int | None, *, next: Iterable[Step] = (), **detail: Any  # noqa: A002
    ) -> StaleContext:
        return StaleContext(message, key=task_key(task_id), news=news, next=next, **detail)

    def _refuse(
        self, task_id: str, message: str, news: list[dict[str, Any]], seen: int | None, *, next: Iterable[Step] = (), **detail: Any  # noqa: A002
    ) -> StaleContext:
        """Log the refused claim on the task's history (for `comity why`), then explain it."""
        try:
            self.session.txn(
                ops=[Note(task_key(task_id), "task.claim-refused", {"reason": message, **detail}, seen=seen)], system=True
            )
        except (StaleContext, Fenced, LeaseExpired):  # pragma: no cover - notes are never stale
            pass
        return StaleContext(message, key=task_key(task_id), news=news, next=next, **detail)

    def claim(
        self,
        task_id: str,
        *,
        context: str | None = None,
        ttl: float | None = None,
        steal: bool = False,
        record_refusal: bool = True,
        request: Request | None = None,
    ) -> Claim:
        """Claim ``task_id``: one transaction takes its lease (a greater fencing token) and marks it.

        Refusals are logged on the task's history (for `comity why`) unless
        ``record_refusal`` is off (claim_next's lost races are not news).  With a ``request``,
        a retry after the claim was made is answered with it, not refused as taken."""
        me = self._agent()
        seen: int | None = None
        moved: list[dict[str, Any]] = []
        read: _ClaimRead | None = None
        with self.session.snapshot():  # a retry's record, what moved since the context, the task: one read
            prior = self._prior(request)
            if prior is not None:
                return self._claim_of(prior["results"])
            task_id = parse_task_id(task_id)
            ttl_s = _ttl(ttl)
            key = task_key(task_id)
            if context is not None:
                seen = self.session.store.codec.open(context, key).pos
                moved = [e for e in self.session.log(key, after=seen) if e["op"] in _MATTERS]
                moved = [e for e in moved if not (e["op"] == "task.assign" and e.get("value", {}).get("assignee") == me)]
            if not moved:
                read = self._claim_read(task_id)
        if moved:  # refused, and the refusal logged, once the snapshot is over
            words = ", then ".join(what_changed(e) for e in moved)
            raise self._refuse(
                task_id,
                f"task {task_id} changed since you read it: {words}",
                [{k: v for k, v in e.items() if k != "value"} for e in moved],
                seen,
                missed=[e["pos"] for e in moved],
                next=[Step("task_show", {"id": task_id}, "read it again"), _READY],
            )
        return self._claim(task_id, ttl_s, record_refusal, seen, request, read, steal=steal)

    def _claim_read(self, task_id: str) -> _ClaimRead:
        """What a claim decides on, read from one snapshot: the task, its marker, its lease,
        whether its dependencies are done."""
        with self.session.snapshot():
            v, marker = self.session.get_many([task_key(task_id), _open_key(task_id)])
            lease, now = self._lease(task_id)
            deps = v.values[0].get("deps", []) if v.values else []
            waits = [d for d in deps if not self._is_done(d, {})]
        return _ClaimRead(v, marker, lease, now, waits)

    def _claim(
        self, task_id: str, ttl_s: float, record_refusal: bool, seen: int | None, request: Request | None,
        read: _ClaimRead | None = None, *, steal: bool = False,
    ) -> Claim:  # fmt: skip
        me = self._agent()
        key = task_key(task_id)
        refuse = self._refuse if record_refusal else self._refusal
        for _ in range(_RETRIES):
            got = read if read is not None else self._claim_read(task_id)
            read = None
            v, marker, lease, now = got.task, got.marker, got.lease, got.now
            if not v.values:
                raise NotFound(f"no task {task_id}", id=task_id, next=[_list_step()])
            rec = v.values[0]
            view = self._view(rec, lease, now)
            state = view["state"]
            if state in ("done", "failed", "submitted"):
                by = rec.get("completed_by") or "someone"
                what = {"done": "completed", "failed": "failed", "submitted": "submitted for verification"}[state]
                raise refuse(task_id, f"task {task_id} was {what} by {by}", [], seen, next=[_READY])
            if rec.get("assignee") not in (None, me):
                raise refuse(task_id, f"task {task_id} is assigned to {rec['assignee']}; only the assignee may claim it", [], seen,
                             assignee=rec["assignee"], next=[_READY])
            if got.waits:
                raise refuse(task_id, f"task {task_id} waits on {', '.join(rec['deps'])}; claim it once they are done", [], seen,
                             next=[Step("task_show", {"id": rec["deps"][0]}, "see what it waits on"), _READY])
            stealing = False
            if state == "claimed":
                holder = lease["holder"] if lease else None
                if not steal:
                    raise refuse(
                        task_id,
                        f"task {task_id} is claimed by {holder} (token {lease['token'] if lease else '?'},"
                        f" {lease['expires'] - now if lease else 0:.0f}s left)",
                        [],
                        seen,
                        holder=holder,
                        next=[_READY],
                    )
                status = {a.agent: a for a in agents(self.session, detector=self.detector)}.get(holder or "")
                if holder != me and (status is None or not status.suspected):
                    raise refuse(
                        task_id,
                        f"task {task_id} is held by {holder}, who is not suspected"
                        f" (phi {status.phi if status else 0:.1f}); stealing takes only a suspected agent's task",
                        [],
                        seen,
                        holder=holder,
                        next=[_READY],
                    )
                stealing = True
            new = {**rec, "status": "claimed", "claimed_by": me, "attempts": rec.get("attempts", 0) + 1}
            ops: list[Any] = [Acquire(key, ttl_s, steal=stealing), Put(key, new, context=v.context, label="task.claim")]
            if marker.values:
                ops.append(Delete(_open_key(task_id), context=marker.context, label="task.claimed"))
            try:
                r = self.session.txn(ops=ops, system=True, **_txn_request(request))
            except StaleContext as e:
                if e.key in (key, _open_key(task_id)):
                    continue  # the task moved between our read and our write: look again
                if e.details.get("holder"):
                    raise refuse(task_id, f"task {task_id} was just claimed by {e.details['holder']}", e.news, seen,
                                 holder=e.details["holder"], next=[_READY]) from None
                raise
            if r.replayed:  # the same request, applied meanwhile by a retry racing this one
                c = self._claim_of(r.results)
                c.news = r.news
                return c
            grant = r.results[0]
            task = self._view(new, {"holder": me, "token": grant["token"], "expires": grant["expires"]}, now, r.results[1]["context"])
            return Claim(task, grant["token"], grant["expires"], list(rec.get("checkpoints", [])), r.news)
        raise StaleContext(f"task {task_id} kept changing under contention; retry", key=key)

    def claim_next(self, *, ttl: float | None = None, request: Request | None = None) -> Claim:
        """Claim one of the first 32 ready tasks (at random: agents claiming at once rarely race for
        one), trying another when another agent wins the race."""
        self._agent()
        ttl_s = _ttl(ttl)
        tried: set[str] = set()
        for attempt in range(_RETRIES):
            # A claim that lost a race is tried again holding this process's turn among the
            # store's writers (under contention across processes: comity.store._queue), so
            # the ready list it reads is not taken by the writers ahead of it meanwhile.
            with self.session.store.writers_turn() if attempt else nullcontext():
                with self.session.snapshot():  # a retry's record, the ready tasks, the pick's state: one read
                    prior = self._prior(request) if attempt == 0 else None
                    if prior is not None:
                        return self._claim_of(prior["results"])
                    pick = self._pick(tried)
                    if pick is None:
                        raise NotFound("nothing is ready to claim", next=[_list_step()])
                    read = self._claim_read(pick["id"])
                try:
                    return self._claim(pick["id"], ttl_s, False, None, request, read)
                except (StaleContext, NotFound):
                    tried.add(pick["id"])
        raise NotFound("lost every race for a ready task; retry")

    def _fenced(
        self,
        task_id: str,
        token: int,
        label: str,
        change: Any,
        *,
        release: bool = False,
        ttl: float | None = None,
        first: Versioned | None = None,
        guards: list[Any] | None = None,
        request: Request | None = None,
    ) -> dict[str, Any]:
        self._agent()
        prior = self._prior(request)
        if prior is not None:
            return {**self._view_of(prior["results"]), "news": [], "replayed": True}
        task_id = parse_task_id(task_id)
        key = task_key(task_id)
        token = _token(token)
        # A fenced action renews the lease for the length it was claimed or last renewed with.
        lease_op: Any = Release(key, token) if release else Renew(key, token, None if ttl is None else _ttl(ttl))

        def extra(old: dict[str, Any], new: dict[str, Any]) -> list[Any]:
            ops = [lease_op]
            if new["status"] == "open":
                ops.append(Create(_open_key(task_id), _marker(new), label="task.open"))
            return ops

        try:
            with self._lease_steps(task_id):
                return self._update(task_id, change, label, guards=[Holds(key, token), *(guards or [])], extra_ops=extra, first=first, request=request)
        except (Fenced, LeaseExpired) as e:
            self._record_fenced(task_id, label, token, e)
            raise

    def _record_fenced(self, task_id: str, label: str, token: int, e: Fenced | LeaseExpired) -> None:
        """Log a fenced action on the task's history (``task.fenced``): who tried what with
        which token, and whose token had superseded it, for `comity why` and the conflicts view."""
        detail: dict[str, Any] = {"action": label.split(".", 1)[-1], "token": token, "error": e.code, "reason": e.message[:500]}
        for name in ("current", "holder"):
            if e.details.get(name) is not None:
                detail[name] = e.details[name]
        try:
            self.session.txn(ops=[Note(task_key(task_id), "task.fenced", detail)], system=True)
        except (StaleContext, Fenced, LeaseExpired):  # pragma: no cover - notes are never stale
            pass

    @contextmanager
    def _lease_steps(self, task_id: str) -> Iterator[None]:
        """A refusal of a superseded or expired claim says what to do next."""
        try:
            yield
        except Fenced as e:
            raise _then(e, _READY) from None
        except LeaseExpired as e:
            raise _then(e, Step("task_claim", {"id": task_id}, "claim it again: you get it back if nobody took it")) from None

    def renew(self, task_id: str, token: int, *, ttl: float | None = None, request: Request | None = None) -> dict[str, Any]:
        task_id = parse_task_id(task_id)
        try:
            return self._renew(task_id, token, ttl, request)
        except (Fenced, LeaseExpired) as e:
            self._record_fenced(task_id, "task.renew", token, e)
            raise

    def _renew(self, task_id: str, token: int, ttl: float | None = None, request: Request | None = None) -> dict[str, Any]:
        key = task_key(task_id)
        prior = self._prior(request)
        if prior is None:
            with self._lease_steps(task_id):
                txn = self.session.txn(ops=[Renew(key, _token(token), None if ttl is None else _ttl(ttl))], system=True, **_txn_request(request))
            r, replayed = txn.results[0], txn.replayed
        else:
            r, replayed = prior["results"][0], True
        out = {"id": task_id, "token": r["token"], "expires": r["expires"], "ttl": r["ttl"]}
        if replayed:
            out["replayed"] = True
        return out

    def checkpoint(self, task_id: str, token: int, note: str, *, ttl: float | None = None, request: Request | None = None) -> dict[str, Any]:
        me = self._agent()
        note = _text(note, "note", _NOTE_MAX, required=True)
        now = self.session.now()

        def change(rec: dict[str, Any]) -> dict[str, Any]:
            cps = list(rec.get("checkpoints", []))[-49:]
            return {**rec, "checkpoints": cps + [{"agent": me, "token": token, "note": note, "at": now}]}

        return self._fenced(task_id, token, "task.checkpoint", change, ttl=ttl, request=request)

    def done(self, task_id: str, token: int, *, result: str = "", request: Request | None = None) -> dict[str, Any]:
        me = self._agent()
        prior = self._prior(request)
        if prior is not None:
            return {**self._view_of(prior["results"]), "news": [], "replayed": True}
        task_id = parse_task_id(task_id)
        token = _token(token)
        result = _text(result, "result", _BODY_MAX)
        from .changes import gate  # changes build on the board; the board asks them only here

        gated: tuple[str, list[Any], list[str]] | NotFound | StaleContext | None
        with self.session.snapshot():  # the task and what its completion is gated on: one read
            first: Versioned | None = self._read(task_id)
            try:
                gated = gate(self.session, task_id, token)
            except (NotFound, StaleContext) as e:
                gated = e
        assert first is not None
        current = first.values[0]
        if current["status"] in ("done", "submitted"):
            if current.get("done_token") == token and current.get("completed_by") == me:
                return {**self.show(task_id), "replayed": True}  # the same completion, retried
            done_token = current.get("done_token") or 0
            by = current.get("completed_by")
            if token < done_token:  # a successor took over and finished: this holder is a zombie
                fenced = Fenced(
                    f"token {token} for task {task_id} was superseded: {by} completed it"
                    f" with token {done_token}; stop, your work on it does not count",
                    resource=task_key(task_id),
                    token=token,
                    current=done_token,
                    holder=by,
                    next=[_READY],
                )
            elif token == done_token:  # the completion was another agent's: a token is its holder's
                fenced = Fenced(
                    f"task {task_id} was already completed by {by} with token {token}, which is {by}'s, not {me}'s",
                    resource=task_key(task_id),
                    token=token,
                    holder=by,
                )
            else:
                fenced = Fenced(  # as the store's own check: no lease was ever granted with it
                    f"task {task_id} was already completed by {by} (token {done_token});"
                    f" no lease on it was ever granted with token {token}",
                    resource=task_key(task_id),
                    token=token,
                    current=done_token,
                )
            self._record_fenced(task_id, "task.done", token, fenced)
            raise fenced

        for _ in range(_RETRIES):
            try:
                if gated is None:
                    gated = gate(self.session, task_id, token)
                if isinstance(gated, (NotFound, StaleContext)):
                    raise gated
                status, guards, changes = gated
                gated = None
            except (NotFound, StaleContext):
                try:
                    self._renew(task_id, token)  # a superseded or expired token is told so first (Fenced, LeaseExpired)
                except (Fenced, LeaseExpired) as e:
                    self._record_fenced(task_id, "task.done", token, e)
                    raise
                raise

            def change(rec: dict[str, Any]) -> dict[str, Any]:
                extra = {"changes": changes} if changes else {}
                return {**rec, "status": status, "result": result, "completed_by": me, "done_token": token, **extra}

            label = "task.done" if status == "done" else "task.submitted"
            try:
                return self._fenced(task_id, token, label, change, release=True, first=first, guards=guards, request=request)
            except StaleContext as e:
                if e.key is not None and e.key.startswith("@change"):
                    first = None  # a change it relied on moved: judge again
                    continue
                raise
        raise StaleContext(f"task {task_id}: its changes kept changing; retry", key=task_key(task_id))

    def release(self, task_id: str, token: int, *, request: Request | None = None) -> dict[str, Any]:
        def change(rec: dict[str, Any]) -> dict[str, Any]:
            return {**rec, "status": "open", "claimed_by": None}

        return self._fenced(task_id, token, "task.release", change, release=True, request=request)

    def fail(self, task_id: str, token: int, *, reason: str = "", request: Request | None = None) -> dict[str, Any]:
        me = self._agent()
        reason = _text(reason, "reason", _NOTE_MAX)

        def change(rec: dict[str, Any]) -> dict[str, Any]:
            return {**rec, "status": "failed", "result": reason, "completed_by": me, "done_token": token}

        return self._fenced(task_id, token, "task.fail", change, release=True, request=request)

    # ------------------------------------------------------------- retries
    def _prior(self, request: Request | None) -> dict[str, Any] | None:
        """The outcome recorded for ``request``, if it was applied: a retry is answered with it."""
        if request is None:
            return None
        got = self.session.recorded(request.id)
        if got is None:
            return None
        if got[0] != request.digest:
            raise Invalid("request_id", f"{request.id[:60]!r} was already used for a different request; use a new id for a new request")
        return got[1]

    def _view_of(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """A task as a recorded transaction left it: its record as written, the lease it renewed."""
        put = results[0]
        lease = next(({"holder": x["holder"], "token": x["token"], "expires": x["expires"]} for x in results[1:]
                      if "token" in x and x.get("holder")), None)  # fmt: skip
        return self._view(put["values"][0], lease, 0.0, put["context"])

    def _claim_of(self, results: list[dict[str, Any]]) -> Claim:
        """A claim as its recorded transaction made it (the grant, then the task as written)."""
        grant, put = results[0], results[1]
        record = put["values"][0]
        lease = {"holder": grant["holder"], "token": grant["token"], "expires": grant["expires"]}
        return Claim(self._view(record, lease, 0.0, put["context"]), grant["token"], grant["expires"],
                     list(record.get("checkpoints", [])), [], replayed=True)  # fmt: skip

    # ------------------------------------------------------------- fenced writes
    def write(
        self,
        key: str,
        value: Any,
        *,
        task: str,
        token: int,
        context: str | None = None,
        keep_both: bool = False,
        request: Request | None = None,
    ) -> Written:
        """Write ``key`` under the lease of ``task``: refused as Fenced (or LeaseExpired) in the
        same transaction unless ``token`` is still the current claim of this agent on it, so a
        zombie's late write never lands (Kleppmann 2016)."""
        self._agent()
        check_key(key)  # an agent's key: the transaction below may touch system keys only for the guard
        task_id = parse_task_id(task, "task")
        guard = Holds(task_key(task_id), _token(token))
        try:
            with self._lease_steps(task_id):
                r = self.session.txn(guards=[guard], ops=[Put(key, value, context, keep_both)], system=True, **_txn_request(request))
        except Invalid as e:
            # Name the caller's argument, not the transaction's internals ("ops[0].value").
            name = e.field.removeprefix("ops[0].").replace("guards[0].resource", "task").removeprefix("guards[0].")
            raise Invalid(name, e.message.split(": ", 1)[-1]) from None
        res = r.results[0]
        return Written(res["key"], res["op"], res["values"], res["context"], res["pos"], r.news, r.news_truncated, r.replayed,
                       res.get("provisional"))
