"""Sequences: unique, increasing, durable numbers, never reissued.

One :class:`~comity.store.Next` operation inside the store's write transaction: no
retry loop, no lost number across processes (the number is durable before it is
returned; a crash after that leaves a gap, never a duplicate).
"""

from __future__ import annotations

from ..store import Next, Session

__all__ = ["next_number"]


def next_number(session: Session, name: str) -> int:
    """The next number of sequence ``name`` (1 for a new sequence)."""
    result = session.txn(ops=[Next(name)], system=True).results[0]
    return int(result["value"])
