"""The explorer: random seeds, a systematic search over fault points, shrinking.

*Random*: run seeds with the scenario's random nemesis; each failing run's schedule
(the faults it injected) replays it exactly.

*Systematic* (after Filibuster, Meiklejohn et al., SoCC 2021): run the scenario once
without faults, recording every fault point it reaches and the fault kinds each
admits; inject each (point, kind) alone; then pairs.  Pruned as equivalent:

- before running, a fault at an idle poll whose answer repeats the agent's previous
  poll (the same ``ready`` or ``board`` answer): it is the same situation again;
- after running, a fault whose run behaves as the fault-free run (each process did
  and was told the same, and the end state is the same: it changed nothing), and
  faults whose runs behave as an earlier fault's (one representative is paired);
- a pair (a, b) whose second point the run with ``a`` alone never reaches.

*Shrinking*: delta debugging (Zeller & Hildebrandt, "Simplifying and isolating
failure-inducing input", TSE 2002) over a failing schedule's faults, then halving
each remaining fault's size (a pause's length, a delay), while the same checker still
fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .history import History
from .nemesis import Fault
from .runner import RunResult, run
from .scenarios import SCENARIOS
from .strategies import Strategy

__all__ = ["Systematic", "Shrunk", "systematic", "shrink", "random_search", "behaviour", "RandomSearch"]

StrategyRef = type[Strategy] | str
Progress = Callable[[int, int], None]


def behaviour(h: History) -> str:
    """What each process did and was told, in its own order, without times (a delay
    that changes no answer changes nothing), and the final state: two faults with the
    same behaviour are observationally equivalent."""
    per: dict[str, list[Any]] = {}
    for o in h:
        if o.process == "nemesis" or o.type == "invoke":
            continue
        # Op indices (a claim's basis) shift with every nemesis entry: not behaviour.
        value = {k: v for k, v in o.value.items() if not (k == "basis" and isinstance(v, int))}
        per.setdefault(o.process, []).append([o.type, o.f, value])
    return hashlib.sha256(json.dumps(sorted(per.items()), sort_keys=True, default=str).encode()).hexdigest()


@dataclass(slots=True)
class Failure:
    faults: list[Fault]
    anomalies: dict[str, int]
    history_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"faults": [f.to_json() for f in self.faults], "anomalies": {k: v for k, v in self.anomalies.items() if v}, "history_hash": self.history_hash}


@dataclass(slots=True)
class Systematic:
    scenario: str
    strategy: str
    seed: int
    fault_points: int = 0  # distinct points the fault-free run reached
    candidates: int = 0  # (point, kind) combinations
    pruned_repeats: int = 0  # pruned before running: repeats of an idle poll
    singles_run: int = 0
    singles_no_effect: int = 0
    representatives: int = 0  # distinct behaviours among singles that had an effect
    pairs_considered: int = 0
    pairs_unreachable: int = 0
    pairs_run: int = 0
    budget_exhausted: bool = False
    failures: list[Failure] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return 1 + self.singles_run + self.pairs_run

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "strategy": self.strategy, "seed": self.seed,
            "fault_points": self.fault_points, "combinations": self.candidates,
            "pruned_repeats": self.pruned_repeats, "singles_run": self.singles_run,
            "singles_no_effect": self.singles_no_effect, "representatives": self.representatives,
            "pairs_considered": self.pairs_considered, "pairs_unreachable": self.pairs_unreachable,
            "pairs_run": self.pairs_run, "runs": self.runs, "budget_exhausted": self.budget_exhausted,
            "failures": len(self.failures), "distinct_failures": len({f.history_hash for f in self.failures}),
            "first_failure": self.failures[0].to_json() if self.failures else None,
        }  # fmt: skip


def _repeat_points(h: History) -> set[str]:
    """``P:k`` of polls (``ready``, ``board``) whose answer repeats that process's previous poll."""
    out: set[str] = set()
    last: dict[tuple[str, str], str] = {}
    k_of: dict[int, int] = {}
    count: dict[str, int] = {}
    for o in h:
        if o.type == "invoke":
            count[o.process] = k_of[o.index] = count.get(o.process, 0) + 1
            continue
        if o.invoke is None or o.f not in ("ready", "board"):
            continue
        answer = json.dumps([o.type, o.value], sort_keys=True)
        key = (o.process, o.f)
        if last.get(key) == answer:
            out.add(f"{o.process}:{k_of[o.invoke]}")
        last[key] = answer
    return out


