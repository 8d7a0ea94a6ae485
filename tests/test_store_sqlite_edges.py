"""The SQLite engine's edges, written for the mutants of ``comity.store._sqlite`` that the
conformance suite let through (docs/mutation.md): rows kept before their time was recorded,
what an engine error is called, a write transaction inside another, the bytes a store takes,
the settings and the replication tables.  A real store file in tmp_path; nothing mocked."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import comity
from comity.errors import Invalid, Unavailable
from comity.runtime import SeededRng, VirtualClock
from comity.store import Store, check
from comity.store._backend import EventRow, KeyRow, LeaseRow, SessionRow
from comity.store._files import StoreFileError
from comity.store import _sqlite as engine
from comity.store._sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteBackend, _unavailable


def _sqlite(tmp_path: Path, clock: VirtualClock, busy_timeout: float = 30.0) -> Store:
    return comity.open(tmp_path / "s.db", clock=clock, rng=SeededRng(7), busy_timeout=busy_timeout)


@contextlib.contextmanager
def _file_size_limit(size: int) -> Iterator[None]:
    """Files of this process may not grow past ``size`` bytes (a disk that refuses pages)."""
    import resource  # POSIX's: the tests using this are skipped elsewhere

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, limit[1]))
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)


def _wait_until_queued(store: Store, n: int) -> None:
    """Wait (at most ~10 s) until ``n`` writers are queued behind the group commit under way."""
    for _ in range(10_000):
        if len(store.writes._queue) == n:
            return
        threading.Event().wait(0.001)


def test_outcomes_and_sessions_kept_before_their_time_was_recorded_are_dated_when_next_cleaned(
    tmp_path: Path, clock: VirtualClock
) -> None:
    store = _sqlite(tmp_path, clock)
    b = store.backend
    with b.transaction(write=True) as tx:
        tx.record("old", "d", "{}", 0.0)  # as a store of schema 2 left it: no time
        tx.record("new", "d", "{}", clock.now())
        tx.save_session(SessionRow("legacy", "a", 0, [], {}, 0.0))
        tx.save_session(SessionRow("recent", "a", 0, [], {}, clock.now()))
    clock.advance(100)
    with b.transaction(write=True) as tx:
        assert tx.forget_requests(clock.now() - 50) == 1  # "new" is 100 s old; "old" is dated now
        assert tx.forget_sessions(clock.now() - 50) == 1
        assert tx.recorded("old") is not None and tx.recorded("new") is None
        assert tx.load_session("legacy") is not None and tx.load_session("recent") is None
    clock.advance(100)
    with b.transaction(write=True) as tx:
        assert tx.forget_requests(clock.now() - 50) == 1
        assert tx.forget_sessions(clock.now() - 50) == 1
        assert tx.recorded("old") is None and tx.load_session("legacy") is None
    store.close()


def test_a_session_row_reads_back_as_it_was_saved(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    row = SessionRow("s1", "alice", 7, ["b", "a"], {"k": 9}, 12.5)
    with store.backend.transaction(write=True) as tx:
        tx.save_session(row)
        assert tx.session_floor() == 7
        tx.save_session(SessionRow("s2", "bob", 3, [], {}, 1.0))
        assert tx.session_floor() == 3
    with store.backend.transaction(write=False) as tx:
        back = tx.load_session("s1")
        assert back == SessionRow("s1", "alice", 7, ["a", "b"], {"k": 9}, 12.5)
        assert tx.load_session("nobody") is None
    store.close()


def test_settings_origins_and_states(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    s = store.session("alice")
    for k in ("b", "a", "c"):
        s.put(k, k)
    with store.backend.transaction(write=True) as tx:
        assert tx.setting("x") is None
        tx.set_setting("x", "1")
        tx.set_setting("x", "2")
        assert tx.setting("x") == "2"
        tx.set_origin("r9", 5)
        tx.set_origin("r9", 3)  # never rewinds
        assert tx.origins() == {"r9": 5}
        assert [k for k, _ in tx.states(None, 10)] == ["a", "b", "c"]
        assert [k for k, _ in tx.states("a", 1)] == ["b"]
        assert tx.states("c", 10) == []
    store.close()


def test_events_of_an_origin_come_in_its_order_here_and_arrived(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    s = store.session("alice")
    s.put("k", 1)
    with store.backend.transaction(write=True) as tx:
        # two events of replica "far" arrived by replication, out of their order there
        for opos in (12, 10):
            tx.append(EventRow("f", "put", "bob", "x", "far", opos, "0", f"q{opos}", "1", None, opos=opos))
        mine = store.replica_id
        assert [e.origin for e in tx.events_from("far", 0, 10)] == [10, 12]
        assert [e.origin for e in tx.events_from("far", 10, 10)] == [12]
        assert [e.origin for e in tx.events_from("far", 0, 1)] == [10]
        assert [e.origin for e in tx.events_from(mine, 0, 10)] == [1]
        assert tx.events_from(mine, 1, 10) == []
    store.close()


def test_an_engine_error_is_named_for_what_it_is(tmp_path: Path) -> None:
    where = tmp_path / "s.db"
    full = _unavailable(where, sqlite3.OperationalError("database or disk is full"), "could not commit")
    assert isinstance(full, Unavailable) and full.details["problem"] == "disk_full"
    assert full.message == (
        f"the store at {where} could not commit: the disk is full (database or disk is full); nothing was written."
        " Free some space and retry"
    )
    busy = _unavailable(where, sqlite3.OperationalError("database is locked"), "could not begin a transaction")
    assert busy.message == f"the store at {where} could not begin a transaction (database is locked); nothing was written, retry"
    assert "problem" not in busy.details and busy.details["location"] == str(where)
    for e in (sqlite3.OperationalError("database disk image is malformed"), sqlite3.OperationalError("file is not a database"),
              sqlite3.DatabaseError("anything")):
        assert _unavailable(where, e, "failed").details["problem"] == "damaged"
    damaged = _unavailable(where, sqlite3.DatabaseError("file is not a database"), "failed")
    assert damaged.details["location"] == str(where)
    assert damaged.message.startswith(f"the store at {where} is damaged (file is not a database); nothing was written.")


def test_a_write_transaction_inside_another_on_the_same_file_is_a_bug_said_so(make_store: Callable[..., Store]) -> None:
    one = make_store("same.db")
    if not isinstance(one.backend, SQLiteBackend):
        pytest.skip("the writers' turn is the SQLite engine's")
    two = make_store("same.db")
    with one.backend.transaction(write=True):
        with pytest.raises(RuntimeError) as e:
            with two.backend.transaction(write=True):
                pass  # pragma: no cover
        assert str(e.value) == "a write transaction inside another one on the same store file"
        with two.backend.transaction(write=False) as tx:  # a read is not a writer
            assert tx.head() == 0
    with two.backend.transaction(write=True) as tx:  # the turn was given back
        assert tx.head() == 0


def test_a_writer_waiting_past_the_busy_timeout_is_told_the_store_is_busy(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock, busy_timeout=0.05)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with store.backend.transaction(write=True):
            holding.set()
            done.wait(10)

    other = comity.open(tmp_path / "s.db", clock=clock, rng=SeededRng(8), busy_timeout=0.05)
    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10)
        with pytest.raises(Unavailable) as e:
            with other.backend.transaction(write=True):
                pass  # pragma: no cover
        assert e.value.message == (
            f"the store at {tmp_path / 's.db'} is busy: another writer held it for 0.05s; nothing was written, retry"
        )
        assert e.value.details == {"location": str(tmp_path / "s.db")}
    finally:
        done.set()
        t.join()
    with other.backend.transaction(write=True) as tx:  # and the turn is free again
        assert tx.head() == 0
    other.close()
    store.close()


def test_a_stores_size_is_its_file_and_its_log(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    store.session("alice").put("k", "x" * 10_000)
    where = tmp_path / "s.db"
    wal = Path(f"{where}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    assert store.size() == where.stat().st_size + wal.stat().st_size
    store.close()


def test_a_writer_waits_for_another_connections_write_lock_and_then_writes(tmp_path: Path, clock: VirtualClock) -> None:
    """BEGIN IMMEDIATE waits out another process's writer (SQLite's busy handler, within the
    store's busy timeout) and writes once the lock is let go."""
    store = _sqlite(tmp_path, clock, busy_timeout=30.0)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer (a connection SQLite locks out as another process)
    started, done = threading.Event(), threading.Event()
    written: list[int] = []

    def write() -> None:
        started.set()
        written.append(store.session("alice").put("k", 1).pos)
        done.set()

    t = threading.Thread(target=write)
    t.start()
    started.wait()
    assert not done.wait(0.2)  # still waiting for the lock
    other.execute("COMMIT")
    t.join(30)
    assert written and store.session().get("k").value == 1
    assert store.backend.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    other.close()
    store.close()


