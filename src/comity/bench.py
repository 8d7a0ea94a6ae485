"""``comity bench``: figures in JSON, each against a baseline measured in the same run.

The store benchmark runs at the durability the README claims (WAL,
``synchronous=FULL``), and compares comity's put with the least a durable
key-value write can do on the same engine: a ``kv(key PRIMARY KEY, value)``
table, one upsert and one commit per operation, the same pragmas.
"""

from __future__ import annotations

import json
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .store import PRAGMAS, SQLiteBackend, Store
from .runtime import SystemClock, SystemRng

__all__ = ["bench_store"]

BUSY_TIMEOUT_MS = 30_000
VALUE: dict[str, Any] = {"path": "db/migrations/0267_add_index.sql", "author": "agent-7", "note": "x" * 120}
KEYSPACE = 1000
ROUNDS = 5


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


def _open(path: Path) -> Store:
    clock, rng = SystemClock(), SystemRng()
    return Store(SQLiteBackend(path, clock=clock, rng=rng, busy_timeout=BUSY_TIMEOUT_MS / 1000), clock=clock, rng=rng)


class _PutLoop:
    """Read-modify-write puts over a keyspace, each carrying the context of the last write."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.session = store.session("bench")
        self.prefix = prefix
        self.contexts: dict[str, str] = {}
        self.i = 0

    def run(self, n: int) -> list[float]:
        lat = []
        put = self.session.put
        for _ in range(n):
            key = f"{self.prefix}{self.i % KEYSPACE}"
            value = _value(self.i)
            t = time.perf_counter()
            w = put(key, value, context=self.contexts.get(key))
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


def bench_store(
    *,
    ops: int = 5000,
    log_events: int = 1_000_000,
    directory: str | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-") as tmp:
        root = Path(tmp)
        store = _open(root / "fresh.db")
        raw = _connect_raw(root / "raw.db")
        loop = _PutLoop(store, "k")
        per_round = max(1, ops // ROUNDS)

        # Warm both (page cache, statement caches), then alternate rounds so drift hits both.
        loop.run(min(KEYSPACE, ops))
        _raw_puts(raw, 0, min(KEYSPACE, ops))
        progress(f"bench: {ops} puts against {ops} raw upserts, {ROUNDS} alternating rounds")
        put_lat: list[float] = []
        raw_lat: list[float] = []
        for r in range(ROUNDS):
            put_lat += loop.run(per_round)
            raw_lat += _raw_puts(raw, r * per_round, per_round)

        s = store.session()
        get_lat = []
        for i in range(ops):
            key = f"k{i % KEYSPACE}"
            t = time.perf_counter()
            s.get(key)
            get_lat.append(time.perf_counter() - t)
        raw_get_lat = _raw_gets(raw, ops)

        w = store.session("bench")
        create_lat = []
        for i in range(ops):
            t = time.perf_counter()
            w.create(f"new/{i}", VALUE)
            create_lat.append(time.perf_counter() - t)
        store.close()
        raw.close()

        result: dict[str, Any] = {
            "ops": ops,
            "value_bytes": len(json.dumps(_value(0), separators=(",", ":"))),
            "put_ops_s": _rate(put_lat),
            "get_ops_s": _rate(get_lat),
            "create_ops_s": _rate(create_lat),
            "raw_ops_s": _rate(raw_lat),
            "raw_get_ops_s": _rate(raw_get_lat),
            "put_ratio": round(_rate(put_lat) / _rate(raw_lat), 3),
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

        if log_events:
            progress(f"bench: seeding {log_events} events for growth_ratio")
            big = _open(root / "grown.db")
            _seed_log(big, log_events)
            fresh = _open(root / "fresh2.db")
            grown_loop, fresh_loop = _PutLoop(big, "k"), _PutLoop(fresh, "k")
            grown_loop.run(min(KEYSPACE, ops))
            fresh_loop.run(min(KEYSPACE, ops))
            grown_lat: list[float] = []
            fresh_lat: list[float] = []
            for _ in range(ROUNDS):
                grown_lat += grown_loop.run(per_round)
                fresh_lat += fresh_loop.run(per_round)
            big.close()
            fresh.close()
            result.update(
                {
                    "log_events": log_events,
                    "grown_put_p50_ms": _pct(grown_lat, 0.50),
                    "fresh_put_p50_ms": _pct(fresh_lat, 0.50),
                    "growth_ratio": round(_pct(grown_lat, 0.50) / _pct(fresh_lat, 0.50), 3),
                }
            )
        result["pragmas"] = {**PRAGMAS, "busy_timeout_ms": BUSY_TIMEOUT_MS}
        result["sqlite"] = sqlite3.sqlite_version
        result["python"] = platform.python_version()
        return result


# --------------------------------------------------------------------- claims


def _claims_worker(store_path: str, agent: str, go: str, out: str) -> None:
    """One agent process: claim the next ready task and complete it, until nothing is ready."""
    from .errors import ComityError, NotFound
    from .work import Board

    store = _open(Path(store_path))
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


def _run_workers(kind: str, target: str, agents: int, root: Path) -> tuple[float, list[float], list[Any], int]:
    import subprocess
    import sys

    go = root / f"{kind}.go"
    outs = [root / f"{kind}-{i}.json" for i in range(agents)]
    procs = [
        subprocess.Popen([sys.executable, "-m", "comity.bench", kind, target, f"agent-{i}", str(go), str(outs[i])])
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
    *, agents: int = 8, tasks: int = 500, directory: str | None = None, progress: Callable[[str], None] = lambda m: None
) -> dict[str, Any]:
    from .work import Board

    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-") as tmp:
        root = Path(tmp)
        store_path = root / "board.db"
        store = _open(store_path)
        board = Board(store.session("triage"))
        progress(f"bench: adding {tasks} tasks")
        for i in range(tasks):
            board.add(f"task {i}")
        raw = _connect_raw(root / "baseline.db")
        raw.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, owner TEXT)")
        raw.execute("BEGIN")
        raw.executemany("INSERT INTO tasks (id, status) VALUES (?, 'open')", ((i,) for i in range(tasks)))
        raw.execute("COMMIT")
        raw.close()

        progress(f"bench: {agents} processes drain {tasks} tasks through comity")
        wall, lat, done, errors = _run_workers("claims", str(store_path), agents, root)
        progress(f"bench: {agents} processes drain {tasks} rows with UPDATE … WHERE status='open'")
        bwall, blat, bdone, _ = _run_workers("baseline", str(root / "baseline.db"), agents, root)

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
            "pragmas": {**PRAGMAS, "busy_timeout_ms": BUSY_TIMEOUT_MS},
        }


if __name__ == "__main__":
    import sys

    kind, target, agent, go, out = sys.argv[1:6]
    (_claims_worker if kind == "claims" else _baseline_worker)(target, agent, go, out)
