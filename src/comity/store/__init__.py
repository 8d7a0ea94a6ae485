"""The store: per-key causal state, the log, and the guarded transaction.

``open()`` finds or creates a store; ``store.session(agent)`` is one agent's
connection.  Every write goes through one primitive, :meth:`Session.txn`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..runtime import Clock, Rng, SystemClock, SystemRng
from ._api import News, Session, Store, TxnResult, Versioned, Written
from ._backend import Backend, EventRow, KeyRow, LeaseRow, SessionRow, StoreMeta, Tx
from ._discovery import check_location, discover, resolve_path
from ._sqlite import PRAGMAS, SCHEMA_VERSION, SQLiteBackend
from ._txn import Absent, Acquire, Create, Delete, Guard, Holds, Next, Note, Op, Put, Release, Renew, Unchanged, Update

__all__ = [
    "open",
    "locate",
    "Store",
    "Session",
    "Versioned",
    "Written",
    "TxnResult",
    "News",
    "Unchanged",
    "Absent",
    "Holds",
    "Put",
    "Create",
    "Delete",
    "Acquire",
    "Renew",
    "Release",
    "Update",
    "Next",
    "Note",
    "Guard",
    "Op",
    "Backend",
    "Tx",
    "StoreMeta",
    "KeyRow",
    "LeaseRow",
    "EventRow",
    "SessionRow",
    "SQLiteBackend",
    "PRAGMAS",
    "SCHEMA_VERSION",
]


def locate(location: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Where ``open(location)`` would put the store, and why."""
    if location is None:
        location = os.environ.get("COMITY_STORE") or None
    if location is None:
        return discover()
    check_location(str(location))
    return resolve_path(location), "given"


def open(  # noqa: A001 - comity.open mirrors the builtin on purpose
    location: str | os.PathLike[str] | None = None,
    *,
    clock: Clock | None = None,
    rng: Rng | None = None,
    max_value_bytes: int | None = None,
    busy_timeout: float = 30.0,
) -> Store:
    """Open (creating if needed) the store at ``location``.

    With no location: ``$COMITY_STORE``, else the git common directory of the
    current repository (shared by all its worktrees), else ``./.comity``.
    """
    path, _why = locate(location)
    clock = clock or SystemClock()
    rng = rng or SystemRng()
    backend = SQLiteBackend(path, clock=clock, rng=rng, busy_timeout=busy_timeout)
    return Store(backend, clock=clock, rng=rng, max_value_bytes=max_value_bytes)
