"""Agent models: scripted roles with the failure modes of LLM agents.

Each role is a generator over an :class:`AgentCtx`: it reads the board and
artifacts, thinks for a while (virtual time), writes, and completes, through the
strategy's client, so the same role runs against every strategy.  The context
records each verb as a Jepsen operation and is where the nemesis strikes an agent:

- *lost context*: at a decision, the agent uses the oldest snapshot it holds of the
  thing instead of the one it just read (``lost_context``);
- *stall*: a step of work takes far longer than the lease (``stall``);
- *crash* mid-task, and restart with no memory (``crash``, ``crash_stop``,
  ``crash_after``);
- *zombie*: the process freezes and comes back after being presumed dead (``pause``);
- *retry*: the agent does an action twice (``retry``);
- *hallucinated success*: the work is wrong and reported done (``hallucinate``);
- MAST's modes (``mast.py``): a conversation reset that loses even the transcript
  (``reset``), a derailment (``derail``), a task dropped half-done (``quit``), one more
  write after finishing (``overrun``);
- *disobedience*: after a refusal the agent ignores it and carries on
  (``ignore_refusal``), retries the claim without its context (``blind_retry``),
  takes the task with ``--steal`` (``steal``), or acts under the name of the agent
  that holds it (``impersonate``); it skips a checkpoint, so nothing is handed over
  (``withhold``); a reviewer passes wrong work (``bad_review``).

Roles: ``implementer`` (claims ready tasks, works step by step with checkpoints,
commits the work product, completes), ``triage`` (assigns incoming bugs; as a
watchdog, reassigns tasks whose holder is presumed dead), ``reviewer`` (checks each
completed task's work and files a redo when it is wrong), ``writer`` (appends its
findings to shared notes), ``distracted`` (an implementer who acts, much later, on
the board as it read it at the start), and ``reporter`` (the environment: files
bug reports on a schedule; never faulted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..runtime import SeededRng
from .nemesis import Fault
from .sim import START, Call, Crash, Gen, Idle, Process, Sleep, Timeout
from .strategies.base import BoardView, Grant, Refused, Snapshot, TaskView, Unknown

if TYPE_CHECKING:
    from .runner import Run

__all__ = ["AgentCtx", "ROLES", "Cast", "logical"]

T = TypeVar("T")

ATTEMPTS = 3  # a call is sent at most this many times (same request id) before its outcome is unknown
READ_S = (15.0, 45.0)  # reading a task before claiming it
STEP_S = (40.0, 90.0)  # one step of work (an LLM turn or a few)
NOTE_S = (30.0, 150.0)  # composing a note between reading the notes and writing them
TRIAGE_S = (10.0, 40.0)
REVIEW_S = (20.0, 60.0)
IDLE_S = (30.0, 480.0)  # polling backoff when there is nothing to do


@dataclass(slots=True)
class Cast:
    """One agent of a scenario: its name, role, when it starts, and role settings."""

    name: str
    role: str
    start: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    exempt: bool = False


def logical(item: str) -> str:
    """A note entry's logical id (``impl-1:r0``), without the attempt that wrote it."""
    return item.split("@", 1)[0]


