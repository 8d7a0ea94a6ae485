"""``comity bench news``: what keeping a session's news position in the store costs.

A named session (``store.session(agent, name=ID)``, what every face maps its sessions
onto) against an unnamed one (in memory, nothing kept) on the same store, in the same
run, alternating in rounds: reads (``get``) and context-checked writes (``put``), each
preceded by another session's write to the key, so every answer carries news and every
named write has a changed position to keep.  ``session_saves`` counts the session rows
the named side wrote: with its writes, and at most every ``session_save_interval``
seconds by a read (docs/news.md), so at most one read per interval pays for a save.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store import Session, Store
from .store import _engine, _open, _pct, _rate

__all__ = ["bench_news"]

ROUNDS = 20


class _Counted:
    """A backend transaction that counts the session rows it saves."""

    def __init__(self, tx: Any, counter: _Counting) -> None:
        self._tx = tx
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def save_session(self, row: Any) -> None:
        self._counter.saves += 1
        self._tx.save_session(row)


class _Counting:
    """The store's backend, its write transactions counting the session rows they save."""

    def __init__(self, store: Store) -> None:
        self.saves = 0
        original = store.backend.transaction
        counter = self

        class Transaction:
            def __init__(self, write: bool) -> None:
                self.cm = original(write=write)

            def __enter__(self) -> Any:
                return _Counted(self.cm.__enter__(), counter)

            def __exit__(self, *exc: Any) -> Any:
                return self.cm.__exit__(*exc)

        store.backend.transaction = lambda *, write: Transaction(write)  # type: ignore[method-assign]


def _reads(me: Session, other: Session, n: int, key: str) -> tuple[list[float], int]:
    lat, carried = [], 0
    for i in range(n):
        other.put(key, i, keep_both=True)
        t = time.perf_counter()
        v = me.get(key)
        lat.append(time.perf_counter() - t)
        carried += bool(v.news)
    return lat, carried


def _writes(me: Session, other: Session, n: int, key: str, contexts: dict[str, str]) -> list[float]:
    lat = []
    for i in range(n):
        other.put(f"{key}/other", i, keep_both=True)  # news for the writer: its position moves
        t = time.perf_counter()
        w = me.put(key, i, context=contexts.get(key))
        lat.append(time.perf_counter() - t)
        contexts[key] = w.context
    return lat


def bench_news(
    *,
    ops: int = 2000,
    directory: str | None = None,
    store_url: str | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Reads and writes of a named session against an unnamed one, in alternating rounds."""
    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-") as tmp:
        engine = _engine(store_url, Path(tmp))
        try:
            store = _open(engine.target("news"))
            counting = _Counting(store)
            other = store.session("bench-other")
            named = store.session("bench", name="bench-named")
            unnamed = store.session("bench")
            for s in (named, unnamed):  # both read the keys the other session writes
                s.get("n/read")
                s.get("n/write/other")
            per = max(1, ops // ROUNDS)
            lat: dict[str, list[float]] = {"named_read": [], "unnamed_read": [], "named_write": [], "unnamed_write": []}
            carried = 0
            contexts: dict[str, str] = {}
            saves_reading = 0
            started = time.perf_counter()
            for r in range(ROUNDS):
                progress(f"bench news: round {r + 1}/{ROUNDS}")
                got, c = _reads(unnamed, other, per, "n/read")
                lat["unnamed_read"] += got
                before = counting.saves
                got, c = _reads(named, other, per, "n/read")
                saves_reading += counting.saves - before
                lat["named_read"] += got
                carried += c
                lat["unnamed_write"] += _writes(unnamed, other, per, "n/write/u", contexts)
                lat["named_write"] += _writes(named, other, per, "n/write", contexts)
            elapsed = time.perf_counter() - started
            named.close()
            store.close()
            return {
                "backend": engine.name,
                "ops_per_side": per * ROUNDS,
                "named_read_p50_ms": _pct(lat["named_read"], 0.5),
                "unnamed_read_p50_ms": _pct(lat["unnamed_read"], 0.5),
                "named_read_p99_ms": _pct(lat["named_read"], 0.99),
                "unnamed_read_p99_ms": _pct(lat["unnamed_read"], 0.99),
                "read_ratio": round(_rate(lat["named_read"]) / _rate(lat["unnamed_read"]), 3),
                "named_write_p50_ms": _pct(lat["named_write"], 0.5),
                "unnamed_write_p50_ms": _pct(lat["unnamed_write"], 0.5),
                "write_ratio": round(_rate(lat["named_write"]) / _rate(lat["unnamed_write"]), 3),
                "reads_with_news": round(carried / (per * ROUNDS), 3),
                "session_saves_while_reading": saves_reading,
                "session_saves_total": counting.saves,
                "save_interval_s": store.session_save_interval,
                "elapsed_s": round(elapsed, 2),
                **engine.about(),
            }
        finally:
            engine.close()
