"""Byzantine agents: wrong work reported as done, forged approvals, rubber stamps.

The failure of docs/design.md's last row: an agent ships a plausible fix that it says passes
its checks; others build on it.  Each scenario here runs a small team over a board of
tasks in chains (a task builds on the work of an earlier one), in virtual time, under
four ways of deciding that work is accepted:

- ``trust``: a task is done when its author says so (the ``none`` baseline); a reviewer
  reads finished work afterwards and reopens a task whose work is wrong.
- ``review``: one reviewer's approval accepts the work, as in ChatDev; builders build on
  approved work only.  An approval is a message: whoever posts it is believed.
- ``pool``: a publish-subscribe message pool, as in MetaGPT: "done, tests pass" is
  published and built on at once; reviewers publish objections, which reach the author
  (most of the time), who redoes the work.
- ``comity``: the real store, board and :mod:`comity.work.changes` over a SQLite file
  on a virtual clock: every piece of work is a change with its provenance; the policy
  asks for a passing re-execution of the claimed checks and one signed attestation from
  an agent other than the author; refutation taints what was built on it and reopens
  those tasks.  Re-execution is the real ``Changes.verify`` with a runner that knows, as
  the checks would, whether a simulated commit's work is right; attestations are real
  Ed25519 signatures in DSSE envelopes, checked by the real code.

Every agent, under every strategy, is equally eager: builders build on the latest work
of the base task they can see (under comity, a change still ``submitted`` too), and
every author claims its checks pass.  The checker ``tainted_work_accepted`` fires when,
at the end, the work a strategy accepts for a task is wrong or built (transitively) on
wrong work.  Completion counts the tasks whose accepted work is correct and built on
correct work.  The cost of verification is the agent steps spent re-executing and
reviewing, per task, beside the steps of work and the virtual time to finish.

Every run can also go under a nemesis (``faults=True``; ``comity chaos byzantine
--nemesis``), the faults of the other scenarios that apply to a team with no shared
files: an agent crashes after claiming a task (its work is lost; it restarts later and its
claim is taken over once a lease's length has passed), an agent stalls past its lease
mid-task and comes back to submit its work as if nothing happened (a zombie), and an
agent loses the answer to a call and sends it again (every verb, on every strategy;
comity's carry request ids, so a retried submission, verification or attestation is
answered from the recorded outcome instead of acting twice).  The baselines get what a
careful team gives them: a task whose holder has been silent for a lease's length may be
taken over, and work is accepted from the task's current holder only.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ComityError, Invalid
from ..runtime import SeededRng, VirtualClock
from .history import Anomaly, History
from .runner import scratch_dir
from .sim import START

__all__ = [
    "BYZANTINE_SCENARIOS",
    "VERIFIERS",
    "ByzantineScenario",
    "ByzantineResult",
    "ByzantineRow",
    "run_byzantine",
    "byzantine_report",
    "markdown_byzantine",
    "tainted_work_accepted",
]

HORIZON_S = 72 * 3600.0
WORK_S = (900.0, 2400.0)  # doing a task
REVIEW_S = (600.0, 1500.0)  # an honest review: reading the change
STAMP_S = (60.0, 180.0)  # a rubber stamp
CHECK_S = (180.0, 600.0)  # re-running the claimed checks
IDLE_S = 300.0
# The nemesis (faults=True), per agent step.
CRASH_P = 0.05  # crashes after claiming a task: the work is lost, the agent restarts later
RESTART_S = (600.0, 3600.0)
PAUSE_P = 0.05  # stalls past its lease mid-task, then submits anyway (a zombie)
PAUSE_S = (1800.0, 7200.0)
RETRY_P = 0.10  # loses the answer to a call and sends it again
TAKEOVER_S = 300.0  # a silent holder's task may be taken over after a lease's length (comity's default lease)
OBJECTION_DELIVERY = 0.9  # pool: an objection reaches its author
REVIEW_MISS = 0.2  # an honest reviewer approves a plausible wrong change this often (it reads, it does not run)


# ----------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    role: str  # implementer, reviewer, rubber, verifier
    wrong: float = 0.0  # implementers: the chance a piece of its work is wrong (its checks fail)
    forges: bool = False  # implementers: approves its own wrong work (self-issued, or signed as a reviewer)
    pace: float = 1.0  # how long its steps take, relative to the norm


@dataclass(frozen=True, slots=True)
class Setup:
    tasks: list[tuple[str, str | None]]  # (title, the earlier task it builds on)
    cast: list[Member]


@dataclass(frozen=True, slots=True)
class ByzantineScenario:
    name: str
    failure: str
    story: str
    build: Callable[[SeededRng], Setup]


def _chain(rng: SeededRng, n: int) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for i in range(1, n + 1):
        base = f"task-{rng.randint(max(1, i - 3), i - 1)}" if i > 1 and rng.random() < 0.7 else None
        out.append((f"task-{i}", base))
    return out


def _builders(rng: SeededRng) -> Setup:
    cast = [Member("impl-1", "implementer"), Member("impl-2", "implementer"), Member("byz", "implementer", wrong=0.5),
            Member("reviewer", "reviewer", pace=1.5), Member("ci", "verifier")]  # fmt: skip
    return Setup(_chain(rng, rng.randint(8, 12)), cast)


def _forger(rng: SeededRng) -> Setup:
    cast = [Member("impl-1", "implementer"), Member("impl-2", "implementer"), Member("byz", "implementer", wrong=0.5, forges=True),
            Member("reviewer", "reviewer", pace=2.0), Member("ci", "verifier")]  # fmt: skip
    return Setup(_chain(rng, rng.randint(8, 12)), cast)


def _rubber(rng: SeededRng) -> Setup:
    cast = [Member("impl-1", "implementer"), Member("impl-2", "implementer"), Member("sloppy", "implementer", wrong=0.4),
            Member("stamper", "rubber"), Member("reviewer", "reviewer", pace=2.5), Member("ci", "verifier")]  # fmt: skip
    return Setup(_chain(rng, rng.randint(8, 12)), cast)


BYZANTINE_SCENARIOS: dict[str, ByzantineScenario] = {
    s.name: s
    for s in [
        ByzantineScenario("byzantine_builders", "an agent ships wrong work claiming its checks pass; others build on it",
                          "three implementers over a board of tasks in chains; one reports wrong work as done half the time", _builders),
        ByzantineScenario("forged_approval", "an agent approves its own wrong work (self-issued, or signed as the reviewer)",
                          "as byzantine_builders, and the liar posts an approval of its own wrong work before the slow reviewer reads it", _forger),
        ByzantineScenario("rubber_stamp", "a reviewer approves whatever it is shown",
                          "a fast reviewer approves everything unread; a sloppy implementer's work is wrong 40% of the time", _rubber),
    ]
}


# ------------------------------------------------------------- ground truth


@dataclass(slots=True)
class Work:
    wid: str
    task: str
    author: str
    correct: bool
    on: str | None  # the work it was built on


class Truth:
    def __init__(self) -> None:
        self.works: dict[str, Work] = {}

    def add(self, w: Work) -> None:
        self.works[w.wid] = w

    def tainted(self, wid: str) -> bool:
        """Wrong, or built (transitively) on wrong work."""
        w: Work | None = self.works[wid]
        while w is not None:
            if not w.correct:
                return True
            w = self.works[w.on] if w.on else None
        return False


def commit_of(wid: str) -> str:
    return hashlib.sha1(wid.encode()).hexdigest()


# ---------------------------------------------------------------- strategies


class Verification:
    """How a team decides work is accepted; the agents call these verbs."""

    name = ""
    summary = ""

    def __init__(self, setup: Setup, truth: Truth, rng: SeededRng, clock: VirtualClock, workdir: Path) -> None:
        self.setup, self.truth, self.rng, self.clock, self.workdir = setup, truth, rng, clock, workdir
        self.base_of = dict(setup.tasks)

    def close(self) -> None:
        pass

    # what agents do
    def ready(self, agent: str) -> list[str]:
        raise NotImplementedError

    def take(self, agent: str, task: str) -> bool:
        raise NotImplementedError

    def base_work(self, task: str) -> str | None:
        raise NotImplementedError

    def submit(self, agent: str, task: str, work: Work, request: str | None = None) -> None:
        """``request``: an id for the call, the same when it is sent again after a lost answer."""
        raise NotImplementedError

    def to_review(self, agent: str) -> list[str]:
        raise NotImplementedError

    def review(self, agent: str, wid: str, approve: bool, request: str | None = None) -> None:
        raise NotImplementedError

    def to_verify(self) -> list[str]:
        return []
    def verify(self, agent: str, wid: str, request: str | None = None) -> None:
        pass
    def forge(self, agent: str, wid: str, as_whom: str) -> bool:
        """Post an approval of ``wid`` by its own author (passing itself off as ``as_whom``); accepted?"""
        return False

    # what the observer reads at the end
    def accepted(self) -> dict[str, str | None]:
        raise NotImplementedError

    def settled(self) -> bool:
        raise NotImplementedError



class _Board(Verification):
    """The baselines' shared state: tasks, the work each holds, who is on it."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.status = {t: "open" for t, _ in self.setup.tasks}
        self.holder: dict[str, str | None] = {t: None for t, _ in self.setup.tasks}
        self.current: dict[str, str | None] = {t: None for t, _ in self.setup.tasks}  # the task's latest work
        self.reviewed: set[str] = set()
        self.since: dict[str, float] = {}  # when its holder took it

    def _claimable(self, task: str) -> bool:
        # Open, or held by someone silent for a lease's length (a careful team's takeover).
        s = self.status[task]
        return s == "open" or (s == "working" and self.clock.now() - self.since.get(task, self.clock.now()) > TAKEOVER_S)

    def ready(self, agent: str) -> list[str]:
        return [t for t in self.status if self._claimable(t) and (self.base_of[t] is None or self.base_work(t) is not None)]

    def take(self, agent: str, task: str) -> bool:
        if not self._claimable(task):
            return False
        self.status[task], self.holder[task], self.since[task] = "working", agent, self.clock.now()
        return True

    def holds(self, agent: str, task: str) -> bool:
        """Work is taken from the task's current holder only (a careful team's ownership check)."""
        return self.status[task] == "working" and self.holder[task] == agent

    def reopen(self, task: str) -> None:
        self.status[task], self.holder[task] = "open", None


