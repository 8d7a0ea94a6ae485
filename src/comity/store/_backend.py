"""The backend Protocol: what an engine must do for comity to run on it.

A backend is little more than a transaction over a few tables: per-key causal
state, the event log, leases, recorded request outcomes and named sessions.
Everything with meaning (guards, contexts, siblings, news) is decided once, in
:mod:`comity.store._txn`, inside a backend transaction; so a second engine
(PostgreSQL) implements storage, locking and durability, not semantics.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

LEASE_PREFIX = "@lease/"  # leases' events are logged under this key prefix

__all__ = ["LEASE_PREFIX", "Backend", "Tx", "StoreMeta", "KeyRow", "LeaseRow", "EventRow", "SessionRow"]


@dataclass(frozen=True, slots=True)
class StoreMeta:
    store_id: str
    replica_id: str
    secret: bytes
    schema_version: int
    location: str
    upstream: str | None = None  # a replica's upstream (where the authority is); None: this store is one


@dataclass(slots=True)
class KeyRow:
    """The causal state of one key: its DVVSet as JSON, its last HLC time and log position."""

    clock: str
    hlc: str
    pos: int
    live: bool = True  # False when every value is a tombstone


@dataclass(slots=True)
class LeaseRow:
    """A lease on a named resource.  ``holder`` is None once released; ``token`` never rewinds."""

    resource: str
    holder: str | None
    token: int
    expires: float
    pos: int = 0
    hlc: str = ""  # the HLC time of its last event, so the next one is later


class EventKey(NamedTuple):
    """An event's position, key and op (:meth:`Tx.skim`)."""

    pos: int
    key: str
    op: str


@dataclass(slots=True)
class EventRow:
    """One entry of the log.  ``pos`` is assigned by the backend on append."""

    key: str
    op: str
    agent: str
    session: str
    replica: str
    counter: int
    hlc: str
    request_id: str
    value: str | None = None
    detail: str | None = None
    prev: int = 0  # the previous event of the same key: a key's history is a chain
    seen: int | None = None  # log position of the read whose context the writer presented
    pos: int = 0
    # Where the event came from: None for an event written in this log (its origin position is
    # ``pos``), else its position in the log of the replica that wrote it (``replica``), for an
    # event that arrived by replication.  (replica, origin position) names an event everywhere.
    opos: int | None = None

    @property
    def origin(self) -> int:
        """The event's position in its origin replica's log."""
        return self.pos if self.opos is None else self.opos


@dataclass(slots=True)
class SessionRow:
    """What a named session has been shown, kept so another process or server resumes it.

    Every other session's event at or before ``position`` was shown, and so was each
    event of key ``k`` at or before ``ahead[k]`` (keyed answers run ahead of ``news()``).
    ``interest`` is the keys it touched; ``saved`` the authority's time of the save, by
    which idle sessions are forgotten."""

    name: str
    agent: str
    position: int
    interest: list[str]
    ahead: dict[str, int] = field(default_factory=dict)
    saved: float = 0.0


