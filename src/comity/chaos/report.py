"""The evidence: every scenario under every strategy over many seeds.

Each row is one scenario under one strategy: how many runs, in how many of them each
checker found an anomaly, the mean completion (units of work done correctly by the
horizon over the units a fault-free run completes), and how many distinct histories
the seeds gave.  Runs are spread over processes; each is deterministic, so the table
does not depend on how many.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .checkers import CHECKERS
from .runner import run
from .scenarios import SCENARIOS
from .strategies import STRATEGIES

__all__ = ["Row", "RunSummary", "report", "summarize", "markdown_table", "REPORT_COMMAND"]

REPORT_COMMAND = "comity chaos report --seeds 1000 --markdown"


@dataclass(frozen=True, slots=True)
class RunSummary:
    scenario: str
    strategy: str
    seed: int
    history_hash: str
    anomalies: dict[str, int]
    completion: float
    faults: int


@dataclass(slots=True)
class Row:
    scenario: str
    strategy: str
    runs: int = 0
    anomalies: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CHECKERS})
    completion: float = 0.0
    distinct_histories: int = 0
    first_failing_seed: dict[str, int] = field(default_factory=dict)
    faults: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "strategy": self.strategy,
            "runs": self.runs,
            "anomalies": dict(self.anomalies),
            "completion": round(self.completion, 4),
            "distinct_histories": self.distinct_histories,
            "first_failing_seed": dict(self.first_failing_seed),
            "faults_injected": self.faults,
        }


def summarize(job: tuple[str, str, int]) -> RunSummary:
    scenario, strategy, seed = job
    r = run(scenario, strategy, seed)
    return RunSummary(scenario, strategy, seed, r.history_hash, r.counts(), r.completion, len(r.schedule.faults))


def _rows(summaries: Iterable[RunSummary], order: list[tuple[str, str]]) -> list[Row]:
    by: dict[tuple[str, str], list[RunSummary]] = {k: [] for k in order}
    for s in summaries:
        by[(s.scenario, s.strategy)].append(s)
    rows = []
    for (scenario, strategy), runs in by.items():
        runs.sort(key=lambda s: s.seed)
        row = Row(scenario, strategy, len(runs))
        for s in runs:
            for c, n in s.anomalies.items():
                if n:
                    row.anomalies[c] += 1
                    row.first_failing_seed.setdefault(c, s.seed)
            row.faults += s.faults
        row.completion = sum(s.completion for s in runs) / len(runs) if runs else 0.0
        row.distinct_histories = len({s.history_hash for s in runs})
        rows.append(row)
    return rows


def report(
    scenarios: list[str] | None = None,
    strategies: list[str] | None = None,
    seeds: Iterable[int] = range(100),
    *,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """Run every scenario × strategy × seed; ``progress(done, total)`` after each run."""
    scenarios = scenarios or list(SCENARIOS)
    strategies = strategies or list(STRATEGIES)
    order = [(sc, st) for sc in scenarios for st in strategies]
    # The longest runs first, so the last worker is not left with one long tail.
    weight = {"busy_afternoon": 0}
    work = [(sc, st, seed) for sc, st in sorted(order, key=lambda k: (weight.get(k[0], 1), k[1] != "comity")) for seed in seeds]
    total = len(work)
    jobs = jobs or os.cpu_count() or 1
    out: list[RunSummary] = []
    if jobs <= 1 or total < 8:
        for i, job in enumerate(work, 1):
            out.append(summarize(job))
            if progress:
                progress(i, total)
    else:
        # fork: workers start at once and need no importable __main__; nothing here holds a lock
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(jobs) as pool:
            for i, s in enumerate(pool.imap_unordered(summarize, work, chunksize=4), 1):
                out.append(s)
                if progress:
                    progress(i, total)
    return _rows(out, order)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown_table(rows: list[Row]) -> str:
    """The report as a Markdown table: one row per scenario × strategy."""
    checkers = list(CHECKERS)
    head = ["scenario", "strategy", "runs", *[c.replace("_", " ") for c in checkers], "completion", "distinct histories"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        cells = [r.scenario, f"**{r.strategy}**" if r.strategy == "comity" else r.strategy, str(r.runs)]
        cells += [str(r.anomalies[c]) if r.anomalies[c] else "·" for c in checkers]
        cells += [_pct(r.completion), str(r.distinct_histories)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