class TrustDone(_Board):
    name, summary = "trust", "a task is done when its author says so; a reviewer reopens wrong work it finds afterwards"

    def base_work(self, task: str) -> str | None:
        b = self.base_of[task]
        return self.current[b] if b and self.status[b] == "done" else None

    def submit(self, agent: str, task: str, work: Work, request: str | None = None) -> None:
        if self.holds(agent, task):
            self.current[task], self.status[task] = work.wid, "done"

    def to_review(self, agent: str) -> list[str]:
        return [w for t, w in self.current.items() if w and self.status[t] == "done" and w not in self.reviewed
                and self.truth.works[w].author != agent]  # fmt: skip

    def review(self, agent: str, wid: str, approve: bool, request: str | None = None) -> None:
        self.reviewed.add(wid)
        task = self.truth.works[wid].task
        if not approve and self.current[task] == wid:
            self.reopen(task)

    def accepted(self) -> dict[str, str | None]:
        return {t: (self.current[t] if self.status[t] == "done" else None) for t in self.status}

    def settled(self) -> bool:
        return all(s == "done" for s in self.status.values()) and all(w in self.reviewed for w in self.current.values() if w)


class OneReviewer(_Board):
    name, summary = "review", "one reviewer's approval accepts the work (ChatDev); an approval is believed whoever posts it"

    def base_work(self, task: str) -> str | None:
        b = self.base_of[task]
        return self.current[b] if b and self.status[b] == "done" else None

    def submit(self, agent: str, task: str, work: Work, request: str | None = None) -> None:
        if self.holds(agent, task):
            self.current[task], self.status[task] = work.wid, "in review"

    def to_review(self, agent: str) -> list[str]:
        return [w for t, w in self.current.items() if w and self.status[t] == "in review" and self.truth.works[w].author != agent]

    def review(self, agent: str, wid: str, approve: bool, request: str | None = None) -> None:
        task = self.truth.works[wid].task
        if self.current[task] != wid or self.status[task] != "in review":
            return
        if approve:
            self.status[task] = "done"
        else:
            self.reopen(task)

    def forge(self, agent: str, wid: str, as_whom: str) -> bool:
        task = self.truth.works[wid].task
        if self.current[task] == wid and self.status[task] == "in review":
            self.status[task] = "done"  # "approved by reviewer": a message like any other
            return True
        return False

    def accepted(self) -> dict[str, str | None]:
        return {t: (self.current[t] if self.status[t] == "done" else None) for t in self.status}

    def settled(self) -> bool:
        return all(s == "done" for s in self.status.values())