class AgentCtx:
    """One incarnation of one agent: its client, its memory, its history entries."""

    def __init__(self, run: Run, proc: Process, cast: Cast) -> None:
        self.run = run
        self.sim = run.sim
        self.proc = proc
        self.cast = cast
        self.name = proc.name
        self.pid = proc.pid
        self.config = cast.config
        self.rng: SeededRng = run.rng.fork(f"agent/{self.pid}")
        self.k = 0  # operations begun by this incarnation
        self.rpc = 0  # round trips within the current operation
        self.thinks = 0
        self.writes = 0
        self.last_op = -1
        self.memory: dict[str, list[Any]] = {}
        self.acting_as: str | None = None  # another agent's name, while this one impersonates it
        self.defiant = False  # it has ignored a refusal on the task in hand, and ignores the rest
        self.durable = run.durable.setdefault(self.name, {})  # survives a crash: the host's transcript
        fault = self.decide(f"proc:{self.pid}", ("skew",))
        if fault is not None:
            proc.skew = fault.arg
        self.client = run.strategy.client(self)

    # ------------------------------------------------------------ plumbing
    def now(self) -> float:
        """This agent's clock: the simulation's, plus its skew."""
        return self.sim.now() + self.proc.skew

    @property
    def skew(self) -> float:
        return self.proc.skew

    def decide(self, point: str, kinds: tuple[str, ...]) -> Fault | None:
        if self.proc.exempt:
            return None
        fault = self.run.nemesis.decide(point, kinds)
        if fault is not None:
            self.sim.record_fault(fault)
        return fault

    def call(self, dest: str, op: str, args: dict[str, Any]) -> Gen[Any]:
        """One round trip, sent up to ``ATTEMPTS`` times under one request id.

        A refusal of a resent request the authority cannot recognise as a resend (no
        request id, or a verb that does not replay) may be a refusal of the first
        attempt's own effect: the outcome is unknown, not refused."""
        self.rpc += 1
        for attempt in range(ATTEMPTS):
            try:
                reply = yield Call(dest, op, args, f"{self.pid}:{self.k}:{self.rpc}:{attempt}", self.acting_as)
            except Timeout:
                continue
            if "error" in reply:
                if attempt > 0 and op not in self.client.retry_safe:
                    raise Unknown(op)
                details = {k: v for k, v in reply.items() if k not in ("error", "message")}
                raise Refused(reply["error"], reply.get("message", ""), **details)
            return reply.get("value")
        raise Unknown(op)

    def request_id(self) -> str:
        return f"{self.pid}.{self.k}"

    def wid(self) -> str:
        """A unique id for a value this agent writes (lost updates are traced by it)."""
        self.writes += 1
        return f"{self.pid}.w{self.writes}"

    def think(self, span: tuple[float, float], *, kind: str | None = None) -> Gen[None]:
        """Spend virtual time; ``kind`` counts it as a step of work (``step``) or a draft of a
        note (``draft``) for the cost of coordination."""
        self.thinks += 1
        if kind is not None:
            self.run.costs[kind] = self.run.costs.get(kind, 0) + 1
        lo, hi = span
        seconds = lo + (hi - lo) * self.rng.random()
        fault = self.decide(f"think:{self.pid}:{self.thinks}", ("stall", "derail"))
        if fault is not None:
            seconds += fault.arg
        yield Sleep(seconds)

    def idle(self, backoff: float) -> Gen[float]:
        """Wait with nothing to do; returns the next backoff."""
        cap = float(self.config.get("idle_max", IDLE_S[1]))
        backoff = min(backoff, cap)
        yield Idle(backoff)
        return min(backoff * 2, cap)

    def recall(self, slot: str, fresh: T) -> T:
        """What the agent acts on: what it just read, unless it has lost context and
        acts on the oldest snapshot it holds."""
        held = self.memory.setdefault(slot, [])
        held.append(fresh)
        if len(held) > 16:
            del held[1]
        if len(held) > 1:
            fault = self.decide(f"op:{self.pid}:{self.k + 1}", ("lost_context",))
            if fault is not None:
                oldest: T = held[0]
                return oldest
        return fresh

    def wrong_work(self) -> bool:
        return self.decide(f"op:{self.pid}:{self.k + 1}", ("hallucinate",)) is not None

    def disobeys(self, kind: str) -> bool:
        """Whether the agent disobeys now (``kind``), at its latest operation's point.  An
        agent that has ignored one refusal on a task ignores every later one on it."""
        if kind == "ignore_refusal" and self.defiant:
            return True
        hit = self.decide(f"op:{self.pid}:{self.k}", (kind,)) is not None
        if hit and kind == "ignore_refusal":
            self.defiant = True
        return hit

    def op(
        self,
        f: str,
        value: dict[str, Any],
        body: Callable[[], Gen[T]],
        summary: Callable[[T], dict[str, Any]] | None = None,
        *,
        mutating: bool = False,
    ) -> Gen[T]:
        """Run one verb as a history operation, where the nemesis may strike around it."""
        if self.acting_as is not None:
            value = {**value, "as": self.acting_as}
        self.k += 1
        self.rpc = 0
        kinds: tuple[str, ...] = ("crash", "pause", "crash_after", "reset")
        if mutating:
            kinds += ("retry",)
        if self.sim.live_workers(self.proc.role) > 1:  # never stop the last worker of a role for good
            kinds += ("crash_stop",)
        fault = self.decide(f"op:{self.pid}:{self.k}", kinds)
        if fault is not None:
            if fault.kind == "crash":
                yield Crash(fault.arg)
            elif fault.kind == "crash_stop":
                yield Crash(None)
            elif fault.kind == "reset":
                self.durable.clear()  # the conversation starts over: not even the transcript is left
                yield Crash(fault.arg)
            elif fault.kind == "pause":
                yield Sleep(fault.arg)
        try:
            out = yield from self._attempt(f, value, body, summary)
        except (Refused, Unknown):
            if fault is not None and fault.kind == "crash_after":
                yield Crash(fault.arg)
            raise
        if fault is not None and fault.kind == "crash_after":
            yield Crash(fault.arg)
        if fault is not None and fault.kind == "retry":
            # The agent does it again: a new call, as an LLM re-issuing a tool call would.
            self.k += 1
            self.rpc = 0
            try:
                yield from self._attempt(f, {**value, "retry": True}, body, summary)
            except (Refused, Unknown):
                pass
        return out

    def _attempt(self, f: str, value: dict[str, Any], body: Callable[[], Gen[T]], summary: Callable[[T], dict[str, Any]] | None) -> Gen[T]:
        h = self.run.history
        inv = h.invoke(self.pid, f, value, self.sim.now())
        try:
            out = yield from body()
        except Refused as e:
            self.last_op = h.complete(inv, "fail", {"error": e.code}, self.sim.now())
            raise
        except Unknown:
            self.last_op = h.complete(inv, "info", {"error": "timeout"}, self.sim.now())
            raise
        self.last_op = h.complete(inv, "ok", summary(out) if summary is not None else {}, self.sim.now())
        return out

    # ------------------------------------------------------------ verbs
    def read(self, key: str, *, for_update: bool = False) -> Gen[Snapshot]:
        c = self.client
        snap = yield from self.op("read", {"key": key}, lambda: c.read_for_update(key) if for_update else c.read(key), _snap_summary)
        snap.read_op, snap.time = self.last_op, self.sim.now()
        return snap

    def append(self, key: str, item: str, basis: Snapshot) -> Gen[None]:
        c = self.client
        value = {"key": key, "item": item, "read": basis.items, "basis": basis.read_op}
        # A client that re-reads under a lock says what it actually wrote over.
        yield from self.op("append", value, lambda: c.append(key, item, basis), lambda read: {} if read is None else {"read": read}, mutating=True)

    def create(self, key: str, content: dict[str, Any]) -> Gen[None]:
        c = self.client
        yield from self.op("create", {"key": key, "wid": content["wid"], "basis": None}, lambda: c.create(key, content), mutating=True)

    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        c = self.client
        n: int = yield from self.op("next", {"seq": sequence, "unit": unit}, lambda: c.next_number(sequence, prefix, unit), lambda n: {"n": n})
        return n

    def ready(self) -> Gen[BoardView]:
        c = self.client
        view = yield from self.op("ready", {}, c.ready, lambda v: {"tasks": [t.title for t in v.tasks]})
        view.read_op, view.time = self.last_op, self.sim.now()
        for t in view.tasks:
            t.read_op = self.last_op
        return view

    def board(self) -> Gen[BoardView]:
        c = self.client
        view = yield from self.op("board", {}, c.board, lambda v: {"n": len(v.tasks)})
        view.read_op, view.time = self.last_op, self.sim.now()
        for t in view.tasks:
            t.read_op = self.last_op
        return view

    def add_task(self, title: str, work: dict[str, Any], assignee: str | None = None) -> Gen[str]:
        c = self.client
        tid: str = yield from self.op("add", {"title": title, "assignee": assignee}, lambda: c.add_task(title, work, assignee), lambda i: {"id": i}, mutating=True)
        return tid

    def assign(self, task: TaskView, agent: str) -> Gen[None]:
        c = self.client
        value = {"id": task.id, "title": task.title, "to": agent, "basis": task.read_op}
        yield from self.op("assign", value, lambda: c.assign(task, agent), mutating=True)

    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        c = self.client
        value: dict[str, Any] = {"id": task.id, "title": task.title, "basis": task.read_op}
        if c.lease_ttl is not None:
            value["ttl"] = c.lease_ttl
        if blind:
            value["blind"] = True
        if steal:
            value["steal"] = True
        grant: Grant = yield from self.op("claim", value, lambda: c.claim(task, blind=blind, steal=steal), _grant_summary)
        return grant

    def checkpoint(self, grant: Grant, note: str) -> Gen[None]:
        c = self.client
        value = {"id": grant.task.id, "title": grant.task.title, "token": grant.token, "note": note}
        if c.lease_ttl is not None:
            value["ttl"] = c.lease_ttl
        yield from self.op("checkpoint", value, lambda: c.checkpoint(grant, note), _expiry_summary, mutating=True)

    def commit(self, grant: Grant, key: str, content: dict[str, Any], basis: Snapshot) -> Gen[None]:
        c = self.client
        value = {"id": grant.task.id, "title": grant.task.title, "token": grant.token, "key": key, "wid": content["wid"], "basis": basis.wid}
        yield from self.op("commit", value, lambda: c.commit(grant, key, content, basis), mutating=True)

    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        c = self.client
        value = {"id": grant.task.id, "title": grant.task.title, "token": grant.token, **result}
        replayed: bool = yield from self.op("complete", value, lambda: c.complete(grant, result), lambda r: {"replayed": True} if r else {}, mutating=True)
        return replayed

    def release(self, grant: Grant) -> Gen[None]:
        c = self.client
        yield from self.op("release", {"id": grant.task.id, "title": grant.task.title, "token": grant.token}, lambda: c.release(grant), mutating=True)


