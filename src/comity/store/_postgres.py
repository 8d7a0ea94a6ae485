"""The shared backend: comity's tables in one schema of a PostgreSQL database.

``postgresql://user@host:5432/db?schema=NAME`` (``postgres://`` too): the tables live
in schema ``NAME`` (default ``comity``), created and migrated on open, so one database
can hold several stores (the tests give each its own schema).  ``schema`` is comity's
parameter, not libpq's: it is taken out of the URL before connecting.

Locking.  Writers of different keys do not wait for each other.  A write transaction
(READ COMMITTED) takes a transaction-level advisory lock per key it reads or writes
(its guards' and operations' keys, lease resources, sequences, its request id), all of
them first and in one order, so two transactions on one key run one after the other and
whatever a guard checked is still true at commit, with no serialization failures to
retry and no deadlock between them.  Reads run at REPEATABLE READ, READ ONLY: one
snapshot, so a read sees one consistent state, and they never wait for writers.  (Until
schema version 5 every writer locked the one row of ``log_head``: docs/throughput.md.)

Positions.  Log positions come from a sequence, so they are issued in one order but
committed in another: a reader could see position 8 before 7 commits, and a news or log
cursor at 8 would skip 7 for ever.  So ``head`` is a *watermark*, the greatest position
below which no transaction is still in flight: before taking its first position, a
writer holds a shared advisory lock on the position the sequence will give next at
the earliest, until it commits or aborts; ``safe_head()`` (a function of the schema)
reads the sequence, then the least such lock still held, and answers the position
before it.  A reader computes it *before* its snapshot, so every position up to it is
committed (or aborted, a gap for ever) and visible; readers never go past it, and what
a cursor passes it has seen.  Aborted transactions leave gaps in the positions.

Durability.  A write is acknowledged after its COMMIT returns, at the server's
``synchronous_commit`` (on by default: the commit is flushed to the WAL).

Time.  Leases expire by the *database's* clock (``clock_timestamp()``, read when a write
transaction begins, and by a read with its watermark, just before its snapshot: a lease
that expires in between is not yet expired to it), the one clock every ``comity serve``
and agent shares.
A ``clock`` passed explicitly replaces it: tests pass a virtual clock to expire leases
without sleeping; production passes none.

Change feed.  Each write transaction sends ``NOTIFY comity_<schema>, '<position>'``,
delivered when it commits; :meth:`PostgresBackend.wait_for_change` LISTENs and
returns the watermark, re-read after every wake-up or time-out, so a missed
notification delays a waiter but never loses a change.
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..errors import Invalid, Unavailable
from ..runtime import Clock, Rng, SystemClock
from ._backend import LEASE_PREFIX, EventKey, EventRow, KeyRow, LeaseRow, SessionRow, StoreMeta
from ._files import StoreFileError, no_store

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PostgresBackend", "SCHEMA_VERSION", "DEFAULT_SCHEMA", "is_postgres_url"]

DEFAULT_SCHEMA = "comity"
DEFAULT_POOL_SIZE = 4
DEFAULT_BUSY_TIMEOUT_S = 30.0
# A client stopped inside a write transaction holds the head lock; the server ends its
# session after this long, as SQLite's busy timeout bounds a stuck writer.
IDLE_IN_TRANSACTION_S = 60.0
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,48}")  # "comity_" + schema stays a 63-byte channel name
_SCHEMES = ("postgresql://", "postgres://")
_TOP = "\U0010ffff"  # prefix <= key < prefix + U+10FFFF: a prefix scan in "C" (code point) order

_EVENT_COLS = "pos, key, op, agent, session, replica, counter, hlc, request_id, value, detail, prev, seen, opos"
_ROWS_PER_INSERT = 1000  # events a statement inserts (14 parameters each)


def is_postgres_url(location: str) -> bool:
    return location.lower().startswith(_SCHEMES)


# Query parameters of a libpq URL whose values are secrets: never shown, logged or echoed.
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries (``user:PASSWORD@``, ``?password=``, ``?sslpassword=``), as
    written and decoded, so any text that might echo them can be scrubbed."""
    parts = urlsplit(url)
    found = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_PARAMS and v]
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True, encoding="latin-1") if k.lower() in _SECRET_PARAMS and v]
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    raw = [m.group(1) for m in re.finditer(r"(?:^|[?&])(?:ssl)?password=([^&#]*)", parts.query, re.IGNORECASE)]
    return sorted({x for x in found + raw if x}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def split_url(url: str, schema: str | None = None) -> tuple[str, str, str]:
    """(libpq URL without ``schema``, schema name, location safe to show: no password, in
    ``user:pass@`` or in ``?password=`` and ``?sslpassword=``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [v for k, v in query if k == "schema"]
    schema = schema if schema is not None else (named[-1] if named else DEFAULT_SCHEMA)
    if _SCHEMA_RE.fullmatch(schema) is None:
        raise Invalid(
            "schema",
            f"{schema[:80]!r} is not a usable schema name: use lowercase letters, digits and _ "
            "(up to 49 characters, not starting with a digit), e.g. ?schema=comity",
        )
    rest = [(k, v) for k, v in query if k != "schema"]
    conninfo = urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote)))
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = user.split(":", 1)[0] + ":***@" + host
    shown = [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in rest]
    shown_query = urlencode(shown + ([("schema", schema)] if schema != DEFAULT_SCHEMA else []), quote_via=quote, safe="*")
    location = urlunsplit(parts._replace(netloc=netloc, query=shown_query))
    return conninfo, schema, location


# ------------------------------------------------------------------ schema and migrations


def _migration_1(cur: psycopg.Cursor[Any], s: str, rng: Rng) -> None:
    # Keys and resources sort in "C" order (code points), as in SQLite: listings agree
    # across backends and a prefix is a range scan whatever the database's locale.
    cur.execute(f"CREATE TABLE {s}.meta (name text PRIMARY KEY, value text NOT NULL)")
    cur.execute(f"CREATE TABLE {s}.log_head (one boolean PRIMARY KEY DEFAULT true CHECK (one), pos bigint NOT NULL)")
    cur.execute(f"INSERT INTO {s}.log_head (pos) VALUES (0)")
    cur.execute(
        f"CREATE TABLE {s}.keys (key text COLLATE \"C\" PRIMARY KEY, clock text NOT NULL, hlc text NOT NULL,"
        " pos bigint NOT NULL, live boolean NOT NULL DEFAULT true)"
    )
    # Listing live keys under a prefix (task markers, `comity keys`) must not walk tombstones.
    cur.execute(f"CREATE INDEX keys_live ON {s}.keys (key) WHERE live")
    cur.execute(
        f"CREATE TABLE {s}.events (pos bigint PRIMARY KEY, key text COLLATE \"C\" NOT NULL, op text NOT NULL,"
        " agent text NOT NULL, session text NOT NULL, replica text NOT NULL, counter bigint NOT NULL,"
        " hlc text NOT NULL, request_id text NOT NULL, value text, detail text, prev bigint NOT NULL, seen bigint)"
    )
    # A key's history is one index range (SQLite walks the ``prev`` chain instead, to spare
    # a page per commit; here an index insert is cheap beside the commit's round trips).
    cur.execute(f"CREATE INDEX events_key ON {s}.events (key, pos)")
    cur.execute(f"CREATE TABLE {s}.requests (request_id text PRIMARY KEY, digest text NOT NULL, outcome text NOT NULL)")
    cur.execute(
        f"CREATE TABLE {s}.leases (resource text COLLATE \"C\" PRIMARY KEY, holder text, token bigint NOT NULL,"
        " expires double precision NOT NULL, pos bigint NOT NULL, hlc text NOT NULL)"
    )
    # Finding orphaned work (held leases past their expiry) must not scan every lease ever granted.
    cur.execute(f"CREATE INDEX leases_held ON {s}.leases (expires) WHERE holder IS NOT NULL")
    cur.execute(
        f"CREATE TABLE {s}.sessions (name text PRIMARY KEY, agent text NOT NULL, position bigint NOT NULL,"
        " interest text NOT NULL)"
    )
    for name, value in (
        ("store_id", rng.new_id("s")[:17]),
        ("replica_id", rng.new_id("r")[:13]),
        ("secret", rng.token_bytes(32).hex()),
        ("schema_version", "0"),
    ):
        cur.execute(f"INSERT INTO {s}.meta (name, value) VALUES (%s, %s)", (name, value))


def _migration_2(cur: psycopg.Cursor[Any], s: str, rng: Rng) -> None:
    # As SQLite's: keyed answers running ahead of news(), and the time of a session's last
    # save, by which idle sessions are deleted (0: saved before it was recorded).
    cur.execute(f"ALTER TABLE {s}.sessions ADD COLUMN ahead text NOT NULL DEFAULT '{{}}'")
    cur.execute(f"ALTER TABLE {s}.sessions ADD COLUMN saved double precision NOT NULL DEFAULT 0")


def _migration_3(cur: psycopg.Cursor[Any], s: str, rng: Rng) -> None:
    # As SQLite's: request outcomes are kept for a window, deleted by the time they were recorded.
    cur.execute(f"ALTER TABLE {s}.requests ADD COLUMN at double precision NOT NULL DEFAULT 0")
    cur.execute(f"CREATE INDEX requests_at ON {s}.requests (at)")


def _migration_4(cur: psycopg.Cursor[Any], s: str, rng: Rng) -> None:
    # Replication: an event that arrived from another replica keeps its position there (``opos``).
    cur.execute(f"ALTER TABLE {s}.events ADD COLUMN opos bigint")
    cur.execute(f"CREATE INDEX events_origin ON {s}.events (replica, opos) WHERE opos IS NOT NULL")
    cur.execute(f"CREATE TABLE {s}.origins (replica text PRIMARY KEY, upto bigint NOT NULL)")


def _migration_5(cur: psycopg.Cursor[Any], s: str, rng: Rng) -> None:
    # Writers no longer lock one row: positions come from a sequence, and readers stop at the
    # watermark (see the module's docstring).  The sequence starts after the log's head.
    head = cur.execute(f"SELECT pos FROM {s}.log_head").fetchone()[0]  # type: ignore[index]
    cur.execute(f"CREATE SEQUENCE {s}.event_pos AS bigint MINVALUE 0 START WITH {int(head) + 1}")
    seq = f"{s}.event_pos"
    # The next position this writer can get is after the last one issued: hold a shared lock on
    # it (base + position) before taking one, until the transaction ends.
    cur.execute(
        f"CREATE FUNCTION {s}.take_pos(base bigint) RETURNS bigint LANGUAGE plpgsql AS $$"
        " DECLARE c bigint; called boolean;"
        f" BEGIN SELECT last_value, is_called INTO c, called FROM {seq};"
        " IF NOT called THEN c := c - 1; END IF;"
        " PERFORM pg_advisory_xact_lock_shared(base + c + 1);"
        f" RETURN nextval('{seq}'); END $$"
    )
    # The sequence first, then the locks: a position issued after the sequence was read is above
    # what it said; one issued before it is still locked, or its transaction has ended.
    cur.execute(
        f"CREATE FUNCTION {s}.safe_head(base bigint) RETURNS bigint LANGUAGE plpgsql AS $$"
        " DECLARE c bigint; called boolean; oldest bigint;"
        f" BEGIN SELECT last_value, is_called INTO c, called FROM {seq};"
        " IF NOT called THEN c := c - 1; END IF;"
        " SELECT min(((l.classid::bigint << 32) | l.objid::bigint) - base) INTO oldest FROM pg_locks l"
        " WHERE l.locktype = 'advisory' AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::bigint >= (base >> 32) AND l.classid::bigint < (base >> 32) + 256;"
        " IF oldest IS NOT NULL AND oldest - 1 < c THEN RETURN oldest - 1; END IF;"
        " RETURN c; END $$"
    )


# Each entry migrates the schema from version i to i+1.  Never edit a released one.
MIGRATIONS: list[Callable[[Any, str, Rng], None]] = [_migration_1, _migration_2, _migration_3, _migration_4, _migration_5]
SCHEMA_VERSION = len(MIGRATIONS)


class _Sql:
    """Every statement, qualified with the store's schema once."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.schema = s
        self.channel = f"comity_{schema}"
        # Advisory lock keys of this schema: (ns, h) pairs for keys (h != 0) and (ns, 0) for the
        # barrier every writer holds shared (taken exclusively only to change the replica id);
        # base + position, a bigint, for a writer's first position (see take_pos).
        digest = hashlib.blake2b(schema.encode(), digest_size=8).digest()
        self.ns = int.from_bytes(digest[:4], "big", signed=True)
        self.base = (int.from_bytes(digest[4:], "big") & 0x7FFFFF | 0x1) << 40
        self.lock_key = "SELECT pg_advisory_xact_lock(%s, %s)"
        # A function scan of unnest yields the array's elements in order, one row at a time,
        # and takes each row's lock before the next (EXPLAIN: no sort, no parallelism).
        self.lock_keys = "SELECT pg_advisory_xact_lock(%s, h) FROM unnest(%s::int4[]) WITH ORDINALITY AS t(h, i) ORDER BY i"
        self.safe_head = f"SELECT {s}.safe_head({self.base})"
        self.safe_head_timed = f"SELECT {s}.safe_head({self.base}), extract(epoch FROM clock_timestamp())::float8"
        self.take_pos = f"SELECT {s}.take_pos({self.base})"
        self.next_pos = f"SELECT nextval('{s}.event_pos')"
        # The first position under take_pos's lock, then more: an Append runs its parts in
        # order, and nextval gives each row a greater position than the one before.
        self.take_positions = f"{self.take_pos} UNION ALL (SELECT nextval('{s}.event_pos') FROM generate_series(1, %s))"
        self.begin_write = f"BEGIN; SELECT pg_advisory_xact_lock_shared({self.ns}, 0); {self.safe_head}"
        # The time is read once the transaction has begun.
        self.begin_write_timed = self.begin_write + "; SELECT extract(epoch FROM clock_timestamp())::float8"
        # The watermark is read before the snapshot is taken (see the module's docstring).
        self.begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        self.now = "SELECT extract(epoch FROM clock_timestamp())::float8"
        self.head = self.safe_head
        self.notify = "SELECT pg_notify(%s, %s)"
        self.load = f"SELECT clock, hlc, pos, live FROM {s}.keys WHERE key = %s"
        self.load_many = f"SELECT key, clock, hlc, pos, live FROM {s}.keys WHERE key = ANY(%s::text[])"
        self.update_key = f"UPDATE {s}.keys SET clock = %s, hlc = %s, pos = %s WHERE key = %s"
        self.upsert_key = (
            f"INSERT INTO {s}.keys (key, clock, hlc, pos, live) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE"
            " SET clock = excluded.clock, hlc = excluded.hlc, pos = excluded.pos, live = excluded.live"
        )
        self.touch = f"UPDATE {s}.keys SET pos = %s WHERE key = %s"
        self.lease = f"SELECT holder, token, expires, pos, hlc FROM {s}.leases WHERE resource = %s"
        self.save_lease = (
            f"INSERT INTO {s}.leases (resource, holder, token, expires, pos, hlc) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (resource) DO UPDATE SET holder = excluded.holder, token = excluded.token,"
            " expires = excluded.expires, pos = excluded.pos, hlc = excluded.hlc"
        )
        self._append_rows: dict[tuple[int, bool], str] = {}
        self.events = f"SELECT {_EVENT_COLS} FROM {s}.events WHERE pos > %s ORDER BY pos LIMIT %s"
        self.events_excl = f"SELECT {_EVENT_COLS} FROM {s}.events WHERE pos > %s AND session <> %s ORDER BY pos LIMIT %s"
        self.events_keys = f"SELECT {_EVENT_COLS} FROM {s}.events WHERE key = ANY(%s) AND pos > %s ORDER BY pos LIMIT %s"
        self.skim = f"SELECT pos, key, op FROM {s}.events WHERE pos > %s ORDER BY pos LIMIT %s"
        self.skim_excl = f"SELECT pos, key, op FROM {s}.events WHERE pos > %s AND session <> %s ORDER BY pos LIMIT %s"
        self.events_at = f"SELECT {_EVENT_COLS} FROM {s}.events WHERE pos = ANY(%s::int8[]) ORDER BY pos"
        self.events_keys_excl = (
            f"SELECT {_EVENT_COLS} FROM {s}.events WHERE key = ANY(%s) AND pos > %s AND session <> %s ORDER BY pos LIMIT %s"
        )
        self.acted = f"SELECT 1 FROM {s}.events WHERE agent = %s LIMIT 1"
        self.recorded = f"SELECT digest, outcome FROM {s}.requests WHERE request_id = %s"
        self.record = f"INSERT INTO {s}.requests (request_id, digest, outcome, at) VALUES (%s, %s, %s, %s)"
        self.date_requests = f"UPDATE {s}.requests SET at = %s WHERE at = 0"
        self.forget_requests = f"DELETE FROM {s}.requests WHERE at < %s"
        self.load_session = f"SELECT agent, position, interest, ahead, saved FROM {s}.sessions WHERE name = %s"
        self.save_session = (
            f"INSERT INTO {s}.sessions (name, agent, position, interest, ahead, saved) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET agent = excluded.agent, position = excluded.position,"
            " interest = excluded.interest, ahead = excluded.ahead, saved = excluded.saved"
        )
        self.date_sessions = f"UPDATE {s}.sessions SET saved = %s WHERE saved = 0"
        self.forget_sessions = f"DELETE FROM {s}.sessions WHERE saved < %s"
        keys = f"SELECT key FROM {s}.keys WHERE key >= %s AND key < %s"
        self.keys = {
            (live, system): keys + (" AND live" if live else "") + ("" if system else " AND key NOT LIKE '@%%'")
            + " ORDER BY key LIMIT %s"
            for live in (True, False)
            for system in (True, False)
        }
        self.scan = (
            f"SELECT key, clock, hlc, pos, live FROM {s}.keys WHERE key >= %s AND key < %s AND live ORDER BY key LIMIT %s"
        )
        self.scan_after = (
            f"SELECT key, clock, hlc, pos, live FROM {s}.keys WHERE key > %s AND key < %s AND live ORDER BY key LIMIT %s"
        )
        self.expired = (
            f"SELECT resource, holder, token, expires, pos, hlc FROM {s}.leases WHERE holder IS NOT NULL AND expires <= %s"
            " AND resource >= %s AND resource < %s ORDER BY expires, resource LIMIT %s"
        )
        self.leases = (
            f"SELECT resource, holder, token, expires, pos, hlc FROM {s}.leases WHERE resource >= %s AND resource < %s"
            " ORDER BY resource LIMIT %s"
        )
        self.origins = f"SELECT replica, upto FROM {s}.origins"
        self.set_origin = (
            f"INSERT INTO {s}.origins (replica, upto) VALUES (%s, %s) ON CONFLICT (replica)"
            f" DO UPDATE SET upto = greatest({s}.origins.upto, excluded.upto)"
        )
        self.events_here = (
            f"SELECT {_EVENT_COLS} FROM {s}.events WHERE pos > %s AND replica = %s AND opos IS NULL ORDER BY pos LIMIT %s"
        )
        self.events_arrived = f"SELECT {_EVENT_COLS} FROM {s}.events WHERE replica = %s AND opos > %s ORDER BY opos LIMIT %s"
        self.states = f"SELECT key, clock, hlc, pos, live FROM {s}.keys WHERE key > %s ORDER BY key LIMIT %s"
        self.setting = f"SELECT value FROM {s}.meta WHERE name = %s"
        self.set_setting = (
            f"INSERT INTO {s}.meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        )

    def append_rows(self, n: int, *, notifying: bool = False) -> str:
        """``n`` events inserted by one statement; ``notifying``: then the commit's NOTIFY
        (a data-modifying WITH runs to completion whatever the query around it reads)."""
        sql = self._append_rows.get((n, notifying))
        if sql is None:
            row = "(" + ", ".join(["%s"] * 14) + ")"
            sql = f"INSERT INTO {self.schema}.events ({_EVENT_COLS}) VALUES " + ", ".join([row] * n)
            if notifying:
                sql = f"WITH appended AS ({sql}) SELECT pg_notify(%s, %s)"
            if len(self._append_rows) < 64:  # a few sizes are common; the rest are built again
                self._append_rows[(n, notifying)] = sql
        return sql


def _key_hash(key: str) -> int:
    """A key's advisory lock (with the schema's): 32 bits, never 0 (the writers' barrier)."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big", signed=True)
    return h or 1


def _event(r: Any) -> EventRow:
    return EventRow(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[0], r[13])


def _range(prefix: str) -> tuple[str, str] | None:
    """The key range of ``prefix``; None when no key can have it (text cannot hold NUL)."""
    if "\x00" in prefix:
        return None
    try:
        prefix.encode()
    except UnicodeEncodeError:  # a lone surrogate: no key has one
        return None
    return prefix, prefix + _TOP


# ----------------------------------------------------------------------- transactions


class _PgTx:
    """Writes are deferred and sent together, pipelined, before the next read or with the
    COMMIT: a put is three round trips (begin and lock, load, write and commit).  The events
    appended wait longer, until the COMMIT (or a read of the log): they go in one statement
    with the commit's notification."""

    __slots__ = ("cur", "sql", "clock", "_head", "_now", "appended", "pending", "write", "locked", "last", "rows", "expected",
                 "spare", "leases_read")

    def __init__(
        self, cur: psycopg.Cursor[Any], sql: _Sql, clock: Clock | None, head: int, now: float | None, write: bool = False
    ) -> None:
        self.cur = cur
        self.sql = sql
        self.clock = clock
        self._head = head
        self._now = now
        self.appended = False
        self.pending: list[tuple[str, tuple[Any, ...]]] = []
        self.write = write
        self.locked: set[int] = set()
        self.last = 0  # the greatest position this transaction appended
        self.rows: list[tuple[Any, ...]] = []  # events appended, not yet sent
        self.expected = 0  # the events this transaction will append, when the executor says
        self.spare: list[int] = []  # positions taken ahead for them, the next one last
        self.leases_read: dict[str, LeaseRow | None] = {}  # under this transaction's locks

    def lock(self, keys: Collection[str]) -> None:
        """Take the locks of ``keys`` (a write transaction's), in one order: no deadlock between
        two transactions that announce their keys.  Sent with the next query."""
        if not self.write:
            return
        wanted = sorted({_key_hash(k) for k in keys} - self.locked)
        if len(wanted) == 1:
            self.pending.append((self.sql.lock_key, (self.sql.ns, wanted[0])))
        elif wanted:  # one statement, the locks taken in the array's order
            self.pending.append((self.sql.lock_keys, (self.sql.ns, wanted)))
        self.locked.update(wanted)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        if self.pending:
            self.flush((sql, args))  # the read rides with the writes; its result is the cursor's
            return self.cur
        return self.cur.execute(sql, args)

    def flush(self, *then: tuple[str, tuple[Any, ...]]) -> None:
        """Send the deferred writes (and ``then``) in one pipeline: one round trip."""
        cur = self.cur
        with cur.connection.pipeline():
            for sql, args in self.pending:
                cur.execute(sql, args)
            for sql, args in then:
                cur.execute(sql, args)
        self.pending.clear()

    def now(self) -> float:
        if self.clock is not None:
            return self.clock.now()
        if self._now is None:
            self._now = float(self._query(self.sql.now).fetchone()[0])  # type: ignore[index]
        return self._now

    def head(self) -> int:
        return self._head

    def load(self, key: str) -> KeyRow | None:
        self.lock((key,))
        row = self._query(self.sql.load, (key,)).fetchone()
        return None if row is None else KeyRow(row[0], row[1], row[2], row[3])

    def load_many(self, keys: list[str]) -> list[KeyRow | None]:
        if len(keys) == 1:
            return [self.load(keys[0])]
        self.lock(keys)
        found = {r[0]: KeyRow(r[1], r[2], r[3], r[4]) for r in self._query(self.sql.load_many, (keys,)).fetchall()}
        return [found.get(k) for k in keys]

    def save(self, key: str, row: KeyRow, prior: KeyRow | None) -> None:
        if prior is not None and prior.live == row.live:
            self.pending.append((self.sql.update_key, (row.clock, row.hlc, row.pos, key)))
        else:
            self.pending.append((self.sql.upsert_key, (key, row.clock, row.hlc, row.pos, row.live)))

    def touch(self, key: str, pos: int) -> None:
        self.pending.append((self.sql.touch, (pos, key)))

    def lease(self, resource: str) -> LeaseRow | None:
        if self.write and resource in self.leases_read:  # locked since it was read: as it was (or saved)
            return self.leases_read[resource]
        self.lock((LEASE_PREFIX + resource,))
        r = self._query(self.sql.lease, (resource,)).fetchone()
        row = None if r is None else LeaseRow(resource, r[0], r[1], r[2], r[3], r[4])
        if self.write:
            self.leases_read[resource] = row
        return row

    def save_lease(self, row: LeaseRow) -> None:
        self.pending.append((self.sql.save_lease, (row.resource, row.holder, row.token, row.expires, row.pos, row.hlc)))
        self.leases_read[row.resource] = row

    def expect(self, n: int) -> None:
        """This transaction will append ``n`` events (at most): their positions are taken
        together, with the first (unused ones would be gaps, as an aborted writer's are)."""
        self.expected = n

    def append(self, e: EventRow) -> int:
        # The first position is taken under a lock that holds the watermark below it until this
        # transaction ends; later ones are greater.
        if self.spare:
            pos = self.spare.pop()
        elif not self.appended and self.expected > 1:
            taken = [int(r[0]) for r in self._query(self.sql.take_positions, (self.expected - 1,)).fetchall()]
            pos, self.spare = taken[0], taken[:0:-1]
        else:
            pos = int(self._query(self.sql.next_pos if self.appended else self.sql.take_pos).fetchone()[0])  # type: ignore[index]
        self.rows.append((pos, e.key, e.op, e.agent, e.session, e.replica, e.counter, e.hlc, e.request_id, e.value, e.detail, e.prev, e.seen, e.opos))
        e.pos = pos
        self.last = max(self.last, pos)
        self.appended = True
        return pos

    def inserts(self, notify: tuple[str, str] | None = None) -> list[tuple[str, tuple[Any, ...]]]:
        """The events appended and not yet sent, as statements of up to _ROWS_PER_INSERT events
        each (PostgreSQL takes 65,535 parameters a statement), the last with ``notify``, the
        commit's notification ((channel, payload)), if given; they are then as good as sent."""
        rows, self.rows = self.rows, []
        out: list[tuple[str, tuple[Any, ...]]] = []
        for i in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[i : i + _ROWS_PER_INSERT]
            args = tuple(x for r in chunk for x in r)
            if notify is not None and i + _ROWS_PER_INSERT >= len(rows):
                out.append((self.sql.append_rows(len(chunk), notifying=True), (*args, *notify)))
            else:
                out.append((self.sql.append_rows(len(chunk)), args))
        return out

    def _log_query(self, sql: str, args: tuple[Any, ...] = (), *, excluding: str | None = None) -> psycopg.Cursor[Any]:
        """A read of the log: the events this transaction appended go first, unless the read
        leaves out every one of them (their session is ``excluding``: a session's news)."""
        if self.rows and (excluding is None or any(r[4] != excluding for r in self.rows)):
            self.pending += self.inserts()
        return self._query(sql, args)

    def events(
        self,
        after: int,
        *,
        keys: Collection[str] | None = None,
        exclude_session: str | None = None,
        limit: int = 100,
    ) -> list[EventRow]:
        sql = self.sql
        if keys is None:
            if exclude_session is None:
                rows = self._log_query(sql.events, (after, limit)).fetchall()
            else:
                rows = self._log_query(sql.events_excl, (after, exclude_session, limit), excluding=exclude_session).fetchall()
        else:
            wanted = list(keys)
            if exclude_session is None:
                rows = self._log_query(sql.events_keys, (wanted, after, limit)).fetchall()
            else:
                rows = self._log_query(sql.events_keys_excl, (wanted, after, exclude_session, limit), excluding=exclude_session).fetchall()
        return [_event(r) for r in rows]

    def skim(self, after: int, *, exclude_session: str | None = None, limit: int = 100) -> list[EventKey]:
        if exclude_session is None:
            rows = self._log_query(self.sql.skim, (after, limit)).fetchall()
        else:
            rows = self._log_query(self.sql.skim_excl, (after, exclude_session, limit), excluding=exclude_session).fetchall()
        return [EventKey(*r) for r in rows]

    def events_at(self, positions: list[int]) -> list[EventRow]:
        return [_event(r) for r in self._log_query(self.sql.events_at, (positions,)).fetchall()]

    def recorded(self, request_id: str) -> tuple[str, str] | None:
        self.lock(("@request/" + request_id,))
        row = self._query(self.sql.recorded, (request_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def record(self, request_id: str, digest: str, outcome: str, at: float) -> None:
        self.pending.append((self.sql.record, (request_id, digest, outcome, at)))

    def forget_requests(self, recorded_before: float) -> int:
        self._query(self.sql.date_requests, (self.now(),))
        return int(self._query(self.sql.forget_requests, (recorded_before,)).rowcount)

    def load_session(self, name: str) -> SessionRow | None:
        row = self._query(self.sql.load_session, (name,)).fetchone()
        return None if row is None else SessionRow(name, row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4])

    def save_session(self, row: SessionRow) -> None:
        self.pending.append(
            (
                self.sql.save_session,
                (row.name, row.agent, row.position, json.dumps(sorted(row.interest)), json.dumps(row.ahead), row.saved),
            )
        )

    def forget_sessions(self, saved_before: float) -> int:
        self._query(self.sql.date_sessions, (self.now(),))
        return int(self._query(self.sql.forget_sessions, (saved_before,)).rowcount)

    def keys(self, prefix: str, limit: int, *, live_only: bool = True) -> list[str]:
        r = _range(prefix)
        if r is None:
            return []
        rows = self._query(self.sql.keys[live_only, prefix.startswith("@")], (*r, limit)).fetchall()
        return [row[0] for row in rows]

    def scan(self, prefix: str, limit: int, *, after: str | None = None) -> list[tuple[str, KeyRow]]:
        r = _range(prefix)
        if r is None:
            return []
        if after is None or after < prefix:
            rows = self._query(self.sql.scan, (*r, limit)).fetchall()
        else:
            rows = self._query(self.sql.scan_after, (after, r[1], limit)).fetchall()
        return [(row[0], KeyRow(row[1], row[2], row[3], row[4])) for row in rows]

    def expired(self, prefix: str, now: float, limit: int) -> list[LeaseRow]:
        r = _range(prefix)
        if r is None:
            return []
        rows = self._query(self.sql.expired, (now, *r, limit)).fetchall()
        return [LeaseRow(*row) for row in rows]

    def leases(self, prefix: str, limit: int) -> list[LeaseRow]:
        r = _range(prefix)
        if r is None:
            return []
        rows = self._query(self.sql.leases, (*r, limit)).fetchall()
        return [LeaseRow(*row) for row in rows]

    # -- replication
    def origins(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in self._query(self.sql.origins).fetchall()}

    def set_origin(self, replica: str, upto: int) -> None:
        self.pending.append((self.sql.set_origin, (replica, upto)))

    def events_from(self, replica: str, after: int, limit: int) -> list[EventRow]:
        here = self._log_query(self.sql.events_here, (after, replica, limit)).fetchall()
        arrived = self._query(self.sql.events_arrived, (replica, after, limit)).fetchall()
        rows = [_event(r) for r in here + arrived]
        rows.sort(key=lambda e: e.origin)
        return rows[:limit]

    def states(self, after: str | None, limit: int) -> list[tuple[str, KeyRow]]:
        rows = self._query(self.sql.states, (after or "", limit)).fetchall()
        return [(row[0], KeyRow(row[1], row[2], row[3], row[4])) for row in rows]

    def setting(self, name: str) -> str | None:
        row = self._query(self.sql.setting, (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        self.pending.append((self.sql.set_setting, (name, value)))


    # -- compaction (Store.compact)
    def session_floor(self) -> int | None:
        row = self._query(f"SELECT min(position) FROM {self.sql.schema}.sessions").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def compactable(self, before: int) -> tuple[int, int]:
        s = self.sql.schema
        total = self._log_query(f"SELECT count(*) FROM {s}.events WHERE pos < %s", (before,)).fetchone()[0]  # type: ignore[index]
        heads = self._query(
            f"SELECT count(*) FROM (SELECT pos FROM {s}.keys WHERE pos < %s UNION SELECT pos FROM {s}.leases WHERE pos < %s) h",
            (before, before),
        ).fetchone()[0]  # type: ignore[index]
        return int(total) - int(heads), int(heads)

    def compact(self, before: int, limit: int) -> dict[str, int]:
        s = self.sql.schema
        rows = self._log_query(
            f"DELETE FROM {s}.events WHERE pos IN (SELECT e.pos FROM {s}.events e WHERE e.pos < %s"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.keys k WHERE k.pos = e.pos)"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.leases l WHERE l.pos = e.pos) ORDER BY e.pos LIMIT %s)"
            " RETURNING pos, replica, coalesce(opos, pos)",
            (before, limit),
        ).fetchall()
        upto: dict[str, int] = {}
        for _, replica, origin in rows:
            upto[replica] = max(upto.get(replica, 0), int(origin))
        upto[""] = len(rows)
        return upto

    def acted(self, agent: str) -> bool:
        return self._log_query(self.sql.acted, (agent,)).fetchone() is not None


class _Transaction:
    """``with backend.transaction(write=...) as tx``: a pooled connection, BEGIN (taking the
    head lock for writes), then COMMIT on a clean exit or ROLLBACK on an exception."""

    __slots__ = ("backend", "write", "conn", "tx")

    def __init__(self, backend: PostgresBackend, write: bool) -> None:
        self.backend = backend
        self.write = write

    def __enter__(self) -> _PgTx:
        b = self.backend
        try:
            self.conn = b._pool.getconn(timeout=b.busy_timeout)
        except b._pg_errors as e:
            raise b._unavailable(e, "cannot get a connection") from None
        try:
            cur = self.conn.cursor()
            now: float | None = None
            if self.write:
                cur.execute(b.sql.begin_write if b.clock is not None else b.sql.begin_write_timed)
                cur.nextset()
                cur.nextset()
                head = int(cur.fetchone()[0])  # type: ignore[index]
                if b.clock is None:
                    cur.nextset()
                    now = float(cur.fetchone()[0])  # type: ignore[index]
            elif b.clock is None:  # the time comes with the watermark, read before the snapshot
                row = cur.execute(b.sql.safe_head_timed).fetchone()
                head, now = int(row[0]), float(row[1])  # type: ignore[index]
                cur.execute(b.sql.begin_read)
            else:
                head = int(cur.execute(b.sql.safe_head).fetchone()[0])  # type: ignore[index]
                cur.execute(b.sql.begin_read)
        except BaseException as e:
            self._finish(rollback=True)
            if isinstance(e, b._pg_errors):
                raise b._unavailable(e, "cannot begin a transaction") from None
            raise
        self.tx = _PgTx(cur, b.sql, b.clock, head, now, self.write)
        return self.tx

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        b = self.backend
        if exc is not None:
            self._finish(rollback=True)
            if isinstance(exc, b._pg_errors):
                raise b._unavailable(exc, "the transaction failed; nothing was written") from None
            return
        tx = self.tx
        try:
            if tx.rows:
                tx.flush(*tx.inserts((b.notify_channel, str(tx.last))), ("COMMIT", ()))
            elif tx.appended:
                tx.flush((b.sql.notify, (b.notify_channel, str(tx.last))), ("COMMIT", ()))
            elif tx.pending:
                tx.flush(("COMMIT", ()))
            else:
                tx.cur.execute("COMMIT")
        except BaseException as e:
            self._finish(rollback=True)
            if isinstance(e, b._pg_errors):
                raise b._unavailable(
                    e, "could not commit; the write may or may not have been applied: retry with the same request id"
                ) from None
            raise
        self._finish(rollback=False)

    def _finish(self, *, rollback: bool) -> None:
        conn = self.conn
        if rollback:
            try:
                if not conn.closed and conn.info.transaction_status != self.backend._idle:
                    conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the connection is broken; the pool replaces it
                pass
        self.backend._pool.putconn(conn)


# --------------------------------------------------------------------------- backend


class PostgresBackend:
    """A comity store in one schema of a PostgreSQL database (``?schema=NAME``, default
    ``comity``).  Thread-safe: each transaction takes a connection from a pool of
    ``pool_size``.  ``clock=None`` (production) judges expiry by the database's clock."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        rng: Rng,
        schema: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
        create: bool = True,
    ) -> None:
        try:
            import psycopg
            import psycopg_pool
        except ImportError:
            raise Invalid(
                "store", "PostgreSQL stores need psycopg: pip install 'comity[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._idle = psycopg.pq.TransactionStatus.IDLE
        self.conninfo, self.schema, self.location = split_url(url, schema)
        self._secrets = url_secrets(url)
        if pool_size < 1:
            raise Invalid("pool_size", f"must be at least 1, got {pool_size!r}")
        self.clock = clock
        self.busy_timeout = busy_timeout
        self.sql = _Sql(self.schema)
        self.notify_channel = self.sql.channel
        self._pg_errors: tuple[type[BaseException], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            psycopg_pool.PoolTimeout,
        )
        self._listener: psycopg.Connection[Any] | None = None
        self._listening = threading.Lock()  # held by the one thread reading the listener
        self._changed = threading.Condition()  # waiters without it wait here for its news
        self._latest = 0  # the greatest committed head the listener has read
        self._notified = 0  # notifications received (each: a commit; read the watermark again)
        self._closed = False
        self._wall: Clock = SystemClock()  # waiting on a socket takes real time, whatever judges leases

        # Open (and migrate) on a connection of our own first: an unreachable server is an
        # error now, not a pool retrying in the background until a timeout.
        try:
            with psycopg.connect(self.conninfo, autocommit=True, **self._connect_kwargs()) as conn:
                self._migrate(conn, rng, create)
                self._new_replica_if_copied(conn, rng)
                self.meta = self._read_meta(conn)
        except psycopg.OperationalError as e:
            raise self._unavailable(e, "cannot open the store") from None
        except psycopg.Error as e:
            raise Unavailable(f"cannot open the store at {self.location}: {scrub(str(e), self._secrets)} (is it a comity schema?)") from None
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = psycopg_pool.ConnectionPool(
            self.conninfo,
            kwargs={"autocommit": True, **self._connect_kwargs()},
            min_size=1,
            max_size=pool_size,
            timeout=busy_timeout,
            num_workers=1,
            open=True,
            name=f"comity-{self.schema}",
        )

    def _connect_kwargs(self) -> dict[str, Any]:
        # A writer waits for the head lock at most busy_timeout (then Unavailable, as SQLite's
        # busy timeout).  The URL's own ``options`` come after ours, so they win.
        kw: dict[str, Any] = {}
        conninfo = self._psycopg.conninfo.conninfo_to_dict(self.conninfo)
        if "connect_timeout" not in conninfo:
            kw["connect_timeout"] = max(1, int(min(self.busy_timeout, 10)))
        theirs = conninfo.get("options")
        kw["options"] = (
            f"-c lock_timeout={int(self.busy_timeout * 1000)}"
            f" -c idle_in_transaction_session_timeout={int(IDLE_IN_TRANSACTION_S * 1000)}"
            + (f" {theirs}" if theirs else "")
        )
        return kw

    def _unavailable(self, e: BaseException, what: str) -> Unavailable:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = scrub(reason, self._secrets)
        if isinstance(e, self._psycopg.errors.LockNotAvailable):
            return Unavailable(f"the store at {self.location} is busy (no write lock within {self.busy_timeout:g}s); retry")
        return Unavailable(f"{what} at {self.location}: {reason}")

    # ------------------------------------------------------------------ setting up
    def _version(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT to_regclass(%s)", (f'{self.sql.schema}.meta',)).fetchone()
        if row is None or row[0] is None:
            return 0
        got = conn.execute(f"SELECT value FROM {self.sql.schema}.meta WHERE name = 'schema_version'").fetchone()
        return int(got[0]) if got is not None else 0

    def _migrate(self, conn: psycopg.Connection[Any], rng: Rng, create: bool = True) -> None:
        version = self._version(conn)
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            others = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (self.schema,)
            ).fetchone()
            if others is not None and others[0]:
                raise StoreFileError(
                    f"schema {self.schema!r} at {self.location} holds tables that are not a comity store's;"
                    " comity will not change them. Name another schema (?schema=NAME)",
                    location=self.location,
                    problem="foreign",
                )
            if not create:
                raise no_store(self.location)
        s = self.sql.schema
        with conn.transaction():
            # Processes opening a fresh store together: one creates it, the others wait here.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"comity/{self.schema}",))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            version = self._version(conn)
            if version > SCHEMA_VERSION:
                raise Invalid(
                    "store",
                    f"{self.location} has schema version {version}, newer than this comity understands "
                    f"({SCHEMA_VERSION}); upgrade comity",
                )
            with conn.cursor() as cur:
                for step in MIGRATIONS[version:]:
                    step(cur, s, rng)
            conn.execute(f"UPDATE {s}.meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))

    def _identity(self, conn: psycopg.Connection[Any]) -> str:
        """Which database this schema is: the cluster, its timeline (a restore or failover
        starts a new one), the database and schema oids (a dump restored gets new ones)."""
        parts: list[str] = []
        for q in (
            "SELECT system_identifier::text FROM pg_control_system()",
            "SELECT timeline_id::text FROM pg_control_checkpoint()",
        ):
            try:
                with conn.transaction():
                    row = conn.execute(q).fetchone()
                parts.append(str(row[0]) if row else "")
            except self._psycopg.Error:  # not allowed to read the control file: oids alone
                parts.append("")
        row = conn.execute(
            "SELECT d.oid::text, n.oid::text FROM pg_database d, pg_namespace n"
            " WHERE d.datname = current_database() AND n.nspname = %s",
            (self.schema,),
        ).fetchone()
        if row is not None:
            parts += [row[0], row[1]]
        return ":".join(parts)

    def _new_replica_if_copied(self, conn: psycopg.Connection[Any], rng: Rng) -> None:
        """A replica is a database, not a process: a restored copy must not reuse the
        original's replica id, or two replicas would issue the same dots."""
        s = self.sql.schema
        here = self._identity(conn)
        row = conn.execute(f"SELECT value FROM {s}.meta WHERE name = 'database'").fetchone()
        if row is not None and row[0] == here:
            return
        with conn.transaction():
            conn.execute(f"SELECT pos FROM {s}.log_head FOR UPDATE")
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (self.sql.ns,))  # no writer issues dots meanwhile
            row = conn.execute(f"SELECT value FROM {s}.meta WHERE name = 'database'").fetchone()
            if row is not None and row[0] == here:
                return
            if row is not None:  # a copy: the original keeps its id, this one takes a new one
                old = conn.execute(f"SELECT value FROM {s}.meta WHERE name = 'replica_id'").fetchone()
                # Every event the original had written so far is here: replication must not send them again.
                head = conn.execute(self.sql.safe_head).fetchone()
                new = rng.new_id("r")[:13]
                if old and head:
                    conn.execute(self.sql.set_origin, (old[0], int(head[0])))
                    conn.execute(self.sql.set_origin, (new, int(head[0])))  # its events all come after
                conn.execute(f"UPDATE {s}.meta SET value = %s WHERE name = 'replica_id'", (new,))
                conn.execute(
                    f"INSERT INTO {s}.meta (name, value) VALUES ('copied_from', %s)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (old[0] if old else "",),
                )
            conn.execute(
                f"INSERT INTO {s}.meta (name, value) VALUES ('database', %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (here,),
            )

    def _read_meta(self, conn: psycopg.Connection[Any]) -> StoreMeta:
        rows = dict(conn.execute(f"SELECT name, value FROM {self.sql.schema}.meta").fetchall())
        return StoreMeta(
            rows["store_id"], rows["replica_id"], bytes.fromhex(rows["secret"]), int(rows["schema_version"]), self.location,
            rows.get("upstream") or None,
        )

    # ------------------------------------------------------------------ the Protocol
    def transaction(self, *, write: bool) -> _Transaction:
        return _Transaction(self, write)

    def size(self) -> int:
        """Bytes the schema's tables take in the database (with their indexes and TOAST)."""
        with self.transaction(write=False) as tx:
            row = tx.cur.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()
        return int(row[0]) if row else 0

    def reclaim(self) -> None:
        """VACUUM the log and the outcomes: their space is reused (PostgreSQL gives it back to
        the filesystem only with VACUUM FULL, which locks the tables; run that yourself if needed)."""
        try:
            with self._psycopg.connect(self.conninfo, autocommit=True, **self._connect_kwargs()) as conn:
                for table in ("events", "requests"):
                    conn.execute(f"VACUUM {self.sql.schema}.{table}")
        except self._pg_errors as e:
            raise self._unavailable(e, "could not be vacuumed") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        if self._listening.acquire(blocking=False):  # else the waiting thread closes it
            try:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
            finally:
                self._listening.release()

    # ------------------------------------------------------------------ change feed
    def wait_for_change(self, after: int, timeout: float) -> int:
        """The log's committed head once it is past ``after``, or when ``timeout`` seconds
        have passed (then possibly still ``after`` or less).  Many threads may wait at once:
        one of them reads the LISTEN connection and shares what it reads."""
        deadline = self._wall.monotonic() + max(0.0, timeout)
        while True:
            if self._listening.acquire(blocking=False):
                try:
                    head = self._pump(after, deadline)
                finally:
                    if self._closed and self._listener is not None:  # closed while we waited
                        self._listener.close()
                        self._listener = None
                    with self._changed:
                        self._listening.release()
                        self._changed.notify_all()
                return head
            with self._changed:
                while self._latest <= after and self._listening.locked():
                    remaining = deadline - self._wall.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                if self._latest > after:
                    return self._latest
                if deadline - self._wall.monotonic() <= 0:
                    break
            # the listening thread left before our change came: take its place
        with self.transaction(write=False) as tx:  # timed out: a durable catch-up read
            return tx.head()

    def _pump(self, after: int, deadline: float) -> int:
        try:
            conn = self._listen()
            notified = self._notified
            while True:
                # Read after LISTEN is in force: a commit either is in this read or notifies us.
                row = conn.execute(self.sql.head).fetchone()
                head = int(row[0]) if row else 0
                with self._changed:
                    if head > self._latest:
                        self._latest = head
                        self._changed.notify_all()
                if head > after:
                    return head
                if self._notified != notified:
                    notified = self._notified  # one came in with that read: read again
                    continue
                remaining = deadline - self._wall.monotonic()
                if remaining <= 0:
                    return head
                # Wait for the server to send something (a notification); the next query reads it.
                select.select([conn.fileno()], [], [], remaining)
        except self._pg_errors as e:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            raise self._unavailable(e, "lost the change feed") from None

    def _listen(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise Unavailable(f"the store at {self.location} is closed")
        if self._listener is None:
            conn = self._psycopg.connect(self.conninfo, autocommit=True, **self._connect_kwargs())
            conn.add_notify_handler(self._on_notify)
            conn.execute(f'LISTEN "{self.notify_channel}"')
            self._listener = conn
        return self._listener

    def _on_notify(self, n: psycopg.Notify) -> None:
        self._notified += 1  # positions commit out of order: count notifications, do not compare them
