"""``comity check``: is this store whole, and if not, what to do about each problem.

Read only: it never opens the store through the backend (which would migrate it or take a
new replica id) and never writes.  For an SQLite file it checks the file (present, not
empty, SQLite, comity's schema), the engine's own integrity check over every page, and
then comity's invariants, which hold in any store comity wrote: the log's positions run
1..head with no gap, no key, lease or session points past the head, every key's causal
state parses, every recorded outcome parses.  For PostgreSQL the engine's pages are the
database's own business; the same invariants are checked in the store's schema, and the
log's head row must agree with the log.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..causal import DVVSet
from ..errors import Step
from ._files import INIT, StoreFileError, classify

__all__ = ["Problem", "Report", "check", "salvage"]

_SQLITE_TABLES = ("meta", "keys", "events", "requests", "leases", "sessions")
_MAX_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a store: a stable ``code``, what is wrong, what to do (in words),
    and the steps that do it (rendered by each face)."""

    code: str
    what: str
    fix: str
    next: tuple[Step, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "what": self.what, "fix": self.fix}
        if self.next:
            out["next"] = [s.to_json() for s in self.next]
        return out


@dataclass
class Report:
    location: str
    backend: str
    problems: list[Problem] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "backend": self.backend,
            "ok": self.ok,
            "problems": [p.to_json() for p in self.problems],
            **self.facts,
        }


_RECOVER_SQLITE = (
    "stop every process using the store and keep a copy of the file; then restore your latest backup, or"
    " salvage what is still readable into a new store file (this one is only read) and use that in its place"
    " (it keeps the store's identity, so contexts and tokens stay valid, and takes a new replica id; writes on"
    " unreadable pages are lost, and the salvage says how many)"
)
_SALVAGE = (Step("check", {"salvage_to": "NEW.db"}, why="rebuild a store from what is still readable"),)


_RESTORE_PG = (
    "stop the servers using this store; restore the schema from a backup (pg_dump/pg_restore, or the database's"
    " point-in-time recovery), then check it again"
)


# ------------------------------------------------------------------ invariants


Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _invariants(
    q: Query, t: str, report: Report, fix: str, steps: tuple[Step, ...], *, quick: bool, head_row: int | None,
    sequence: int | None = None,
) -> None:
    """comity's own invariants, over tables named ``{t}name``."""
    problems: list[Problem] = []
    meta: dict[str, str] = dict(q(f"SELECT name, value FROM {t}meta", ()))
    missing = [k for k in ("store_id", "replica_id", "secret") if k not in meta]
    if missing:
        problems.append(Problem("meta-missing", f"the store's identity is missing ({', '.join(missing)})", fix))
    elif len(meta["secret"]) != 64 or any(c not in "0123456789abcdef" for c in meta["secret"]):
        problems.append(Problem("meta-secret", "the store's context-sealing secret is malformed", fix))
    report.facts.update({k: meta[k] for k in ("store_id", "replica_id") if k in meta})

    count, top = q(f"SELECT count(*), coalesce(max(pos), 0) FROM {t}events", ())[0]
    head = int(top)
    report.facts.update({"events": int(count), "head": head})
    salvaged = json.loads(meta["salvaged"]) if "salvaged" in meta else None
    if salvaged is not None:  # a store rebuilt from a damaged one: its gaps are known
        report.facts["salvaged"] = salvaged
    compacted = json.loads(meta["compacted"]) if "compacted" in meta else None
    if compacted is not None:  # events deleted by a compaction (Store.compact) are not missing
        report.facts["compacted"] = int(compacted.get("deleted", 0))
    allowed = (int(salvaged.get("events_lost", 0)) if salvaged is not None else 0) + (
        int(compacted.get("deleted", 0)) if compacted is not None else 0
    )
    if sequence is not None:
        # PostgreSQL (schema 5+): positions come from a sequence; an aborted writer leaves a gap.
        report.facts["gaps"] = int(top) - int(count) - allowed
        if sequence < top:
            problems.append(Problem("log-sequence", f"the position sequence is at {sequence}, behind the log's end {top}", fix))
    elif count != top and top - count > allowed:
        problems.append(
            Problem("log-gap", f"the log has {count} events but its positions run to {top}: {top - count} are missing", fix)
        )
    if head_row is not None and head_row != head:
        problems.append(Problem("log-head", f"the log's head says {head_row}, the log ends at {head}", fix))
    for table, column, what in (("keys", "pos", "key"), ("leases", "pos", "lease"), ("sessions", "position", "session")):
        n = q(f"SELECT count(*) FROM {t}{table} WHERE {column} > ?", (head,))[0][0]
        if n:
            problems.append(Problem(f"{table}-ahead", f"{n} {what}(s) point past the end of the log (position {head})", fix))
    n = q(f"SELECT count(*) FROM {t}leases WHERE token < 1", ())[0][0]
    if n:
        problems.append(Problem("lease-token", f"{n} lease(s) have a fencing token below 1", fix))
    report.facts["keys"] = int(q(f"SELECT count(*) FROM {t}keys", ())[0][0])
    if quick:
        report.problems += [Problem(p.code, p.what, p.fix, steps) for p in problems]
        return
    bad: list[str] = []
    for key, clock in q(f"SELECT key, clock FROM {t}keys", ()):
        try:
            DVVSet.from_stored_json(json.loads(clock))
        except (ValueError, TypeError, KeyError, RecursionError):
            bad.append(str(key))
    if bad:
        shown = ", ".join(repr(k) for k in bad[:_MAX_SHOWN]) + (" …" if len(bad) > _MAX_SHOWN else "")
        problems.append(Problem("key-state", f"{len(bad)} key(s) hold a causal state that does not parse: {shown}", fix))
    broken = 0
    for (outcome,) in q(f"SELECT outcome FROM {t}requests", ()):
        try:
            json.loads(outcome)
        except (ValueError, TypeError, RecursionError):
            broken += 1
    if broken:
        problems.append(Problem("request-outcome", f"{broken} recorded request outcome(s) do not parse", fix))
    report.problems += [Problem(p.code, p.what, p.fix, steps) for p in problems]