class Tx(Protocol):
    """One backend transaction.  A write transaction is durable when the context exits cleanly."""

    def now(self) -> float:
        """The authority's clock, in seconds since the epoch."""
        ...

    def head(self) -> int:
        """The greatest log position (0 for an empty log)."""
        ...

    def load(self, key: str) -> KeyRow | None: ...

    def load_many(self, keys: list[str]) -> list[KeyRow | None]:
        """:meth:`load` of each of ``keys``, in their order (one statement where it can)."""
        ...

    def save(self, key: str, row: KeyRow, prior: KeyRow | None) -> None:
        """Write a key's state; ``prior`` is the row it replaces (None when new)."""
        ...

    def touch(self, key: str, pos: int) -> None:
        """Move a key's head to a log-only event (a note) without changing its state."""
        ...

    def lease(self, resource: str) -> LeaseRow | None: ...

    def save_lease(self, row: LeaseRow) -> None: ...

    def append(self, event: EventRow) -> int:
        """Append to the log; returns the event's position, greater than every earlier one."""
        ...

    def events(
        self,
        after: int,
        *,
        keys: Collection[str] | None = None,
        exclude_session: str | None = None,
        limit: int = 100,
    ) -> list[EventRow]:
        """Events with position > ``after`` in log order, optionally only of ``keys``."""
        ...

    def skim(self, after: int, *, exclude_session: str | None = None, limit: int = 100) -> list[EventKey]:
        """What :meth:`events` (of every key) gives, as (position, key, op) only: for a reader
        that looks for the few events of its own keys among many."""
        ...

    def events_at(self, positions: list[int]) -> list[EventRow]:
        """The events at ``positions`` (those still in the log), in log order."""
        ...

    def recorded(self, request_id: str) -> tuple[str, str] | None:
        """The (digest, outcome JSON) recorded for a request id, if any."""
        ...

    def record(self, request_id: str, digest: str, outcome: str, at: float) -> None:
        """Record a request's outcome at time ``at`` (the authority's clock)."""
        ...

    def forget_requests(self, recorded_before: float) -> int:
        """Delete outcomes recorded before ``recorded_before``; returns how many.  Outcomes
        recorded before their time was kept are dated now instead."""
        ...

    def load_session(self, name: str) -> SessionRow | None: ...

    def save_session(self, row: SessionRow) -> None: ...

    def forget_sessions(self, saved_before: float) -> int:
        """Delete named sessions last saved before ``saved_before``; returns how many.
        Sessions saved before their save time was recorded are dated now instead."""
        ...

    def keys(self, prefix: str, limit: int, *, live_only: bool = True) -> list[str]:
        """Keys starting with ``prefix``, in order; tombstoned ones too unless ``live_only``.
        System keys ('@…') only when ``prefix`` starts with '@'."""
        ...

    def scan(self, prefix: str, limit: int, *, after: str | None = None) -> list[tuple[str, KeyRow]]:
        """Live keys starting with ``prefix`` (and greater than ``after``) and their states, in key order."""
        ...

    def expired(self, prefix: str, now: float, limit: int) -> list[LeaseRow]:
        """Held leases under ``prefix`` whose expiry is at or before ``now`` (orphaned work)."""
        ...

    def leases(self, prefix: str, limit: int) -> list[LeaseRow]:
        """Leases whose resource starts with ``prefix``, in order (released ones included)."""
        ...

    def acted(self, agent: str) -> bool:
        """Whether ``agent`` has any event in the log (it has acted in this store)."""
        ...

    # -- replication (comity.sync): what a replica has of every other, and its own settings

    def origins(self) -> dict[str, int]:
        """For each replica whose events arrived here (or that this file was copied from), the
        greatest origin position up to which this log holds every one of its events.  This
        replica's own entry is not kept: it is :meth:`head`."""
        ...

    def set_origin(self, replica: str, upto: int) -> None:
        """Record that this log now holds every event of ``replica`` up to origin position ``upto``."""
        ...

    def events_from(self, replica: str, after: int, limit: int) -> list[EventRow]:
        """Events whose origin is ``replica``, with origin position > ``after``, in origin order."""
        ...

    def states(self, after: str | None, limit: int) -> list[tuple[str, KeyRow]]:
        """Every key (tombstoned ones included) after ``after`` (None: from the first), in key order."""
        ...

    # -- compaction (Store.compact)

    def session_floor(self) -> int | None:
        """The least position a named session kept in the store has been shown (None: none kept)."""
        ...

    def compactable(self, before: int) -> tuple[int, int]:
        """(events before position ``before`` that compaction deletes, those it keeps: the last
        event of every key and lease, which the next write of it chains to)."""
        ...

    def compact(self, before: int, limit: int) -> dict[str, int]:
        """Delete up to ``limit`` of those events, oldest first; returns, per origin replica, the
        greatest origin position deleted, and under ``""`` how many were deleted."""
        ...

    def setting(self, name: str) -> str | None:
        """A store setting (a row of the store's metadata), or None."""
        ...

    def set_setting(self, name: str, value: str) -> None: ...


class Backend(Protocol):
    meta: StoreMeta

    def transaction(self, *, write: bool) -> AbstractContextManager[Tx]: ...

    def size(self) -> int:
        """Bytes the store takes on disk (or in its database)."""
        ...

    def reclaim(self) -> None:
        """Give the space of deleted rows back (after a compaction)."""
        ...

    def close(self) -> None: ...