def _point_owner(point: str) -> str | None:
    """``P:k`` for points that belong to operation k of process P."""
    parts = point.split(":")
    if parts[0] in ("op", "msg") and len(parts) >= 3:
        return f"{parts[1]}:{parts[2]}"
    return None


def _candidates(base: RunResult, scenario: str) -> tuple[list[Fault], int, int]:
    profile = SCENARIOS[scenario].profile
    seen: set[tuple[str, str]] = set()
    points: set[str] = set()
    out: list[Fault] = []
    repeats = _repeat_points(base.history)
    pruned = 0
    for point, kinds in base.points:
        points.add(point)
        for kind in kinds:
            if not profile.uses(kind):
                continue  # not a fault this scenario's nemesis uses
            if (point, kind) in seen:
                continue
            seen.add((point, kind))
            if _point_owner(point) in repeats:
                pruned += 1
                continue
            out.append(Fault(point, kind, profile.typical(kind)))
    return out, len(points), pruned


def systematic(
    scenario: str,
    strategy: StrategyRef,
    seed: int = 0,
    *,
    budget: int | None = None,
    pairs: bool = True,
    progress: Progress | None = None,
) -> Systematic:
    """Inject each fault point's faults alone, then in pairs, within ``budget`` runs."""
    name = strategy if isinstance(strategy, str) else strategy.name
    out = Systematic(scenario, name, seed)
    base = run(scenario, strategy, seed, faults=[], record_points=True)
    base_behaviour = behaviour(base.history)
    singles, out.fault_points, out.pruned_repeats = _candidates(base, scenario)
    out.candidates = len(singles) + out.pruned_repeats
    limit = budget if budget is not None else 1 << 30
    planned = min(limit, len(singles))
    reps: list[tuple[Fault, set[str]]] = []
    seen_behaviour: set[str] = {base_behaviour}
    spent = 0

    def tick() -> None:
        if progress:
            progress(spent, max(planned, spent))

    for f in singles:
        if spent >= limit:
            out.budget_exhausted = True
            break
        r = run(scenario, strategy, seed, faults=[f], record_points=pairs)
        spent += 1
        out.singles_run += 1
        effect = behaviour(r.history)
        if r.anomalies:
            out.failures.append(Failure([f], r.counts(), r.history_hash))
        if effect == base_behaviour:
            out.singles_no_effect += 1
        elif effect not in seen_behaviour:
            seen_behaviour.add(effect)
            reps.append((f, {p for p, _ in r.points}))
        tick()
    out.representatives = len(reps)
    if pairs and not out.budget_exhausted:
        planned = min(limit, spent + len(reps) * (len(reps) - 1) // 2)
        for i, (a, reach) in enumerate(reps):
            for second, _ in reps[i + 1 :]:
                out.pairs_considered += 1
                if second.point not in reach:
                    out.pairs_unreachable += 1
                    continue
                if spent >= limit:
                    out.budget_exhausted = True
                    continue
                r = run(scenario, strategy, seed, faults=[a, second])
                spent += 1
                out.pairs_run += 1
                if r.anomalies:
                    out.failures.append(Failure([a, second], r.counts(), r.history_hash))
                tick()
    return out


@dataclass(slots=True)
class Shrunk:
    original: list[Fault]
    faults: list[Fault]
    checker: str
    runs: int
    result: RunResult

    def to_json(self) -> dict[str, Any]:
        return {
            "checker": self.checker,
            "from_faults": len(self.original),
            "to_faults": len(self.faults),
            "runs": self.runs,
            "faults": [f.to_json() for f in self.faults],
            "history_hash": self.result.history_hash,
            "operations": sum(1 for o in self.result.history if o.type == "invoke"),
        }


def shrink(
    scenario: str,
    strategy: StrategyRef,
    seed: int,
    faults: list[Fault],
    checker: str | None = None,
    *,
    budget: int = 400,
) -> Shrunk:
    """The smallest schedule found (by ddmin, then smaller fault sizes) on which
    ``checker`` (default: the first one that fails) still finds an anomaly."""
    first = run(scenario, strategy, seed, faults=faults)
    if checker is None:
        failing = [c for c, n in first.counts().items() if n]
        if not failing:
            raise ValueError("the schedule does not fail: nothing to shrink")
        checker = failing[0]
    target = checker
    runs = 1
    best = first
    cache: dict[str, RunResult | None] = {}

    def fails(fs: list[Fault]) -> bool:
        nonlocal runs, best
        key = json.dumps([f.to_json() for f in fs], sort_keys=True)
        if key not in cache:
            if runs >= budget:
                return False
            runs += 1
            r = run(scenario, strategy, seed, faults=fs)
            cache[key] = r if r.failed(target) else None
        hit = cache[key]
        if hit is not None:
            best = hit
            return True
        return False

    current = list(faults)
    if not fails(current):
        raise ValueError(f"the schedule does not make {target} fail")
    n = 2
    while len(current) >= 2:
        chunk = max(1, len(current) // n)
        parts = [current[i : i + chunk] for i in range(0, len(current), chunk)]
        reduced = False
        for i in range(len(parts)):
            complement = [f for j, p in enumerate(parts) if j != i for f in p]
            if complement and fails(complement):
                current, n, reduced = complement, max(n - 1, 2), True
                break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), n * 2)
    if len(current) == 1 and fails([]):
        current = []
    i = 0
    while i < len(current):  # 1-minimal: no single fault can go
        trial = current[:i] + current[i + 1 :]
        if fails(trial):
            current = trial
        else:
            i += 1
    profile = SCENARIOS[scenario].profile
    for i, f in enumerate(current):  # smaller is simpler: halve sizes while it still fails
        lo = profile.span(f.kind)[0]
        size = f.arg
        while abs(size) / 2 >= max(abs(lo), 1.0) and f.kind not in ("skew",):
            trial_fault = Fault(f.point, f.kind, round(size / 2, 3))
            trial = current[:i] + [trial_fault] + current[i + 1 :]
            if not fails(trial):
                break
            current, size = trial, trial_fault.arg
    fails(current)
    return Shrunk(list(faults), current, target, runs, best)


@dataclass(slots=True)
class RandomSearch:
    scenario: str
    strategy: str
    seeds: int = 0
    failing: dict[int, dict[str, int]] = field(default_factory=dict)
    first: RunResult | None = None

    def to_json(self) -> dict[str, Any]:
        by: dict[str, int] = {}
        for counts in self.failing.values():
            for c, n in counts.items():
                if n:
                    by[c] = by.get(c, 0) + 1
        return {
            "scenario": self.scenario, "strategy": self.strategy, "seeds": self.seeds,
            "failing_seeds": len(self.failing), "by_checker": by, "first_failing_seed": min(self.failing) if self.failing else None,
        }  # fmt: skip


def random_search(
    scenario: str, strategy: StrategyRef, seeds: Iterable[int], *, progress: Progress | None = None, total: int = 0
) -> RandomSearch:
    name = strategy if isinstance(strategy, str) else strategy.name
    out = RandomSearch(scenario, name)
    for i, seed in enumerate(seeds, 1):
        r = run(scenario, strategy, seed)
        out.seeds += 1
        if r.anomalies:
            out.failing[seed] = r.counts()
            if out.first is None:
                out.first = r
        if progress:
            progress(i, total or i)
    return out
