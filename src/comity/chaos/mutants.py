"""Named mutants of comity: the checkers are trusted only once they catch each of them.

Each mutant is one plausible bug in comity's own code (the store, the leases, the
sequences, the task board, the allocator), applied in-process by swapping one
function while a run executes and undone after it.  :func:`hunt` runs every mutant
against the scenarios, under the ``comity`` strategy with the scenario's nemesis and
disobedient agents, and reports which checker killed it in how many seeds (mutation
testing as Jepsen's own test suites use it).  A mutant no checker kills is a hole in
the evidence: ``comity chaos mutants`` fails, and so does the suite.

Where comity enforces one rule in two places (the board reads a task's lease before
the lease primitive checks it again), a mutant of one place alone would change
nothing a face can reach; such a mutant breaks the rule in both, and says so.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..causal import DVVSet
from ..coord import sequences
from ..errors import Fenced
from ..store import Put, Renew, _sqlite
from ..store._backend import LeaseRow
from ..store._txn import SEQ_PREFIX, Acquire, Executor, live_values
from ..work import tasks
from .runner import run
from .scenarios import SCENARIOS

__all__ = ["Mutant", "MUTANTS", "MutantResult", "hunt", "applied", "markdown_mutants"]


@contextmanager
def _swap(owner: Any, name: str, new: Any) -> Iterator[None]:
    old = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, new)
    try:
        yield
    finally:
        setattr(owner, name, old)


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    what: str  # the bug, in a sentence
    swaps: Callable[[], list[tuple[Any, str, Any]]]  # (owner, attribute, replacement), built when applied


@contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    with ExitStack() as stack:
        for owner, name, new in mutant.swaps():
            stack.enter_context(_swap(owner, name, new))
        yield


# ---------------------------------------------------------------- the mutants


def _done_ignores_token() -> list[tuple[Any, str, Any]]:
    def done(self: tasks.Board, task_id: str, token: int, *, result: str = "", request: Any = None) -> dict[str, Any]:
        me = self._agent()
        task_id = tasks.parse_task_id(task_id)
        current = self._read(task_id).values[0]
        if current["status"] == "done" and current.get("done_token") == token and current.get("completed_by") == me:
            return {**self.show(task_id), "replayed": True}

        def change(rec: dict[str, Any]) -> dict[str, Any]:
            return {**rec, "status": "done", "result": result, "completed_by": me, "done_token": token}

        return self._update(task_id, change, "task.done", request=request)  # BUG: no Holds guard, the lease left as it is

    return [(tasks.Board, "done", done)]


def _lease_op(acquire: Callable[..., Any] | None = None, renew: Callable[..., Any] | None = None) -> list[tuple[Any, str, Any]]:
    original = Executor._lease

    def _lease(self: Executor, tx: Any, caller: Any, request_id: str, o: Any, now: float) -> tuple[dict[str, Any], int]:
        if acquire is not None and isinstance(o, Acquire):
            return acquire(self, tx, caller, request_id, o, now)  # type: ignore[no-any-return]
        if renew is not None and isinstance(o, Renew):
            return renew(self, tx, caller, request_id, o, now)  # type: ignore[no-any-return]
        return original(self, tx, caller, request_id, o, now)

    return [(Executor, "_lease", _lease)]


def _grant(self: Executor, tx: Any, caller: Any, request_id: str, o: Acquire, now: float, token: int, previous: str | None) -> tuple[dict[str, Any], int]:
    lease = tx.lease(o.resource)
    detail = {"token": token, "expires": now + o.ttl, "previous": previous}
    pos, stamp = self._lease_event(tx, caller, request_id, o.resource, "acquire", token, detail, lease)
    tx.save_lease(LeaseRow(o.resource, caller.agent, token, now + o.ttl, pos, stamp))
    return {"resource": o.resource, "holder": caller.agent, **detail}, pos


def _renew_does_not_extend() -> list[tuple[Any, str, Any]]:
    def renew(self: Executor, tx: Any, caller: Any, request_id: str, o: Renew, now: float) -> tuple[dict[str, Any], int]:
        lease = self._check_holds(tx, o.resource, o.token, now, caller.agent)
        ttl = o.ttl if o.ttl is not None else self._lease_length(tx, lease)
        expires = now + ttl
        detail = {"token": lease.token, "expires": expires, "ttl": ttl}
        pos, stamp = self._lease_event(tx, caller, request_id, o.resource, "renew", lease.token, detail, lease)
        tx.save_lease(LeaseRow(o.resource, lease.holder, lease.token, lease.expires, pos, stamp))  # BUG: the old expiry stays
        return {"resource": o.resource, "holder": lease.holder, "token": lease.token, "expires": expires, "ttl": ttl}, pos

    return _lease_op(renew=renew)


def _expired_takeover_keeps_token() -> list[tuple[Any, str, Any]]:
    original = Executor._lease

    def acquire(self: Executor, tx: Any, caller: Any, request_id: str, o: Acquire, now: float) -> tuple[dict[str, Any], int]:
        lease = tx.lease(o.resource)
        if lease is not None and lease.holder is not None and lease.expires <= now:
            return _grant(self, tx, caller, request_id, o, now, lease.token, lease.holder)  # BUG: the old holder's token again
        return original(self, tx, caller, request_id, o, now)

    return _lease_op(acquire=acquire)


def _acquire_takes_live_lease() -> list[tuple[Any, str, Any]]:
    def acquire(self: Executor, tx: Any, caller: Any, request_id: str, o: Acquire, now: float) -> tuple[dict[str, Any], int]:
        lease = tx.lease(o.resource)
        token = (lease.token if lease is not None else 0) + 1
        return _grant(self, tx, caller, request_id, o, now, token, lease.holder if lease else None)  # BUG: never asks if it is held

    original_view = tasks.Board._view

    def view(self: tasks.Board, record: dict[str, Any], lease: dict[str, Any] | None, now: float, context: str | None = None) -> dict[str, Any]:
        out = original_view(self, record, lease, now, context)
        if out["state"] == "claimed":  # the same rule, broken where the board reads it first
            out["state"], out["lease"] = "orphaned", None
        return out

    return [*_lease_op(acquire=acquire), (tasks.Board, "_view", view)]


def _sequence_reissues_after_restart() -> list[tuple[Any, str, Any]]:
    original = Executor._next

    def _next(self: Executor, tx: Any, caller: Any, request_id: str, o: Any, rows: Any, clocks: Any) -> tuple[dict[str, Any], int]:
        fresh = self.__dict__.setdefault("_mutant_fresh", set())  # one executor per opening of the store
        clock = self._clock(tx, SEQ_PREFIX + o.name, rows, clocks)
        current = live_values(clock)
        if o.name in fresh or not current:
            fresh.add(o.name)
            return original(self, tx, caller, request_id, o, rows, clocks)
        fresh.add(o.name)
        n = max(current)  # BUG: the first number after an opening is the last one issued before it
        _, _, _, pos = self._commit(tx, caller, request_id, SEQ_PREFIX + o.name, "next", clock, clock.join(), [n], str(n), None, rows, clocks)
        return {"sequence": o.name, "value": n, "pos": pos}, pos

    return [(Executor, "_next", _next)]


def _context_check_skipped() -> list[tuple[Any, str, Any]]:
    def covered_by(self: DVVSet, seen: Any) -> bool:
        return True  # BUG: every context covers everything: stale writes go in beside what they missed

    return [(DVVSet, "covered_by", covered_by)]


def _stale_write_overwrites() -> list[tuple[Any, str, Any]]:
    original = Executor._write

    def _write(self: Executor, tx: Any, caller: Any, request_id: str, o: Any, text: str | None, rows: Any, clocks: Any, *rest: Any) -> tuple[dict[str, Any], int]:
        if isinstance(o, Put) and o.context is not None and not o.keep_both:
            clock = self._clock(tx, o.key, rows, clocks)
            row = rows[o.key]
            if row is not None:  # BUG: the context read is replaced by one that covers what is there now
                o = Put(o.key, o.value, context=self.codec.seal(o.key, clock.join(), row.pos), label=o.label)
        return original(self, tx, caller, request_id, o, text, rows, clocks, *rest)

    return [(Executor, "_write", _write)]


def _claim_ignores_context() -> list[tuple[Any, str, Any]]:
    original = tasks.Board.claim

    def claim(self: tasks.Board, task_id: str, *, context: str | None = None, **kw: Any) -> tasks.Claim:
        return original(self, task_id, context=None, **kw)  # BUG: what the claimant read is not asked about

    return [(tasks.Board, "claim", claim)]


def _fencing_ignores_superseded_token() -> list[tuple[Any, str, Any]]:
    original = Executor._check_holds

    def _check_holds(self: Executor, tx: Any, resource: str, token: int, now: float, agent: str) -> LeaseRow:
        lease = tx.lease(resource)
        if lease is None or token > lease.token:
            raise Fenced(f"no lease on {resource!r} was ever granted with token {token}", resource=resource, token=token)
        if token < lease.token:
            return lease  # type: ignore[no-any-return]  # BUG: a superseded token passes as if it were current
        return original(self, tx, resource, token, now, agent)

    return [(Executor, "_check_holds", _check_holds)]


def _acknowledged_before_durable() -> list[tuple[Any, str, Any]]:
    def enter(self: Any) -> Any:
        b = self.backend
        b._lock.acquire()
        if b.db.in_transaction:  # the last write is still open: a read sees it, a write commits it first
            if self.write:
                b.db.execute("COMMIT")
                b.db.execute("BEGIN IMMEDIATE")
        else:
            b.db.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
        return _sqlite._SQLiteTx(b.db, b.clock)

    def exit_(self: Any, exc_type: object, exc: object, tb: object) -> None:
        b = self.backend
        try:
            if exc_type is not None:
                if b.db.in_transaction:
                    b.db.execute("ROLLBACK")
            elif not self.write and b.db.in_transaction and not getattr(b, "_mutant_pending", False):
                b.db.execute("COMMIT")
            # BUG: a write is answered now and committed only when the next write begins
            b._mutant_pending = b.db.in_transaction
        finally:
            b._lock.release()

    return [(_sqlite._Transaction, "__enter__", enter), (_sqlite._Transaction, "__exit__", exit_)]


def _allocation_ignores_unit() -> list[tuple[Any, str, Any]]:
    original = sequences.allocate

    def allocate(session: Any, name: str, *, floor: int = 0, unit: str | None = None, detail: dict[str, Any] | None = None) -> sequences.Allocation:
        return original(session, name, floor=floor, unit=None, detail=detail)  # BUG: every request a new number

    return [(sequences, "allocate", allocate)]


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in [
        Mutant("done-ignores-token", "a completion does not check the claimant's fencing token", _done_ignores_token),
        Mutant("renew-does-not-extend", "a renewal (every checkpoint) answers with a new expiry but keeps the old one", _renew_does_not_extend),
        Mutant("expired-takeover-keeps-token", "an expired lease is taken over with its old holder's token", _expired_takeover_keeps_token),
        Mutant("acquire-takes-live-lease", "a lease still held is granted to another agent (in the lease primitive and in the board's read of it)", _acquire_takes_live_lease),
        Mutant("sequence-reissues-after-restart", "after the store opens again, a sequence hands out its last number again", _sequence_reissues_after_restart),
        Mutant("context-check-skipped", "a write's context is not checked: a stale write goes in beside the values it missed", _context_check_skipped),
        Mutant("stale-write-overwrites", "a write whose context is stale replaces the values it never saw", _stale_write_overwrites),
        Mutant("claim-ignores-context", "a claim does not check what changed since the claimant read the task", _claim_ignores_context),
        Mutant("fencing-ignores-superseded-token", "a fenced write with a superseded token is accepted", _fencing_ignores_superseded_token),
        Mutant("acknowledged-before-durable", "a write is acknowledged before it is committed (lost if the store process dies)", _acknowledged_before_durable),
        Mutant("allocation-ignores-unit", "the migration allocator gives a unit of work a new number each time it asks", _allocation_ignores_unit),
    ]
}

# The scenarios a mutant hunt runs by default: every small one (the busy afternoon is long).
DEFAULT_SCENARIOS = [name for name, s in SCENARIOS.items() if s.small]


# ---------------------------------------------------------------- the hunt


@dataclass(slots=True)
class MutantResult:
    name: str
    what: str
    runs: int = 0
    killing_runs: int = 0
    killed_by: dict[str, int] = field(default_factory=dict)  # checker -> runs in which it found an anomaly
    by_scenario: dict[str, int] = field(default_factory=dict)  # scenario -> runs in which the mutant was killed
    first: dict[str, Any] | None = None  # the first kill: scenario, seed, checkers, replay

    @property
    def killed(self) -> bool:
        return self.killing_runs > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mutant": self.name, "what": self.what, "killed": self.killed, "runs": self.runs,
            "killing_runs": self.killing_runs, "killed_by": dict(sorted(self.killed_by.items())),
            "by_scenario": self.by_scenario, "first_kill": self.first,
        }  # fmt: skip


def _job(job: tuple[str, str, int]) -> tuple[str, str, int, dict[str, int]]:
    name, scenario, seed = job
    with applied(MUTANTS[name]):
        r = run(scenario, "comity", seed)
    return name, scenario, seed, {c: n for c, n in r.counts().items() if n}


def hunt(
    mutants: Iterable[str] | None = None,
    scenarios: Iterable[str] | None = None,
    seeds: Iterable[int] = range(20),
    *,
    until_killed: bool = False,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[MutantResult]:
    """Run each mutant on every scenario × seed (``until_killed``: stop a mutant at its
    first kill, trying the scenarios in turn seed by seed)."""
    names = list(mutants or MUTANTS)
    scs = list(scenarios or DEFAULT_SCENARIOS)
    seed_list = list(seeds)
    results = {n: MutantResult(n, MUTANTS[n].what) for n in names}
    order = [(n, sc, seed) for n in names for seed in seed_list for sc in scs]
    total = len(order)
    done = 0

    def record(name: str, scenario: str, seed: int, found: dict[str, int]) -> None:
        r = results[name]
        r.runs += 1
        if found:
            r.killing_runs += 1
            r.by_scenario[scenario] = r.by_scenario.get(scenario, 0) + 1
            for c in found:
                r.killed_by[c] = r.killed_by.get(c, 0) + 1
            if r.first is None:
                r.first = {"scenario": scenario, "seed": seed, "checkers": sorted(found),
                           "replay": f"comity chaos mutants --mutant {name} --scenario {scenario} --seed {seed} --seeds 1 --explain"}  # fmt: skip

    jobs = jobs or os.cpu_count() or 1
    if until_killed or jobs <= 1:
        for job in order:
            if until_killed and results[job[0]].killed:
                done += 1
                continue
            record(*_job(job))
            done += 1
            if progress:
                progress(done, total)
        return [results[n] for n in names]
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(jobs) as pool:
        for out in pool.imap_unordered(_job, order, chunksize=2):
            record(*out)
            done += 1
            if progress:
                progress(done, total)
    return [results[n] for n in names]


def markdown_mutants(results: list[MutantResult]) -> str:
    """One row per mutant: the bug, in how many runs some checker killed it, and which."""
    head = ["mutant", "the bug", "runs that killed it", "killed by (runs)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|"]
    for r in results:
        by = ", ".join(f"{c.replace('_', ' ')} {n}" for c, n in sorted(r.killed_by.items(), key=lambda x: (-x[1], x[0]))) or "**survived**"
        lines.append(f"| `{r.name}` | {r.what} | {r.killing_runs}/{r.runs} | {by} |")
    return "\n".join(lines)