def _grant_summary(g: Grant) -> dict[str, Any]:
    out: dict[str, Any] = {"token": g.token}
    if g.reread:
        out["reread"] = True
    if g.expires is not None:
        out["expires"] = round(g.expires, 6)
    return out


def _expiry_summary(expires: float | None) -> dict[str, Any]:
    return {} if expires is None else {"expires": round(expires, 6)}


def _snap_summary(s: Snapshot) -> dict[str, Any]:
    if isinstance(s.value, list):
        return {"items": s.items}
    return {"wid": s.wid}


# ---------------------------------------------------------------------- roles


def _step_of(handoff: list[dict[str, Any]]) -> tuple[int, str | None]:
    """The last step a predecessor checkpointed, and the migration it took."""
    step, migration = 0, None
    for cp in handoff:
        parts = str(cp.get("note", "")).split()
        if len(parts) >= 2 and parts[0] == "step" and parts[1].isdigit():
            step = max(step, int(parts[1]))
        if "migration" in parts:
            migration = parts[parts.index("migration") + 1]
    return step, migration


def _pick(ctx: AgentCtx, view: BoardView) -> TaskView | None:
    mine = [t for t in view.tasks if t.assignee == ctx.name]
    pool = mine or [t for t in view.tasks if t.assignee is None]
    if not pool:
        return None
    return pool[ctx.rng.randint(0, min(3, len(pool)) - 1)]


