"""One run: a scenario, a strategy, a seed, and a nemesis (random, or a schedule).

The seed is split into independent streams (the plan, each agent, the network, the
store, the nemesis), so a schedule recorded from a random run and replayed on the
same seed reaches the same fault points and gives the same history.

Besides the anomalies and the completion at the horizon, a run measures what
coordination cost (:class:`Costs`) and, given a *tight* horizon (the report uses
twice the fault-free run's time), how much of the work was done by then; the state
is observed at that moment without changing the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime import SeededRng, VirtualClock
from .agents import ROLES, AgentCtx, Cast
from .checkers import check, counts
from .history import Anomaly, History
from .nemesis import Fault, Nemesis, Profile, Schedule
from .scenarios import SCENARIOS, Scenario, Setup, units_done
from .sim import START, Gen, Process, Simulation
from .strategies import STRATEGIES, FinalState, Strategy

__all__ = ["Run", "RunResult", "Costs", "run", "scratch_dir"]


def scratch_dir() -> Path:
    """Where a run's store file goes: tmpfs when there is one (the simulator's store is
    scratch; it keeps the store's own durability settings, which cost little there)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="comity-chaos-", dir=base))


@dataclass(slots=True)
class Costs:
    """What coordinating cost the agents in one run."""

    claims: int = 0  # claims accepted
    tasks_done: int = 0  # distinct tasks done (by title)
    steps: int = 0  # steps of work and drafts of notes the agents spent
    needed: int = 0  # the steps the work done needed: each done task's steps once, each note present once
    refusals: int = 0  # operations the strategy refused (not timeouts)
    agents: int = 0  # agents of the scenario (the environment not counted)
    finished_at: float | None = None  # virtual seconds until all the work was done (None: not by the horizon)

    @property
    def claims_per_task(self) -> float:
        return self.claims / self.tasks_done if self.tasks_done else 0.0

    @property
    def wasted_steps(self) -> int:
        """Steps spent on work that was refused, discarded or done twice."""
        return max(0, self.steps - self.needed)

    @property
    def refusals_per_agent(self) -> float:
        return self.refusals / self.agents if self.agents else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "claims": self.claims, "tasks_done": self.tasks_done, "claims_per_task": round(self.claims_per_task, 4),
            "steps": self.steps, "needed_steps": self.needed, "wasted_steps": self.wasted_steps,
            "refusals": self.refusals, "refusals_per_agent": round(self.refusals_per_agent, 4),
            "finished_at": None if self.finished_at is None else round(self.finished_at, 3),
        }  # fmt: skip


def measure(history: History, final: FinalState, setup: Setup, spent: dict[str, int], end: float, all_done: bool) -> Costs:
    c = Costs()
    c.claims = sum(1 for o in history.completed("claim", "ok"))
    exempt = {x.name for x in setup.cast if x.exempt}
    c.refusals = sum(1 for o in history.completed(type="fail") if o.agent not in exempt)
    c.agents = sum(1 for x in setup.cast if not x.exempt)
    c.steps = spent.get("step", 0) + spent.get("draft", 0)
    done: dict[str, int] = {}
    for t in final.tasks.values():
        if t.status == "done":
            done.setdefault(t.title, int(t.work.get("steps", 0)))
    c.tasks_done = len(done)
    c.needed = sum(done.values()) + units_done([u for u in setup.units if u[0] == "note"], final)
    c.finished_at = end - START if all_done else None
    return c


@dataclass(slots=True)
class RunResult:
    scenario: str
    strategy: str
    seed: int
    history: History
    final: FinalState
    anomalies: list[Anomaly]
    units: int
    units_done: int
    schedule: Schedule
    points: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    end: float = 0.0
    events: int = 0
    costs: Costs = field(default_factory=Costs)
    tight: float | None = None  # the tight horizon (virtual seconds), if one was given
    units_done_tight: int | None = None  # units done by then
    _hash: str | None = None

    @property
    def history_hash(self) -> str:
        if self._hash is None:
            self._hash = self.history.hash()
        return self._hash

    @property
    def completion(self) -> float:
        return self.units_done / self.units if self.units else 1.0

    @property
    def completion_tight(self) -> float | None:
        if self.units_done_tight is None:
            return None
        return self.units_done_tight / self.units if self.units else 1.0

    def counts(self) -> dict[str, int]:
        return counts(self.anomalies)

    def failed(self, checker: str | None = None) -> bool:
        return any(checker is None or a.checker == checker for a in self.anomalies)

    def to_json(self, *, history: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "strategy": self.strategy,
            "seed": self.seed,
            "history_hash": self.history_hash,
            "anomalies": self.counts(),
            "completion": round(self.completion, 4),
            "units": self.units,
            "units_done": self.units_done,
            "operations": sum(1 for o in self.history if o.type == "invoke"),
            "faults": [f.to_json() for f in self.schedule.faults],
            "virtual_seconds": round(self.end - START, 3),
            "costs": self.costs.to_json(),
            "tight_horizon": None if self.tight is None else round(self.tight, 3),
            "completion_tight": None if self.completion_tight is None else round(self.completion_tight, 4),
            "found": [a.to_json() for a in self.anomalies],
        }
        if history:
            out["history"] = self.history.to_json()
        return out


