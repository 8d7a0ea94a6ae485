"""The coordination strategies a scenario runs under, each behind the same client verbs.

The baselines, weakest first: ``none``, ``naive-locks`` and ``pool`` are what teams of
agents use today; ``careful-locks`` and ``cas`` are what a careful team would build
without comity.  ``comity`` is the real store behind a server; ``comity-embedded`` the
same store file opened by each agent process on its own clock.  Register a new strategy in
``STRATEGIES`` (the report's rows follow this order)."""

from __future__ import annotations

from .base import (
    LEASE_TTL_S,
    LOCK_TTL_S,
    STALE_AFTER_S,
    BoardView,
    Client,
    FinalState,
    FinalTask,
    Grant,
    Plan,
    Refused,
    Snapshot,
    Strategy,
    TaskPlan,
    TaskView,
    Unknown,
)
from .careful import CarefulLocksStrategy
from .cas import CasStrategy
from .coordinated import ComityClient, ComityStrategy, StoreServer
from .embedded import EmbeddedComityStrategy
from .files import FileServer, NaiveLocksStrategy, NoneStrategy
from .pool import PoolStrategy

__all__ = [
    "STRATEGIES",
    "Strategy",
    "Client",
    "BASELINES",
    "NoneStrategy",
    "NaiveLocksStrategy",
    "PoolStrategy",
    "CarefulLocksStrategy",
    "CasStrategy",
    "FileServer",
    "ComityStrategy",
    "EmbeddedComityStrategy",
    "ComityClient",
    "StoreServer",
    "Refused",
    "Unknown",
    "Snapshot",
    "TaskView",
    "BoardView",
    "Grant",
    "Plan",
    "TaskPlan",
    "FinalState",
    "FinalTask",
    "LEASE_TTL_S",
    "LOCK_TTL_S",
    "STALE_AFTER_S",
]

_ALL: list[type[Strategy]] = [NoneStrategy, NaiveLocksStrategy, PoolStrategy, CarefulLocksStrategy, CasStrategy, ComityStrategy, EmbeddedComityStrategy]
STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in _ALL}
BASELINES = [name for name, s in STRATEGIES.items() if s.baseline]
