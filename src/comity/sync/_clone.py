"""Making a replica: a new store file of the same store, with its own replica id and an upstream.

From an embedded store the file is copied with SQLite's online backup (a consistent
snapshot while others write), and the copy takes a new replica id the first time it
opens (as any copied store does), remembering that it holds every event of the original
up to the copy.  From a server or a PostgreSQL store the new file is created with the
store's identity (its id and the secret its contexts are sealed with, so a context read
upstream is good here) and filled by pulling everything, as a sync would.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import Invalid, Unavailable
from ..runtime import Clock, Rng, SystemClock, SystemRng
from ..store import SQLiteBackend, locate
from ..store import open as open_store
from ..store._postgres import is_postgres_url
from ._client import sync
from ._link import DEFAULT_TIMEOUT_S, connect, is_server
from ._upstream import AUTH_SETTING, REACHED_SETTING

__all__ = ["clone"]


def clone(
    source: str,
    dest: str | os.PathLike[str],
    *,
    auth: str | None = None,
    clock: Clock | None = None,
    rng: Rng | None = None,
) -> dict[str, Any]:
    """Make ``dest`` (a new store file) a replica of ``source`` (a store path, a
    ``postgresql://`` URL, or a server's ``http://`` URL with an admin token ``auth``)."""
    clock = clock or SystemClock()
    rng = rng or SystemRng()
    if not isinstance(source, str) or not source.strip():
        raise Invalid("SOURCE", "name the store to clone: a path, a postgresql:// URL or a server's http:// URL")
    target = Path(os.fspath(dest)).expanduser()
    if target.suffix not in (".db", ".sqlite", ".sqlite3"):
        where, _ = locate(target)
        if isinstance(where, str):
            raise Invalid("DEST", "a replica is a store file: give a path (e.g. sandbox.db)")
        target = where
    target = target.resolve()
    if target.exists():
        raise Invalid("DEST", f"{target} exists already; a clone makes a new store file, so pick a new path")
    started = clock.monotonic()
    if is_server(source) or is_postgres_url(source):
        upstream = source.strip()
        link = connect(upstream, src="clone", auth=auth, timeout=DEFAULT_TIMEOUT_S, clock=clock, rng=rng)
        try:
            ident = link.call({"type": "identity"})
            backend = SQLiteBackend(target, clock=clock, rng=rng)
            try:
                with backend.transaction(write=True) as tx:
                    tx.set_setting("store_id", str(ident["store"]))
                    tx.set_setting("secret", str(ident["secret"]))
                    _settings(tx, upstream, auth, clock)
            finally:
                backend.close()
            replica = open_store(target, clock=clock, rng=rng)
            try:
                pulled = sync(replica, link, push=False)
                with replica.backend.transaction(write=True) as tx:
                    tx.set_origin(replica.replica_id, tx.head())  # its own events all come after what was pulled
                result: dict[str, Any] = {"events": pulled.received, "keys": pulled.keys_received, "bytes": pulled.bytes}
                info = replica.info()
            finally:
                replica.close()
        finally:
            link.close()
    else:
        where, _ = locate(source)
        if isinstance(where, str) or not where.exists():
            raise Invalid("SOURCE", f"there is no store at {where}")
        upstream = str(where.resolve())
        original = open_store(where, clock=clock, rng=rng)
        try:
            if not isinstance(original.backend, SQLiteBackend):  # pragma: no cover - locate gave a file
                raise Invalid("SOURCE", "not an embedded store")
            target.parent.mkdir(parents=True, exist_ok=True)
            copy = sqlite3.connect(target)
            try:
                with original.backend._lock:
                    original.backend.db.backup(copy)
            except sqlite3.Error as e:
                raise Unavailable(f"could not copy {where} to {target}: {e}") from None
            finally:
                copy.close()
        finally:
            original.close()
        replica = open_store(target, clock=clock, rng=rng)  # a copy: it takes a new replica id
        try:
            with replica.backend.transaction(write=True) as tx:
                _settings(tx, upstream, auth, clock)
            info = replica.info()
        finally:
            replica.close()
        result = {"events": info["head"], "keys": None, "bytes": target.stat().st_size}
    return {
        "replica": info["replica_id"],
        "store": info["store_id"],
        "location": str(target),
        "upstream": upstream,
        **result,
        "seconds": round(clock.monotonic() - started, 6),
    }


def _settings(tx: Any, upstream: str, auth: str | None, clock: Clock) -> None:
    tx.set_setting("upstream", upstream)
    tx.set_setting(AUTH_SETTING, auth or "")
    tx.set_setting(REACHED_SETTING, repr(clock.now()))
