"""The chaos harness: scenarios from docs/design.md's failures, agent models with the
faults of LLM agents, a nemesis, interchangeable coordination strategies, Jepsen-style
histories and checkers, and an explorer that finds, shrinks and replays failures.

Layering: the harness drives the services (``comity.work``), coordination and the
store through the seams (``comity.runtime``), exactly as a face would.
"""

from __future__ import annotations

from .checkers import CHECKERS, check
from .history import Anomaly, History, Op
from .nemesis import Fault, Nemesis, Profile, Schedule
from .runner import RunResult, run
from .scenarios import SCENARIOS, Scenario
from .strategies import STRATEGIES, Strategy

__all__ = [
    "run",
    "RunResult",
    "SCENARIOS",
    "Scenario",
    "STRATEGIES",
    "Strategy",
    "CHECKERS",
    "check",
    "History",
    "Op",
    "Anomaly",
    "Fault",
    "Schedule",
    "Profile",
    "Nemesis",
]
