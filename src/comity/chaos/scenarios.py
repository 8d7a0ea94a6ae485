"""Scenarios: one per failure of docs/design.md's table that the store can express, and a
busy afternoon that mixes them.

Each scenario builds, from its own random stream, the initial state (tasks, files,
sequences), the cast of agents, and the *units of work* a perfect run completes:
each task done with correct work, each migration under its own number, each note
entry present.  ``completion`` is the fraction of those units a run got done
correctly by its horizon; the fault-free run of every scenario under ``comity``
completes all of them (a test pins it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..runtime import SeededRng
from .agents import Cast, logical
from .mast import defaults as mast_defaults
from .nemesis import Profile
from .strategies.base import FinalState, Plan, Strategy, TaskPlan

__all__ = ["Scenario", "Setup", "SCENARIOS", "Unit", "units_done"]

Unit = tuple[str, ...]  # ("task", title) | ("migration", unit) | ("note", key, entry)

# Virtual time is free: the horizon is long enough for comity to finish the work through
# the worst the nemesis does (a few hour-long pauses), so what is unfinished is unfinished.
HORIZON_S = 12 * 3600.0

# Faults of the machinery, per message or per operation: the network, the store process, the
# agents' processes and hosts (a crash, a frozen laptop, a slow step, a skewed clock).
_MESSAGES = {"drop": 0.01, "dup": 0.01, "delay": 0.02, "restart_store": 0.003}
_PROCESSES = {"crash": 0.01, "pause": 0.005, "crash_after": 0.005, "stall": 0.02, "skew": 0.1}


def _profile(**p: float) -> Profile:
    """The machinery's faults per message or operation; the agents' own faults (LLM
    behaviour) per agent and run at MAST's measured rates (``mast.py``), unless the
    scenario raises one of them for its story (given per operation here)."""
    return Profile({**_MESSAGES, **_PROCESSES, **p}, per_agent={k: v for k, v in mast_defaults().items() if k not in p})


@dataclass(slots=True)
class Setup:
    plan: Plan
    cast: list[Cast]
    units: list[Unit]
    expected_tasks: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    failure: str  # the row of docs/design.md's table
    about: tuple[str, ...]  # the checkers whose anomalies this scenario is built to provoke
    story: str
    build: Callable[[SeededRng], Setup]
    profile: Profile
    horizon: float
    small: bool = True  # the systematic explorer runs pairs of faults only on small scenarios
    notes: dict[str, Any] = field(default_factory=dict)
    # How each strategy runs this scenario (across sites, for the partition); None: as it is.
    adapt: Callable[[type[Strategy]], type[Strategy]] | None = None


def _u(rng: SeededRng, lo: int, hi: int) -> int:
    return rng.randint(lo, hi)


def _uniform(rng: SeededRng, lo: float, hi: float) -> float:
    return round(lo + (hi - lo) * rng.random(), 3)


def units_done(units: list[Unit], final: FinalState) -> int:
    """How many of ``units`` the final state shows done correctly."""
    done_titles: set[str] = set()
    for t in final.tasks.values():
        if t.status == "done":
            done_titles.add(str(t.work.get("redo") or t.title))
    migrations = {
        str(v.get("unit")) for k, v in final.files.items() if k.startswith("migrations/") and isinstance(v, dict) and "unit" in v
    }
    n = 0
    for u in units:
        if u[0] == "task":
            art = final.files.get(f"work/{u[1]}")
            n += u[1] in done_titles and isinstance(art, dict) and bool(art.get("correct"))
        elif u[0] == "migration":
            n += u[1] in migrations
        elif u[0] == "note":
            items = final.files.get(u[1])
            n += isinstance(items, list) and any(logical(str(i)) == u[2] for i in items)
    return n


def _task_units(tasks: list[TaskPlan]) -> list[Unit]:
    out: list[Unit] = []
    for t in tasks:
        out.append(("task", t.title))
        if t.work.get("migration"):
            out.append(("migration", t.title))
        if t.work.get("note"):
            out.append(("note", str(t.work["note"]), f"{t.title}:note"))
    return out


# ------------------------------------------------------------------ scenarios


def _migration_collision(rng: SeededRng) -> Setup:
    n = _u(rng, 2, 3)
    tasks = [TaskPlan(f"migration-{i}", {"kind": "feature", "steps": _u(rng, 2, 4), "migration": True}, f"impl-{i}") for i in range(1, n + 1)]
    files = {f"migrations/{k:04d}": {"wid": f"seed.{k}", "unit": f"old-{k}", "by": "history"} for k in (265, 266)}
    cast = [Cast(f"impl-{i}", "implementer", _uniform(rng, 0, 60)) for i in range(1, n + 1)]
    return Setup(Plan(tasks, files), cast, _task_units(tasks))


def _stale_bug_pickup(rng: SeededRng) -> Setup:
    bugs = [TaskPlan(f"bug-{i}", {"kind": "bug", "steps": _u(rng, 1, 2)}) for i in range(1, _u(rng, 2, 4) + 1)]
    feature = TaskPlan("feature-1", {"kind": "feature", "steps": _u(rng, 6, 9)}, "impl-2")
    tasks = [*bugs, feature]
    cast = [Cast("impl-1", "implementer", _uniform(rng, 0, 30)), Cast("impl-2", "distracted", _uniform(rng, 0, 30))]
    return Setup(Plan(tasks), cast, _task_units(tasks))


def _triage_race(rng: SeededRng) -> Setup:
    crew = [f"impl-{i}" for i in range(1, _u(rng, 2, 3) + 1)]
    at, reports = 0.0, []
    for i in range(1, _u(rng, 3, 5) + 1):
        reports.append((at, f"bug-{i}", {"kind": "bug", "steps": _u(rng, 1, 3)}, None))
        at += _uniform(rng, 120, 420)
    cast = [Cast("reporter", "reporter", 0.0, {"reports": reports}, exempt=True)]
    cast.append(Cast("triage", "triage", _uniform(rng, 0, 20), {"implementers": crew, "expected": len(reports), "idle_max": 30.0}))
    cast += [Cast(name, "implementer", _uniform(rng, 0, 30), {"idle_max": 60.0}) for name in crew]
    units: list[Unit] = [("task", str(r[1])) for r in reports]
    return Setup(Plan(), cast, units, expected_tasks=len(reports))


def _stale_context(rng: SeededRng) -> Setup:
    keys = ["notes/decisions", "notes/api"][: _u(rng, 1, 2)]
    cast = []
    units: list[Unit] = []
    for i in range(1, _u(rng, 3, 4) + 1):
        rounds = _u(rng, 3, 5)
        cast.append(Cast(f"writer-{i}", "writer", _uniform(rng, 0, 120), {"keys": keys, "rounds": rounds, "offset": i}))
        units += [("note", keys[(r + i) % len(keys)], f"writer-{i}:r{r}") for r in range(rounds)]
    files: dict[str, Any] = {k: [] for k in keys}
    return Setup(Plan(files=files), cast, units)


def _crash_mid_task(rng: SeededRng) -> Setup:
    tasks = [TaskPlan(f"task-{i}", {"kind": "feature", "steps": _u(rng, 2, 5)}) for i in range(1, _u(rng, 6, 10) + 1)]
    cast = [Cast(f"impl-{i}", "implementer", _uniform(rng, 0, 30)) for i in range(1, 4)]
    return Setup(Plan(tasks), cast, _task_units(tasks))


def _zombie_commit(rng: SeededRng) -> Setup:
    crew = [f"impl-{i}" for i in range(1, _u(rng, 2, 3) + 1)]
    tasks = [TaskPlan(f"task-{i}", {"kind": "feature", "steps": _u(rng, 3, 6)}) for i in range(1, _u(rng, 4, 7) + 1)]
    cast = [Cast("lead", "triage", _uniform(rng, 0, 20), {"implementers": crew, "watchdog": True, "expected": len(tasks), "idle_max": 120.0})]
    cast += [Cast(name, "implementer", _uniform(rng, 0, 30)) for name in crew]
    return Setup(Plan(tasks), cast, _task_units(tasks))


def _busy_afternoon(rng: SeededRng) -> Setup:
    crew = [f"impl-{i}" for i in range(1, 5)]
    notes = ["notes/decisions", "notes/api", "notes/risks"]
    tasks: list[TaskPlan] = []
    for i in range(1, 81):
        work: dict[str, Any] = {"kind": "feature", "steps": _u(rng, 1, 4)}
        if rng.random() < 0.15:
            work["migration"] = True
        if rng.random() < 0.25:
            work["note"] = notes[_u(rng, 0, len(notes) - 1)]
        deps = (f"task-{_u(rng, 1, i - 1)}",) if i > 5 and rng.random() < 0.2 else ()
        tasks.append(TaskPlan(f"task-{i}", work, None, deps))
    at, reports = 600.0, []
    for i in range(1, 21):
        reports.append((at, f"bug-{i}", {"kind": "bug", "steps": _u(rng, 1, 3)}, None))
        at += _uniform(rng, 120, 480)
    files: dict[str, Any] = {k: [] for k in notes}
    files.update({f"migrations/{k:04d}": {"wid": f"seed.{k}", "unit": f"old-{k}", "by": "history"} for k in (265, 266)})
    cast = [Cast("reporter", "reporter", 0.0, {"reports": reports}, exempt=True)]
    cast.append(Cast("triage", "triage", _uniform(rng, 0, 30), {"implementers": crew, "watchdog": True, "expected": 100, "idle_max": 300.0, "poll": 180.0}))
    cast += [Cast(name, "implementer", _uniform(rng, 0, 60)) for name in crew]
    cast.append(Cast("reviewer", "reviewer", _uniform(rng, 0, 60), {"idle_max": 300.0, "poll": 180.0}))
    units = _task_units(tasks) + [("task", str(r[1])) for r in reports]
    return Setup(Plan(tasks, files), cast, units, expected_tasks=100)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "migration_collision",
            "two agents in two worktrees both write migrations/0267; one silently wins",
            ("lost_update",),
            "two or three agents each add a migration; each takes the next number, writes the SQL, and saves it under that number",
            _migration_collision,
            _profile(stall=0.08, pause=0.02, skew=0.3, crash=0.03, crash_after=0.03),
            HORIZON_S,
        ),
        Scenario(
            "stale_bug_pickup",
            "an agent starts fixing a bug that another agent closed ten minutes ago",
            ("stale_action",),
            "impl-1 fixes bugs; impl-2 reads the board, works on its feature for ten minutes, then picks up a bug from what it read",
            _stale_bug_pickup,
            _profile(),
            HORIZON_S,
        ),
        Scenario(
            "triage_race",
            "triage assigns a bug to A; B saw the report but not the assignment and starts too",
            ("stale_action", "duplicate_work"),
            "bug reports arrive; triage assigns each to an implementer; implementers see reports before and after triage does",
            _triage_race,
            _profile(lost_context=0.05),
            HORIZON_S,
        ),
        Scenario(
            "stale_context",
            "an agent's context fills with facts that are no longer true, and it writes from them",
            ("lost_update", "elle_cycle"),
            "three or four agents append their findings to shared notes: read the notes, think, write them back",
            _stale_context,
            _profile(lost_context=0.08, stall=0.05, skew=0.2),
            HORIZON_S,
        ),
        Scenario(
            "crash_mid_task",
            "an agent dies mid-task and its task stays 'in progress' forever",
            ("orphaned_task", "fencing_violation"),
            "three implementers work through a board while they crash: some come back with their transcript, some never",
            _crash_mid_task,
            _profile(crash=0.05, crash_stop=0.02, crash_after=0.02, stall=0.005, pause=0.0),
            HORIZON_S,
        ),
        Scenario(
            "zombie_commit",
            "an agent thought dead comes back and commits",
            ("fencing_violation",),
            "implementers freeze mid-task; a lead reassigns work whose holder looks dead; the frozen agent wakes and finishes,"
            " refused or not",
            _zombie_commit,
            _profile(pause=0.05, stall=0.04, ignore_refusal=0.5),
            HORIZON_S,
        ),
        Scenario(
            "busy_afternoon",
            "all of the above at once",
            ("lost_update", "duplicate_work", "stale_action", "fencing_violation", "orphaned_task", "elle_cycle"),
            "triage, four implementers and a reviewer over 100 tasks (migrations, notes, dependencies, bug reports) with every fault",
            _busy_afternoon,
            _profile(hallucinate=0.05),
            2 * HORIZON_S,
            small=False,
        ),
    ]
}


def _register_partition() -> None:
    from .partition import PARTITION  # it builds on this module's pieces: imported once they exist

    SCENARIOS[PARTITION.name] = PARTITION


_register_partition()
