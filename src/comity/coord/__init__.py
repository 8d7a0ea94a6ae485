"""Coordination: leases with fencing, sequences, liveness and path reservations."""

from __future__ import annotations

from .leases import DEFAULT_TTL_S, Lease, Leases
from .liveness import AgentStatus, PhiAccrual, agents, heartbeat
from .reservations import Reservation, overlaps, release, reservations, reserve
from .sequences import Allocation, allocate, next_number, raise_to, reserve_block

__all__ = [
    "Lease",
    "Leases",
    "DEFAULT_TTL_S",
    "next_number",
    "allocate",
    "Allocation",
    "raise_to",
    "reserve_block",
    "PhiAccrual",
    "AgentStatus",
    "agents",
    "heartbeat",
    "Reservation",
    "overlaps",
    "reserve",
    "release",
    "reservations",
]