def _reclaim(ctx: AgentCtx, task: TaskView) -> Gen[Grant | None]:
    """After a lease ran out: read the board again and take the task back if it is still there."""
    try:
        view = yield from ctx.ready()
    except (Refused, Unknown):
        return None
    for t in view.tasks:
        if t.id == task.id:
            try:
                return (yield from ctx.claim(t))
            except (Refused, Unknown):
                return None
    return None


def migration(ctx: AgentCtx, unit: str) -> Gen[str | None]:
    """Take the next migration number and write the migration under it.  A number that
    turns out taken is looked at: if the file there is this unit's (written by this
    agent before a crash, or by the agent it took the task over from), it is kept."""
    for _ in range(6):
        try:
            n = yield from ctx.next_number("migrations", "migrations/", unit)
        except Refused:  # the lock on the migrations directory is held: wait
            yield from ctx.think((20.0, 60.0))
            continue
        except Unknown:
            continue
        yield from ctx.think(STEP_S)  # writing the SQL
        key = f"migrations/{n:04d}"
        content = {"wid": ctx.wid(), "unit": unit, "by": ctx.name}
        try:
            yield from ctx.create(key, content)
            return key
        except (Refused, Unknown):
            pass
        try:  # taken after all, or no answer: whose is it?
            snap = yield from ctx.read(key)
        except (Refused, Unknown):
            continue
        if isinstance(snap.value, dict) and snap.value.get("unit") == unit:
            return key  # this unit's migration: ours from before, or our predecessor's
    return None