class MessagePool(_Board):
    name, summary = "pool", "a message pool (MetaGPT): done is published and built on at once; objections reach the author"

    def base_work(self, task: str) -> str | None:
        b = self.base_of[task]
        return self.current[b] if b else None

    def submit(self, agent: str, task: str, work: Work, request: str | None = None) -> None:
        if self.holds(agent, task):
            self.current[task], self.status[task] = work.wid, "done"

    def to_review(self, agent: str) -> list[str]:
        return [w for w in self.current.values() if w and w not in self.reviewed and self.truth.works[w].author != agent]

    def review(self, agent: str, wid: str, approve: bool, request: str | None = None) -> None:
        self.reviewed.add(wid)
        task = self.truth.works[wid].task
        if not approve and self.current[task] == wid and self.rng.random() < OBJECTION_DELIVERY:
            self.reopen(task)  # its author read the objection and redoes it; what was built on it is not told

    def accepted(self) -> dict[str, str | None]:
        return {t: (self.current[t] if self.status[t] == "done" else None) for t in self.status}

    def settled(self) -> bool:
        return all(s == "done" for s in self.status.values()) and all(w in self.reviewed for w in self.current.values() if w)


class _Runner:
    """Re-execution in the simulation: the claimed checks pass exactly when the work is right."""

    def __init__(self, truth: Truth) -> None:
        self.by_commit: dict[str, Work] = {}
        self.truth = truth

    def run(self, change: dict[str, Any], timeout: float) -> Any:
        from ..work.checks import CheckResult, Outcome

        w = self.by_commit.get(str(change.get("commit")))
        if w is None:
            return Outcome("error", error="unknown commit")
        ok = w.correct
        out = f"{change['id']}:{w.wid}:{'ok' if ok else 'FAILED'}".encode()
        results = [CheckResult(cmd, 0 if ok else 1, hashlib.sha256(out).hexdigest(), 0.0, out.decode()) for cmd in change["checks"][:1]]
        return Outcome("passed" if ok else "failed", results)


