"""The embedded backend: one SQLite file shared by every process on a host.

Connection discipline (docs/design.md, "Durability"): WAL, ``synchronous=FULL`` so a commit is
on disk before it is acknowledged, ``BEGIN IMMEDIATE`` for every write so no
read-modify-write races another process, a busy timeout, autocommit mode
(``isolation_level=None``) so no transaction or read cursor is left open
between calls.  comity's own schema carries a version (``PRAGMA user_version``)
and is migrated forward in a write transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from threading import get_ident
import time  # to wait out a lock while a fresh store is set up; to see a write wait (_queue)
from time import perf_counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import Invalid, Unavailable
from ..runtime import Clock, Rng
from ._backend import LEASE_PREFIX, EventKey, EventRow, KeyRow, LeaseRow, SessionRow, StoreMeta
from ._queue import SLOW_BEGIN_S, WriterQueue
from ._files import classify, damaged, foreign_database, has_tables, held, let_go, link_into_place, make_dirs, new_private_file, no_store

__all__ = ["SQLiteBackend", "PRAGMAS", "SCHEMA_VERSION"]

PRAGMAS = {"journal_mode": "wal", "synchronous": "FULL"}
DEFAULT_BUSY_TIMEOUT_S = 30.0
_OPEN_RETRY_S = 0.005

_EVENT_COLS = "pos, key, op, agent, session, replica, counter, hlc, request_id, value, detail, prev, seen, opos"


def _migration_1(db: sqlite3.Connection, rng: Rng) -> None:
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    db.execute(
        "CREATE TABLE keys (key TEXT PRIMARY KEY, clock TEXT NOT NULL, hlc TEXT NOT NULL, pos INTEGER NOT NULL,"
        " live INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID"
    )
    # Listing live keys under a prefix (the task queue's markers, `comity keys`) must not walk
    # tombstones; a partial index holds only live keys and changes only when liveness does.
    db.execute("CREATE INDEX keys_live ON keys (key) WHERE live = 1")
    db.execute(
        "CREATE TABLE events (pos INTEGER PRIMARY KEY, key TEXT NOT NULL, op TEXT NOT NULL, agent TEXT NOT NULL,"
        " session TEXT NOT NULL, replica TEXT NOT NULL, counter INTEGER NOT NULL, hlc TEXT NOT NULL,"
        " request_id TEXT NOT NULL, value TEXT, detail TEXT, prev INTEGER NOT NULL, seen INTEGER)"
    )
    # No (key, pos) index: each event points at the previous event of its key (``prev``),
    # and a key's history is walked from its head.  An index would cost every write one
    # more page in the WAL, which is most of what a durable commit costs.
    db.execute("CREATE TABLE requests (request_id TEXT PRIMARY KEY, digest TEXT NOT NULL, outcome TEXT NOT NULL) WITHOUT ROWID")
    db.execute(
        "CREATE TABLE leases (resource TEXT PRIMARY KEY, holder TEXT, token INTEGER NOT NULL, expires REAL NOT NULL,"
        " pos INTEGER NOT NULL, hlc TEXT NOT NULL) WITHOUT ROWID"
    )
    # Finding orphaned work (held leases past their expiry) must not scan every lease ever granted.
    db.execute("CREATE INDEX leases_held ON leases (expires) WHERE holder IS NOT NULL")
    db.execute("CREATE TABLE sessions (name TEXT PRIMARY KEY, agent TEXT NOT NULL, position INTEGER NOT NULL, interest TEXT NOT NULL) WITHOUT ROWID")
    db.executemany(
        "INSERT INTO meta (name, value) VALUES (?, ?)",
        [
            ("store_id", rng.new_id("s")[:17]),
            ("replica_id", rng.new_id("r")[:13]),
            ("secret", rng.token_bytes(32).hex()),
        ],
    )


def _migration_2(db: sqlite3.Connection, rng: Rng) -> None:
    # A session's keyed answers can run ahead of its news() position (``ahead``), and rows of
    # sessions idle past the retention are deleted by the time of their last save (``saved``;
    # 0 for rows saved before it was recorded: dated at the next clean-up).
    db.execute("ALTER TABLE sessions ADD COLUMN ahead TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE sessions ADD COLUMN saved REAL NOT NULL DEFAULT 0")


def _migration_3(db: sqlite3.Connection, rng: Rng) -> None:
    # Recorded request outcomes are kept for a window (Store.request_retention), then deleted
    # by the time they were recorded (0: recorded before it was kept: dated at the next clean-up).
    db.execute("ALTER TABLE requests ADD COLUMN at REAL NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX requests_at ON requests (at)")


def _migration_4(db: sqlite3.Connection, rng: Rng) -> None:
    # Replication: an event that arrived from another replica keeps its position there
    # (``opos``); only those are indexed by origin, so a local write costs no index page.
    db.execute("ALTER TABLE events ADD COLUMN opos INTEGER")
    db.execute("CREATE INDEX events_origin ON events (replica, opos) WHERE opos IS NOT NULL")
    db.execute("CREATE TABLE origins (replica TEXT PRIMARY KEY, upto INTEGER NOT NULL) WITHOUT ROWID")


def _migration_5(db: sqlite3.Connection, rng: Rng) -> None:
    # A key's history is walked along ``prev`` from its row, but an event noted on a key that
    # has no row (a refused write on ``@refused``, a heartbeat on ``@agent/NAME``) starts no
    # chain: every such event has prev = 0, as has the first event of every key.  Indexing
    # only those keeps the index about one entry per key, and finds the notes by key.
    db.execute("CREATE INDEX events_first ON events (key, pos) WHERE prev = 0")


# Each entry migrates the schema from version i to i+1.  Never edit a released one.
MIGRATIONS: list[Callable[[sqlite3.Connection, Rng], None]] = [_migration_1, _migration_2, _migration_3, _migration_4, _migration_5]
SCHEMA_VERSION = len(MIGRATIONS)


def _event(r: Any) -> EventRow:
    return EventRow(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[0], r[13])


class _Savepoint:
    """One transaction of a group commit (comity.store._group) inside the shared one."""

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> _Savepoint:
        self.db.execute("SAVEPOINT grouped")
        return self

    def rollback(self) -> None:
        self.db.execute("ROLLBACK TO grouped")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("RELEASE grouped")


class _SQLiteTx:
    __slots__ = ("db", "clock")
    lock = None  # SQLite's writers take turns: no keys to lock (a missing attribute costs getattr an exception)

    def __init__(self, db: sqlite3.Connection, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def now(self) -> float:
        return self.clock.now()

    def savepoint(self) -> _Savepoint:
        return _Savepoint(self.db)

    def head(self) -> int:
        row = self.db.execute("SELECT max(pos) FROM events").fetchone()
        return int(row[0] or 0)

    def load(self, key: str) -> KeyRow | None:
        row = self.db.execute("SELECT clock, hlc, pos, live FROM keys WHERE key = ?", (key,)).fetchone()
        return None if row is None else KeyRow(row[0], row[1], row[2], bool(row[3]))

    def load_many(self, keys: list[str]) -> list[KeyRow | None]:
        return [self.load(k) for k in keys]  # in process: a statement each costs no round trip

    def save(self, key: str, row: KeyRow, prior: KeyRow | None) -> None:
        if prior is not None and prior.live == row.live:
            # Liveness unchanged: leave the partial index alone (one page fewer to commit).
            self.db.execute("UPDATE keys SET clock = ?, hlc = ?, pos = ? WHERE key = ?", (row.clock, row.hlc, row.pos, key))
        else:
            self.db.execute(
                "INSERT INTO keys (key, clock, hlc, pos, live) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET clock = excluded.clock, hlc = excluded.hlc, pos = excluded.pos, live = excluded.live",
                (key, row.clock, row.hlc, row.pos, int(row.live)),
            )

    def touch(self, key: str, pos: int) -> None:
        self.db.execute("UPDATE keys SET pos = ? WHERE key = ?", (pos, key))

    def lease(self, resource: str) -> LeaseRow | None:
        row = self.db.execute("SELECT holder, token, expires, pos, hlc FROM leases WHERE resource = ?", (resource,)).fetchone()
        return None if row is None else LeaseRow(resource, row[0], row[1], row[2], row[3], row[4])

    def save_lease(self, row: LeaseRow) -> None:
        self.db.execute(
            "INSERT INTO leases (resource, holder, token, expires, pos, hlc) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (resource)"
            " DO UPDATE SET holder = excluded.holder, token = excluded.token, expires = excluded.expires,"
            " pos = excluded.pos, hlc = excluded.hlc",
            (row.resource, row.holder, row.token, row.expires, row.pos, row.hlc),
        )

    def append(self, e: EventRow) -> int:
        cur = self.db.execute(
            "INSERT INTO events (key, op, agent, session, replica, counter, hlc, request_id, value, detail, prev, seen, opos)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.key, e.op, e.agent, e.session, e.replica, e.counter, e.hlc, e.request_id, e.value, e.detail, e.prev, e.seen, e.opos),
        )
        e.pos = int(cur.lastrowid or 0)
        return e.pos

    def events(
        self,
        after: int,
        *,
        keys: Collection[str] | None = None,
        exclude_session: str | None = None,
        limit: int = 100,
    ) -> list[EventRow]:
        if keys is None:
            sql = f"SELECT {_EVENT_COLS} FROM events WHERE pos > ?"
            args: tuple[object, ...] = (after,)
            if exclude_session is not None:
                sql += " AND session != ?"
                args += (exclude_session,)
            rows = self.db.execute(sql + " ORDER BY pos LIMIT ?", (*args, limit)).fetchall()
        else:
            rows = []
            for key in keys:
                rows += self._history(key, after, exclude_session)
            rows.sort(key=lambda r: r[0])
            rows = rows[:limit]
        return [_event(r) for r in rows]

    def skim(self, after: int, *, exclude_session: str | None = None, limit: int = 100) -> list[EventKey]:
        if exclude_session is None:
            rows = self.db.execute("SELECT pos, key, op FROM events WHERE pos > ? ORDER BY pos LIMIT ?", (after, limit))
        else:
            rows = self.db.execute(
                "SELECT pos, key, op FROM events WHERE pos > ? AND session != ? ORDER BY pos LIMIT ?", (after, exclude_session, limit)
            )
        return [EventKey(*r) for r in rows.fetchall()]

    def events_at(self, positions: list[int]) -> list[EventRow]:
        rows: list[Any] = []
        for i in range(0, len(positions), 500):  # under SQLite's limit of bound parameters
            chunk = positions[i : i + 500]
            rows += self.db.execute(f"SELECT {_EVENT_COLS} FROM events WHERE pos IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        rows.sort(key=lambda r: r[0])
        return [_event(r) for r in rows]

    def _history(self, key: str, after: int, exclude_session: str | None) -> list[Any]:
        """The events of one key after ``after``: its ``prev`` chain walked back from its head,
        and the events that start no chain (prev = 0: notes on a key with no row, such as
        ``@refused``, and a key's first event), found by the ``events_first`` index."""
        head = self.db.execute(
            "SELECT pos FROM keys WHERE key = ? UNION ALL SELECT pos FROM leases WHERE ? = resource",
            (key, key[len(LEASE_PREFIX) :] if key.startswith(LEASE_PREFIX) else None),
        ).fetchone()
        if head is not None and 0 < head[0] <= after:
            # A key with a row (or a lease) has its last event there: every write and note of
            # it moves the row's pos, so nothing of it comes after.  A row at position 0 (its
            # state arrived by replication without its events) names no event: the notes made
            # before it are found by key below.
            return []
        rows = self.db.execute(f"SELECT {_EVENT_COLS} FROM events WHERE key = ? AND prev = 0 AND pos > ? ORDER BY pos",
                               (key, after)).fetchall()  # fmt: skip
        if head is not None and head[0] > after:
            chain = self.db.execute(
                "WITH RECURSIVE chain (p) AS (SELECT ? UNION ALL SELECT e.prev FROM events e JOIN chain ON e.pos = chain.p"
                f" WHERE e.prev > ?) SELECT {_EVENT_COLS} FROM events WHERE pos IN chain ORDER BY pos",
                (head[0], after),
            ).fetchall()
            known = {r[0] for r in chain}
            rows = sorted(chain + [r for r in rows if r[0] not in known], key=lambda r: r[0])
        if exclude_session is not None:
            rows = [r for r in rows if r[4] != exclude_session]
        return rows

    def recorded(self, request_id: str) -> tuple[str, str] | None:
        row = self.db.execute("SELECT digest, outcome FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def record(self, request_id: str, digest: str, outcome: str, at: float) -> None:
        self.db.execute("INSERT INTO requests (request_id, digest, outcome, at) VALUES (?, ?, ?, ?)", (request_id, digest, outcome, at))

    def forget_requests(self, recorded_before: float) -> int:
        self.db.execute("UPDATE requests SET at = ? WHERE at = 0", (self.clock.now(),))
        return self.db.execute("DELETE FROM requests WHERE at < ?", (recorded_before,)).rowcount

    def load_session(self, name: str) -> SessionRow | None:
        row = self.db.execute("SELECT agent, position, interest, ahead, saved FROM sessions WHERE name = ?", (name,)).fetchone()
        return None if row is None else SessionRow(name, row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4])

    def save_session(self, row: SessionRow) -> None:
        self.db.execute(
            "INSERT INTO sessions (name, agent, position, interest, ahead, saved) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name)"
            " DO UPDATE SET agent = excluded.agent, position = excluded.position, interest = excluded.interest,"
            " ahead = excluded.ahead, saved = excluded.saved",
            (row.name, row.agent, row.position, json.dumps(sorted(row.interest)), json.dumps(row.ahead), row.saved),
        )

    def forget_sessions(self, saved_before: float) -> int:
        self.db.execute("UPDATE sessions SET saved = ? WHERE saved = 0", (self.clock.now(),))
        return self.db.execute("DELETE FROM sessions WHERE saved < ?", (saved_before,)).rowcount

    def keys(self, prefix: str, limit: int, *, live_only: bool = True) -> list[str]:
        # Range scan: prefix <= key < prefix + U+10FFFF (on the live-key index when live_only).
        # comity's own '@' keys are listed only when the prefix asks for them.
        where = " AND live = 1" if live_only else ""
        if not prefix.startswith("@"):
            where += " AND key NOT GLOB '@*'"
        rows = self.db.execute(
            f"SELECT key FROM keys WHERE key >= ? AND key < ?{where} ORDER BY key LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def scan(self, prefix: str, limit: int, *, after: str | None = None) -> list[tuple[str, KeyRow]]:
        if after is not None and after < prefix:
            after = None
        low = ">=" if after is None else ">"
        rows = self.db.execute(
            f"SELECT key, clock, hlc, pos, live FROM keys WHERE key {low} ? AND key < ? AND live = 1 ORDER BY key LIMIT ?",
            (prefix if after is None else after, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [(r[0], KeyRow(r[1], r[2], r[3], bool(r[4]))) for r in rows]

    def expired(self, prefix: str, now: float, limit: int) -> list[LeaseRow]:
        rows = self.db.execute(
            "SELECT resource, holder, token, expires, pos, hlc FROM leases WHERE holder IS NOT NULL AND expires <= ?"
            " AND resource >= ? AND resource < ? ORDER BY expires, resource LIMIT ?",
            (now, prefix, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [LeaseRow(*r) for r in rows]

    def leases(self, prefix: str, limit: int) -> list[LeaseRow]:
        rows = self.db.execute(
            "SELECT resource, holder, token, expires, pos, hlc FROM leases WHERE resource >= ? AND resource < ?"
            " ORDER BY resource LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        ).fetchall()
        return [LeaseRow(*r) for r in rows]

    # -- replication
    def origins(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT replica, upto FROM origins").fetchall())

    def set_origin(self, replica: str, upto: int) -> None:
        self.db.execute(
            "INSERT INTO origins (replica, upto) VALUES (?, ?) ON CONFLICT (replica) DO UPDATE SET upto = max(upto, excluded.upto)",
            (replica, upto),
        )

    def events_from(self, replica: str, after: int, limit: int) -> list[EventRow]:
        # Written in this log (or the one this file was copied from): origin position = pos.
        here = self.db.execute(
            f"SELECT {_EVENT_COLS} FROM events WHERE pos > ? AND replica = ? AND opos IS NULL ORDER BY pos LIMIT ?",
            (after, replica, limit),
        ).fetchall()
        arrived = self.db.execute(
            f"SELECT {_EVENT_COLS} FROM events WHERE replica = ? AND opos > ? ORDER BY opos LIMIT ?",
            (replica, after, limit),
        ).fetchall()
        rows = [_event(r) for r in here + arrived]
        rows.sort(key=lambda e: e.origin)
        return rows[:limit]

    def states(self, after: str | None, limit: int) -> list[tuple[str, KeyRow]]:
        rows = self.db.execute(
            "SELECT key, clock, hlc, pos, live FROM keys WHERE key > ? ORDER BY key LIMIT ?", (after or "", limit)
        ).fetchall()
        return [(r[0], KeyRow(r[1], r[2], r[3], bool(r[4]))) for r in rows]

    def setting(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value)
        )


    # -- compaction (Store.compact): events before a horizon, less every key's and lease's last
    def session_floor(self) -> int | None:
        row = self.db.execute("SELECT min(position) FROM sessions").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def compactable(self, before: int) -> tuple[int, int]:
        total = self.db.execute("SELECT count(*) FROM events WHERE pos < ?", (before,)).fetchone()[0]
        heads = self.db.execute(
            "SELECT count(*) FROM (SELECT pos FROM keys WHERE pos < ? UNION SELECT pos FROM leases WHERE pos < ?)", (before, before)
        ).fetchone()[0]
        return int(total) - int(heads), int(heads)

    def compact(self, before: int, limit: int) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT pos, replica, coalesce(opos, pos) FROM events WHERE pos < ? AND pos NOT IN (SELECT pos FROM keys)"
            " AND pos NOT IN (SELECT pos FROM leases) ORDER BY pos LIMIT ?",
            (before, limit),
        ).fetchall()
        self.db.executemany("DELETE FROM events WHERE pos = ?", ((r[0],) for r in rows))
        upto: dict[str, int] = {}
        for _, replica, origin in rows:
            upto[replica] = max(upto.get(replica, 0), int(origin))
        upto[""] = len(rows)
        return upto

    def acted(self, agent: str) -> bool:
        # No index on agent: a scan that stops at the first event, asked only when a task is
        # assigned (to say so when the assignee has never acted here).
        return self.db.execute("SELECT 1 FROM events WHERE agent = ? LIMIT 1", (agent,)).fetchone() is not None


# ------------------------------------------------------------------ writers take turns
#
# The writers of one store file in one process take turns at a thread lock (shared by every
# handle this process has on the file) before BEGIN IMMEDIATE: a waiting thread is woken
# when the one before commits, instead of meeting SQLite's busy handler, whose sleeps (1, 2,
# 5, 10, … up to 100 ms between tries) would set its wait.  Across processes, a process whose
# BEGIN IMMEDIATE waited for another's writer joins the store's writers' queue
# (comity.store._queue): it waits for the writer before it to commit, woken by the kernel as
# soon as that one lets its slot go, and lets the next one go after its own commit.


class _Gate:
    """The turn of one store file's writers in this process (shared by its backends)."""

    def __init__(self, path: str) -> None:
        self.turn = threading.Lock()  # writers of this process, one at a time
        self.owner: int | None = None  # the thread whose turn it is
        self.refs = 0
        self.queue = WriterQueue(path)  # with other processes' writers, once a write waited

    def acquire(self, timeout: float) -> bool:
        """Wait for this process's turn, at most ``timeout`` seconds."""
        if self.owner == threading.get_ident():
            raise RuntimeError("a write transaction inside another one on the same store file")
        if not self.turn.acquire(timeout=timeout):
            return False
        self.owner = threading.get_ident()
        return True

    def release(self) -> None:
        self.owner = None
        self.turn.release()


_gates: dict[str, _Gate] = {}
_gates_lock = threading.Lock()


def _gate_for(path: Path) -> _Gate:
    key = os.path.realpath(path)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = _Gate(key)
        gate.refs += 1
        return gate


def _drop_gate(path: Path, gate: _Gate) -> None:
    key = os.path.realpath(path)
    with _gates_lock:
        gate.refs -= 1
        if gate.refs <= 0 and _gates.get(key) is gate:
            del _gates[key]
            gate.queue.close()


class _Transaction:
    """``with backend.transaction(write=...) as tx``: BEGIN (IMMEDIATE for writes), then
    COMMIT on a clean exit or ROLLBACK on an exception.  A class, not a generator: it is on
    every call's path."""

    __slots__ = ("backend", "write", "slot")

    def __init__(self, backend: SQLiteBackend, write: bool) -> None:
        self.backend = backend
        self.write = write
        self.slot = -1  # this write's place in the writers' queue, let go after it ends

    def __enter__(self) -> _SQLiteTx:
        b = self.backend
        b._lock.acquire()
        gated = False
        try:
            if self.write:
                gate = b._gate  # _Gate.acquire, spelled out: it is on every write's path
                me = get_ident()
                if gate.owner == me:
                    raise RuntimeError("a write transaction inside another one on the same store file")
                if b.db.in_transaction:  # this thread's own read (b._lock is held): a snapshot
                    raise RuntimeError(
                        "a write while this thread holds a read snapshot (Session.snapshot) of the same store file: end the snapshot first"
                    )
                if not gate.turn.acquire(True, b.busy_timeout):
                    raise Unavailable(
                        f"the store at {b.path} is busy: another writer held it for {b.busy_timeout:g}s; nothing was written, retry",
                        location=str(b.path),
                    )
                gate.owner = me
                gated = True
                queue = gate.queue
                if queue.joined:
                    self.slot = queue.enter()
                    b.db.execute("BEGIN IMMEDIATE")
                else:
                    began = perf_counter()
                    b.db.execute("BEGIN IMMEDIATE")  # another process's writer: waited out by SQLite's busy handler
                    if perf_counter() - began > SLOW_BEGIN_S:
                        queue.join()
            else:
                b.db.execute("BEGIN")
        except sqlite3.Error as e:
            if gated:
                self._let_go()
            b._lock.release()
            raise _unavailable(b.path, e, "could not begin a transaction") from None
        except BaseException:
            if gated:
                self._let_go()
            b._lock.release()
            raise
        tx = b._tx
        if tx.db is not b.db or tx.clock is not b.clock:  # its connection or clock was replaced (tests do)
            tx = b._tx = _SQLiteTx(b.db, b.clock)
        return tx

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        b = self.backend
        try:
            if exc_type is not None:
                if b.db.in_transaction:
                    try:
                        b.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # nothing of this transaction was committed either way
                if isinstance(exc, sqlite3.Error) and type(exc) in _ENGINE_FAILURES:
                    # the engine failed (damage, a full disk, I/O), not the request
                    raise _unavailable(b.path, exc, "failed") from None
                return
            try:
                b.db.execute("COMMIT")
            except sqlite3.Error as e:
                if b.db.in_transaction:
                    try:
                        b.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise _unavailable(b.path, e, "could not commit") from None
        finally:
            if self.write:
                gate = b._gate  # _Transaction._let_go, spelled out
                if self.slot >= 0:
                    gate.queue.leave(self.slot)
                    self.slot = -1
                gate.owner = None
                gate.turn.release()
            b._lock.release()

    def _let_go(self) -> None:
        """The next writer's turn: the next process's in the queue, then this process's."""
        gate = self.backend._gate
        if self.slot >= 0:
            gate.queue.leave(self.slot)
            self.slot = -1
        gate.release()


# Errors of the file and the machine; IntegrityError, ProgrammingError and the like are bugs.
_ENGINE_FAILURES = (sqlite3.OperationalError, sqlite3.DatabaseError)
# What fails a whole group commit (comity.store._group) rather than one of its transactions.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,)


def _unavailable(path: Path, e: sqlite3.Error, what: str) -> Unavailable:
    """An engine error as comity's: a damaged file, a full disk, or a busy store."""
    text = str(e)
    if not isinstance(e, sqlite3.OperationalError) or "malformed" in text or "not a database" in text:
        return damaged(path, e)
    if "full" in text:
        return Unavailable(
            f"the store at {path} {what}: the disk is full ({e}); nothing was written. Free some space and retry",
            location=str(path),
            problem="disk_full",
        )
    return Unavailable(f"the store at {path} {what} ({e}); nothing was written, retry", location=str(path))


class SQLiteBackend:
    """A comity store in one SQLite file.  ``create``: make it if the path holds nothing
    (never over a file that is there: see :mod:`comity.store._files`)."""

    # Transactions have savepoints, so a store's sessions share commits (comity.store._group).
    GROUP_COMMIT = True
    ENGINE_ERRORS = ENGINE_ERRORS

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        rng: Rng,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        if os.path.lexists(self.path):
            classify(self.path)
        elif not create:
            raise no_store(self.path)
        else:
            self._create(rng)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise Unavailable(f"cannot open the store at {self.path}: {e}") from None
        held(self.path)  # from now on nothing here opens the file but SQLite (comity.store._files)
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if self.db.execute("PRAGMA user_version").fetchone()[0] == 0:
                what = "it holds other tables" if has_tables(self.db) else "it has no tables"
                raise foreign_database(self.path, what)
            # A store is made in WAL mode; a file copied without its -wal may need switching
            # again, which takes a lock SQLite does not wait for: retry while another holds it.
            attempts = max(1, int(busy_timeout / _OPEN_RETRY_S))
            for attempt in range(attempts):
                try:
                    mode = self.db.execute("PRAGMA journal_mode = wal").fetchone()[0]
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e) or attempt == attempts - 1:
                        raise
                    time.sleep(_OPEN_RETRY_S)
            if mode != "wal":
                raise Unavailable(f"the store at {self.path} could not switch to WAL (journal_mode={mode}); is it on a network filesystem?")
            self.db.execute("PRAGMA synchronous = FULL")
            self._migrate(rng)
            self._new_replica_if_copied(rng)
            self.meta = self._read_meta()
            self._gate = _gate_for(self.path)
            self._gate_dropped = False
            # A transaction's handles hold nothing of their own: one of each, used by every call.
            self._tx = _SQLiteTx(self.db, self.clock)
            self._reader = _Transaction(self, False)
            self._writer = _Transaction(self, True)
        except BaseException as e:
            self.db.close()
            let_go(self.path)
            if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):
                raise Unavailable(f"the store at {self.path} is busy ({e}); retry") from None
            if isinstance(e, sqlite3.OperationalError):
                # The disk refused a write while the store was opened (a full disk, an I/O error):
                # said as a transaction says it; only what the file holds is called damaged.
                raise _unavailable(self.path, e, "could not be opened") from None
            if isinstance(e, (sqlite3.DatabaseError, KeyError, ValueError)):
                raise damaged(self.path, e) from None
            raise

    def _create(self, rng: Rng) -> None:
        """Build a new store whole under a temporary name, then link it into place."""
        try:
            make_dirs(self.path.parent)
            built = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{threading.get_ident()}")
            new_private_file(built)
        except OSError as e:
            raise Unavailable(f"cannot create the store at {self.path}: {e.strerror or e}") from None
        try:
            db = sqlite3.connect(built, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode = wal")
                db.execute("PRAGMA synchronous = FULL")
                db.execute("BEGIN IMMEDIATE")
                for step in MIGRATIONS:
                    step(db, rng)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            finally:
                db.close()  # the last connection checkpoints the WAL into the file
            link_into_place(built, self.path)
        except (OSError, sqlite3.Error) as e:
            for leftover in (built, Path(f"{built}-wal"), Path(f"{built}-shm")):
                try:
                    leftover.unlink()
                except OSError:
                    pass
            raise Unavailable(f"cannot create the store at {self.path}: {e}") from None

    def _migrate(self, rng: Rng) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with self._begin_immediate():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise Invalid(
                    "store",
                    f"{self.path} has schema version {version}, newer than this comity understands "
                    f"({SCHEMA_VERSION}); upgrade comity",
                )
            for step in MIGRATIONS[version:]:
                step(self.db, rng)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _new_replica_if_copied(self, rng: Rng) -> None:
        """A replica is a file, not a process: a copied or restored file must not reuse the
        original's replica id, or two replicas would issue the same dots.  The file's
        identity (device, inode) is recorded; a file that is not the one recorded takes a
        new replica id (a harmless change for a file merely moved across filesystems)."""
        st = os.stat(self.path)
        here = f"{st.st_dev}:{st.st_ino}"
        row = self.db.execute("SELECT value FROM meta WHERE name = 'file'").fetchone()
        if row is not None and row[0] == here:
            return
        with self._begin_immediate():
            row = self.db.execute("SELECT value FROM meta WHERE name = 'file'").fetchone()
            if row is not None and row[0] == here:
                return
            if row is not None:  # a copy: the original keeps its id, this file takes a new one
                old = self.db.execute("SELECT value FROM meta WHERE name = 'replica_id'").fetchone()[0]
                # Every event the original had written so far is here: replication must not send them again.
                head = self.db.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()[0]
                tx = _SQLiteTx(self.db, self.clock)
                tx.set_origin(old, int(head))
                new = rng.new_id("r")[:13]
                tx.set_origin(new, int(head))  # the new id's events all come after the copied log
                self.db.execute("UPDATE meta SET value = ? WHERE name = 'replica_id'", (new,))
                self.db.execute(
                    "INSERT INTO meta (name, value) VALUES ('copied_from', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (old,),
                )
            self.db.execute(
                "INSERT INTO meta (name, value) VALUES ('file', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", (here,)
            )

    def _read_meta(self) -> StoreMeta:
        rows = dict(self.db.execute("SELECT name, value FROM meta").fetchall())
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        return StoreMeta(
            rows["store_id"], rows["replica_id"], bytes.fromhex(rows["secret"]), version, str(self.path), rows.get("upstream") or None
        )

    @contextmanager
    def _begin_immediate(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def transaction(self, *, write: bool) -> _Transaction:
        return self._writer if write else self._reader

    @contextmanager
    def turn(self) -> Iterator[None]:
        """This process's turn among the store's writer processes, held across a read and the
        write that depends on it (a claim reads the ready tasks, then claims one): a writer
        that read before waiting its turn would find what it read taken by the writers
        ahead of it.  Nothing unless this process has joined the writers' queue; the writes
        inside take no place of their own."""
        queue = self._gate.queue
        if not queue.take_turn():
            yield
            return
        try:
            yield
        finally:
            queue.end_turn()

    def size(self) -> int:
        """Bytes on disk: the file and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except OSError:
                pass
        return total

    def reclaim(self) -> None:
        """Give the space of deleted rows back to the filesystem (VACUUM, then truncate the WAL)."""
        with self._lock:
            if not self._gate.acquire(self.busy_timeout):
                raise Unavailable(f"the store at {self.path} is busy; retry the compaction later", location=str(self.path))
            try:
                self.db.execute("VACUUM")
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                raise _unavailable(self.path, e, "could not be vacuumed") from None
            finally:
                self._gate.release()

    def close(self) -> None:
        with self._lock:
            self.db.close()
            dropped, self._gate_dropped = self._gate_dropped, True
        if not dropped:
            let_go(self.path)
            _drop_gate(self.path, self._gate)
