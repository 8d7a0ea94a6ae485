"""The evidence: every scenario under every strategy over many seeds.

Each seed of each scenario runs twice under each strategy: once without faults, and
once under the scenario's random nemesis with a *tight* horizon of twice that
fault-free run's time (how much of the work was done by then, as well as by the
scenario's long horizon).  A row is one scenario under one strategy, fault-free or
faulted: in how many runs each checker found an anomaly, the mean completion, and what
coordination cost (claims per finished task, steps wasted on refused, discarded or
duplicated work, refusals per agent, virtual time to finish).  For each scenario,
:func:`margins` compares comity with the *best* baseline (the one with the fewest runs
showing any anomaly).  Runs are spread over processes; each is deterministic, so the
table does not depend on how many.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .checkers import CHECKERS, OUTCOME, PRIMITIVE
from .explore import behaviour
from .runner import run
from .scenarios import SCENARIOS
from .sim import START
from .strategies import STRATEGIES

__all__ = ["Row", "RunSummary", "report", "summarize", "margins", "markdown_table", "REPORT_COMMAND", "TIGHT_FACTOR"]

REPORT_COMMAND = "comity chaos report --seeds 1000 --long-seeds 100 --markdown"
TIGHT_FACTOR = 2.0  # the tight horizon: this many times the fault-free run's time
FAULT_FREE, FAULTED = "none", "nemesis"


@dataclass(frozen=True, slots=True)
class RunSummary:
    scenario: str
    strategy: str
    seed: int
    faults: str  # FAULT_FREE or FAULTED
    history_hash: str
    behaviour: str
    anomalies: dict[str, int]
    completion: float
    completion_tight: float | None
    costs: dict[str, Any]
    injected: int


@dataclass(slots=True)
class Row:
    scenario: str
    strategy: str
    faults: str = FAULTED
    runs: int = 0
    anomalies: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CHECKERS})
    any_anomaly: int = 0
    any_outcome: int = 0  # runs with an anomaly of an outcome checker
    any_primitive: int = 0  # runs with an anomaly of a primitive checker
    completion: float = 0.0
    completion_tight: float | None = None
    claims_per_task: float = 0.0
    wasted_steps: float = 0.0
    refusals_per_agent: float = 0.0
    finished: int = 0  # runs that finished all the work by the horizon
    time_to_finish: float | None = None  # mean virtual seconds over those runs
    distinct_histories: int = 0
    distinct_behaviours: int = 0
    first_failing_seed: dict[str, int] = field(default_factory=dict)
    faults_injected: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "strategy": self.strategy,
            "baseline": STRATEGIES[self.strategy].baseline if self.strategy in STRATEGIES else None,
            "faults": self.faults,
            "runs": self.runs,
            "anomalies": dict(self.anomalies),
            "runs_with_anomaly": self.any_anomaly,
            "runs_with_outcome_anomaly": self.any_outcome,
            "runs_with_primitive_anomaly": self.any_primitive,
            "completion": round(self.completion, 4),
            "completion_tight": None if self.completion_tight is None else round(self.completion_tight, 4),
            "costs": {
                "claims_per_task": round(self.claims_per_task, 4),
                "wasted_steps": round(self.wasted_steps, 3),
                "refusals_per_agent": round(self.refusals_per_agent, 3),
                "finished_runs": self.finished,
                "time_to_finish_s": None if self.time_to_finish is None else round(self.time_to_finish, 1),
            },
            "distinct_histories": self.distinct_histories,
            "distinct_behaviours": self.distinct_behaviours,
            "first_failing_seed": dict(self.first_failing_seed),
            "faults_injected": self.faults_injected,
        }


def _summary(scenario: str, strategy: str, seed: int, faults: str, r: Any) -> RunSummary:
    return RunSummary(
        scenario, strategy, seed, faults, r.history_hash, behaviour(r.history), r.counts(), r.completion, r.completion_tight,
        r.costs.to_json(), len(r.schedule.faults),
    )  # fmt: skip


def summarize(job: tuple[str, str, int]) -> list[RunSummary]:
    """The fault-free run of one seed, then the faulted run with the tight horizon it sets."""
    scenario, strategy, seed = job
    quiet = run(scenario, strategy, seed, quiet=True)
    tight = TIGHT_FACTOR * (quiet.end - START)
    faulted = run(scenario, strategy, seed, tight=tight)
    return [_summary(scenario, strategy, seed, FAULT_FREE, quiet), _summary(scenario, strategy, seed, FAULTED, faulted)]


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else 0.0


def _rows(summaries: Iterable[RunSummary], order: list[tuple[str, str]]) -> list[Row]:
    by: dict[tuple[str, str, str], list[RunSummary]] = {(sc, st, f): [] for f in (FAULT_FREE, FAULTED) for sc, st in order}
    for s in summaries:
        by[(s.scenario, s.strategy, s.faults)].append(s)
    rows = []
    for (scenario, strategy, faults), runs in by.items():
        runs.sort(key=lambda s: s.seed)
        row = Row(scenario, strategy, faults, len(runs))
        for s in runs:
            hit = False
            for c, n in s.anomalies.items():
                if n:
                    hit = True
                    row.anomalies[c] += 1
                    row.first_failing_seed.setdefault(c, s.seed)
            row.any_anomaly += hit
            row.any_outcome += any(s.anomalies.get(c) for c in OUTCOME)
            row.any_primitive += any(s.anomalies.get(c) for c in PRIMITIVE)
            row.faults_injected += s.injected
        row.completion = _mean([s.completion for s in runs])
        tight = [s.completion_tight for s in runs if s.completion_tight is not None]
        row.completion_tight = _mean(tight) if tight else None
        row.claims_per_task = _mean([s.costs["claims_per_task"] for s in runs])
        row.wasted_steps = _mean([s.costs["wasted_steps"] for s in runs])
        row.refusals_per_agent = _mean([s.costs["refusals_per_agent"] for s in runs])
        done = [s.costs["finished_at"] for s in runs if s.costs["finished_at"] is not None]
        row.finished = len(done)
        row.time_to_finish = _mean(done) if done else None
        row.distinct_histories = len({s.history_hash for s in runs})
        row.distinct_behaviours = len({s.behaviour for s in runs})
        rows.append(row)
    scenarios = list(dict.fromkeys(sc for sc, _ in order))
    rows.sort(key=lambda r: (scenarios.index(r.scenario), r.faults != FAULT_FREE, order.index((r.scenario, r.strategy))))
    return rows


def report(
    scenarios: list[str] | None = None,
    strategies: list[str] | None = None,
    seeds: Iterable[int] = range(100),
    *,
    long_seeds: Iterable[int] | None = None,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """Run every scenario × strategy × seed, fault-free and faulted (``long_seeds`` for the
    scenarios that are not small: the busy afternoon); ``progress(done, total)``."""
    scenarios = scenarios or list(SCENARIOS)
    strategies = strategies or list(STRATEGIES)
    order = [(sc, st) for sc in scenarios for st in strategies]
    # The longest runs first, so the last worker is not left with one long tail.
    weight = {"busy_afternoon": 0}
    seed_list = list(seeds)
    long_list = seed_list if long_seeds is None else list(long_seeds)
    work = [(sc, st, seed) for sc, st in sorted(order, key=lambda k: (weight.get(k[0], 1), k[1] != "comity"))
            for seed in (seed_list if SCENARIOS[sc].small else long_list)]  # fmt: skip
    total = len(work)
    jobs = jobs or os.cpu_count() or 1
    out: list[RunSummary] = []
    if jobs <= 1 or total < 8:
        for i, job in enumerate(work, 1):
            out += summarize(job)
            if progress:
                progress(i, total)
    else:
        # fork: workers start at once and need no importable __main__; nothing here holds a lock
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(jobs) as pool:
            for i, s in enumerate(pool.imap_unordered(summarize, work, chunksize=4), 1):
                out += s
                if progress:
                    progress(i, total)
    return _rows(out, order)


def margins(rows: list[Row]) -> list[dict[str, Any]]:
    """Per scenario, fault-free and faulted: each of comity's strategies against the best
    baseline (fewest runs with any anomaly; then the most work done by the tight horizon;
    then the least waste)."""
    out = []
    keys = list(dict.fromkeys((r.scenario, r.faults) for r in rows))
    for scenario, faults in keys:
        group = [r for r in rows if r.scenario == scenario and r.faults == faults]
        bases = [r for r in group if STRATEGIES[r.strategy].baseline]
        if not bases:
            continue
        best = min(bases, key=lambda r: (r.any_anomaly, -(r.completion_tight or r.completion), r.wasted_steps))
        for ours in (r for r in group if not STRATEGIES[r.strategy].baseline):
            out.append({
                "scenario": scenario, "faults": faults, "strategy": ours.strategy, "runs": ours.runs, "best_baseline": best.strategy,
                "baseline_runs_with_anomaly": best.any_anomaly, "comity_runs_with_anomaly": ours.any_anomaly,
                "margin_runs": best.any_anomaly - ours.any_anomaly,
                "baseline_anomalies": {c: n for c, n in best.anomalies.items() if n},
                "comity_anomalies": {c: n for c, n in ours.anomalies.items() if n},
                "completion_tight": {"baseline": _r(best.completion_tight), "comity": _r(ours.completion_tight)},
                "completion": {"baseline": round(best.completion, 4), "comity": round(ours.completion, 4)},
                "wasted_steps": {"baseline": round(best.wasted_steps, 3), "comity": round(ours.wasted_steps, 3)},
                "claims_per_task": {"baseline": round(best.claims_per_task, 3), "comity": round(ours.claims_per_task, 3)},
            })  # fmt: skip
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


_SHORT = {
    "lost_update": "lost update", "duplicate_work": "duplicate work", "stale_action": "stale action",
    "fencing_violation": "fencing violation", "orphaned_task": "orphaned task", "impersonation": "impersonation", "elle_cycle": "elle cycle",
    "sequence": "sequence", "lease_overlap": "lease overlap", "lease_renewal": "lease renewal", "token_order": "token order",
    "allocation": "allocation", "durability": "durability", "divergence": "divergence",
}  # fmt: skip


def _name(r: Row) -> str:
    return f"**{r.strategy}**" if not STRATEGIES[r.strategy].baseline else r.strategy


def markdown_table(rows: list[Row], faults: str = FAULTED) -> str:
    """Runs with an anomaly per checker (outcome, then primitive), and the completion."""
    checkers = [c for c in (*OUTCOME, *PRIMITIVE) if c in CHECKERS] + [c for c in CHECKERS if c not in OUTCOME and c not in PRIMITIVE]
    head = ["scenario", "strategy", "runs", "any", *[_SHORT.get(c, c.replace("_", " ")) for c in checkers], "completion"]
    if faults == FAULTED:
        head.append(f"by {TIGHT_FACTOR:g}× fault-free time")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        if r.faults != faults:
            continue
        cells = [r.scenario, _name(r), str(r.runs), str(r.any_anomaly) if r.any_anomaly else "·"]
        cells += [str(r.anomalies[c]) if r.anomalies[c] else "·" for c in checkers]
        cells.append(_pct(r.completion))
        if faults == FAULTED:
            cells.append(_pct(r.completion_tight))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_costs(rows: list[Row]) -> str:
    """What coordination cost, faulted runs: claims, waste, refusals, time to finish."""
    head = ["scenario", "strategy", "claims per finished task", "wasted steps per run", "refusals per agent", "finished runs", "time to finish (virtual)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        if r.faults != FAULTED:
            continue
        ttf = "–" if r.time_to_finish is None else f"{r.time_to_finish / 60:.0f} min"
        lines.append(f"| {r.scenario} | {_name(r)} | {r.claims_per_task:.2f} | {r.wasted_steps:.1f} | {r.refusals_per_agent:.1f} | {r.finished}/{r.runs} | {ttf} |")
    return "\n".join(lines)


def markdown_margins(ms: list[dict[str, Any]]) -> str:
    head = ["scenario", "faults", "comity's strategy", "best baseline", "its runs with an anomaly", "comity's", "completion by 2× time (baseline / comity)", "wasted steps (baseline / comity)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(head) - 4)) + "|"]
    for m in ms:
        what = ", ".join(f"{_SHORT.get(c, c)} {n}" for c, n in m["baseline_anomalies"].items())
        ours = ", ".join(f"{_SHORT.get(c, c)} {n}" for c, n in m["comity_anomalies"].items())
        tight = m["completion_tight"]
        done = "–" if tight["baseline"] is None else f"{_pct(tight['baseline'])} / {_pct(tight['comity'])}"
        lines.append(
            f"| {m['scenario']} | {m['faults']} | {m['strategy']} | {m['best_baseline']} | {m['baseline_runs_with_anomaly']}/{m['runs']}"
            f"{f' ({what})' if what else ''} | {m['comity_runs_with_anomaly']}/{m['runs']}{f' ({ours})' if ours else ''} | {done} |"
            f" {m['wasted_steps']['baseline']:.1f} / {m['wasted_steps']['comity']:.1f} |"
        )
    return "\n".join(lines)