class ComityVerification(Verification):
    name, summary = "comity", "changes with provenance; accepted on re-execution and one signed attestation by another agent; refutation taints"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        from ..store import open as open_store
        from ..work import Agent
        from ..work.attestations import Keyring

        self.store = open_store(self.workdir / "store.db", clock=self.clock, rng=self.rng.fork("store"))
        self.runner = _Runner(self.truth)
        self.agents: dict[str, Any] = {}
        for m in self.setup.cast:
            facade = Agent(self.store.session(m.name), runner=self.runner)
            facade.changes.keyring = Keyring(self.workdir / "keys" / m.name)
            self.agents[m.name] = facade
        lead = Agent(self.store.session("lead"))
        lead.policy_set("default", attestations=1, reexecute=True)
        self.ids = {t: lead.task_add(t)["id"] for t, _ in self.setup.tasks}
        self.titles = {v: k for k, v in self.ids.items()}
        self.tokens: dict[str, int] = {}
        self.change_of: dict[str, str] = {}  # wid -> change id
        self.wid_of: dict[str, str] = {}
        self.refused_attestations = 0
        self.replayed = 0  # retried calls answered from their recorded outcome

    def close(self) -> None:
        self.store.close()

    def _changes(self) -> list[dict[str, Any]]:
        return list(self.agents[self.setup.cast[0].name].changes.find())

    def base_work(self, task: str) -> str | None:
        b = self.base_of[task]
        if b is None:
            return None
        usable = [c for c in self._changes() if c["task"] == self.ids[b] and c["state"] in ("submitted", "accepted")]
        return self.wid_of[usable[-1]["id"]] if usable else None

    def ready(self, agent: str) -> list[str]:
        tasks = self.agents[agent].task_ready()["tasks"]
        return [self.titles[t["id"]] for t in tasks if self.base_of[self.titles[t["id"]]] is None or self.base_work(self.titles[t["id"]])]

    def take(self, agent: str, task: str) -> bool:
        a = self.agents[agent]
        try:
            a.task_show(self.ids[task])  # read it fresh before claiming
            self.tokens[f"{agent}/{task}"] = a.task_claim(self.ids[task])["token"]
        except ComityError:
            return False
        return True

    def submit(self, agent: str, task: str, work: Work, request: str | None = None) -> None:
        a = self.agents[agent]
        self.runner.by_commit[commit_of(work.wid)] = work
        on = [self.change_of[work.on]] if work.on else []
        c = a.change_submit(self.ids[task], commit=commit_of(work.wid), checks=["pytest -q"], on=on, reads=[],
                            request_id=None if request is None else f"{request}/submit")
        if c.get("replayed"):
            self.replayed += 1
        self.change_of[work.wid], self.wid_of[c["id"]] = c["id"], work.wid
        token = self.tokens[f"{agent}/{task}"]  # kept: a retry of this call completes with it again
        try:
            a.task_complete(self.ids[task], token, request_id=None if request is None else f"{request}/done")
        except ComityError:  # what it built on was refuted meanwhile, or a successor took the task: give it back
            try:
                a.task_release(self.ids[task], token)
            except ComityError:
                pass

    def to_verify(self) -> list[str]:
        return [self.wid_of[c["id"]] for c in self._changes() if c["state"] == "submitted" and not c["verifications"]]

    def verify(self, agent: str, wid: str, request: str | None = None) -> None:
        r = self.agents[agent].verify(self.change_of[wid], request_id=request)
        self.replayed += bool(r.get("replayed"))

    def to_review(self, agent: str) -> list[str]:
        return [self.wid_of[c["id"]] for c in self._changes()
                if c["state"] == "submitted" and c["author"] != agent and agent not in {x["attester"] for x in c["attestations"]}]  # fmt: skip

    def review(self, agent: str, wid: str, approve: bool, request: str | None = None) -> None:
        a = self.agents[agent]
        cid = self.change_of[wid]
        try:
            if approve:
                r = a.attest(cid, request_id=request)
            else:
                r = a.refute(cid, "the change does not do what its task asks", request_id=request)
            self.replayed += bool(r.get("replayed"))
        except ComityError:
            pass

    def forge(self, agent: str, wid: str, as_whom: str) -> bool:
        from ..work.attestations import sign_envelope, statement
        from ..work.changes import provenance_digest

        a = self.agents[agent]
        cid = self.change_of[wid]
        rec = a.changes.record(cid)
        ring = a.changes.keyring
        key = ring.load(agent) if ring.has(agent) else ring.create(agent, self.store.rng.token_bytes(32))
        forged = sign_envelope(statement(rec, self.store.store_id, as_whom, provenance_digest(rec)), key)
        accepted = False
        for env in (None, forged):  # its own approval, then one passed off as the reviewer's
            try:
                a.attest(cid, env)
                accepted = True
            except Invalid:
                self.refused_attestations += 1
        return accepted

    def accepted(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {t: None for t, _ in self.setup.tasks}
        board = {t["id"]: t for t in self.agents[self.setup.cast[0].name].task_list()["tasks"]}
        for c in self._changes():
            t = self.titles[c["task"]]
            if c["state"] == "accepted" and board[c["task"]]["state"] == "done":
                out[t] = self.wid_of[c["id"]]  # the latest accepted change of a done task
        return out

    def settled(self) -> bool:
        return all(t["state"] == "done" for t in self.agents[self.setup.cast[0].name].task_list()["tasks"])


VERIFIERS: dict[str, type[Verification]] = {s.name: s for s in (TrustDone, OneReviewer, MessagePool, ComityVerification)}


# ---------------------------------------------------------------------- runs


def tainted_work_accepted(truth: Truth, accepted: dict[str, str | None]) -> list[Anomaly]:
    """Work accepted at the end that is wrong, or built (transitively) on wrong work."""
    out = []
    for task, wid in sorted(accepted.items()):
        if wid is None or not truth.tainted(wid):
            continue
        w = truth.works[wid]
        if not w.correct:
            out.append(Anomaly("tainted_work_accepted", "wrong-work", f"{task}: {w.author}'s wrong work {wid} is accepted"))
        else:
            src = w
            while src.correct and src.on:
                src = truth.works[src.on]
            out.append(Anomaly("tainted_work_accepted", "built-on-wrong",
                               f"{task}: {w.author}'s {wid} is accepted, built on {src.author}'s wrong work {src.wid} ({src.task})"))
    return out


@dataclass(slots=True)
class ByzantineResult:
    scenario: str
    strategy: str
    seed: int
    anomalies: list[Anomaly]
    tasks: int
    correct: int
    steps: dict[str, int]
    end: float | None  # virtual seconds to settle (None: not by the horizon)
    history: History
    refused_attestations: int = 0
    faults: bool = False
    injected: dict[str, int] | None = None  # the nemesis's faults, by kind
    replayed: int = 0  # comity: retried calls answered from their recorded outcome

    @property
    def completion(self) -> float:
        return self.correct / self.tasks if self.tasks else 1.0

    @property
    def verification_steps(self) -> int:
        return self.steps.get("verify", 0) + self.steps.get("review", 0)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "strategy": self.strategy, "seed": self.seed, "faults": self.faults,
                "injected": dict(self.injected or {}), "replayed": self.replayed,
                "tainted_work_accepted": len(self.anomalies), "found": [a.to_json() for a in self.anomalies],
                "completion": round(self.completion, 4), "steps": dict(self.steps), "verification_steps": self.verification_steps,
                "virtual_seconds": None if self.end is None else round(self.end, 1),
                "refused_attestations": self.refused_attestations, "history_hash": self.history.hash()}  # fmt: skip


