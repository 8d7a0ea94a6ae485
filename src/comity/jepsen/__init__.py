"""Jepsen-style workloads over real processes: histories per operation (invoke, ok, fail,
info), offline checkers, and a nemesis that kills, pauses and disconnects.

``python -m comity.jepsen`` (and ``make jepsen``) runs them; ``tests/test_jepsen.py``
runs short versions of each.  The workloads, what each checker checks and the results
are in the README ("Jepsen-style workloads").
"""

from __future__ import annotations

from .history import Op, Recorder, completed, read_history
from .runner import FAULTS, Config, run
from .workloads import WORKLOADS

__all__ = ["run", "Config", "FAULTS", "WORKLOADS", "Op", "Recorder", "read_history", "completed"]
