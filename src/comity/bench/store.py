"""``comity bench store`` and ``comity bench claims``: the store against a plain table.

The store benchmark runs at the durability the README claims (WAL,
``synchronous=FULL``), and compares comity's put with the least a durable
key-value write can do on the same engine: a ``kv(key PRIMARY KEY, value)``
table, one upsert and one commit per operation, the same pragmas.

With ``store_url`` (``postgresql://…``) both run on that PostgreSQL database instead,
at its own durability settings: comity in scratch schemas ``comity_bench_*``, the
baseline a ``kv`` (or ``tasks``) table in another, one autocommitted upsert per
operation; every scratch schema is dropped afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..runtime import Clock, SystemClock, SystemRng, VirtualClock
from ..store import PRAGMAS, PostgresBackend, SQLiteBackend, Store
from ..store._postgres import is_postgres_url, split_url

__all__ = ["bench_store", "bench_claims"]

BUSY_TIMEOUT_MS = 30_000
VALUE: dict[str, Any] = {"path": "db/migrations/0267_add_index.sql", "author": "agent-7", "note": "x" * 120}
KEYSPACE = 1000
ROUNDS = 50  # fine interleaving: background noise lands on both sides alike


def _value(i: int) -> dict[str, Any]:
    v = dict(VALUE)
    v["n"] = i
    return v


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 4)


def _rate(samples: list[float]) -> float:
    return round(len(samples) / sum(samples), 1)


def _connect_raw(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute(f"PRAGMA journal_mode = {PRAGMAS['journal_mode']}")
    db.execute(f"PRAGMA synchronous = {PRAGMAS['synchronous']}")
    db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    return db


def _open(where: Path | str, *, clock: Clock | None = None, **kw: Any) -> Store:
    """A store at a path, or at a postgres URL (leases on the database's clock unless a
    ``clock`` is given)."""
    rng = SystemRng()
    if isinstance(where, str) and is_postgres_url(where):
        backend: Any = PostgresBackend(where, clock=clock, rng=rng, busy_timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        backend = SQLiteBackend(where, clock=clock or SystemClock(), rng=rng, busy_timeout=BUSY_TIMEOUT_MS / 1000)
    return Store(backend, clock=clock or SystemClock(), rng=rng, **kw)


def _connect_pg(url: str) -> Any:
    import psycopg

    return psycopg.connect(split_url(url)[0], autocommit=True)


class _SQLite:
    """Where a benchmark's stores and baseline live: SQLite files in a scratch directory."""

    name = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root

    def target(self, name: str) -> str:
        return str(self.root / f"{name}.db")

    def raw(self, name: str, table: str = "kv") -> Any:
        db = _connect_raw(self.root / f"{name}.db")
        if table == "tasks":
            db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, owner TEXT)")
        return db

    def raw_puts(self, db: Any, start: int, n: int) -> list[float]:
        return _raw_puts(db, start, n)

    def raw_gets(self, db: Any, n: int) -> list[float]:
        return _raw_gets(db, n)

    def seed(self, store: Store, events: int) -> None:
        _seed_log(store, events)

    def about(self) -> dict[str, Any]:
        return {"pragmas": {**PRAGMAS, "busy_timeout_ms": BUSY_TIMEOUT_MS}, "sqlite": sqlite3.sqlite_version}

    def close(self) -> None:
        pass