class Run:
    """Everything one run holds; :meth:`execute` runs it and returns the result."""

    def __init__(
        self,
        scenario: Scenario | str,
        strategy: type[Strategy] | str,
        seed: int,
        *,
        faults: list[Fault] | None = None,
        quiet: bool = False,
        record_points: bool = False,
        tight: float | None = None,
        profile: Profile | None = None,
    ) -> None:
        self.tight = tight
        self.costs: dict[str, int] = {}  # steps of work and drafts spent (AgentCtx.think counts them)
        self.scenario = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
        self.strategy_class = STRATEGIES[strategy] if isinstance(strategy, str) else strategy
        self.seed = seed
        self.rng = SeededRng(seed)
        self.history = History()
        if quiet:
            faults = []
        self.nemesis = Nemesis(profile or self.scenario.profile, rng=self.rng.fork("nemesis"), schedule=faults)
        self.nemesis.record_points = record_points
        self.clock = VirtualClock(START)
        self.sim = Simulation(self.clock, self.nemesis, self.rng.fork("net"), self._on_fault)
        self.setup: Setup = self.scenario.build(self.rng.fork("plan"))
        self.durable: dict[str, dict[str, Any]] = {}  # what an agent's host keeps across a crash (its transcript)
        self.workdir = scratch_dir()
        adapted = self.scenario.adapt(self.strategy_class) if self.scenario.adapt is not None else self.strategy_class
        self.strategy: Strategy = adapted(self.sim, self.rng.fork("store"), self.workdir)
        store_rng = self.rng.fork("restarts")
        self.sim.restart_downtime = lambda node: 1.0 + 19.0 * store_rng.random()
        self.sim.on_restart = self._on_restart

    def _on_restart(self, node: str) -> None:
        self.history.note(node, "restart", {}, self.clock.now())

    def _on_fault(self, fault: Fault) -> None:
        self.history.note("nemesis", fault.kind, {"point": fault.point, "arg": fault.arg}, self.clock.now())

    def _starter(self, cast: Cast) -> Any:
        role = ROLES[cast.role]

        def start(proc: Process) -> Gen[None]:
            return role(AgentCtx(self, proc, cast))

        return start

    def _settled(self) -> bool:
        final = self.strategy.final_state()
        if len(final.tasks) < self.setup.expected_tasks:
            return False
        if len({repr(s) for s in final.sites.values()}) > 1:
            return False  # across sites: not until every site holds what hq holds
        if any(t.status not in ("done", "failed") for t in final.tasks.values()):
            return False
        return units_done(self.setup.units, final) == len(self.setup.units)

    def execute(self) -> RunResult:
        try:
            self.strategy.setup(self.setup.plan)
            for c in self.setup.cast:
                self.sim.spawn(c.name, c.role, self._starter(c), START + c.start, exempt=c.exempt)
            self.sim.quiescent_check = self._settled
            tight_done = None
            if self.tight is not None and self.tight < self.scenario.horizon:
                self.sim.run(START + self.tight)
                tight_done = units_done(self.setup.units, self.strategy.observe())
            self.sim.run(START + self.scenario.horizon)
            final = self.strategy.final_state()
        finally:
            self.strategy.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.history.note("observer", "final", final.to_json(), self.clock.now())
        anomalies = check(self.history, final)
        done = units_done(self.setup.units, final)
        if self.tight is not None and tight_done is None:
            tight_done = done  # the horizon came first
        costs = measure(self.history, final, self.setup, self.costs, self.clock.now(), done == len(self.setup.units) and self.sim.stopped)
        return RunResult(
            self.scenario.name,
            self.strategy_class.name,
            self.seed,
            self.history,
            final,
            anomalies,
            len(self.setup.units),
            done,
            Schedule(self.scenario.name, self.strategy_class.name, self.seed, list(self.nemesis.injected)),
            list(self.nemesis.points),
            self.clock.now(),
            self.sim.events,
            costs,
            self.tight,
            tight_done,
        )


def run(
    scenario: Scenario | str,
    strategy: type[Strategy] | str,
    seed: int,
    *,
    faults: list[Fault] | None = None,
    quiet: bool = False,
    record_points: bool = False,
    tight: float | None = None,
    profile: Profile | None = None,
) -> RunResult:
    """Run ``scenario`` under ``strategy`` with ``seed``: a random nemesis, or exactly
    ``faults`` when given (``quiet``: no faults at all).  With ``tight`` (virtual
    seconds), also how much of the work was done by then; with ``profile``, that nemesis
    instead of the scenario's."""
    return Run(scenario, strategy, seed, faults=faults, quiet=quiet, record_points=record_points, tight=tight, profile=profile).execute()
