"""The store: per-key causal state, the log, and the guarded transaction.

``open()`` finds or creates a store; ``store.session(agent)`` is one agent's
connection.  Every write goes through one primitive, :meth:`Session.txn`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..runtime import Clock, Rng, SystemClock, SystemRng
from ._api import News, Session, Store, TxnResult, Versioned, Written
from ._check import Problem, Report
from ._check import check as _check
from ._check import salvage
from ._codec import AUTH_PREFIX
from ._backend import Backend, EventRow, KeyRow, LeaseRow, SessionRow, StoreMeta, Tx
from ._discovery import check_location, discover, resolve_path
from ._postgres import PostgresBackend, is_postgres_url
from ._sqlite import PRAGMAS, SCHEMA_VERSION, SQLiteBackend
from ._txn import Absent, Acquire, Create, Delete, Guard, Holds, Next, Note, Op, Put, Release, Renew, Unchanged, Update

__all__ = [
    "open",
    "check",
    "salvage",
    "Problem",
    "Report",
    "AUTH_PREFIX",
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
    "PostgresBackend",
    "PRAGMAS",
    "SCHEMA_VERSION",
]


def locate(location: str | os.PathLike[str] | None = None) -> tuple[Path | str, str]:
    """Where ``open(location)`` would put the store (a file, or a postgres URL), and why."""
    if location is None:
        location = os.environ.get("COMITY_STORE") or None
    if location is None:
        return discover()
    check_location(str(location))
    if isinstance(location, str) and is_postgres_url(location):
        return location, "given"
    return resolve_path(location), "given"


def check(location: str | os.PathLike[str] | None = None, *, quick: bool = False) -> Report:
    """Check the store at ``location`` (found as :func:`open` finds it) without changing it:
    a :class:`Report` whose problems each say what is wrong and what to do.  ``quick`` skips
    the page-by-page and state-by-state parts (``comity init`` runs it quick)."""
    where, _why = locate(location)
    return _check(where, quick=quick)


def open(  # noqa: A001 - comity.open mirrors the builtin on purpose
    location: str | os.PathLike[str] | None = None,
    *,
    clock: Clock | None = None,
    rng: Rng | None = None,
    max_value_bytes: int | None = None,
    busy_timeout: float = 30.0,
    request_retention: float | None = None,
    create: bool = True,
) -> Store:
    """Open the store at ``location``; with ``create`` (the default), make it if nothing is
    there.  Without, a missing store is ``Unavailable`` ("no store at …"): reads never
    create one.  A file that is there but is not a comity store is never replaced.

    ``request_retention``: seconds a request's recorded outcome answers its retries
    (default ``$COMITY_REQUEST_RETENTION_S``, else a day).

    With no location: ``$COMITY_STORE``, else the git common directory of the
    current repository (shared by all its worktrees), else ``./.comity``.
    ``postgresql://user@host/db?schema=NAME`` opens (creating) schema NAME (default
    ``comity``) of a PostgreSQL database; leases there expire by the database's clock
    unless a ``clock`` is passed (tests).
    """
    where, _why = locate(location)
    rng = rng or SystemRng()
    backend: Backend
    if isinstance(where, str):
        backend = PostgresBackend(where, clock=clock, rng=rng, busy_timeout=busy_timeout, create=create)
    else:
        backend = SQLiteBackend(where, clock=clock or SystemClock(), rng=rng, busy_timeout=busy_timeout, create=create)
    try:
        return Store(backend, clock=clock or SystemClock(), rng=rng, max_value_bytes=max_value_bytes, request_retention=request_retention)
    except BaseException:
        backend.close()  # a bad option must not leak the file handle or the connection pool
        raise