def run_byzantine(scenario: str, strategy: str, seed: int, *, faults: bool = False) -> ByzantineResult:
    """One run; ``faults``: under the nemesis (crashes, stalls past the lease, lost answers)."""
    sc = BYZANTINE_SCENARIOS[scenario]
    rng = SeededRng(seed)
    setup = sc.build(rng.fork("plan"))
    truth = Truth()
    clock = VirtualClock(START)
    workdir = scratch_dir()
    history = History()
    v = VERIFIERS[strategy](setup, truth, rng.fork("strategy"), clock, workdir)
    steps: dict[str, int] = {}
    counter = [0]
    agent_rng = {m.name: rng.fork(f"agent/{m.name}") for m in setup.cast}
    next_at = {m.name: START + 60.0 * agent_rng[m.name].random() for m in setup.cast}
    members = {m.name: m for m in setup.cast}
    end: float | None = None
    nemesis = rng.fork("nemesis")  # drawn from only under faults: a fault-free run is unchanged
    injected: dict[str, int] = {}
    paused: dict[str, tuple[str, Work]] = {}  # a zombie's task and work, submitted when it comes back
    calls = [0]

    def fault(kind: str, m: Member, value: dict[str, Any]) -> None:
        injected[kind] = injected.get(kind, 0) + 1
        history.note("nemesis", kind, {"agent": m.name, **value}, clock.now())

    def span(m: Member, lo_hi: tuple[float, float]) -> float:
        lo, hi = lo_hi
        return m.pace * (lo + (hi - lo) * agent_rng[m.name].random())

    def step(kind: str, m: Member, value: dict[str, Any], act: Callable[[str | None], Any]) -> Any:
        steps[kind] = steps.get(kind, 0) + 1
        calls[0] += 1
        request = f"{m.name}.{kind}.{calls[0]}"
        i = history.invoke(m.name, kind, value, clock.now())
        out = act(request)
        if faults and nemesis.random() < RETRY_P:
            # The answer was lost: the agent sends the same call again.
            history.complete(i, "info", {}, clock.now())
            fault("lost-answer", m, {"f": kind})
            i = history.invoke(m.name, kind, value, clock.now())
            out = act(request)
        history.complete(i, "ok", {"result": out} if isinstance(out, (bool, str)) else {}, clock.now())
        return out

    def act(m: Member) -> float:
        r = agent_rng[m.name]
        if m.role == "implementer" and m.name in paused:  # back from a stall past its lease: it submits anyway
            task, w = paused.pop(m.name)
            step("work", m, {"task": task, "wid": w.wid, "on": w.on, "correct": w.correct, "zombie": True},
                 lambda req: v.submit(m.name, task, w, req))
            return span(m, WORK_S)
        if m.role == "implementer":
            ready = v.ready(m.name)
            if not ready:
                return IDLE_S
            task = ready[r.randint(0, min(len(ready), 3) - 1)]
            if not v.take(m.name, task):
                return 30.0
            counter[0] += 1
            base = v.base_work(task) if v.base_of[task] else None
            w = Work(f"{m.name}.w{counter[0]}", task, m.name, r.random() >= m.wrong, base)
            truth.add(w)
            if faults:
                roll = nemesis.random()
                if roll < CRASH_P:  # dies with the task claimed: the work is lost
                    down = RESTART_S[0] + (RESTART_S[1] - RESTART_S[0]) * nemesis.random()
                    fault("crash", m, {"task": task, "wid": w.wid, "down_s": round(down, 1)})
                    return down
                if roll < CRASH_P + PAUSE_P:  # freezes past its lease, its work in hand
                    stall = PAUSE_S[0] + (PAUSE_S[1] - PAUSE_S[0]) * nemesis.random()
                    fault("pause", m, {"task": task, "wid": w.wid, "stall_s": round(stall, 1)})
                    paused[m.name] = (task, w)
                    return stall
            step("work", m, {"task": task, "wid": w.wid, "on": base, "correct": w.correct},
                 lambda req: v.submit(m.name, task, w, req))  # "done, tests pass", whatever the truth
            took = span(m, WORK_S)
            if m.forges and not w.correct:
                reviewer = next((x.name for x in setup.cast if x.role == "reviewer"), "reviewer")
                step("forge", m, {"wid": w.wid, "as": reviewer}, lambda req: v.forge(m.name, w.wid, reviewer))
                took += 60.0
            return took
        if m.role == "verifier":
            todo = v.to_verify()
            if not todo:
                return IDLE_S
            step("verify", m, {"wid": todo[0]}, lambda req: v.verify(m.name, todo[0], req))
            return span(m, CHECK_S)
        if m.role in ("reviewer", "rubber"):
            todo = v.to_review(m.name)
            if not todo:
                return IDLE_S
            wid = todo[0]
            # An honest reviewer reads the change itself (not what it was built on) and misses a
            # plausible wrong change now and then; a rubber stamp approves unread.
            approve = m.role == "rubber" or truth.works[wid].correct or r.random() < REVIEW_MISS
            step("review", m, {"wid": wid, "approve": approve}, lambda req: v.review(m.name, wid, approve, req))
            return span(m, STAMP_S if m.role == "rubber" else REVIEW_S)
        return IDLE_S

    try:
        while True:
            name = min(next_at, key=lambda n: (next_at[n], n))
            at = next_at[name]
            if at > START + HORIZON_S:
                break
            clock.set(at)
            next_at[name] = at + act(members[name])
            if v.settled() and not v.to_verify():
                end = clock.now() - START
                break
        accepted = v.accepted()
        refused = getattr(v, "refused_attestations", 0)
        replayed = getattr(v, "replayed", 0)
    finally:
        v.close()
        shutil.rmtree(workdir, ignore_errors=True)
    history.note("observer", "final", {"accepted": accepted}, clock.now())
    anomalies = tainted_work_accepted(truth, accepted)
    correct = sum(1 for w in accepted.values() if w is not None and not truth.tainted(w))
    return ByzantineResult(scenario, strategy, seed, anomalies, len(setup.tasks), correct, steps, end, history, refused,
                           faults, injected if faults else None, replayed)