def test_a_writer_that_waits_past_the_busy_timeout_writes_nothing_and_is_told_the_store_is_busy(
    tmp_path: Path, clock: VirtualClock
) -> None:
    store = _sqlite(tmp_path, clock, busy_timeout=0.3)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable) as ei:
            store.session("alice").put("k", 1)
        assert ei.value.message == (
            f"the store at {tmp_path / 's.db'} could not begin a transaction (database is locked); nothing was written, retry"
        )
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.backend.db.execute("PRAGMA busy_timeout").fetchone()[0] == 300
    assert store.session().get("k").values == []
    store.session("alice").put("k", 2)  # the lock is free again: the next write goes through


def test_states_read_back_each_keys_row(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    s = store.session("alice")
    s.put("0", 1)  # before every letter: from the first key means from "", not from a name
    s.put("a", 1)
    w = s.put("b", 1)
    s.delete("b", context=w.context)
    with store.backend.transaction(write=False) as tx:
        assert tx.states(None, 10) == [("0", tx.load("0")), ("a", tx.load("a")), ("b", tx.load("b"))]
        assert tx.scan("", 10) == [("0", tx.load("0")), ("a", tx.load("a"))]
        b = tx.load("b")
        assert b is not None and (b.pos, b.live) == (4, False)
    store.close()


def test_transactions_committed_together_are_each_all_or_nothing(tmp_path: Path, clock: VirtualClock) -> None:
    """Writers that arrive while a commit is under way share the next one (a group commit):
    each transaction in it is its own savepoint, so one refused leaves the others whole."""
    from comity.errors import StaleContext

    store = _sqlite(tmp_path, clock)
    s = store.session("alice")
    s.put("taken", 0)
    inside, go = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def first(tx: object) -> None:
        inside.set()
        go.wait(10)

    sessions = {name: store.session(name) for name in ("bob", "carol")}  # opened before: opening reads

    def write(name: str, key: str) -> None:
        try:
            outcomes[name] = sessions[name].create(key, name).pos
        except StaleContext as e:
            outcomes[name] = e

    holder = threading.Thread(target=store.writes.run, args=(first,))
    holder.start()
    assert inside.wait(10)
    writers = [threading.Thread(target=write, args=("bob", "fresh")), threading.Thread(target=write, args=("carol", "taken"))]
    for t in writers:
        t.start()
    _wait_until_queued(store, 2)  # both wait for the commit under way
    assert len(store.writes._queue) == 2
    go.set()
    holder.join()
    for t in writers:
        t.join()
    assert isinstance(outcomes["carol"], StaleContext)
    assert s.get("fresh").values == ["bob"] and s.get("taken").values == [0]
    assert store.writes.largest == 2
    store.close()


# ------------------------------------------------------------------ store files of other schemas

# What a store file holds, as SQLite keeps it.  Stores are migrated by their version number, so a
# released migration is never edited: a store made by this comity must hold what one made (or
# migrated) by an earlier one does, down to the names `comity check` looks for.
RELEASED_SCHEMA = [
    ("index", "events_first", "events", "CREATE INDEX events_first ON events (key, pos) WHERE prev = 0"),
    ("index", "events_origin", "events", "CREATE INDEX events_origin ON events (replica, opos) WHERE opos IS NOT NULL"),
    ("index", "keys_live", "keys", "CREATE INDEX keys_live ON keys (key) WHERE live = 1"),
    ("index", "leases_held", "leases", "CREATE INDEX leases_held ON leases (expires) WHERE holder IS NOT NULL"),
    ("index", "requests_at", "requests", "CREATE INDEX requests_at ON requests (at)"),
    ("table", "events", "events",
     "CREATE TABLE events (pos INTEGER PRIMARY KEY, key TEXT NOT NULL, op TEXT NOT NULL, agent TEXT NOT NULL,"
     " session TEXT NOT NULL, replica TEXT NOT NULL, counter INTEGER NOT NULL, hlc TEXT NOT NULL,"
     " request_id TEXT NOT NULL, value TEXT, detail TEXT, prev INTEGER NOT NULL, seen INTEGER, opos INTEGER)"),
    ("table", "keys", "keys",
     "CREATE TABLE keys (key TEXT PRIMARY KEY, clock TEXT NOT NULL, hlc TEXT NOT NULL, pos INTEGER NOT NULL,"
     " live INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID"),
    ("table", "leases", "leases",
     "CREATE TABLE leases (resource TEXT PRIMARY KEY, holder TEXT, token INTEGER NOT NULL, expires REAL NOT NULL,"
     " pos INTEGER NOT NULL, hlc TEXT NOT NULL) WITHOUT ROWID"),
    ("table", "meta", "meta", "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"),
    ("table", "origins", "origins", "CREATE TABLE origins (replica TEXT PRIMARY KEY, upto INTEGER NOT NULL) WITHOUT ROWID"),
    ("table", "requests", "requests",
     "CREATE TABLE requests (request_id TEXT PRIMARY KEY, digest TEXT NOT NULL, outcome TEXT NOT NULL,"
     " at REAL NOT NULL DEFAULT 0) WITHOUT ROWID"),
    ("table", "sessions", "sessions",
     "CREATE TABLE sessions (name TEXT PRIMARY KEY, agent TEXT NOT NULL, position INTEGER NOT NULL, interest TEXT NOT NULL,"
     " ahead TEXT NOT NULL DEFAULT '{}', saved REAL NOT NULL DEFAULT 0) WITHOUT ROWID"),
]  # fmt: skip


def _schema(path: Path) -> list[tuple[str, str, str, str]]:
    db = sqlite3.connect(path)
    try:
        return [tuple(r) for r in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")]
    finally:
        db.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_new_store_holds_the_released_schema_and_checks_healthy(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    store.session("alice").put("k", 1)
    store.close()
    assert _schema(tmp_path / "s.db") == RELEASED_SCHEMA
    assert _version(tmp_path / "s.db") == SCHEMA_VERSION == 5
    db = sqlite3.connect(tmp_path / "s.db")
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    db.close()
    # the ids' forms: contexts and tokens carry them
    assert len(meta["store_id"]) == 17 and meta["store_id"][0] == "s" and len(meta["replica_id"]) == 13 and meta["replica_id"][0] == "r"
    assert len(bytes.fromhex(meta["secret"])) == 32
    report = check(tmp_path / "s.db")
    assert report.ok, report.problems
    assert report.facts["schema_version"] == SCHEMA_VERSION


def _store_of_schema(path: Path, version: int) -> dict[str, str]:
    """A store file as comity of schema ``version`` made it, holding a session, a recorded
    request and an event of that time; its meta (identity, replica, secret) is returned."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = wal")
    db.execute("BEGIN IMMEDIATE")
    for step in MIGRATIONS[:version]:
        step(db, SeededRng(3))
    db.execute(f"PRAGMA user_version = {version}")
    db.execute("INSERT INTO sessions (name, agent, position, interest) VALUES ('old', 'alice', 1, '[\"k\"]')")
    db.execute("INSERT INTO requests (request_id, digest, outcome) VALUES ('q-old', 'd', '{}')")
    db.execute("COMMIT")
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    db.close()
    return meta


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_a_store_of_an_older_schema_is_migrated_and_keeps_what_it_held(
    tmp_path: Path, clock: VirtualClock, version: int
) -> None:
    where = tmp_path / "s.db"
    meta = _store_of_schema(where, version)
    store = _sqlite(tmp_path, clock)
    assert (store.store_id, store.replica_id) == (meta["store_id"], meta["replica_id"])  # the same store, not a copy
    assert _version(where) == SCHEMA_VERSION
    with store.backend.transaction(write=False) as tx:
        # the columns added since are there, with the defaults that say "from before"
        assert tx.load_session("old") == SessionRow("old", "alice", 1, ["k"], {}, 0.0)
        assert tx.recorded("q-old") == ("d", "{}")
    w = store.session("alice").put("k", 1)
    assert store.session().get("k").values == [1] and w.pos == 1
    store.close()
    assert _schema(where) == RELEASED_SCHEMA  # the same as a new store's
    assert check(where).ok
    again = _sqlite(tmp_path, clock)  # migrated once: opened again as it is
    assert again.session().get("k").values == [1]
    again.close()


def test_a_store_of_a_newer_schema_is_refused_and_left_as_it_was(tmp_path: Path, clock: VirtualClock) -> None:
    where = tmp_path / "s.db"
    _sqlite(tmp_path, clock).close()
    db = sqlite3.connect(where, isolation_level=None)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = where.read_bytes()
    with pytest.raises(Invalid) as e:
        _sqlite(tmp_path, clock)
    assert e.value.message == (
        f"store: {where} has schema version {SCHEMA_VERSION + 1}, newer than this comity understands ({SCHEMA_VERSION});"
        " upgrade comity"
    )
    assert e.value.field == "store"
    assert _version(where) == SCHEMA_VERSION + 1 and where.read_bytes() == before
    db = sqlite3.connect(where, isolation_level=None)  # nothing of this process holds the file: it is let go
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.close()
    store = _sqlite(tmp_path, clock)
    store.session("alice").put("k", 1)
    store.close()


# ------------------------------------------------------------------ the engine failing


def test_opening_a_store_waits_for_no_writer(tmp_path: Path, clock: VirtualClock) -> None:
    """Opening a store of the current schema only reads: another process's write lock does
    not hold it up (nor does it take one)."""
    _sqlite(tmp_path, clock).close()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        store = _sqlite(tmp_path, clock, busy_timeout=0.05)
        assert store.session().get("k").values == []
        store.close()
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_write_that_fills_the_disk_writes_nothing_and_says_so(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    s = store.session("alice")
    s.put("k", 1)
    db = store.backend.db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")  # the disk is full
    with pytest.raises(Unavailable) as e:
        s.put("big", "x" * 100_000)
    assert e.value.message == (
        f"the store at {tmp_path / 's.db'} failed: the disk is full (database or disk is full); nothing was written."
        " Free some space and retry"
    )
    assert e.value.details == {"location": str(tmp_path / "s.db"), "problem": "disk_full"}
    assert s.get("big").values == []
    assert s.put("k2", 2).pos == 2  # the turn and the connection are free again
    store.close()


def test_a_bug_in_a_write_transaction_is_raised_as_it_is_and_rolled_back(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    b = store.backend
    with pytest.raises(sqlite3.IntegrityError):  # a bug of comity's, not the engine failing: not Unavailable
        with b.transaction(write=True) as tx:
            tx.set_setting("x", "1")
            tx.record("q", "d", "{}", 1.0)
            tx.record("q", "d", "{}", 1.0)
    with pytest.raises(ZeroDivisionError):
        with b.transaction(write=True) as tx:
            tx.set_setting("y", "1")
            1 / 0  # noqa: B018
    assert not b.db.in_transaction
    with b.transaction(write=True) as tx:  # rolled back, and the turn is free
        assert tx.setting("x") is None and tx.setting("y") is None and tx.recorded("q") is None
    store.close()


def test_a_transaction_the_engine_rolled_back_is_not_committed(tmp_path: Path, clock: VirtualClock) -> None:
    """SQLite rolls a whole transaction back on a full disk: what came before the failing
    statement is gone too, so the commit is refused rather than acknowledged."""
    store = _sqlite(tmp_path, clock)
    b = store.backend
    b.db.execute(f"PRAGMA max_page_count = {b.db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(Unavailable) as e:
        with b.transaction(write=True) as tx:
            tx.set_setting("small", "1")
            with pytest.raises(sqlite3.OperationalError):
                tx.set_setting("big", "x" * 100_000)
    assert e.value.message == (
        f"the store at {tmp_path / 's.db'} could not commit (cannot commit - no transaction is active); nothing was written, retry"
    )
    with b.transaction(write=True) as tx:
        assert tx.setting("small") is None
    store.close()


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="a file size limit (RLIMIT_FSIZE) is POSIX's")
def test_a_commit_the_disk_refuses_writes_nothing_and_says_so(tmp_path: Path, clock: VirtualClock) -> None:
    """The write-ahead log grows at COMMIT; a disk that refuses it then fails the commit."""
    store = _sqlite(tmp_path, clock)
    s = store.session("alice")
    s.put("k", 1)
    b = store.backend
    wal = os.path.getsize(f"{tmp_path / 's.db'}-wal")
    with _file_size_limit(wal + 4096), pytest.raises(Unavailable) as e:
        with b.transaction(write=True) as tx:
            tx.set_setting("big", "x" * 50_000)
    assert e.value.message.startswith(f"the store at {tmp_path / 's.db'} could not commit (")
    assert e.value.message.endswith("); nothing was written, retry")
    assert not b.db.in_transaction
    assert s.put("k2", 2).pos == 2
    with b.transaction(write=False) as tx:
        assert tx.setting("big") is None
    store.close()


# ------------------------------------------------------------------ the writers' turn


def test_the_writers_turn_is_shared_by_every_open_handle_and_let_go_with_the_last(tmp_path: Path, clock: VirtualClock) -> None:
    where = os.path.realpath(tmp_path / "s.db")
    one = _sqlite(tmp_path, clock)
    two = _sqlite(tmp_path, clock)
    two.close()
    two.close()  # closing twice lets go once
    three = _sqlite(tmp_path, clock)  # opened after another closed: still the same turn as one's
    with one.backend.transaction(write=True):
        with pytest.raises(RuntimeError):
            with three.backend.transaction(write=True):
                pass  # pragma: no cover
    one.close()
    assert where in engine._gates
    three.close()
    assert where not in engine._gates  # nothing of a closed store stays in the process


def test_a_full_disk_fails_every_transaction_committed_with_it_each_told_so(tmp_path: Path, clock: VirtualClock) -> None:
    """A group commit's transaction that fills the disk: SQLite rolls the whole transaction
    back, so every transaction of the batch is refused, each told the disk is full."""
    store = _sqlite(tmp_path, clock)
    store.session("alice").put("k", 1)
    inside, go = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}
    sessions = {name: store.session(name) for name in ("bob", "carol")}

    def first(tx: object) -> None:
        inside.set()
        go.wait(10)

    def write(name: str, value: object) -> None:
        try:
            outcomes[name] = sessions[name].put(name, value).pos
        except Unavailable as e:
            outcomes[name] = e

    db = store.backend.db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 1}")
    holder = threading.Thread(target=store.writes.run, args=(first,))
    holder.start()
    assert inside.wait(10)
    writers = []
    for n, (name, value) in enumerate((("bob", 1), ("carol", "x" * 100_000)), start=1):
        writers.append(threading.Thread(target=write, args=(name, value)))
        writers[-1].start()
        _wait_until_queued(store, n)  # queued behind the commit under way, in this order
    assert len(store.writes._queue) == 2
    go.set()
    holder.join()
    for t in writers:
        t.join()
    for name in ("bob", "carol"):
        e = outcomes[name]
        assert isinstance(e, Unavailable) and e.details.get("problem") == "disk_full", (name, e)
    assert store.writes.largest == 2
    s = store.session()
    assert s.get("bob").values == [] and s.get("carol").values == []
    store.close()


# ------------------------------------------------------------------ opening a store file


def _without_wal(tmp_path: Path, clock: VirtualClock) -> Path:
    """A store file as a copy without its -wal leaves it: in rollback-journal mode."""
    store = _sqlite(tmp_path, clock)
    store.session("alice").put("k", 1)
    store.close()
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    assert db.execute("PRAGMA journal_mode = delete").fetchone()[0] == "delete"
    db.close()
    return tmp_path / "s.db"


def test_a_store_file_out_of_wal_mode_is_switched_back_once_another_lets_go_of_it(tmp_path: Path, clock: VirtualClock) -> None:
    where = _without_wal(tmp_path, clock)
    other = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process writing: the switch to WAL must wait for it

    def let_go() -> None:
        threading.Event().wait(0.2)
        other.execute("ROLLBACK")

    t = threading.Thread(target=let_go)
    t.start()
    store = _sqlite(tmp_path, clock, busy_timeout=10)
    t.join()
    other.close()
    assert store.backend.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.session().get("k").values == [1]
    store.session("alice").put("k2", 2)
    store.close()


def test_a_store_file_held_out_of_wal_mode_past_the_busy_timeout_is_busy(tmp_path: Path, clock: VirtualClock) -> None:
    where = _without_wal(tmp_path, clock)
    other = sqlite3.connect(where, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable) as e:
            _sqlite(tmp_path, clock, busy_timeout=0.05)
        assert e.value.message == f"the store at {where} is busy (database is locked); retry"
    finally:
        other.execute("ROLLBACK")
        other.close()
    store = _sqlite(tmp_path, clock)  # the failed open let go of the file
    assert store.session().get("k").values == [1]
    store.close()


def test_a_damaged_store_file_is_refused_by_name(tmp_path: Path, clock: VirtualClock) -> None:
    where = tmp_path / "s.db"
    where.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # an SQLite header, then nothing SQLite can read
    with pytest.raises(StoreFileError) as e:
        _sqlite(tmp_path, clock)
    assert e.value.details == {"location": str(where), "problem": "damaged"}
    assert e.value.message.startswith(f"the store at {where} is damaged (file is not a database); nothing was written.")
    assert where.read_bytes()[:16] == b"SQLite format 3\x00" and where.stat().st_size == 4016


@pytest.mark.parametrize("tables", [True, False])
def test_another_programs_sqlite_file_is_refused_saying_what_it_holds(tmp_path: Path, clock: VirtualClock, tables: bool) -> None:
    where = tmp_path / "s.db"
    db = sqlite3.connect(where, isolation_level=None)
    db.execute("CREATE TABLE theirs (x)")
    if not tables:
        db.execute("DROP TABLE theirs")
    db.close()
    with pytest.raises(StoreFileError) as e:
        _sqlite(tmp_path, clock)
    what = "it holds other tables" if tables else "it has no tables"
    assert e.value.message.startswith(f"{where} is an SQLite database but not a comity store ({what}); comity will not change it.")
    assert e.value.details == {"location": str(where), "problem": "foreign"}


# ------------------------------------------------------------------ giving space back


def test_space_is_given_back_to_the_filesystem(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    s = store.session("alice")
    w = s.put("k", "x" * 200_000)
    s.delete("k", context=w.context)
    with store.backend.transaction(write=True) as tx:
        tx.compact(tx.head(), 100)  # the value's event: its bytes are free pages now
    before = store.size()
    store.backend.reclaim()
    assert store.size() < before - 150_000
    assert Path(f"{tmp_path / 's.db'}-wal").stat().st_size == 0  # the log truncated
    assert s.get("k").values == []
    store.close()


def test_giving_space_back_while_this_process_writes_is_busy(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock, busy_timeout=0.05)
    writer = _sqlite(tmp_path, clock)  # another handle of this process on the file: it shares the writers' turn
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with writer.backend.transaction(write=True):
            holding.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10)
        with pytest.raises(Unavailable) as e:
            store.backend.reclaim()
    finally:
        done.set()
        t.join()
    assert e.value.message == f"the store at {tmp_path / 's.db'} is busy; retry the compaction later"
    assert e.value.details == {"location": str(tmp_path / "s.db")}
    store.backend.reclaim()  # the turn was given back
    writer.close()
    store.close()


def test_giving_space_back_while_another_process_writes_says_it_could_not(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock, busy_timeout=0.05)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable) as e:
            store.backend.reclaim()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert e.value.message == (
        f"the store at {tmp_path / 's.db'} could not be vacuumed (database is locked); nothing was written, retry"
    )
    assert e.value.details == {"location": str(tmp_path / "s.db")}
    store.session("alice").put("k", 1)  # the turn was given back
    store.close()


# ------------------------------------------------------------------ a key's events


def test_a_keys_events_are_its_own_and_not_a_lease_of_a_like_name(tmp_path: Path, clock: VirtualClock) -> None:
    """A key with no row (heartbeats on ``@agent/NAME``) is read by its notes, never by the
    lease whose name is the key less a prefix's length (the lease ``bob``)."""
    store = _sqlite(tmp_path, clock)
    with store.backend.transaction(write=True) as tx:
        beat = tx.append(EventRow("@agent/bob", "heartbeat", "bob", "s1", "r", 1, "1", "q1"))
        held = tx.append(EventRow("@lease/bob", "acquire", "alice", "s2", "r", 2, "2", "q2"))
        tx.save_lease(LeaseRow("bob", "alice", 1, 100.0, held, "2"))
        assert [e.pos for e in tx.events(0, keys=["@agent/bob"])] == [beat]
        assert [e.pos for e in tx.events(0, keys=["@lease/bob"])] == [held]
    store.close()


def test_a_keys_events_leave_out_the_asking_sessions_own(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    with store.backend.transaction(write=True) as tx:
        first = tx.append(EventRow("k", "put", "alice", "mine", "r", 1, "1", "q1", "1"))
        second = tx.append(EventRow("k", "put", "bob", "theirs", "r", 2, "2", "q2", "2", prev=first))
        third = tx.append(EventRow("k", "put", "alice", "mine", "r", 3, "3", "q3", "3", prev=second))
        tx.save("k", KeyRow("{}", "3", third), None)
        note = tx.append(EventRow("@refused", "refused", "alice", "mine", "r", 4, "4", "q4"))
        other = tx.append(EventRow("@refused", "refused", "bob", "theirs", "r", 5, "5", "q5"))
        assert [e.pos for e in tx.events(0, keys=["k", "@refused"])] == [first, second, third, note, other]
        assert [e.pos for e in tx.events(0, keys=["k", "@refused"], exclude_session="mine")] == [second, other]
        assert [e.pos for e in tx.events(0, keys=["k", "@refused"], exclude_session="r")] == [first, second, third, note, other]
        assert [e.pos for e in tx.events(first, keys=["k"], exclude_session="theirs")] == [third]
    store.close()


def test_a_store_that_cannot_be_created_says_why(tmp_path: Path, clock: VirtualClock) -> None:
    (tmp_path / "file").write_text("not a directory")
    where = tmp_path / "file" / "s.db"
    with pytest.raises(Unavailable) as e:
        comity.open(where, clock=clock, rng=SeededRng(7))
    assert e.value.message == f"cannot create the store at {where}: File exists"  # its directory cannot be made
    assert (tmp_path / "file").read_text() == "not a directory"


def test_a_copied_store_file_records_its_original_and_takes_an_id_of_the_same_form(tmp_path: Path, clock: VirtualClock) -> None:
    import shutil

    store = _sqlite(tmp_path, clock)
    store.session("alice").put("k", 1)
    original = store.replica_id
    store.close()
    shutil.copy(tmp_path / "s.db", tmp_path / "copy.db")
    copy = comity.open(tmp_path / "copy.db", clock=clock, rng=SeededRng(8))
    assert copy.replica_id != original and len(copy.replica_id) == len(original) == 13 and copy.replica_id[0] == "r"
    with copy.backend.transaction(write=False) as tx:
        assert tx.setting("copied_from") == original
    copy.close()


def test_an_event_reads_back_as_it_was_appended_every_field(tmp_path: Path, clock: VirtualClock) -> None:
    """Each column of a read event is its own: the chain's ``prev`` is not the context's
    ``seen``, read from the log, by key and by origin."""
    store = _sqlite(tmp_path, clock)
    with store.backend.transaction(write=True) as tx:
        first = EventRow("k", "put", "alice", "s1", "far", 3, "7", "q1", '"v"', '{"d":1}', 0, None, opos=40)
        tx.append(first)
        second = EventRow("k", "put", "bob", "s2", "far", 4, "8", "q2", None, None, first.pos, 2, opos=41)
        tx.append(second)
        tx.save("k", KeyRow("{}", "8", second.pos), None)
        assert second.prev != second.seen
        assert tx.events(0) == [first, second]
        assert tx.events(0, keys=["k"]) == [first, second]
        assert tx.events_from("far", 0, 10) == [first, second]
    store.close()


def test_a_store_the_disk_refuses_while_it_is_built_says_why_and_leaves_nothing(tmp_path: Path, clock: VirtualClock) -> None:
    """A new store is built under a temporary name; a disk that refuses its pages (a file
    size limit) fails the build, which says why and takes its files away (the -wal, the -shm)."""
    where = tmp_path / "s.db"
    with _file_size_limit(1024), pytest.raises(Unavailable) as e:
        comity.open(where, clock=clock, rng=SeededRng(7))
    assert e.value.message.startswith(f"cannot create the store at {where}: ")
    assert len(e.value.message) > len(f"cannot create the store at {where}: ")
    assert os.listdir(tmp_path) == []
    store = comity.open(where, clock=clock, rng=SeededRng(7))  # the same place, once the disk takes it
    assert store.session("alice").put("k", 1).pos == 1
    store.close()


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="a file size limit (RLIMIT_FSIZE) is POSIX's")
def test_a_store_the_disk_refuses_while_it_is_opened_is_not_called_damaged(tmp_path: Path, clock: VirtualClock) -> None:
    """A copy of a store writes its new replica id when first opened; a disk that refuses that
    write (a file size limit) is said as a transaction says it, retry, not "damaged, keep a
    copy", and the store opens once the disk takes it."""
    import shutil

    store = _sqlite(tmp_path, clock)
    store.session("alice").put("k", 1)
    store.close()
    copy = tmp_path / "copy.db"
    shutil.copyfile(tmp_path / "s.db", copy)
    with _file_size_limit(1024), pytest.raises(Unavailable) as e:
        comity.open(copy, clock=clock, rng=SeededRng(8))
    assert e.value.message.startswith(f"the store at {copy} could not be opened (")
    assert "damaged" not in e.value.message and e.value.message.endswith("retry")
    again = comity.open(copy, clock=clock, rng=SeededRng(8))
    assert again.session("bob").get("k").values == [1]
    again.close()


def test_compaction_reports_each_replicas_greatest_deleted_origin_whatever_their_order_here(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """Events of another replica can lie here out of their order there; what compaction deleted
    of it is up to the greatest of their origin positions, not the last one deleted."""
    store = _sqlite(tmp_path, clock)
    with store.backend.transaction(write=True) as tx:
        for opos in (12, 10):
            tx.append(EventRow("f", "put", "bob", "x", "far", opos, "0", f"q{opos}", "1", None, opos=opos))
        mine = tx.append(EventRow("g", "put", "alice", "y", "near", 1, "1", "q1", "1"))
        assert tx.compact(mine + 1, 100) == {"far": 12, "near": mine, "": 3}
        assert tx.events(0) == []
    store.close()


def test_a_store_another_process_migrated_while_this_one_waited_is_opened_as_it_is(tmp_path: Path, clock: VirtualClock) -> None:
    """Two processes open a store of an older schema at once: the one that waits for the other's
    write lock reads the version again under it, finds the store migrated, and opens it."""
    where = tmp_path / "s.db"
    meta = _store_of_schema(where, SCHEMA_VERSION - 1)
    other = sqlite3.connect(where, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    for step in MIGRATIONS[SCHEMA_VERSION - 1 :]:
        step(other, SeededRng(3))
    other.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    opened: list[Store | BaseException] = []

    def open_it() -> None:
        try:
            opened.append(_sqlite(tmp_path, clock, busy_timeout=10.0))
        except BaseException as e:  # noqa: BLE001 - the test reads it
            opened.append(e)

    t = threading.Thread(target=open_it)
    t.start()
    t.join(0.5)  # it has read the old version (the migration is not committed) and waits for the lock
    other.execute("COMMIT")
    other.close()
    t.join(10)
    store = opened[0]
    assert isinstance(store, Store), store
    assert (store.store_id, store.replica_id) == (meta["store_id"], meta["replica_id"])
    assert store.session("alice").put("k", 1).pos == 1
    store.close()
    assert _version(where) == SCHEMA_VERSION and _schema(where) == RELEASED_SCHEMA


def test_a_stores_info_names_its_schema_version_new_or_migrated(tmp_path: Path, clock: VirtualClock) -> None:
    store = _sqlite(tmp_path, clock)
    info = store.info()
    assert info["schema_version"] == SCHEMA_VERSION and info["location"] == str(tmp_path / "s.db") and info["head"] == 0
    store.close()
    _store_of_schema(tmp_path / "old.db", 2)
    old = comity.open(tmp_path / "old.db", clock=clock, rng=SeededRng(7))
    assert old.info()["schema_version"] == SCHEMA_VERSION
    old.close()


def test_a_missing_store_opened_without_create_is_named_and_not_made(tmp_path: Path, clock: VirtualClock) -> None:
    where = tmp_path / "s.db"
    with pytest.raises(StoreFileError) as e:
        comity.open(where, clock=clock, rng=SeededRng(7), create=False)
    assert e.value.message.startswith(f"no store at {where} (a read never creates one)")
    assert e.value.details == {"location": str(where), "problem": "absent"}
    assert os.listdir(tmp_path) == []


def test_the_engine_makes_a_missing_store_unless_told_not_to(tmp_path: Path, clock: VirtualClock) -> None:
    """``SQLiteBackend`` creates by default (a clone from a server or PostgreSQL relies on it)."""
    made = SQLiteBackend(tmp_path / "s.db", clock=clock, rng=SeededRng(7))
    assert made.meta.schema_version == SCHEMA_VERSION and made.meta.replica_id[0] == "r"
    made.close()
    with pytest.raises(StoreFileError):
        SQLiteBackend(tmp_path / "t.db", clock=clock, rng=SeededRng(7), create=False)
    assert sorted(os.listdir(tmp_path)) == ["s.db"]


def test_a_store_file_held_out_of_wal_mode_is_busy_even_with_less_than_one_retry_of_busy_timeout(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """A busy timeout shorter than the wait between tries of the switch to WAL still tries once,
    and says the store is busy."""
    where = _without_wal(tmp_path, clock)
    other = sqlite3.connect(where, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable) as e:
            _sqlite(tmp_path, clock, busy_timeout=0.001)
        assert e.value.message == f"the store at {where} is busy (database is locked); retry"
    finally:
        other.execute("ROLLBACK")
        other.close()
