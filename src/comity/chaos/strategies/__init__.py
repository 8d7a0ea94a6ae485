"""The coordination strategies a scenario runs under, each behind the same client verbs."""

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
from .coordinated import ComityClient, ComityStrategy, StoreServer
from .files import LocksStrategy, NoneStrategy
from .pool import PoolStrategy

__all__ = [
    "STRATEGIES",
    "Strategy",
    "Client",
    "NoneStrategy",
    "LocksStrategy",
    "PoolStrategy",
    "ComityStrategy",
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

STRATEGIES: dict[str, type[Strategy]] = {
    "none": NoneStrategy,
    "locks": LocksStrategy,
    "pool": PoolStrategy,
    "comity": ComityStrategy,
}
