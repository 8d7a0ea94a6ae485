"""``comity bench chaos``: how fast the simulator runs schedules.

The figure is busy-afternoon schedules per second under ``comity`` (the real store on
a SQLite file in tmpfs, six agents over a hundred tasks, the random nemesis).  The
baseline, measured in the same run over the same seeds, is the ``none`` strategy:
the same agents, scenario and nemesis over an in-memory dictionary, so the ratio is
what running comity's real store, coordination and task code costs the simulation.
A small scenario's run time (migration collision under comity) is reported too.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from ..chaos.runner import run

__all__ = ["bench_chaos"]


def _rate(strategy: str, seeds: range, tick: Callable[[], None]) -> tuple[float, int, float]:
    ops = 0
    virtual = 0.0
    start = time.perf_counter()
    for seed in seeds:
        r = run("busy_afternoon", strategy, seed)
        ops += sum(1 for o in r.history if o.type == "invoke")
        virtual += r.end - r.history[0].time if len(r.history) else 0.0
        tick()
    wall = time.perf_counter() - start
    return len(seeds) / wall, ops, virtual / wall


def bench_chaos(*, seeds: int = 20, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    total = 2 * seeds + 20
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    small = []
    for seed in range(20):
        t = time.perf_counter()
        run("migration_collision", "comity", seed)
        small.append(time.perf_counter() - t)
        tick()
    rate, ops, vspeed = _rate("comity", range(seeds), tick)
    base_rate, base_ops, _ = _rate("none", range(seeds), tick)
    return {
        "scenario": "busy_afternoon",
        "seeds": seeds,
        "schedules_s": round(rate, 3),
        "operations_s": round(ops * rate / seeds, 1),
        "virtual_seconds_per_second": round(vspeed, 1),
        "baseline": "the none strategy (same scenario, agents and nemesis over an in-memory dict)",
        "baseline_schedules_s": round(base_rate, 3),
        "ratio": round(rate / base_rate, 4) if base_rate else None,
        "small_run_ms_median": round(1000 * statistics.median(small), 2),
        "small_run": "migration_collision under comity, 20 seeds",
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