class _Postgres:
    """Scratch schemas ``comity_bench_<run>_<name>`` in the database of ``url``, dropped on close."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.run = f"comity_bench_{os.urandom(4).hex()}"
        self.schemas: list[str] = []
        self.admin = _connect_pg(url)

    def target(self, name: str) -> str:
        schema = f"{self.run}_{name}"
        self.schemas.append(schema)
        conninfo = split_url(self.url)[0]
        return conninfo + ("&" if "?" in conninfo else "?") + f"schema={schema}"

    def raw(self, name: str, table: str = "kv") -> Any:
        schema = f"{self.run}_{name}"
        self.schemas.append(schema)
        conn = _connect_pg(self.url)
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        if table == "tasks":
            conn.execute("CREATE TABLE tasks (id integer PRIMARY KEY, status text NOT NULL, owner text)")
        else:
            conn.execute("CREATE TABLE kv (key text PRIMARY KEY, value text NOT NULL)")
        return conn

    def raw_puts(self, conn: Any, start: int, n: int) -> list[float]:
        # Autocommit: each upsert is one transaction, committed before it returns.
        lat = []
        for i in range(start, start + n):
            text = json.dumps(_value(i), separators=(",", ":"))
            t = time.perf_counter()
            conn.execute(
                "INSERT INTO kv (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"k{i % KEYSPACE}", text),
                prepare=True,
            )
            lat.append(time.perf_counter() - t)
        return lat

    def raw_gets(self, conn: Any, n: int) -> list[float]:
        lat = []
        for i in range(n):
            t = time.perf_counter()
            row = conn.execute("SELECT value FROM kv WHERE key = %s", (f"k{i % KEYSPACE}",), prepare=True).fetchone()
            json.loads(row[0])
            lat.append(time.perf_counter() - t)
        return lat

    def seed(self, store: Store, events: int) -> None:
        _seed_log_pg(store, events)

    def about(self) -> dict[str, Any]:
        settings = {
            name: self.admin.execute(f"SHOW {name}").fetchone()[0]
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
        }
        return {"postgres": settings}

    def close(self) -> None:
        for schema in self.schemas:
            self.admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.admin.close()


def _engine(store_url: str | None, root: Path) -> _SQLite | _Postgres:
    if store_url is None:
        return _SQLite(root)
    if not is_postgres_url(store_url):
        from ..errors import Invalid

        raise Invalid("store_url", f"benchmarks take a postgresql:// URL (or none, for SQLite), got {store_url[:80]!r}")
    return _Postgres(store_url)


class _PutLoop:
    """Read-modify-write puts over a keyspace, each carrying the context of the last write."""

    def __init__(self, store: Store, prefix: str, *, request_ids: bool = False, agent: str = "bench") -> None:
        self.session = store.session(agent)
        self.prefix = prefix
        self.contexts: dict[str, str] = {}
        self.i = 0
        self.request_ids = request_ids

    def run(self, n: int) -> list[float]:
        lat = []
        put = self.session.put
        for _ in range(n):
            key = f"{self.prefix}{self.i % KEYSPACE}"
            value = _value(self.i)
            rid = f"{self.prefix}.{self.i}" if self.request_ids else None
            t = time.perf_counter()
            w = put(key, value, context=self.contexts.get(key), request_id=rid)
            lat.append(time.perf_counter() - t)
            self.contexts[key] = w.context
            self.i += 1
        return lat


def _raw_puts(db: sqlite3.Connection, start: int, n: int) -> list[float]:
    lat = []
    for i in range(start, start + n):
        text = json.dumps(_value(i), separators=(",", ":"))
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (f"k{i % KEYSPACE}", text),
        )
        db.execute("COMMIT")
        lat.append(time.perf_counter() - t)
    return lat


def _raw_gets(db: sqlite3.Connection, n: int) -> list[float]:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        row = db.execute("SELECT value FROM kv WHERE key = ?", (f"k{i % KEYSPACE}",)).fetchone()
        json.loads(row[0])
        lat.append(time.perf_counter() - t)
    return lat


def _seed_log(store: Store, events: int) -> None:
    """Bulk-load ``events`` events (with their keys' states and recorded requests), as a
    store that has been in use for a long time would hold."""
    backend = store.backend
    assert isinstance(backend, SQLiteBackend)
    db = backend.db
    replica = store.replica_id
    text = json.dumps(VALUE, separators=(",", ":"))
    clock = json.dumps({"e": [[replica, 1, [[VALUE]]]]}, separators=(",", ":"))
    batch = 50_000
    db.execute("BEGIN IMMEDIATE")
    for start in range(0, events, batch):
        n = min(batch, events - start)
        db.executemany(
            "INSERT INTO events (key, op, agent, session, replica, counter, hlc, request_id, value, detail, prev)"
            " VALUES (?, 'put', 'seed', 'seed', ?, 1, '0', ?, ?, NULL, ?)",
            (
                (f"seed/{(start + j) % 200_000}", replica, f"seed{start + j}", text, max(0, start + j + 1 - 200_000))
                for j in range(n)
            ),
        )
        db.executemany(
            "INSERT INTO requests (request_id, digest, outcome) VALUES (?, '', '{}')",
            ((f"qseed{start + j:016x}",) for j in range(n)),
        )
    # Each seeded key's head is its last event: key k was written at positions k+1, k+1+200000, ...
    keyspace = min(events, 200_000)
    db.executemany(
        "INSERT OR IGNORE INTO keys (key, clock, hlc, pos) VALUES (?, ?, '0', ?)",
        ((f"seed/{k}", clock, k + 1 + ((events - 1 - k) // 200_000) * 200_000) for k in range(keyspace)),
    )
    db.execute("COMMIT")


def _seed_log_pg(store: Store, events: int) -> None:
    """:func:`_seed_log` for PostgreSQL, generated by the server in one transaction."""
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    s = backend.sql.schema
    replica = store.replica_id
    text = json.dumps(VALUE, separators=(",", ":"))
    clock = json.dumps({"e": [[replica, 1, [[VALUE]]]]}, separators=(",", ":"))
    with _connect_pg(backend.conninfo) as conn, conn.transaction():
        conn.execute(
            f"INSERT INTO {s}.events (pos, key, op, agent, session, replica, counter, hlc, request_id, value, detail, prev)"
            " SELECT j + 1, 'seed/' || (j %% 200000), 'put', 'seed', 'seed', %s, 1, '0', 'seed' || j, %s, NULL,"
            " greatest(0, j + 1 - 200000) FROM generate_series(0, %s - 1) AS j",
            (replica, text, events),
        )
        conn.execute(
            f"INSERT INTO {s}.requests (request_id, digest, outcome)"
            " SELECT 'qseed' || lpad(to_hex(j), 16, '0'), '', '{{}}' FROM generate_series(0, %s - 1) AS j",
            (events,),
        )
        conn.execute(
            f"INSERT INTO {s}.keys (key, clock, hlc, pos) SELECT 'seed/' || k, %s, '0',"
            " k + 1 + ((%s - 1 - k) / 200000) * 200000 FROM generate_series(0, least(%s, 200000) - 1) AS k"
            " ON CONFLICT DO NOTHING",
            (clock, events, events),
        )
        conn.execute(f"UPDATE {s}.log_head SET pos = %s", (events,))
        conn.execute(f"SELECT setval('{s}.event_pos', %s)", (events,))
        conn.execute(f"ANALYZE {s}.events")


def bench_store(
    *,
    ops: int = 5000,
    log_events: int = 1_000_000,
    directory: str | None = None,
    progress: Callable[[str], None] = lambda m: None,
    store_url: str | None = None,
    concurrent: int = 8,
    compact_keep: int = 100_000,
    grown_store: str | None = None,
    followed: int = 10_000,
) -> dict[str, Any]:
    """Put, get and create against the plain upsert of the same engine: SQLite files in
    a scratch directory, or scratch schemas of the PostgreSQL database at ``store_url``.
    ``concurrent`` sessions then write at once (SQLite: through one ``comity serve``, and
    in one process), against the same upsert loop (0 skips it).  The grown store (``log_events``)
    is then compacted to its latest ``compact_keep`` events (0 skips it), and kept at
    ``grown_store`` if given (SQLite).  ``followed``: the keys a session follows when it writes
    new keys, against one following 100 (0 skips it)."""
    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-") as tmp:
        engine = _engine(store_url, Path(tmp))
        try:
            result = _bench_store(engine, ops, log_events, progress, concurrent, compact_keep, followed)
            if grown_store is not None and isinstance(engine, _SQLite) and log_events:
                # The store is closed: its file is whole (no WAL left); a move keeps it as is.
                shutil.move(engine.target("grown"), grown_store)
                result["grown_store"] = str(grown_store)
            return result
        finally:
            engine.close()


def _bench_store(
    engine: _SQLite | _Postgres, ops: int, log_events: int, progress: Callable[[str], None], concurrent: int = 8,
    compact_keep: int = 100_000, followed: int = 10_000,
) -> dict[str, Any]:
    store = _open(engine.target("fresh"))
    raw = engine.raw("raw")
    loop = _PutLoop(store, "k")
    per_round = max(1, ops // ROUNDS)

    # Warm both (page cache, statement caches), then alternate rounds so drift hits both.
    # Both sides go on numbering values after the warm-up: rewriting a row with the bytes
    # it already holds is a no-op SQLite commits without writing, which would flatter either.
    warm = min(KEYSPACE, ops)
    loop.run(warm)
    engine.raw_puts(raw, 0, warm)
    progress(f"bench: {ops} puts against {ops} raw upserts on {engine.name}, {ROUNDS} alternating rounds")
    put_lat: list[float] = []
    raw_lat: list[float] = []
    for r in range(ROUNDS):
        put_lat += loop.run(per_round)
        raw_lat += engine.raw_puts(raw, warm + r * per_round, per_round)

    # The same puts by a session whose news position is behind: another agent wrote a key it
    # does not follow, which only news() shows, so its keys run ahead of its position (an
    # agent that never calls news()).  Each put still follows its last answer directly.
    progress(f"bench: {ops} puts of a session behind on news against {ops} raw upserts, {ROUNDS} alternating rounds")
    behind = _PutLoop(store, "b", agent="bench-behind")
    behind.run(warm)
    store.session("elsewhere").put("elsewhere", VALUE)
    behind_lat: list[float] = []
    raw_behind_lat: list[float] = []
    for r in range(ROUNDS):
        behind_lat += behind.run(per_round)
        raw_behind_lat += engine.raw_puts(raw, warm + ops + r * per_round, per_round)

    s = store.session()
    get_lat = []
    for i in range(ops):
        key = f"k{i % KEYSPACE}"
        t = time.perf_counter()
        s.get(key)
        get_lat.append(time.perf_counter() - t)
    raw_get_lat = engine.raw_gets(raw, ops)

    w = store.session("bench")
    create_lat = []
    for i in range(ops):
        t = time.perf_counter()
        w.create(f"new/{i}", VALUE)
        create_lat.append(time.perf_counter() - t)
    following = _bench_followed(store, ops, followed, progress) if followed else {}
    store.close()
    raw.close()

    result: dict[str, Any] = {
        "backend": engine.name,
        "ops": ops,
        "value_bytes": len(json.dumps(_value(0), separators=(",", ":"))),
        "put_ops_s": _rate(put_lat),
        "get_ops_s": _rate(get_lat),
        "create_ops_s": _rate(create_lat),
        "raw_ops_s": _rate(raw_lat),
        "raw_get_ops_s": _rate(raw_get_lat),
        "put_ratio": round(_rate(put_lat) / _rate(raw_lat), 3),
        "put_behind_ratio": round(_rate(behind_lat) / _rate(raw_behind_lat), 3),
        "put_behind_p50_ms": _pct(behind_lat, 0.50),
        "get_ratio": round(_rate(get_lat) / _rate(raw_get_lat), 3),
        "put_p50_ms": _pct(put_lat, 0.50),
        "put_p99_ms": _pct(put_lat, 0.99),
        "get_p50_ms": _pct(get_lat, 0.50),
        "get_p99_ms": _pct(get_lat, 0.99),
        "create_p50_ms": _pct(create_lat, 0.50),
        "create_p99_ms": _pct(create_lat, 0.99),
        "raw_p50_ms": _pct(raw_lat, 0.50),
        "raw_p99_ms": _pct(raw_lat, 0.99),
    }

    result.update(following)
    result.update(_bench_retention(engine, ops, per_round, progress))
    if concurrent and isinstance(engine, _SQLite):
        result.update(_bench_concurrent(engine, ops, concurrent, progress))

    if log_events:
        progress(f"bench: seeding {log_events} events for growth_ratio")
        big = _open(engine.target("grown"))
        engine.seed(big, log_events)
        fresh = _open(engine.target("fresh2"))
        grown_loop, fresh_loop = _PutLoop(big, "k"), _PutLoop(fresh, "k")
        grown_loop.run(min(KEYSPACE, ops))
        fresh_loop.run(min(KEYSPACE, ops))
        grown_lat: list[float] = []
        fresh_lat: list[float] = []
        for _ in range(ROUNDS):
            grown_lat += grown_loop.run(per_round)
            fresh_lat += fresh_loop.run(per_round)
        result.update(
            {
                "log_events": log_events,
                "grown_put_p50_ms": _pct(grown_lat, 0.50),
                "fresh_put_p50_ms": _pct(fresh_lat, 0.50),
                "growth_ratio": round(_pct(grown_lat, 0.50) / _pct(fresh_lat, 0.50), 3),
            }
        )
        if compact_keep:
            # History that does not grow forever: compact the grown store, then put again.
            progress(f"bench: compacting the grown store to its latest {compact_keep} events")
            t = time.perf_counter()
            report = big.compact(keep=compact_keep)
            compact_s = time.perf_counter() - t
            compacted_lat: list[float] = []
            fresh_lat = []
            for _ in range(ROUNDS):
                compacted_lat += grown_loop.run(per_round)
                fresh_lat += fresh_loop.run(per_round)
            result.update(
                {
                    "compact_keep": compact_keep,
                    "compact_deleted": report["deleted"],
                    "compact_s": round(compact_s, 2),
                    "grown_size_bytes": report["size_bytes"],
                    "compacted_size_bytes": report["size_after_bytes"],
                    "compacted_size_ratio": round(report["size_after_bytes"] / max(1, report["size_bytes"]), 3),
                    "compacted_put_p50_ms": _pct(compacted_lat, 0.50),
                    "compacted_growth_ratio": round(_pct(compacted_lat, 0.50) / _pct(fresh_lat, 0.50), 3),
                }
            )
        big.close()
        fresh.close()
    result.update(engine.about())
    result["python"] = platform.python_version()
    return result


FOLLOWED_FEW = 100


def _bench_followed(store: Store, ops: int, followed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """New keys written by a session that follows ``followed`` keys against one that follows
    100, in alternating rounds, another session writing elsewhere before each: every answer
    then begins to follow one more key while its position stays behind (docs/news.md).
    ``followed_growth_ratio`` is what following more keys costs such a write (1.0: nothing).
    Then the same two sessions claim and complete tasks of one board (each claim begins to
    follow the task's keys), as an agent does that has touched that many keys:
    ``followed_claim_growth_ratio``."""
    from ..work import Board

    other = store.session("bench-elsewhere")
    last: list[str | None] = [None]

    def elsewhere() -> None:
        last[0] = other.put("bench-elsewhere", VALUE, context=last[0]).context

    per = max(1, min(ops, 2000) // ROUNDS)

    def alternating(step: Callable[[str], None]) -> dict[str, list[float]]:
        """``step(name)`` ``per`` times for each session in turn, ROUNDS times, timed, with
        another session writing elsewhere before each."""
        lat: dict[str, list[float]] = {"few": [], "many": []}
        for _ in range(ROUNDS):
            for name, times in lat.items():
                for _ in range(per):
                    elsewhere()
                    t = time.perf_counter()
                    step(name)
                    times.append(time.perf_counter() - t)
        return lat

    progress(f"bench: a session begins to follow {followed} keys, another {FOLLOWED_FEW}")
    sessions = {name: store.session(f"bench-follows-{name}") for name in ("few", "many")}
    keys = {name: itertools.count() for name in sessions}

    def put_new_key(name: str) -> None:
        sessions[name].put(f"follows-{name}/{next(keys[name])}", VALUE)

    for name, n in (("few", FOLLOWED_FEW), ("many", followed)):
        elsewhere()
        for _ in range(n):
            put_new_key(name)
    progress(f"bench: {per * ROUNDS} new keys by each, another session writing between, {ROUNDS} alternating rounds")
    puts = alternating(put_new_key)

    boards = {name: Board(s) for name, s in sessions.items()}
    triage = Board(store.session("bench-triage"))
    for i in range(2 * per * ROUNDS):
        triage.add(f"task {i}")

    def claim_and_complete(name: str) -> None:
        c = boards[name].claim_next(ttl=600)
        boards[name].done(c.task["id"], c.token)

    progress(f"bench: {per * ROUNDS} claims and completions by each, another session writing between")
    claims = alternating(claim_and_complete)
    p50 = {what: {name: _pct(lat[name], 0.50) for name in lat} for what, lat in (("put", puts), ("claim", claims))}
    return {
        "followed_keys": followed,
        "followed_claim_few_p50_ms": p50["claim"]["few"],
        "followed_claim_many_p50_ms": p50["claim"]["many"],
        "followed_claim_growth_ratio": round(p50["claim"]["many"] / p50["claim"]["few"], 3),
        "followed_few_put_p50_ms": p50["put"]["few"],
        "followed_many_put_p50_ms": p50["put"]["many"],
        "followed_growth_ratio": round(p50["put"]["many"] / p50["put"]["few"], 3),
    }


RETENTION_S = 3600.0


def _bench_retention(engine: _SQLite | _Postgres, ops: int, per_round: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """What recording request outcomes, and pruning them after ``request_retention``, costs:
    puts carrying a request id against the same puts without, in alternating rounds on one
    store; then the one write that prunes every outcome older than the window (the clock is
    virtual, so the window passes without waiting)."""
    from ..store._api import _PRUNE_REQUESTS_EVERY_S

    clock = VirtualClock(time.time())
    store = _open(engine.target("retention"), clock=clock, request_retention=RETENTION_S)
    try:
        plain, with_ids = _PutLoop(store, "p"), _PutLoop(store, "r", request_ids=True)
        warm = min(KEYSPACE, ops)
        plain.run(warm)
        with_ids.run(warm)
        progress(f"bench: {ops} puts with request ids against {ops} without on {engine.name}; then pruning their outcomes")
        plain_lat: list[float] = []
        ids_lat: list[float] = []
        for _ in range(ROUNDS):
            ids_lat += with_ids.run(per_round)
            plain_lat += plain.run(per_round)
        recorded = with_ids.i
        clock.advance(RETENTION_S + _PRUNE_REQUESTS_EVERY_S + 1)
        prune = with_ids.run(1)[0]  # records one outcome and deletes every older one
        after = with_ids.run(per_round)  # nothing left to prune
        with store.backend.transaction(write=False) as tx:
            kept = sum(1 for i in range(recorded) if tx.recorded(f"r.{i}") is not None)
    finally:
        store.close()
    return {
        "request_put_p50_ms": _pct(ids_lat, 0.50),
        "plain_put_p50_ms": _pct(plain_lat, 0.50),
        "request_put_ratio": round(_rate(ids_lat) / _rate(plain_lat), 3),
        "outcomes_pruned": recorded - kept,
        "prune_write_ms": round(prune * 1000, 4),
        "prune_write_over_put_p50": round(prune / max(_pct(after, 0.50) / 1000, 1e-9), 2),
    }


# ------------------------------------------------------------- concurrent writers


def _writers(sessions: int, per: int, one: Callable[[int, int, list[float]], None]) -> tuple[float, list[float]]:
    """``sessions`` threads each run ``one(i, per, lat)`` at once; returns (wall seconds, latencies)."""
    import threading

    lats: list[list[float]] = [[] for _ in range(sessions)]
    errors: list[BaseException] = []
    start = threading.Barrier(sessions + 1)

    def run(i: int) -> None:
        try:
            one(i, -1, lats[i])  # warm: connection, first key
            start.wait()
            one(i, per, lats[i])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"bench: a concurrent writer failed: {errors[0]!r}")
    return wall, [x for lat in lats for x in lat]


def _bench_concurrent(engine: _SQLite, ops: int, sessions: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """``sessions`` sessions write at once (each its own keys, each put over the context of its
    last write): through one ``comity serve`` (its request threads share commits: group
    commit), and through one embedded store in this process; against the bare upsert loop
    (one upsert, one commit) run just before and just after."""
    import httpx

    from ..server.auth import issue_token
    from .dashboard import _serve

    per = max(1, ops // sessions)
    raw = engine.raw("raw_concurrent")
    raw_lat = engine.raw_puts(raw, 0, per * sessions // 2)

    served = engine.root / "served.db"
    store = _open(served)
    tokens = [str(issue_token(store.session("ops"), f"writer-{i}")["auth_token"]) for i in range(sessions)]
    store.close()
    progress(f"bench: {sessions} sessions write {per} puts each at once through one comity serve")
    proc, url = _serve(served, engine.root / "serve.log")
    try:
        clients = [
            httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {tokens[i]}", "Comity-Session": f"bench-{i}"})
            for i in range(sessions)
        ]
        contexts: list[dict[str, str]] = [{} for _ in range(sessions)]

        def over_http(i: int, n: int, lat: list[float]) -> None:
            c, ctx = clients[i], contexts[i]
            for j in range(max(n, 1)):
                key = f"c{i}/{j % KEYSPACE}"
                body: dict[str, Any] = {"key": key, "value": _value(j)}
                if key in ctx:
                    body["context"] = ctx[key]
                t = time.perf_counter()
                r = c.post("/v1/write", json=body)
                if n > 0:
                    lat.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"write answered {r.status_code}: {r.text[:200]}")
                ctx[key] = r.json()["context"]

        http_wall, http_lat = _writers(sessions, per, over_http)
        for c in clients:
            c.close()
    finally:
        proc.terminate()
        proc.wait(30)

    progress(f"bench: {sessions} sessions write {per} puts each at once through one embedded store")
    embedded = _open(engine.root / "embedded.db")
    loops = [_PutLoop(embedded, f"e{i}/") for i in range(sessions)]
    for i, loop in enumerate(loops):
        loop.session = embedded.session(f"writer-{i}")

    def in_process(i: int, n: int, lat: list[float]) -> None:
        got = loops[i].run(max(n, 1))
        if n > 0:
            lat.extend(got)

    commits0, txns0 = embedded.writes.commits, embedded.writes.transactions
    emb_wall, emb_lat = _writers(sessions, per, in_process)
    per_commit = (embedded.writes.transactions - txns0) / max(1, embedded.writes.commits - commits0)
    embedded.close()

    raw_lat += engine.raw_puts(raw, per * sessions, per * sessions - per * sessions // 2)
    raw.close()
    raw_s = _rate(raw_lat)
    http_s = round(len(http_lat) / http_wall, 1)
    emb_s = round(len(emb_lat) / emb_wall, 1)
    return {
        "concurrent_sessions": sessions,
        "concurrent_put_ops_s": http_s,
        "concurrent_put_p50_ms": _pct(http_lat, 0.50),
        "concurrent_put_p99_ms": _pct(http_lat, 0.99),
        "concurrent_raw_ops_s": raw_s,
        "concurrent_put_ratio": round(http_s / raw_s, 3),
        "concurrent_embedded_put_ops_s": emb_s,
        "concurrent_embedded_put_ratio": round(emb_s / raw_s, 3),
        "concurrent_embedded_txns_per_commit": round(per_commit, 2),
    }


# --------------------------------------------------------------------- claims


def _claims_worker(store_path: str, agent: str, go: str, out: str) -> None:
    """One agent process: claim the next ready task and complete it, until nothing is ready."""
    from ..errors import ComityError, NotFound
    from ..work import Board

    store = _open(store_path if is_postgres_url(store_path) else Path(store_path))
    board = Board(store.session(agent))
    while not Path(go).exists():
        time.sleep(0.001)
    lat: list[float] = []
    done: list[str] = []
    errors = 0
    while True:
        t = time.perf_counter()
        try:
            c = board.claim_next(ttl=600)
        except NotFound:
            break
        except ComityError:
            errors += 1
            continue
        lat.append(time.perf_counter() - t)
        try:
            board.done(c.task["id"], c.token)
            done.append(c.task["id"])
        except ComityError:
            errors += 1
    Path(out).write_text(json.dumps({"lat": lat, "done": done, "errors": errors}))


def _claims_http_worker(target: str, agent: str, go: str, out: str) -> None:
    """The claims loop through one ``comity serve``: ``target`` is ``URL TOKEN``."""
    from ..errors import ComityError, NotFound
    from ..remote import RemoteAgent

    url, token = target.split(" ", 1)
    remote = RemoteAgent(url, auth=token)
    while not Path(go).exists():
        time.sleep(0.001)
    lat: list[float] = []
    done: list[str] = []
    errors = 0
    while True:
        t = time.perf_counter()
        try:
            c = remote.call("task_claim_next", {"ttl": 600})
        except NotFound:
            break
        except ComityError:
            errors += 1
            continue
        lat.append(time.perf_counter() - t)
        try:
            remote.call("task_complete", {"id": c["task"]["id"], "token": c["token"]})
            done.append(c["task"]["id"])
        except ComityError:
            errors += 1
    Path(out).write_text(json.dumps({"lat": lat, "done": done, "errors": errors}))


def _baseline_worker(db_path: str, agent: str, go: str, out: str) -> None:
    """The same loop on a plain table: UPDATE … WHERE status='open', then mark it done."""
    db = _connect_raw(Path(db_path))
    while not Path(go).exists():
        time.sleep(0.001)
    lat: list[float] = []
    done: list[int] = []
    while True:
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        row = db.execute(
            "UPDATE tasks SET status = 'claimed', owner = ? WHERE id = (SELECT id FROM tasks WHERE status = 'open' LIMIT 1)"
            " RETURNING id",
            (agent,),
        ).fetchone()
        db.execute("COMMIT")
        if row is None:
            break
        lat.append(time.perf_counter() - t)
        db.execute("BEGIN IMMEDIATE")
        n = db.execute("UPDATE tasks SET status = 'done' WHERE id = ? AND owner = ? AND status = 'claimed'", (row[0], agent)).rowcount
        db.execute("COMMIT")
        if n:
            done.append(row[0])
    Path(out).write_text(json.dumps({"lat": lat, "done": done, "errors": 0}))


def _pg_baseline_worker(url: str, agent: str, go: str, out: str) -> None:
    """The same loop on a plain PostgreSQL table, autocommitted: the usual queue idiom,
    ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)``, then mark it done."""
    conn = _connect_pg(url)
    conn.execute(f"SET search_path = {split_url(url)[1]}")
    while not Path(go).exists():
        time.sleep(0.001)
    lat: list[float] = []
    done: list[int] = []
    while True:
        t = time.perf_counter()
        row = conn.execute(
            "UPDATE tasks SET status = 'claimed', owner = %s WHERE id = (SELECT id FROM tasks WHERE status = 'open'"
            " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
            (agent,),
        ).fetchone()
        if row is None:
            break
        lat.append(time.perf_counter() - t)
        n = conn.execute(
            "UPDATE tasks SET status = 'done' WHERE id = %s AND owner = %s AND status = 'claimed'", (row[0], agent)
        ).rowcount
        if n:
            done.append(row[0])
    conn.close()
    Path(out).write_text(json.dumps({"lat": lat, "done": done, "errors": 0}))


def _run_workers(kind: str, target: str | list[str], agents: int, root: Path) -> tuple[float, list[float], list[Any], int]:
    import subprocess
    import sys

    go = root / f"{kind}.go"
    outs = [root / f"{kind}-{i}.json" for i in range(agents)]
    procs = [
        subprocess.Popen([sys.executable, "-m", "comity.bench.store", kind, target if isinstance(target, str) else target[i],
                          f"agent-{i}", str(go), str(outs[i])])  # fmt: skip
        for i in range(agents)
    ]
    time.sleep(0.5 + 0.05 * agents)  # let every process import and open the store
    t0 = time.perf_counter()
    go.write_text("go")
    for p in procs:
        p.wait()
    wall = time.perf_counter() - t0
    lat: list[float] = []
    done: list[Any] = []
    errors = 0
    for i, o in enumerate(outs):
        if procs[i].returncode != 0 or not o.exists():
            raise RuntimeError(f"{kind} worker {i} failed (exit {procs[i].returncode})")
        r = json.loads(o.read_text())
        lat += r["lat"]
        done += r["done"]
        errors += r["errors"]
    return wall, lat, done, errors


def bench_claims(
    *,
    agents: int = 8,
    tasks: int = 500,
    directory: str | None = None,
    progress: Callable[[str], None] = lambda m: None,
    store_url: str | None = None,
    server: bool = False,
) -> dict[str, Any]:
    """``agents`` processes drain ``tasks`` tasks through comity, then through a plain
    table of the same engine: SQLite files, or the PostgreSQL database at ``store_url``.
    With ``server``, the agents go through one ``comity serve`` (its writes share commits)."""
    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-") as tmp:
        engine = _engine(store_url, Path(tmp))
        try:
            return _bench_claims(engine, agents, tasks, Path(tmp), progress, server)
        finally:
            engine.close()


def _bench_claims(
    engine: _SQLite | _Postgres, agents: int, tasks: int, root: Path, progress: Callable[[str], None], server: bool = False
) -> dict[str, Any]:
    from ..server.auth import issue_token
    from ..work import Board

    store_target = engine.target("board")
    store = _open(store_target)
    board = Board(store.session("triage"))
    progress(f"bench: adding {tasks} tasks")
    for i in range(tasks):
        board.add(f"task {i}")
    raw = engine.raw("baseline", "tasks")
    if engine.name == "sqlite":
        raw.execute("BEGIN")
        raw.executemany("INSERT INTO tasks (id, status) VALUES (?, 'open')", ((i,) for i in range(tasks)))
        raw.execute("COMMIT")
        baseline_kind, baseline_target, idiom = "baseline", engine.target("baseline"), "UPDATE … WHERE status='open'"
    else:
        raw.execute("INSERT INTO tasks (id, status) SELECT i, 'open' FROM generate_series(0, %s - 1) AS i", (tasks,))
        baseline_kind, baseline_target, idiom = "pg-baseline", engine.target("baseline"), "UPDATE … FOR UPDATE SKIP LOCKED"
    raw.close()

    if server:
        tokens = [str(issue_token(store.session("ops"), f"agent-{i}")["auth_token"]) for i in range(agents)]
        store.close()
        from .dashboard import _serve

        proc, url = _serve(Path(store_target) if engine.name == "sqlite" else store_target, root / "serve.log")  # type: ignore[arg-type]
        progress(f"bench: {agents} processes drain {tasks} tasks through one comity serve on {engine.name}")
        try:
            wall, lat, done, errors = _run_workers("claims-http", [f"{url} {t}" for t in tokens], agents, root)
        finally:
            proc.terminate()
            proc.wait(30)
        store = _open(store_target)
    else:
        progress(f"bench: {agents} processes drain {tasks} tasks through comity on {engine.name}")
        wall, lat, done, errors = _run_workers("claims", store_target, agents, root)
    progress(f"bench: {agents} processes drain {tasks} rows with {idiom}")
    bwall, blat, bdone, _ = _run_workers(baseline_kind, baseline_target, agents, root)

    log_done: dict[str, int] = {}
    s = store.session()
    after = 0
    while True:
        events = s.log(after=after, limit=10_000)
        if not events:
            break
        for e in events:
            if e["op"] == "task.done":
                log_done[e["key"]] = log_done.get(e["key"], 0) + 1
        after = events[-1]["pos"]
    store.close()
    claims_s = round(len(lat) / wall, 1)
    baseline_s = round(len(blat) / bwall, 1)
    return {
        "backend": engine.name,
        "through": "comity serve" if server else "embedded",
        "agents": agents,
        "tasks": tasks,
        "claims": len(lat),
        "completed": len(set(done)),
        "double_completions": (len(done) - len(set(done))) + sum(n - 1 for n in log_done.values() if n > 1),
        "not_completed": tasks - len(log_done),
        "errors": errors,
        "claims_s": claims_s,
        "claim_p50_ms": _pct(lat, 0.50),
        "claim_p99_ms": _pct(lat, 0.99),
        "baseline_claims_s": baseline_s,
        "baseline_claim_p50_ms": _pct(blat, 0.50),
        "claims_ratio": round(claims_s / baseline_s, 3) if baseline_s else None,
        "wall_s": round(wall, 3),
        "baseline_wall_s": round(bwall, 3),
        **engine.about(),
    }


if __name__ == "__main__":
    import sys

    kind, target, agent, go, out = sys.argv[1:6]
    workers = {"claims": _claims_worker, "claims-http": _claims_http_worker, "baseline": _baseline_worker,
               "pg-baseline": _pg_baseline_worker}  # fmt: skip
    workers[kind](target, agent, go, out)
