"""The Evidence view's data: the chaos report's rows, and one run's history.

The report comes from a file written by ``comity chaos report --json`` (``--evidence
FILE``), since the full report takes minutes; without one, a quick report (a few seeds
per row) is computed in the background the first time the view is opened, one at a
time.  A run is deterministic and fast (tens of milliseconds; a busy afternoon about a
second), so its history is run again on request, from its scenario, strategy and seed.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ...errors import Invalid

__all__ = ["Evidence", "load_report", "QUICK_SEEDS"]

QUICK_SEEDS = 3
QUICK_SCENARIOS = ["migration_collision", "stale_bug_pickup", "triage_race", "stale_context", "crash_mid_task", "zombie_commit"]
_RUNS_KEPT = 8


def load_report(path: str | Path) -> dict[str, Any]:
    """A report written by ``comity chaos report --json`` (``{"rows": [...], ...}``)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise Invalid("evidence", f"cannot read {p}: {e.strerror or e}") from None
    except ValueError:
        raise Invalid("evidence", f"{p} is not JSON; write it with `comity chaos report --json > {p.name}`") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise Invalid("evidence", f"{p} has no \"rows\"; write it with `comity chaos report --json > {p.name}`")
    data.setdefault("source", str(p))
    return data


class Evidence:
    def __init__(self, path: str | Path | None = None) -> None:
        self.report: dict[str, Any] | None = load_report(path) if path is not None else None
        self._lock = threading.Lock()
        self._computing = False
        self.error: str | None = None
        self._runs: OrderedDict[tuple[str, str, int, bool], dict[str, Any]] = OrderedDict()
        self._run_lock = threading.Lock()

    def status(self) -> str:
        if self.report is not None:
            return "ready"
        return "computing" if self._computing else ("failed" if self.error else "absent")

    def ensure(self) -> None:
        """Start the quick report in the background unless there is one or it is under way."""
        with self._lock:
            if self.report is not None or self._computing:
                return
            self._computing = True
        threading.Thread(target=self._compute, name="comity-dashboard-evidence", daemon=True).start()

    def _compute(self) -> None:
        try:
            from ...chaos.report import report

            rows = report(QUICK_SCENARIOS, None, range(QUICK_SEEDS), jobs=1)
            self.report = {
                "seeds": QUICK_SEEDS,
                "rows": [r.to_json() for r in rows],
                "source": f"a quick report computed by this server ({QUICK_SEEDS} seeds per row, busy_afternoon left out)",
                "command": f"comity chaos report --seeds 1000 --json > evidence.json, then --evidence evidence.json",
            }
        except Exception as e:  # shown on the page; the server goes on
            self.error = f"{type(e).__name__}: {e}"
        finally:
            with self._lock:
                self._computing = False

    def run(self, scenario: str, strategy: str, seed: int, quiet: bool = False) -> dict[str, Any]:
        """One run's result with its history (kept for the last few asked)."""
        from ...chaos.runner import run
        from ...chaos.scenarios import SCENARIOS
        from ...chaos.strategies import STRATEGIES

        if scenario not in SCENARIOS:
            raise Invalid("scenario", f"{scenario!r:.60} is not a scenario; use one of {', '.join(SCENARIOS)}")
        if strategy not in STRATEGIES:
            raise Invalid("strategy", f"{strategy!r:.60} is not a strategy; use one of {', '.join(STRATEGIES)}")
        if not 0 <= seed < 2**32:
            raise Invalid("seed", "must be in [0, 2^32)")
        key = (scenario, strategy, seed, quiet)
        with self._run_lock:  # one at a time: a 2-core server must not run ten at once
            hit = self._runs.get(key)
            if hit is None:
                r = run(scenario, strategy, seed, quiet=quiet)
                hit = r.to_json(history=True)
                hit["fault_descriptions"] = [f.describe() for f in r.schedule.faults]
                self._runs[key] = hit
                while len(self._runs) > _RUNS_KEPT:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(key)
            return hit