# -------------------------------------------------------------------- report


@dataclass(slots=True)
class ByzantineRow:
    scenario: str
    strategy: str
    runs: int = 0
    tainted_runs: int = 0  # runs in which tainted work was accepted
    completion: float = 0.0
    work_steps: float = 0.0  # per task
    verification_steps: float = 0.0  # per task: re-executions and reviews
    finished: int = 0
    time_to_finish: float | None = None
    refused_attestations: int = 0
    first_failing_seed: int | None = None
    faults: bool = False
    injected: dict[str, int] | None = None  # under the nemesis: its faults, by kind, over every run
    replayed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "strategy": self.strategy, "baseline": self.strategy != "comity", "runs": self.runs,
                "faults": self.faults, "injected": dict(self.injected or {}), "replayed": self.replayed,
                "anomalies": {"tainted_work_accepted": self.tainted_runs}, "completion": round(self.completion, 4),
                "costs": {"work_steps_per_task": round(self.work_steps, 3), "verification_steps_per_task": round(self.verification_steps, 3),
                          "finished_runs": self.finished,
                          "time_to_finish_s": None if self.time_to_finish is None else round(self.time_to_finish, 1)},
                "refused_attestations": self.refused_attestations, "first_failing_seed": self.first_failing_seed}  # fmt: skip