# ------------------------------------------------------------------ SQLite


def _check_sqlite(path: Path, report: Report, quick: bool) -> None:
    fix = _RECOVER_SQLITE
    if not os.path.lexists(path):
        report.problems.append(Problem("absent", f"no store at {path}", "create one there", (INIT,)))
        return
    try:
        classify(path)
    except StoreFileError as e:
        kind = str(e.details.get("problem", "foreign"))
        report.problems.append(Problem(kind, e.message, "comity will not use or replace this file"))
        return
    report.facts["bytes"] = path.stat().st_size
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        report.problems.append(Problem("unreadable", f"cannot open {path}: {e}", fix, _SALVAGE))
        return
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        report.facts["schema_version"] = version
        if version == 0:
            report.problems.append(
                Problem("foreign", f"{path} is an SQLite database but not a comity store (no comity schema)",
                        "name the store file comity made; comity will not change this one")
            )  # fmt: skip
            return
        rows = [r[0] for r in db.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            shown = "; ".join(rows[:_MAX_SHOWN]) + (f"; … ({len(rows)} in all)" if len(rows) > _MAX_SHOWN else "")
            report.problems.append(Problem("damaged", f"SQLite's integrity check fails: {shown}", fix, _SALVAGE))
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        lost = [t for t in _SQLITE_TABLES if t not in tables]
        if lost:
            report.problems.append(Problem("schema", f"comity's tables are missing: {', '.join(lost)}", fix, _SALVAGE))
            return

        def q(sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
            return list(db.execute(sql, tuple(args)).fetchall())

        _invariants(q, "", report, fix, _SALVAGE, quick=quick, head_row=None)
    except sqlite3.DatabaseError as e:
        report.problems.append(Problem("damaged", f"reading {path} failed: {e}", fix, _SALVAGE))
    finally:
        db.close()


# ------------------------------------------------------------------ PostgreSQL


def _check_postgres(url: str, report: Report, quick: bool) -> None:
    from ._postgres import scrub, split_url, url_secrets

    try:
        import psycopg
    except ImportError:
        report.problems.append(Problem("driver", "psycopg is not installed", "install comity's postgres extra (psycopg)"))
        return
    conninfo, schema, location = split_url(url)
    report.location = location
    s = f'"{schema}".'
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".meta',)).fetchone()
            if found is None or found[0] is None:
                report.problems.append(Problem("absent", f"no store in schema {schema!r} at {location}", "create one there", (INIT,)))
                return
            version = conn.execute(f"SELECT value FROM {s}meta WHERE name = 'schema_version'").fetchone()
            report.facts["schema_version"] = int(version[0]) if version else 0
            head_row = conn.execute(f"SELECT pos FROM {s}log_head").fetchone()
            sequence: int | None = None
            if conn.execute("SELECT to_regclass(%s)", (f'"{schema}".event_pos',)).fetchone()[0] is not None:  # type: ignore[index]
                last = conn.execute(f"SELECT last_value, is_called FROM {s}event_pos").fetchone()
                assert last is not None
                sequence = int(last[0]) - (0 if last[1] else 1)
                head_row = None  # the sequence and the watermark replace it

            def q(sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
                return list(conn.execute(sql.replace("?", "%s"), tuple(args)).fetchall())

            _invariants(q, s, report, _RESTORE_PG, (), quick=quick, head_row=None if head_row is None else int(head_row[0]),
                        sequence=sequence)  # fmt: skip
            conn.execute("COMMIT")
    except psycopg.Error as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        text = scrub(text, url_secrets(url))
        report.problems.append(Problem("unreadable", f"cannot read the store at {location}: {text}", _RESTORE_PG))


def check(where: Path | str, *, quick: bool = False) -> Report:
    """Check the store at ``where`` (a resolved store file, or a postgres URL) without changing it."""
    if isinstance(where, str):
        report = Report(where, "postgres")
        _check_postgres(where, report, quick)
    else:
        report = Report(str(where), "sqlite")
        _check_sqlite(where, report, quick)
    return report


# ------------------------------------------------------------------ salvage

_PRIMARY = {"meta": "name", "keys": "key", "requests": "request_id", "leases": "resource", "sessions": "name"}
_CHUNK = 256


class _Reader:
    """Reads rows from a damaged file, going around what cannot be read."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.failures = 0

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]] | None:
        try:
            return list(self.db.execute(sql, tuple(args)).fetchall())
        except sqlite3.DatabaseError:
            self.failures += 1
            return None

    def events(self, cols: str) -> tuple[list[tuple[Any, ...]], int]:
        """Every readable event, by position; and how many positions could not be read."""
        top = self.rows("SELECT max(pos) FROM events")
        last = int(top[0][0] or 0) if top else 0
        out: list[tuple[Any, ...]] = []
        cursor, lost = 0, 0
        while True:
            got = self.rows(f"SELECT pos, {cols} FROM events WHERE pos > ? ORDER BY pos LIMIT {_CHUNK}", (cursor,))
            if got is None:
                # A damaged page: step over positions, farther each time, until reads work again.
                step = 1
                while got is None and cursor + step <= max(last, cursor + 1) + _CHUNK:
                    got = self.rows(f"SELECT pos, {cols} FROM events WHERE pos >= ? ORDER BY pos LIMIT {_CHUNK}", (cursor + step,))
                    if got is None:
                        step *= 2
                if got is None:
                    break
            if not got:
                break
            lost += int(got[0][0]) - cursor - 1
            out += got
            cursor = int(got[-1][0])
        return out, lost

    def table(self, name: str, cols: str, candidates: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every readable row of a table keyed by text: scans, then each candidate key alone,
        then scans resumed after each candidate (which may start past the damage)."""
        pk = _PRIMARY[name]
        found: dict[str, tuple[Any, ...]] = {}

        def scan(after: str | None) -> None:
            cursor = after
            while True:
                if cursor is None:
                    got = self.rows(f"SELECT {pk}, {cols} FROM {name} ORDER BY {pk} LIMIT {_CHUNK}")
                else:
                    got = self.rows(f"SELECT {pk}, {cols} FROM {name} WHERE {pk} > ? ORDER BY {pk} LIMIT {_CHUNK}", (cursor,))
                if not got:
                    return
                fresh = [r for r in got if r[0] not in found]
                for r in got:
                    found[r[0]] = r
                if not fresh and cursor is not None:
                    return  # joined a stretch already read
                cursor = got[-1][0]

        scan(None)
        if self.failures:
            for c in sorted(set(candidates)):
                if c in found:
                    continue
                got = self.rows(f"SELECT {pk}, {cols} FROM {name} WHERE {pk} = ?", (c,))
                if got:
                    found[c] = got[0]
                    scan(c)
        return [found[k] for k in sorted(found)]


def salvage(src: Path, dst: Path) -> dict[str, Any]:
    """Build a new store at ``dst`` from every row still readable in the damaged store
    ``src`` (which is only read).  The new store keeps the old one's identity and secret
    (contexts and tokens stay valid) and, being another file, takes a new replica id."""
    from ..runtime import SystemRng
    from ._files import link_into_place, new_private_file
    from ._sqlite import MIGRATIONS, SCHEMA_VERSION

    if os.path.lexists(dst):
        raise StoreFileError(f"{dst} exists; salvage into a new file", location=str(dst), problem="exists")
    classify(src)
    source = sqlite3.connect(f"file:{quote(str(src))}?mode=ro", uri=True, timeout=30)
    built = dst.with_name(f".{dst.name}.salvage-{os.getpid()}")
    new_private_file(built)
    out = sqlite3.connect(built, isolation_level=None)
    counts: dict[str, Any] = {}
    try:
        out.execute("PRAGMA journal_mode = wal")
        out.execute("BEGIN IMMEDIATE")
        for step in MIGRATIONS:
            step(out, SystemRng())
        out.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        reader = _Reader(source)

        def columns(table: str) -> list[str]:
            theirs = {r[1] for r in reader.rows(f"PRAGMA table_info({table})") or []}
            return [r[1] for r in out.execute(f"PRAGMA table_info({table})") if r[1] in theirs]

        ecols = [c for c in columns("events") if c != "pos"]
        events, lost = reader.events(", ".join(ecols))
        out.executemany(
            f"INSERT INTO events (pos, {', '.join(ecols)}) VALUES ({', '.join('?' * (len(ecols) + 1))})", events
        )
        counts["events"], counts["events_lost"] = len(events), lost
        key_at = ecols.index("key") + 1
        request_at = ecols.index("request_id") + 1
        session_at = ecols.index("session") + 1
        event_keys = {str(e[key_at]) for e in events}
        indexed = [str(r[0]) for r in reader.rows("SELECT key FROM keys INDEXED BY keys_live WHERE live = 1") or []]
        candidates = {
            "meta": ["store_id", "replica_id", "secret", "file", "copied_from"],
            "keys": sorted(event_keys | set(indexed)),
            "requests": sorted({str(e[request_at]) for e in events}),
            "leases": sorted(k[len("@lease/") :] for k in event_keys if k.startswith("@lease/")),
            "sessions": sorted({str(e[session_at]) for e in events}),
        }
        for table in ("meta", "keys", "requests", "leases", "sessions"):
            cols = [c for c in columns(table) if c != _PRIMARY[table]]
            rows = reader.table(table, ", ".join(cols), candidates[table])
            if table == "meta":
                out.execute("DELETE FROM meta")
            out.executemany(
                f"INSERT INTO {table} ({_PRIMARY[table]}, {', '.join(cols)}) VALUES ({', '.join('?' * (len(cols) + 1))})",
                rows,
            )
            counts[table] = len(rows)
        have = dict(out.execute("SELECT name, value FROM meta").fetchall())
        if not {"store_id", "secret"} <= set(have):
            raise StoreFileError(
                f"the store's identity in {src} cannot be read, so nothing of it can be salvaged; restore a backup",
                location=str(src),
                problem="damaged",
            )
        if "replica_id" not in have:
            out.execute("INSERT INTO meta (name, value) VALUES ('replica_id', ?)", (SystemRng().new_id("r")[:13],))
        out.execute(
            "INSERT INTO meta (name, value) VALUES ('salvaged', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (json.dumps({"from": str(src), "events_lost": lost, "unreadable_reads": reader.failures}),),
        )
        out.execute("COMMIT")
    except BaseException:
        out.close()
        source.close()
        for leftover in (built, Path(f"{built}-wal"), Path(f"{built}-shm")):
            try:
                leftover.unlink()
            except OSError:
                pass
        raise
    out.close()
    source.close()
    if not link_into_place(built, dst):
        raise StoreFileError(f"{dst} appeared while salvaging; salvage into a new file", location=str(dst), problem="exists")
    return counts