def note_append(ctx: AgentCtx, key: str, entry: str) -> Gen[bool]:
    """Read the notes, think, write them back with ``entry`` added; again if refused."""
    for _ in range(10):
        try:
            snap = yield from ctx.read(key, for_update=True)
        except Refused:  # locked by someone else
            yield from ctx.think((20.0, 60.0))
            continue
        except Unknown:
            continue
        snap = ctx.recall(f"notes:{key}", snap)
        if any(logical(str(i)) == entry for i in snap.items):
            return True  # already there (an earlier attempt whose answer was lost)
        yield from ctx.think(NOTE_S, kind="draft")
        try:
            yield from ctx.append(key, f"{entry}@{ctx.pid}.{ctx.k + 1}", snap)
            return True
        except (Refused, Unknown):
            continue
    return False


def work(ctx: AgentCtx, grant: Grant, step: int | None = None, migrated: str | None = None) -> Gen[None]:
    """Do a claimed task: its steps (with checkpoints), its migration and note if any,
    its work product, then complete it.  What the agent's host would keep across a crash
    (the task, its token, the step reached) is kept in ``ctx.durable``; a crash leaves
    it there, so the restarted agent resumes with the token it had."""
    ctx.durable["grant"] = grant
    yield from _work(ctx, grant, step, migrated)
    ctx.defiant = False
    for k in ("grant", "step", "migration"):
        ctx.durable.pop(k, None)


def _work(ctx: AgentCtx, grant: Grant, step: int | None, migrated: str | None) -> Gen[None]:
    task = grant.task
    plan = task.plan
    unit = str(plan.get("redo") or task.title)
    steps = int(plan.get("steps", 2))
    done, handed = _step_of(grant.handoff)
    i = done if step is None else step
    migrated = migrated or handed
    key = f"work/{unit}"
    try:
        art = yield from ctx.read(key)
    except (Refused, Unknown):
        return
    while i < steps:
        if ctx.disobeys("quit"):
            return  # drops the task, claimed and unreleased, and moves on
        yield from ctx.think(STEP_S, kind="step")
        note = f"step {i + 1}"
        if plan.get("migration") and migrated is None:
            migrated = yield from migration(ctx, unit)
            ctx.durable["migration"] = migrated
        if migrated is not None:
            note += f" migration {migrated}"
        if plan.get("note") and i == min(1, steps - 1):
            yield from note_append(ctx, str(plan["note"]), f"{unit}:note")
        if ctx.disobeys("withhold"):
            i += 1  # it keeps what it did to itself: no checkpoint, nothing to hand over
            ctx.durable["step"] = i
            continue
        try:
            yield from ctx.checkpoint(grant, note)
        except Refused as e:
            if ctx.disobeys("ignore_refusal"):
                i += 1  # told to stop; carries on as if it had been answered yes
                continue
            if e.code != "lease_expired":
                return  # fenced or closed: someone else has it now
            again = yield from _reclaim(ctx, task)
            if again is None:
                return
            grant = ctx.durable["grant"] = again
            continue
        except Unknown:
            pass
        i += 1
        ctx.durable["step"] = i
    correct = not ctx.wrong_work()
    content = {"wid": ctx.wid(), "unit": unit, "by": ctx.name, "correct": correct}
    saved = False
    for _ in range(4):
        try:
            yield from ctx.commit(grant, key, content, art)
            saved = True
            break
        except Refused as e:
            if e.code != "stale_context":
                if ctx.disobeys("ignore_refusal"):
                    saved = True  # fenced, and reports its work done all the same
                    break
                return  # fenced: the task is someone else's now
        except Unknown:
            pass
        try:  # refused as stale, or no answer: look at what is there now
            now = yield from ctx.read(key)
        except (Refused, Unknown):
            continue
        if now.wid == content["wid"]:
            saved = True  # it was written; only the answer was lost
            break
        art, content = now, {**content, "wid": ctx.wid()}
    if not saved:
        try:  # never complete work that is not saved: give the task back
            yield from ctx.release(grant)
        except (Refused, Unknown):
            pass
        return
    try:
        yield from ctx.complete(grant, {"correct": correct})
    except (Refused, Unknown):
        return
    if ctx.disobeys("overrun"):  # unaware it is finished: one more pass over its work
        try:
            now = yield from ctx.read(key)
            yield from ctx.commit(grant, key, {**content, "wid": ctx.wid()}, now)
        except (Refused, Unknown):
            pass


