"""``comity bench sync``: what a sync of k changed keys costs, against copying the whole store.

For each store size n (default 10,000 and 1,000,000 keys, bulk-loaded: one event and one
200-byte value per key), in the same run:

- the baseline: copying the whole store (SQLite's online backup to a new file), its bytes
  (the copy's size) and time;
- a replica cloned before the changes, then k keys changed on the upstream (ordinary
  writes over their contexts), then ``comity.sync`` between them over the in-process
  transport: the bytes of every message both ways (as JSON, what HTTP would carry) and
  the time of the whole exchange (digests, pull, push);
- a sync with nothing to do (two digests).

``bytes_ratio`` and ``time_ratio`` are the sync's over the copy's.  The goal is 100 changed
keys of a 1,000,000-key store in under 1% of the copy's bytes and under a second.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import sync as replication
from ..runtime import SystemClock
from ..store import SQLiteBackend, Store
from ..store import open as open_store

__all__ = ["bench_sync", "bulk_load"]

VALUE = {"note": "x" * 180, "n": 0}


def bulk_load(store: Store, keys: int, *, prefix: str = "k/") -> None:
    """Write ``keys`` keys, one event and one value each, in one transaction (as a store that
    has been in use would hold them), straight into the SQLite tables."""
    backend = store.backend
    if not isinstance(backend, SQLiteBackend):
        raise TypeError("bulk_load fills an embedded (SQLite) store")
    db = backend.db
    replica = store.replica_id
    stamp = store.executor.hlc.now().encode()
    width = len(str(keys))
    with backend._lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            start = int(db.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()[0])
            batch = 50_000
            for first in range(0, keys, batch):
                n = min(batch, keys - first)
                rows = []
                states = []
                for j in range(first, first + n):
                    key = f"{prefix}{j:0{width}d}"
                    text = json.dumps({**VALUE, "n": j}, separators=(",", ":"))
                    pos = start + j + 1
                    rows.append((pos, key, replica, stamp, f"bulk{j}", text))
                    states.append((key, f'{{"e":[["{replica}",1,[[{text}]]]]}}', stamp, pos))
                db.executemany(
                    "INSERT INTO events (pos, key, op, agent, session, replica, counter, hlc, request_id, value, detail, prev)"
                    " VALUES (?, ?, 'put', 'bulk', 'bulk', ?, 1, ?, ?, ?, NULL, 0)",
                    rows,
                )
                db.executemany("INSERT INTO keys (key, clock, hlc, pos, live) VALUES (?, ?, ?, ?, 1)", states)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _copy(source: Store, target: Path) -> tuple[int, float]:
    """The baseline: the whole store copied to a new file (bytes, seconds)."""
    assert isinstance(source.backend, SQLiteBackend)
    clock = SystemClock()
    started = clock.monotonic()
    copy = sqlite3.connect(target)
    try:
        with source.backend._lock:
            source.backend.db.backup(copy)
    finally:
        copy.close()
    return target.stat().st_size, clock.monotonic() - started


def bench_sync(
    *,
    sizes: tuple[int, ...] = (10_000, 1_000_000),
    changed: int = 100,
    directory: str | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-sync-") as tmp:
        for n in sizes:
            results.append(_one(Path(tmp), n, min(changed, n), progress))
    return {"changed": changed, "stores": results}


def _one(tmp: Path, n: int, changed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    clock = SystemClock()
    up_path = tmp / f"up-{n}.db"
    upstream = open_store(up_path)
    try:
        progress(f"bench sync: loading {n:,} keys")
        started = clock.monotonic()
        bulk_load(upstream, n)
        load_s = clock.monotonic() - started
        progress(f"bench sync: {n:,} keys in {load_s:.1f}s; cloning a replica")
        replication.clone(str(up_path), tmp / f"replica-{n}.db")
        replica = open_store(tmp / f"replica-{n}.db")
        try:
            progress("bench sync: copying the whole store (the baseline)")
            copy_bytes, copy_s = _copy(upstream, tmp / f"copy-{n}.db")
            progress(f"bench sync: changing {changed} keys")
            session = upstream.session("bench")
            step = max(1, n // changed)
            width = len(str(n))
            for i in range(changed):
                key = f"k/{(i * step) % n:0{width}d}"
                session.put(key, {**VALUE, "n": -i}, context=session.get(key).context)
            link = replication.connect(str(up_path), src=replica.replica_id)
            try:
                progress("bench sync: syncing")
                done = replication.sync(replica, link)
                quiet = replication.sync(replica, link)
            finally:
                link.close()
            assert done.received == changed and done.in_sync, done.to_json()
        finally:
            replica.close()
    finally:
        upstream.close()
    return {
        "keys": n,
        "changed": changed,
        "load_s": round(load_s, 3),
        "sync_bytes": done.bytes,
        "sync_s": round(done.seconds, 4),
        "sync_messages": done.messages,
        "copy_bytes": copy_bytes,
        "copy_s": round(copy_s, 4),
        "bytes_ratio": round(done.bytes / copy_bytes, 6),
        "time_ratio": round(done.seconds / copy_s, 6) if copy_s else None,
        "noop_sync_bytes": quiet.bytes,
        "noop_sync_s": round(quiet.seconds, 4),
    }
