"""What the PostgreSQL backend adds beyond the conformance suite (which it passes as
``[postgres]``): URLs and schemas, the database's clock, log positions that commit in
order, the change feed, and opening a store the way a user does.

Needs ``COMITY_TEST_POSTGRES_URL``; without it these tests are skipped, saying so
(the URL-parsing ones run anyway).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import comity
from comity import Invalid, Unavailable
from comity.runtime import SeededRng, SystemRng, VirtualClock
from comity.store import Acquire, Next, PostgresBackend, Put, Store, locate
from comity.store._postgres import SCHEMA_VERSION, split_url
from comity.store._txn import Caller

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def backends(postgres_url: str) -> Iterator[Callable[..., PostgresBackend]]:
    """``backends(**kw)``: another handle on this test's schema (as another server would hold)."""
    opened: list[PostgresBackend] = []

    def make(**kw: Any) -> PostgresBackend:
        b = PostgresBackend(postgres_url, rng=SeededRng(len(opened) + 1), **kw)
        opened.append(b)
        return b

    yield make
    for b in opened:
        b.close()


def _raw(url: str) -> Any:
    import psycopg

    conninfo, _, _ = split_url(url)
    return psycopg.connect(conninfo, autocommit=True)


# ------------------------------------------------------------------ URLs, no server


def test_the_schema_comes_out_of_the_url_and_the_password_out_of_the_location() -> None:
    conninfo, schema, location = split_url("postgresql://bob:s3cret@db.example:5433/work?sslmode=require&schema=team_a")
    assert schema == "team_a"
    assert conninfo == "postgresql://bob:s3cret@db.example:5433/work?sslmode=require"
    assert "s3cret" not in location and "bob:***@db.example:5433" in location and "schema=team_a" in location
    assert split_url("postgres://db.example/work")[1] == "comity"
    for bad in ("Team", "1abc", "a-b", "x" * 60, ""):
        with pytest.raises(Invalid) as ei:
            split_url(f"postgresql://db.example/work?schema={bad}")
        assert ei.value.field == "schema"


def test_locate_accepts_postgres_urls_and_refuses_other_urls() -> None:
    assert locate("postgresql://db.example/work") == ("postgresql://db.example/work", "given")
    assert locate("postgres://db.example/work")[0] == "postgres://db.example/work"
    for url in ("mysql://db.example/work", "http://localhost:8000", "https://comity.example"):
        with pytest.raises(Invalid) as ei:
            locate(url)
        assert ei.value.field == "store"


def test_an_unreachable_server_is_unavailable_naming_the_store() -> None:
    pytest.importorskip("psycopg")
    t = time.monotonic()
    with pytest.raises(Unavailable) as ei:
        comity.open("postgresql://nobody:pw@127.0.0.1:1/nothing?connect_timeout=2")
    assert "127.0.0.1:1" in ei.value.message and "pw" not in ei.value.message
    assert time.monotonic() - t < 10


def test_the_cli_says_an_unreachable_server_is_exit_5(comity_cli: Run) -> None:
    pytest.importorskip("psycopg")
    r = comity_cli("get", "k", store="postgresql://127.0.0.1:1/nothing?connect_timeout=2")
    assert r.returncode == 5, r
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------ opening a store


def test_open_creates_the_schema_at_the_current_version_and_reopens_it(postgres_url: str) -> None:
    with comity.open(postgres_url, rng=SeededRng(1)) as store:
        info = store.info()
        assert info["schema_version"] == SCHEMA_VERSION
        assert "schema=t_" in info["location"]
        store.session("alice").create("k", "v")
        store_id, replica_id = store.store_id, store.replica_id
    with comity.open(postgres_url.replace("postgresql://", "postgres://", 1), rng=SeededRng(2)) as again:
        assert (again.store_id, again.replica_id) == (store_id, replica_id)
        assert again.session().get("k").values == ["v"]