def _disobey_claim(ctx: AgentCtx, task: TaskView, refusal: Refused) -> Gen[Grant | None]:
    """After a refused claim, an agent that disobeys: retries it blind, steals the task, or
    claims it under the name of the agent it belongs to (and then works as that agent)."""
    fault = ctx.decide(f"op:{ctx.pid}:{ctx.k}", ("blind_retry", "steal", "impersonate"))
    if fault is None:
        return None
    try:
        if fault.kind == "blind_retry":
            return (yield from ctx.claim(task, blind=True))
        if fault.kind == "steal":
            return (yield from ctx.claim(task, steal=True))
        other = refusal.details.get("holder") or refusal.details.get("assignee") or task.claimed_by or task.assignee
        if not isinstance(other, str) or other == ctx.name:
            return None
        ctx.acting_as = other
        return (yield from ctx.claim(task, blind=True))
    except (Refused, Unknown):
        ctx.acting_as = None
        return None


def implementer(ctx: AgentCtx) -> Gen[None]:
    held = ctx.durable.get("grant")
    if isinstance(held, Grant):  # restarted with its transcript: carry on where it was
        yield from work(ctx, held, ctx.durable.get("step"), ctx.durable.get("migration"))
    backoff = IDLE_S[0]
    while True:
        try:
            view = yield from ctx.ready()
        except (Refused, Unknown):
            backoff = yield from ctx.idle(backoff)
            continue
        view = ctx.recall("ready", view)
        task = _pick(ctx, view)
        if task is None:
            backoff = yield from ctx.idle(backoff)
            continue
        backoff = IDLE_S[0]
        yield from ctx.think(READ_S)
        try:
            grant = yield from ctx.claim(task)
        except Refused as e:
            disobeyed = yield from _disobey_claim(ctx, task, e)
            if disobeyed is None:
                continue
            grant = disobeyed
        except Unknown:
            continue
        yield from work(ctx, grant)
        ctx.acting_as = None


def distracted(ctx: AgentCtx) -> Gen[None]:
    """Reads the board, spends a long while on its own task, then acts on that first read."""
    held = ctx.durable.get("grant")
    if isinstance(held, Grant):
        yield from work(ctx, held, ctx.durable.get("step"), ctx.durable.get("migration"))
        yield from implementer(ctx)
        return
    try:
        first = yield from ctx.board()
    except (Refused, Unknown):
        first = BoardView([])
    try:
        view = yield from ctx.ready()
        mine = [t for t in view.tasks if t.assignee == ctx.name]
        if mine:
            yield from ctx.think(READ_S)
            grant = yield from ctx.claim(mine[0])
            yield from work(ctx, grant)
    except (Refused, Unknown):
        pass
    for t in first.tasks:
        if t.plan.get("kind") == "bug" and t.status == "open" and t.assignee is None:
            try:
                grant = yield from ctx.claim(t)  # on the board as it was read long ago
            except (Refused, Unknown):
                break
            yield from work(ctx, grant)
            break
    yield from implementer(ctx)


def _settled(view: BoardView, expected: int) -> bool:
    return len(view.tasks) >= expected and all(t.status in ("done", "failed") for t in view.tasks)


