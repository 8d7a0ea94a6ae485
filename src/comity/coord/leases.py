"""Leases with fencing tokens, on the guarded transaction.

A lease is granted when its resource is free or its holder's lease has expired by
the authority's clock; the grant carries a fencing token strictly greater than
every earlier one (a released lease keeps its token, so tokens never repeat).
Whose write counts is decided by the token, checked in the same transaction as
the write (Kleppmann, "How to do distributed locking", 2016; Burrows, "The Chubby
lock service", 2006), never by the clock or a failure detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..store import Acquire, Holds, Release, Renew, Session
from ..store._txn import DEFAULT_LEASE_S

__all__ = ["Lease", "Leases", "DEFAULT_TTL_S"]

DEFAULT_TTL_S = DEFAULT_LEASE_S  # the store's: one default for a lease, whoever grants it


@dataclass(frozen=True, slots=True)
class Lease:
    resource: str
    holder: str | None
    token: int
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {"resource": self.resource, "holder": self.holder, "token": self.token, "expires": self.expires}


class Leases:
    """Acquire, renew and release named leases for one session's agent."""

    def __init__(self, session: Session, *, system: bool = False) -> None:
        self.session = session
        self.system = system

    def acquire(self, resource: str, ttl: float = DEFAULT_TTL_S, *, steal: bool = False) -> Lease:
        r = self.session.txn(ops=[Acquire(resource, ttl, steal)], system=self.system).results[0]
        return Lease(resource, r["holder"], r["token"], r["expires"])

    def renew(self, resource: str, token: int, ttl: float | None = None) -> Lease:
        """Extend the lease by ``ttl`` seconds from now (default: the length it was acquired
        or last renewed with)."""
        r = self.session.txn(ops=[Renew(resource, token, ttl)], system=self.system).results[0]
        return Lease(resource, r["holder"], r["token"], r["expires"])

    def release(self, resource: str, token: int) -> None:
        self.session.txn(ops=[Release(resource, token)], system=self.system)

    def check(self, resource: str, token: int) -> None:
        """Raise Fenced or LeaseExpired unless ``token`` is current (a guard with no op)."""
        self.session.txn(guards=[Holds(resource, token)], system=self.system)

    def get(self, resource: str) -> tuple[Lease | None, float]:
        """The lease on ``resource`` (None if never granted) and the authority's time now."""
        rows, now = self.session.leases(resource, limit=1)
        for row in rows:
            if row.resource == resource:
                return Lease(row.resource, row.holder, row.token, row.expires), now
        return None, now

    def under(self, prefix: str, *, limit: int = 100_000) -> tuple[list[Lease], float]:
        """Every lease whose resource starts with ``prefix`` (released ones included), and the
        authority's time now, from one snapshot."""
        rows, now = self.session.leases(prefix, limit=limit)
        return [Lease(r.resource, r.holder, r.token, r.expires) for r in rows], now
