"""Sequences: unique, increasing, durable numbers, never reissued.

One :class:`~comity.store.Next` operation inside the store's write transaction: no
retry loop, no lost number across processes (the number is durable before it is
returned; a crash after that leaves a gap, never a duplicate).  On a replica the
number comes from a block it reserved (:func:`reserve_block`), cut off or not, else from its
authority, so two replicas never issue the same number.

:func:`allocate` is what numbered artifacts (migrations) are given numbers by: the
sequence is first raised to a *floor* (the highest number already in use, found by
whoever asks), and with a *unit* of work (a task and what it makes), one unit holds
one number however often it asks: an agent that crashed after taking its number, a
retry whose answer was lost, or a successor that took the task over all get the
number the unit already holds (``@alloc/<sequence>/<unit>``, created if absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import StaleContext
from ..store import Create, Next, Put, Session
from ..sync import reserve_numbers, take_number

__all__ = ["next_number", "raise_to", "allocate", "Allocation", "ALLOC_PREFIX", "reserve_block"]

ALLOC_PREFIX = "@alloc/"
_RETRIES = 64


def next_number(session: Session, name: str, *, request_id: str | None = None, digest: str | None = None) -> int:
    """The next number of sequence ``name`` (1 for a new sequence).  With a ``request_id`` a
    retry gets the number the first attempt took, not another.  On a replica, a number of a
    block it reserved comes first."""
    if session.store.upstream is not None:
        escrowed = take_number(session, name)
        if escrowed is not None:
            return escrowed
    result = session.txn(ops=[Next(name)], system=True, request_id=request_id, digest=digest).results[0]
    return int(result["value"])


def raise_to(session: Session, name: str, floor: int) -> None:
    """Raise sequence ``name`` to at least ``floor`` (a guarded write; never lowers it).

    Safe across processes: two that raise concurrently both leave it at least at the
    floor, and ``Next`` then hands them distinct numbers above it."""
    key = "@seq/" + name
    for _ in range(_RETRIES):
        v = session.get(key)
        current = max((int(x) for x in v.values if isinstance(x, int)), default=0)
        if current >= floor:
            return
        try:
            session.txn(ops=[Put(key, floor, context=v.context, label="seed")], system=True)
            return
        except StaleContext:
            continue  # another process moved it: re-read, it may already be past the floor
    raise StaleContext(f"sequence {name!r} kept changing while seeding; retry", key=key)


def _segment(text: str) -> str:
    return quote(text, safe="._-").replace("%", "~") or "~"


def unit_key(name: str, unit: str) -> str:
    return f"{ALLOC_PREFIX}{name}/{_segment(unit)}"


@dataclass(frozen=True, slots=True)
class Allocation:
    """A number of a sequence, and whether the unit already held it (``held``)."""

    number: int
    held: bool = False
    record: dict[str, Any] | None = None


def allocate(session: Session, name: str, *, floor: int = 0, unit: str | None = None, detail: dict[str, Any] | None = None) -> Allocation:
    """A number of sequence ``name`` greater than ``floor`` and every number issued before.

    With ``unit``, the number the unit already holds if it holds one; otherwise a new
    number, recorded as the unit's (when two callers race for one unit, both get the
    one recorded first; the other number stays a gap, as a crash would leave it)."""
    key = unit_key(name, unit) if unit is not None else None
    if key is not None:
        held = session.get(key)
        if held.values and isinstance(held.values[0], dict):
            return Allocation(int(held.values[0]["number"]), True, held.values[0])
    if floor > 0:
        raise_to(session, name, floor)
    n = next_number(session, name)
    if key is None:
        return Allocation(n)
    record = {"sequence": name, "unit": unit, "number": n, "agent": session.agent, **(detail or {})}
    try:
        session.txn(ops=[Create(key, record, label="allocate")], system=True)
    except StaleContext:
        won = session.get(key)  # another caller allocated for this unit meanwhile: theirs counts
        if won.values and isinstance(won.values[0], dict):
            return Allocation(int(won.values[0]["number"]), True, won.values[0])
        raise
    return Allocation(n, False, record)


def reserve_block(session: Session, name: str, count: int, *, request: tuple[str, str] | None = None) -> dict[str, Any]:
    """On a replica, take a block of ``count`` numbers of ``name`` from the authority now, for
    :func:`next_number` to spend here later, connected or not.  With ``request`` (a request id
    and its digest) a retry gets the block the first attempt took, recorded once."""
    return reserve_numbers(session, name, count, request=request)