def triage(ctx: AgentCtx) -> Gen[None]:
    crew: list[str] = list(ctx.config["implementers"])
    watchdog = bool(ctx.config.get("watchdog"))
    expected = int(ctx.config.get("expected", 0))
    handled: set[str] = ctx.durable.setdefault("handled", set())  # kept across a crash, with its transcript
    backoff = IDLE_S[0]
    turn = 0
    while True:
        try:
            view = yield from ctx.board()
        except (Refused, Unknown):
            backoff = yield from ctx.idle(backoff)
            continue
        view = ctx.recall("board", view)
        acted = False
        for t in view.tasks:
            if t.plan.get("kind") == "bug" and t.status == "open" and t.assignee is None and t.id not in handled:
                handled.add(t.id)
                yield from ctx.think(TRIAGE_S)
                to = crew[turn % len(crew)]
                turn += 1
            elif watchdog and t.status == "claimed" and t.stale and f"{t.id}/{t.claimed_by}" not in handled:
                handled.add(f"{t.id}/{t.claimed_by}")
                others = [a for a in crew if a != t.claimed_by] or crew
                to = others[turn % len(others)]
                turn += 1
            else:
                continue
            acted = True
            try:
                yield from ctx.assign(t, to)
            except (Refused, Unknown):
                pass
        if acted:
            backoff = IDLE_S[0]
        elif _settled(view, expected):
            backoff = IDLE_S[1]
        backoff = yield from ctx.idle(max(backoff, float(ctx.config.get("poll", 0.0))))


def reviewer(ctx: AgentCtx) -> Gen[None]:
    reviewed: set[str] = ctx.durable.setdefault("reviewed", set())
    backoff = IDLE_S[0]
    while True:
        try:
            view = yield from ctx.board()
        except (Refused, Unknown):
            backoff = yield from ctx.idle(backoff)
            continue
        todo = [t for t in view.tasks if t.status == "done" and t.id not in reviewed]
        if todo:
            backoff = IDLE_S[0]
        for t in todo:
            unit = str(t.plan.get("redo") or t.title)
            try:
                art = yield from ctx.read(f"work/{unit}")
            except (Refused, Unknown):
                continue
            yield from ctx.think(REVIEW_S)
            redos = [x for x in view.tasks if x.plan.get("redo") == unit]
            wrong = not (isinstance(art.value, dict) and art.value.get("correct"))
            if wrong and ctx.disobeys("bad_review"):
                wrong = False  # passes work it should have sent back
            if wrong and not any(x.status in ("open", "claimed") for x in redos):
                try:
                    yield from ctx.add_task(f"redo {unit} ({len(redos) + 1})", {"kind": "redo", "redo": unit, "steps": 2})
                except (Refused, Unknown):
                    continue  # not filed: review it again next time
            reviewed.add(t.id)  # only once the verdict is acted on: a crash before it means reviewing again
        backoff = yield from ctx.idle(max(backoff, float(ctx.config.get("poll", 0.0))))


def writer(ctx: AgentCtx) -> Gen[None]:
    """Appends one finding per round to shared notes (the list-append workload)."""
    keys: list[str] = list(ctx.config["keys"])
    offset = int(ctx.config.get("offset", 0))
    for r in range(int(ctx.config["rounds"])):
        yield from ctx.think((20.0, 120.0))
        yield from note_append(ctx, keys[(r + offset) % len(keys)], f"{ctx.name}:r{r}")
    while True:  # done: stay around, idle, like a session left open
        yield Idle(IDLE_S[1])


def reporter(ctx: AgentCtx) -> Gen[None]:
    """The environment: files each report at its time (never faulted)."""
    for at, title, work_plan, assignee in ctx.config["reports"]:
        wait = START + float(at) - ctx.sim.now()
        if wait > 0:
            yield Sleep(wait)
        for _ in range(5):
            try:
                yield from ctx.add_task(str(title), dict(work_plan), assignee)
                break
            except Refused:
                break
            except Unknown:
                continue


ROLES: dict[str, Callable[[AgentCtx], Gen[None]]] = {
    "implementer": implementer,
    "distracted": distracted,
    "triage": triage,
    "reviewer": reviewer,
    "writer": writer,
    "reporter": reporter,
}