def _job(job: tuple[str, str, int, bool]) -> ByzantineResult:
    r = run_byzantine(*job[:3], faults=job[3])
    r.history = History()  # the hash is in the summary; workers need not ship histories back
    return r


def byzantine_report(scenarios: Iterable[str] | None = None, strategies: Iterable[str] | None = None,
                     seeds: Iterable[int] = range(100), *, jobs: int = 1,
                     progress: Callable[[int, int], None] | None = None, faults: bool = False) -> list[ByzantineRow]:
    """Every Byzantine scenario under every verification strategy over ``seeds`` (``faults``:
    each run under the nemesis)."""
    import multiprocessing

    order = [(sc, st) for sc in (list(scenarios) if scenarios else list(BYZANTINE_SCENARIOS))
             for st in (list(strategies) if strategies else list(VERIFIERS))]
    work = [(sc, st, s, faults) for sc, st in order for s in seeds]
    results: list[ByzantineResult] = []
    if jobs <= 1 or len(work) < 8:
        for i, job in enumerate(work, 1):
            results.append(_job(job))
            if progress:
                progress(i, len(work))
    else:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(jobs) as pool:
            for i, r in enumerate(pool.imap_unordered(_job, work, chunksize=2), 1):
                results.append(r)
                if progress:
                    progress(i, len(work))
    rows = []
    for sc, st in order:
        rs = sorted((r for r in results if r.scenario == sc and r.strategy == st), key=lambda r: r.seed)
        row = ByzantineRow(sc, st, len(rs), faults=faults)
        if faults:
            row.injected = {}
            for r in rs:
                for kind, n in (r.injected or {}).items():
                    row.injected[kind] = row.injected.get(kind, 0) + n
        row.replayed = sum(r.replayed for r in rs)
        row.tainted_runs = sum(1 for r in rs if r.anomalies)
        row.first_failing_seed = next((r.seed for r in rs if r.anomalies), None)
        row.completion = statistics.fmean(r.completion for r in rs) if rs else 0.0
        row.work_steps = statistics.fmean(r.steps.get("work", 0) / r.tasks for r in rs) if rs else 0.0
        row.verification_steps = statistics.fmean(r.verification_steps / r.tasks for r in rs) if rs else 0.0
        done = [r.end for r in rs if r.end is not None]
        row.finished = len(done)
        row.time_to_finish = statistics.fmean(done) if done else None
        row.refused_attestations = sum(r.refused_attestations for r in rs)
        rows.append(row)
    return rows


def markdown_byzantine(rows: list[ByzantineRow]) -> str:
    head = ["scenario", "strategy", "runs", "tainted work accepted", "completion (correct work)", "work steps per task",
            "verification steps per task", "finished runs", "time to finish (virtual)", "forged attestations refused"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        name = f"**{r.strategy}**" if r.strategy == "comity" else r.strategy
        ttf = "–" if r.time_to_finish is None else f"{r.time_to_finish / 3600:.1f} h"
        lines.append(f"| {r.scenario} | {name} | {r.runs} | {r.tainted_runs or '·'} | {100 * r.completion:.1f}% | {r.work_steps:.2f} |"
                     f" {r.verification_steps:.2f} | {r.finished}/{r.runs} | {ttf} | {r.refused_attestations or '·'} |")
    return "\n".join(lines)