def test_handles_opening_a_fresh_schema_together_create_one_store(postgres_url: str) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            with comity.open(postgres_url, rng=SystemRng()) as s:
                ids.append(s.store_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(ids) == 6 and len(set(ids)) == 1


def test_a_restored_copy_takes_a_new_replica_id(postgres_url: str) -> None:
    with comity.open(postgres_url) as store:
        original = store.replica_id
        schema = split_url(postgres_url)[1]
    with _raw(postgres_url) as conn:  # as if the schema were now in another database
        conn.execute(f"UPDATE \"{schema}\".meta SET value = 'elsewhere' WHERE name = 'database'")
    with comity.open(postgres_url) as copy:
        assert copy.replica_id != original
    with _raw(postgres_url) as conn:
        row = conn.execute(f"SELECT value FROM \"{schema}\".meta WHERE name = 'copied_from'").fetchone()
    assert row == (original,)


def test_cli_init_creates_the_store_and_the_cli_uses_it(comity_cli: Run, postgres_url: str) -> None:
    import json

    r = comity_cli("init", "--json", store=postgres_url)
    assert r.returncode == 0, r
    info = json.loads(r.stdout)
    assert info["schema_version"] == SCHEMA_VERSION and info["head"] == 0
    assert comity_cli("--agent", "alice", "create", "files/a", '"one"', store=postgres_url).returncode == 0
    got = comity_cli("get", "files/a", store=postgres_url)
    assert got.returncode == 0 and got.stdout == '"one"\n'


def test_a_writer_stuck_behind_another_writer_of_its_key_is_told_the_store_is_busy(postgres_url: str) -> None:
    """Writers lock the keys they touch, not the store: a writer of another key goes on."""
    with comity.open(postgres_url, busy_timeout=0.5) as store, comity.open(postgres_url) as other:
        s = store.session("alice")
        s.put("k", 1)
        with other.backend.transaction(write=True) as tx:
            tx.load("j")  # another writer of "j", mid-transaction, holds its lock
            with pytest.raises(Unavailable) as ei:
                s.put("j", 2)
            assert "busy" in ei.value.message
            assert s.put("elsewhere", 3).values == [3]  # a writer of another key does not wait
            assert s.get("k").values == [1]  # readers do not wait for writers
        assert s.put("j", 2).values == [2]  # and the pool's connection is usable again


def test_readers_never_pass_a_position_still_in_flight(postgres_url: str) -> None:
    """Positions come from a sequence and commit out of order: the head readers see (the
    watermark) stops before a position whose transaction is still open, so a cursor never
    skips it; it moves on when that transaction ends."""
    with comity.open(postgres_url) as store, comity.open(postgres_url) as other:
        s = store.session("alice")
        s.put("a", 1)
        before = store.info()["head"]
        with other.backend.transaction(write=True) as tx:
            slow = other.executor.execute(tx, Caller("bob", "b"), "slow-1", [], [Put("b", 1)])[0]["pos"]
            fast = s.put("c", 1).pos  # a later position, committed first
            assert fast > slow
            assert store.info()["head"] == slow - 1 == before  # not past the open one
            reader = store.session("carol")
            assert [e["key"] for e in reader.log(after=0)] == ["a"]
        assert store.info()["head"] == fast
        assert [e["key"] for e in reader.news().events] == ["b", "c"]  # nothing skipped, in order


def test_a_writers_events_go_with_its_commit_and_a_read_of_its_log_sends_them_first(postgres_url: str) -> None:
    """A write transaction's events wait until its COMMIT (one statement with the commit's
    NOTIFY), unless the transaction reads the log first: then they are sent before it."""
    with comity.open(postgres_url) as store:
        caller = Caller("alice", "a")
        with store.backend.transaction(write=True) as tx:
            store.executor.execute(tx, caller, "w-1", [], [Put("b", 1), Put("c", 2)], record=False)
            assert [r[1] for r in tx.rows] == ["b", "c"]  # not sent yet
            assert tx.events(0, exclude_session="a", limit=10) == [] and len(tx.rows) == 2  # the session's own news: not them
            assert [e.key for e in tx.events(0, exclude_session="z", keys=["c"], limit=10)] == ["c"]  # another's: sent first
            assert tx.rows == []
            store.executor.execute(tx, caller, "w-1b", [], [Put("b2", 10)], record=False)
            assert [e.key for e in tx.events(0, limit=10)] == ["b", "c", "b2"]  # sent first, then read
            assert tx.rows == []
            store.executor.execute(tx, caller, "w-2", [], [Put("d", 3)], record=False)
        with store.backend.transaction(write=True) as tx:
            store.executor.execute(tx, caller, "w-3", [], [Put("e", 4)], record=False)
            assert tx.acted("alice") and tx.rows == []  # any read of the log
        with store.backend.transaction(write=True) as tx:
            store.executor.execute(tx, caller, "w-4", [], [Put("f", 5)], record=False)
            outer = tx
            with pytest.raises(KeyError):  # another writer, rolled back: its events never reach the log
                with store.backend.transaction(write=True) as inner:
                    store.executor.execute(inner, caller, "w-5", [], [Put("g", 6)], record=False)
                    raise KeyError("g")
        assert outer.rows == [] and [e["key"] for e in store.session().log(after=0)] == ["b", "c", "b2", "d", "e", "f"]


def test_a_transaction_of_several_operations_takes_its_positions_together_in_order(postgres_url: str) -> None:
    """The positions of a transaction's events are taken in one statement with the first
    (under its lock): one for each operation, increasing in the operations' order, no gap."""
    from comity.store._check import check

    with comity.open(postgres_url) as store:
        s = store.session("alice")
        s.put("a", 0)
        r = s.txn(ops=[Put("x", 1), Acquire("job", 30), Put("y", 2), Next("n")])
        log = s.log(after=0)
        assert [(e["key"], e["op"]) for e in log][1:] == [("x", "put"), ("@lease/job", "acquire"), ("y", "put"), ("@seq/n", "next")]
        assert [e["pos"] for e in log] == [1, 2, 3, 4, 5] and r.pos == 5
    report = check(postgres_url)
    assert report.ok and report.facts["gaps"] == 0


def test_a_transaction_of_thousands_of_events_sends_them_in_statements_postgresql_takes(postgres_url: str) -> None:
    """A statement takes at most 65,535 parameters, 14 an event: a replication batch (5,000
    events by default) goes in several, all before the commit, its notification with the last."""
    from comity.store._backend import EventRow

    with comity.open(postgres_url) as store:
        with store.backend.transaction(write=True) as tx:
            for i in range(5_000):  # 70,000 parameters in all
                tx.append(EventRow(f"k/{i}", "note", "alice", "a", "r-test", i + 1, f"{i:020d}", "q"))
            assert len(tx.rows) == 5_000  # not sent yet
        log = store.session().log(after=0, limit=10_000)
        assert [e["key"] for e in log] == [f"k/{i}" for i in range(5_000)]
        assert [e["pos"] for e in log] == sorted(e["pos"] for e in log)


# ------------------------------------------------------------------ the database's clock


def test_leases_expire_by_the_database_clock_unless_a_clock_is_given(backends: Callable[..., PostgresBackend]) -> None:
    """The process's clock (here a virtual one, years behind) does not judge leases."""
    virtual = VirtualClock(start=1_000_000_000.0)
    store = Store(backends(), clock=virtual, rng=SeededRng(1))
    s = store.session("alice")
    with store.backend.transaction(write=False) as tx:
        db_now = tx.now()
    assert abs(db_now - virtual.now()) > 1e8
    lease = s.txn(ops=[Acquire("r", 30)]).results[0]
    assert db_now <= lease["expires"] - 30 < db_now + 60
    assert abs(s.now() - db_now) < 60

    injected = Store(backends(clock=virtual), clock=virtual, rng=SeededRng(2))
    assert injected.session().now() == virtual.now()


# ------------------------------------------------------------------ positions


def test_concurrent_writers_issue_dense_positions_a_reader_never_skips(
    backends: Callable[..., PostgresBackend],
) -> None:
    """Positions come from the locked head row, not a sequence: they commit in order, so a
    reader following the log from its last position sees every one, with no gaps."""
    stores = [Store(backends(pool_size=2), rng=SeededRng(i)) for i in range(2)]
    per_thread, threads_per_store = 25, 2
    total = per_thread * threads_per_store * len(stores)
    numbers: list[int] = []
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def write(store: Store, agent: str) -> None:
        try:
            s = store.session(agent)
            for _ in range(per_thread):
                numbers.append(s.txn(ops=[Next("n")], system=True).results[0]["value"])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def read() -> None:
        s = stores[0].session()
        after = 0
        while len(seen) < total and not errors:
            for e in s.log(after=after, limit=1000):
                seen.append(e["pos"])
                after = e["pos"]
            if done.is_set() and after >= total:
                break

    reader = threading.Thread(target=read)
    writers = [
        threading.Thread(target=write, args=(st, f"w{i}-{j}")) for i, st in enumerate(stores) for j in range(threads_per_store)
    ]
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(60)
    done.set()
    reader.join(60)
    assert not errors, errors
    assert sorted(numbers) == list(range(1, total + 1))
    assert seen == list(range(1, total + 1))


# ------------------------------------------------------------------ the change feed


def _wait_in_thread(b: PostgresBackend, after: int, timeout: float) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        t = time.monotonic()
        try:
            out["head"] = b.wait_for_change(after, timeout)
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        out["took"] = time.monotonic() - t

    th = threading.Thread(target=run)
    th.start()
    return th, out


def test_a_waiting_backend_wakes_on_another_backends_commit(backends: Callable[..., PostgresBackend]) -> None:
    waiter, writer = backends(), backends()
    assert waiter.notify_channel == writer.notify_channel and waiter.notify_channel.startswith("comity_t_")
    s = Store(writer, rng=SeededRng(1)).session("alice")
    head = s.put("k", 0).pos
    assert waiter.wait_for_change(head - 1, 5) == head  # already past: no wait
    th, out = _wait_in_thread(waiter, head, 20)
    time.sleep(0.2)  # let it LISTEN (a write before that is found by its first read anyway)
    pos = s.put("k2", 1).pos
    th.join(20)
    assert "error" not in out and out["head"] == pos and out["took"] < 10


def test_several_threads_wait_on_one_backend_and_all_wake(backends: Callable[..., PostgresBackend]) -> None:
    waiter, writer = backends(), backends()
    s = Store(writer, rng=SeededRng(1)).session("alice")
    waits = [_wait_in_thread(waiter, 0, 20) for _ in range(4)]
    time.sleep(0.2)
    pos = s.put("k", 0).pos
    for th, out in waits:
        th.join(20)
        assert "error" not in out and out["head"] == pos and out["took"] < 10


def test_a_missed_notification_loses_nothing(backends: Callable[..., PostgresBackend]) -> None:
    """A waiter that hears nothing still returns the committed head when its time is up."""
    waiter, writer = backends(), backends()
    assert waiter.wait_for_change(0, 0.2) == 0  # nothing happened: the current head
    writer.notify_channel = "comity_nobody_listens"  # its commits notify another channel
    th, out = _wait_in_thread(waiter, 0, 1.0)
    time.sleep(0.2)
    pos = Store(writer, rng=SeededRng(1)).session("alice").put("k", 0).pos
    th.join(20)
    assert "error" not in out and out["head"] == pos
