"""The Store and its sessions: the Python API every face is a thin layer over."""

from __future__ import annotations

import json
import os
import threading
import unicodedata
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from contextlib import AbstractContextManager, contextmanager, nullcontext
from math import isqrt
from typing import Any, Protocol

from ..causal import HLC, DVVSet
from ..errors import Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Unavailable
from ..runtime import Clock, Rng, SystemClock, SystemRng
from ._backend import Backend, EventKey, EventRow, LeaseRow, SessionRow, Tx
from ._codec import DEFAULT_MAX_VALUE_BYTES, KEY_MAX_BYTES, SECRET_PREFIXES, ContextCodec, check_key, is_secret, load_json
from ._group import GroupCommit
from ._txn import (
    Caller,
    Create,
    Delete,
    Executor,
    Guard,
    NeedsAuthority,
    Note,
    Op,
    Put,
    Update,
    crdt_of,
    event_json,
    live_values,
)

__all__ = [
    "Store",
    "Session",
    "Versioned",
    "Written",
    "TxnResult",
    "News",
    "DEFAULT_NEWS_LIMIT",
    "DEFAULT_SESSION_SAVE_INTERVAL_S",
    "DEFAULT_SESSION_RETENTION_S",
    "DEFAULT_REQUEST_RETENTION_S",
    "Authority",
    "set_authority",
    "REFUSED_KEY",
    "REFUSED_OP",
    "NOT_NEWS_OPS",
]

DEFAULT_NEWS_LIMIT = 50
# A named session is kept with its own writes; otherwise at most this often (docs/news.md).
DEFAULT_SESSION_SAVE_INTERVAL_S = 5.0
# A named session not saved for this long is forgotten: it starts again at the log's head.
DEFAULT_SESSION_RETENTION_S = 30 * 24 * 3600.0
# A named session in use whose row was saved longer ago than this (or a tenth of the retention,
# if less) is saved again unchanged, so that being used keeps it (docs/news.md).
_SESSION_REFRESH_S = 24 * 3600.0
# A request's recorded outcome answers its retries for at least this long (COMITY_REQUEST_RETENTION_S).
DEFAULT_REQUEST_RETENTION_S = 24 * 3600.0
_PRUNE_REQUESTS_EVERY_S = 60.0
_FORGET_EVERY_S = 3600.0
_SCAN = 256
# A stretch of the log longer than this is skimmed before its events of interest are read
# whole (two statements); a shorter one is read whole at once (one).
_SKIM_PAST = 32
# What asking the log for one key's events costs, in events read in order (see _scan_start).
_KEY_ROWS = 32
_UNDELIVERED_MAX = 500
_AGENT_MAX = 128
KEYS_MAX_LIMIT = 1_000_000
# Refused writes are kept in the log as notes on this key (see Session._record_refusal).
REFUSED_KEY = "@refused"
REFUSED_OP = "write.refused"
# Events that are kept in the log (the audit trail, `why`, the dashboard's conflicts) but
# are news to nobody: a refused write, a fenced task action, a refused claim.  Nothing
# changed, and the one who tried was told by the refusal itself; to another agent it says
# nothing about a key or a task.
NOT_NEWS_OPS = frozenset({REFUSED_OP, "task.fenced", "task.claim-refused"})
LOG_MAX_LIMIT = 10_000
# Compaction (Store.compact) keeps at least this many of the latest events by default.
DEFAULT_COMPACT_KEEP = 1_000_000
# The store setting where compaction records what it deleted (comity.sync and `comity check` read it).
COMPACTED_SETTING = "compacted"
_COMPACT_BATCH = 50_000
NEWS_MAX_LIMIT = 1_000


@dataclass(slots=True)
class Versioned:
    """A read: the key's live ``values`` (several when siblings), the ``context`` to pass
    back with a write, and the ``news`` since the session last looked."""

    key: str
    values: list[Any]
    context: str
    news: list[dict[str, Any]] = field(default_factory=list)
    news_truncated: bool = False
    type: str | None = None  # the CRDT type, for keys changed with update

    @property
    def value(self) -> Any:
        """The single value; raises if the key is absent or has siblings."""
        if len(self.values) != 1:
            raise ValueError(f"{self.key!r} has {len(self.values)} values; read .values")
        return self.values[0]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "values": self.values, "context": self.context, "news": self.news}
        if self.type is not None:
            out["type"] = self.type
        if self.news_truncated:
            out["news_truncated"] = True
        return out


@dataclass(slots=True)
class Written:
    """A successful write: the values now present, the new context, the event's position."""

    key: str
    op: str
    values: list[Any]
    context: str
    pos: int
    news: list[dict[str, Any]] = field(default_factory=list)
    news_truncated: bool = False
    replayed: bool = False
    # Written on a replica cut off from its authority under these [lease, token]s: kept here,
    # judged by the authority when it arrives (comity.sync); None for a write that is final.
    provisional: list[Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "op": self.op,
            "values": self.values,
            "context": self.context,
            "pos": self.pos,
            "news": self.news,
        }
        if self.news_truncated:
            out["news_truncated"] = True
        if self.replayed:
            out["replayed"] = True
        if self.provisional:
            out["provisional"] = self.provisional
        return out


@dataclass(slots=True)
class TxnResult:
    pos: int
    results: list[dict[str, Any]]
    news: list[dict[str, Any]] = field(default_factory=list)
    news_truncated: bool = False
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pos": self.pos, "results": self.results, "news": self.news}
        if self.news_truncated:
            out["news_truncated"] = True
        if self.replayed:
            out["replayed"] = True
        return out


@dataclass(slots=True)
class News:
    events: list[dict[str, Any]]
    truncated: bool
    position: int

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "truncated": self.truncated, "position": self.position}


def _not_secret(key: str) -> None:
    if is_secret(key):
        raise Invalid("key", f"{key[:80]!r} holds secrets (an agent's token hash); comity never shows it")


def _check_limit(limit: object, most: int, field: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise Invalid(field, f"must be an integer in [1, {most}], got {limit!r:.40}")
    return limit


class Authority(Protocol):
    """Where a replica sends what only its authority may decide (comity.sync provides it)."""

    def forward(
        self, caller: Caller, request_id: str, record: bool, guards: list[Guard], ops: list[Op], system: bool, digest: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Run the transaction at the authority; (outcome, replayed), with the outcome's
        positions and contexts this replica's.  Unavailable when it cannot be reached."""
        ...

    def close(self) -> None:
        """Let go of the line to the authority (the store is closing)."""
        ...


_authority_factory: Callable[[Store], Authority] | None = None


def set_authority(factory: Callable[[Store], Authority]) -> None:
    """Install how a replica reaches its authority (comity.sync does, when imported)."""
    global _authority_factory
    _authority_factory = factory


def check_agent(agent: object, field: str = "agent") -> str:
    """An agent (or session) name, normalized: NFKC (so fullwidth ``ａｌｉｃｅ`` is ``alice``),
    then ASCII letters, digits and ``_ . - @ + :`` only.  A name that still holds another
    script after normalization (a Cyrillic ``а`` among Latin letters looks like ``a`` and is
    not) is refused rather than guessed at: two agents must never look alike."""
    if not isinstance(agent, str) or not agent:
        if field == "agent":
            raise Invalid(field, "writes need an agent name")
        raise Invalid(field, f"must be an agent name, got {agent!r}")
    if len(agent) > 4 * _AGENT_MAX:
        raise Invalid(field, f"is {len(agent)} characters; names are at most {_AGENT_MAX}")
    name = unicodedata.normalize("NFKC", agent)
    foreign = sorted({c for c in name if not c.isascii()})
    if foreign:
        shown = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in foreign[:3])
        raise Invalid(
            field,
            f"{agent[:40]!r} has characters agent names may not use ({shown}); names are ASCII letters, digits"
            " and _ . - @ + : (a letter from another script can look like a Latin one)",
        )
    if len(name) > _AGENT_MAX or not all(c.isalnum() or c in "_.-@+:" for c in name):
        raise Invalid(field, f"{agent[:40]!r} is not a valid name: use up to {_AGENT_MAX} letters, digits and _ . - @ + :")
    return name


class Store:
    """A comity store: one replica's state, the log, and the guarded transaction."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
        max_value_bytes: int | None = None,
        news_limit: int = DEFAULT_NEWS_LIMIT,
        session_save_interval: float = DEFAULT_SESSION_SAVE_INTERVAL_S,
        session_retention: float = DEFAULT_SESSION_RETENTION_S,
        request_retention: float | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock or SystemClock()
        self.rng = rng or SystemRng()
        if max_value_bytes is None:
            env = os.environ.get("COMITY_MAX_VALUE_BYTES")
            try:
                max_value_bytes = int(env) if env else DEFAULT_MAX_VALUE_BYTES
            except ValueError:
                raise Invalid("COMITY_MAX_VALUE_BYTES", f"must be a number of bytes, got {env!r}") from None
        if max_value_bytes < 1:
            raise Invalid("max_value_bytes", "must be at least 1")
        self.max_value_bytes = max_value_bytes
        self.news_limit = news_limit
        if not session_save_interval >= 0:
            raise Invalid("session_save_interval", "must be a number of seconds >= 0")
        if not session_retention > 0:
            raise Invalid("session_retention", "must be a number of seconds > 0")
        self.session_save_interval = float(session_save_interval)
        self.session_retention = float(session_retention)
        if request_retention is None:
            env = os.environ.get("COMITY_REQUEST_RETENTION_S")
            try:
                request_retention = float(env) if env else DEFAULT_REQUEST_RETENTION_S
            except ValueError:
                raise Invalid("COMITY_REQUEST_RETENTION_S", f"must be a number of seconds, got {env!r}") from None
        if not request_retention > 0:
            raise Invalid("request_retention", "must be a number of seconds > 0")
        self.request_retention = float(request_retention)
        self._pruned_at: float | None = None
        self._named: weakref.WeakSet[Session] = weakref.WeakSet()
        self._snapshots: set[int] = set()  # threads holding a Session.snapshot() of this store
        self._forgot_at: float | None = None
        meta = backend.meta
        self.meta = meta
        self.codec = ContextCodec(meta.store_id, meta.secret)
        self.executor = Executor(meta, self.codec, HLC(self.clock), max_value_bytes)
        # Every write of this handle's sessions goes through one group commit (see _group.py).
        self.writes = GroupCommit(
            backend, getattr(backend, "ENGINE_ERRORS", ()), batching=bool(getattr(backend, "GROUP_COMMIT", False))
        )
        self.authority: Authority | None = None
        if meta.upstream is not None and _authority_factory is not None:
            self.authority = _authority_factory(self)

    @property
    def upstream(self) -> str | None:
        """Where this replica's authority is (None: this store is its own authority)."""
        return self.meta.upstream

    def run(
        self, caller: Caller, request_id: str, guards: list[Guard], ops: list[Op], *, record: bool, system: bool,
        digest: str | None = None, foreign: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Execute a guarded transaction here, or at the authority when only it may decide
        (the sessions' path without news, for a replica's forwarded transactions: ``foreign``,
        their contexts' log positions are another replica's)."""
        try:
            return self.writes.run(
                lambda tx: self.executor.execute(
                    tx, caller, request_id, guards, ops, record=record, system=system, digest=digest, foreign=foreign
                )
            )
        except NeedsAuthority as need:
            return self.at_authority(need, caller, request_id, guards, ops, record=record, system=system, digest=digest)

    def at_authority(
        self, need: NeedsAuthority, caller: Caller, request_id: str, guards: list[Guard], ops: list[Op], *, record: bool, system: bool,
        digest: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Forward to the authority what only it may decide.  Cut off from it, a write guarded
        only by lease tokens is kept here provisionally (the authority fences it if a successor
        took the lease meanwhile); anything else is Unavailable."""
        if self.authority is None:
            raise Unavailable(
                f"this store is a replica of {self.meta.upstream} and only its authority may do this ({need});"
                " replication (comity.sync) is not loaded in this process",
                upstream=self.meta.upstream,
            )
        try:
            return self.authority.forward(caller, request_id, record, guards, ops, system, digest)
        except Unavailable:
            if not need.provisional:
                raise
        with self.backend.transaction(write=True) as tx:
            return self.executor.execute(
                tx, caller, request_id, guards, ops, record=record, system=system, digest=digest, provisional=True
            )

    @property
    def store_id(self) -> str:
        return self.meta.store_id

    @property
    def replica_id(self) -> str:
        return self.meta.replica_id

    @property
    def location(self) -> str:
        return self.meta.location

    def session(self, agent: str | None = None, *, name: str | None = None) -> Session:
        """A connection of one agent: its identity and its news position.

        A named session keeps its position in the store, so separate processes (CLI
        calls) that share ``name`` see news once.  Reads need no agent; writes do."""
        return Session(self, agent, name)

    def info(self) -> dict[str, Any]:
        with self.backend.transaction(write=False) as tx:
            head = tx.head()
        return {
            "location": self.location,
            "store_id": self.store_id,
            "replica_id": self.replica_id,
            "schema_version": self.meta.schema_version,
            "head": head,
            "upstream": self.meta.upstream,
            "max_value_bytes": self.max_value_bytes,
        }

    def writers_turn(self) -> AbstractContextManager[None]:
        """Hold this process's turn among the store's writers across a read and the write
        that depends on it (SQLite, once this process's writes have waited for another's:
        comity.store._queue); otherwise nothing."""
        turn = getattr(self.backend, "turn", None)
        return turn() if turn is not None else nullcontext()

    def size(self) -> int:
        """Bytes the store takes on disk (SQLite: the file and its WAL; PostgreSQL: its tables)."""
        return int(self.backend.size())

    def compact(self, *, keep: int = DEFAULT_COMPACT_KEEP, dry_run: bool = False, reclaim: bool = True,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
        """Delete the log's events older than a horizon, keeping what the store still needs.

        The horizon is the latest ``keep`` events, and never past the position of a named
        session kept in the store (its news is after it).  Before it, the last event of
        every key and lease stays (a key's next write chains to it; a lease's says its length),
        and so does everything after it.  Each batch is its own write transaction, recorded
        (setting ``compacted``) in the same transaction, so replication refuses a replica that
        lacks deleted events instead of missing them.  With ``reclaim`` the space goes back to
        the filesystem (SQLite: VACUUM).  ``dry_run``: say what would go, delete nothing.
        See docs/throughput.md for what is lost."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise Invalid("keep", f"must be a number of events >= 1 to keep, got {keep!r:.40}")
        if self.meta.upstream is not None:
            raise Invalid(
                "store",
                f"this store is a replica of {self.meta.upstream}: its log is what it has not yet sent there;"
                " compact the authority instead",
            )
        with self.backend.transaction(write=False) as tx:
            head = tx.head()
            floor = tx.session_floor()
            horizon = max(1, head - keep + 1)
            held_by_sessions = floor is not None and floor + 1 < horizon
            if floor is not None:
                horizon = min(horizon, floor + 1)
            deletable, heads = tx.compactable(horizon)
            before = json.loads(tx.setting(COMPACTED_SETTING) or "{}")
        size_before = self.size()
        report: dict[str, Any] = {
            "location": self.location,
            "head": head,
            "keep": keep,
            "horizon": horizon,
            "held_back_by_sessions": held_by_sessions,
            "events_to_delete": deletable,
            "kept_before_horizon": heads,
            "size_bytes": size_before,
            "dry_run": dry_run,
            "compacted_before": int(before.get("deleted", 0)),
        }
        if dry_run or deletable == 0:
            report["deleted"] = 0
            if not dry_run:
                report["size_after_bytes"] = size_before  # nothing to delete: the store stays as it is
            return report
        deleted = 0
        while True:
            def work(tx: Tx) -> int:
                upto = tx.compact(horizon, _COMPACT_BATCH)
                n = upto.pop("")
                if n:
                    done = json.loads(tx.setting(COMPACTED_SETTING) or "{}")
                    origins = done.get("origins", {})
                    for replica, pos in upto.items():
                        origins[replica] = max(int(origins.get(replica, 0)), pos)
                    done.update({"origins": origins, "deleted": int(done.get("deleted", 0)) + n,
                                 "horizon": max(int(done.get("horizon", 0)), horizon)})  # fmt: skip
                    tx.set_setting(COMPACTED_SETTING, json.dumps(done, sort_keys=True, separators=(",", ":")))
                return int(n)

            n = self.writes.run(work)
            deleted += n
            if progress is not None:
                progress(deleted, deletable)
            if n < _COMPACT_BATCH:
                break
        self.writes.run(lambda tx: tx.forget_requests(tx.now() - self.request_retention))  # outcomes past their window go too
        if reclaim:
            self.backend.reclaim()
        report["deleted"] = deleted
        report["size_after_bytes"] = self.size()
        return report

    def _forget_idle_sessions(self, tx: Tx) -> None:
        """Named sessions unused for ``session_retention`` are deleted (from a save, at most
        once per ``_FORGET_EVERY_S`` per handle): one is kept per session id a face made."""
        now = tx.now()
        if self._forgot_at is not None and now - self._forgot_at < _FORGET_EVERY_S:
            return
        self._forgot_at = now
        tx.forget_sessions(now - self.session_retention)

    def _prune_requests(self, tx: Tx, now: float) -> None:
        """Outcomes recorded more than ``request_retention`` ago are deleted (from a write that
        records one, at most once per ``_PRUNE_REQUESTS_EVERY_S`` per handle): a retry within
        the window gets the recorded outcome; later, the id is new again."""
        if self._pruned_at is not None and now - self._pruned_at < _PRUNE_REQUESTS_EVERY_S:
            return
        self._pruned_at = now
        tx.forget_requests(now - self.request_retention)

    def close(self) -> None:
        """Save the named sessions opened here (as of their last answer), then close."""
        for s in list(self._named):
            try:
                s.save()
            except Unavailable:
                pass  # not kept: a session resumed from its last save repeats some news
        self._named.clear()
        if self.authority is not None:
            self.authority.close()  # a replica's line to its upstream (a store it opened, say)
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scan_start(counts: dict[int, int], position: int, head: int) -> int:
    """Where a keyed answer reads the log from: the point (one of ``counts``, the points its
    keys were shown up to, with how many keys each, or ``position``) that costs least,
    counting each event read after it as one and each key shown only up to an earlier
    point, asked by key, as ``_KEY_ROWS`` events.  Near the head that is ``position``
    itself (the log is read and the position moves); a session whose position stays
    behind reads from where its keys were last shown, and asks by key only for the keys
    it has just begun to follow."""
    best, best_cost = position, max(head - position, 0)
    below = sum(counts.values())
    for p in sorted(counts, reverse=True):
        below -= counts[p]
        cost = max(head - p, 0) + _KEY_ROWS * below
        if cost < best_cost:
            best, best_cost = p, cost
    return best


# The keys added one by one that a session's keys remember (_Interest.added_since).
_ADDED_KEPT = 4096


class _Interest(set[str]):
    """The keys a session follows: a set that counts its changes (``changes``), so that an
    answer can tell in one comparison whether the keys it last showed together are still
    exactly the keys followed, without comparing the sets; and that remembers the keys
    added one by one since its last other change (:meth:`added_since`), so that an answer
    after a new key need not compare them either."""

    __slots__ = ("changes", "_added", "_added_from")

    def __init__(self, keys: Iterable[str] = (), changes: int = 0) -> None:
        super().__init__(keys)
        self.changes = changes
        self._added: list[str] = []  # the keys added by add() after the count _added_from, in order
        self._added_from = changes

    def add(self, key: str) -> None:
        if key not in self:
            super().add(key)
            self.changes += 1
            added = self._added
            if len(added) >= _ADDED_KEPT:  # forget the older half: an answer that far behind compares
                del added[: _ADDED_KEPT // 2]
                self._added_from += _ADDED_KEPT // 2
            added.append(key)

    def added_since(self, changes: int) -> list[str] | None:
        """The keys added since the count ``changes``, if keys were only added one by one
        since (None: anything else changed, or it is too long ago to remember)."""
        if changes < self._added_from or changes > self.changes:
            return None
        return self._added[changes - self._added_from :]

    def _changed(self) -> None:
        """A change other than adding one key: count it, and remember no addition before it."""
        self.changes += 1
        self._added = []
        self._added_from = self.changes

    def discard(self, key: object) -> None:
        if key in self:
            super().discard(key)
            self._changed()

    def remove(self, key: str) -> None:
        super().remove(key)
        self._changed()

    def pop(self) -> str:
        key = super().pop()
        self._changed()
        return key

    def clear(self) -> None:
        super().clear()
        self._changed()

    def update(self, *others: Iterable[str]) -> None:
        # One key at a time, so that the keys added are remembered (a read of several keys).
        for other in others:
            for key in other:
                self.add(key)

    # Shrinking only: the set changed exactly when its size did.
    def difference_update(self, *others: Iterable[Any]) -> None:
        n = len(self)
        super().difference_update(*others)
        if len(self) != n:
            self._changed()

    def intersection_update(self, *others: Iterable[Any]) -> None:
        n = len(self)
        super().intersection_update(*others)
        if len(self) != n:
            self._changed()

    def symmetric_difference_update(self, other: Iterable[str]) -> None:
        super().symmetric_difference_update(other)
        self._changed()

    def __ior__(self, other: AbstractSet[str]) -> _Interest:  # type: ignore[override,misc]
        self.update(other)
        return self

    def __isub__(self, other: AbstractSet[Any]) -> _Interest:  # type: ignore[misc]
        self.difference_update(other)
        return self

    def __iand__(self, other: AbstractSet[Any]) -> _Interest:  # type: ignore[misc]
        self.intersection_update(other)
        return self

    def __ixor__(self, other: AbstractSet[str]) -> _Interest:  # type: ignore[override,misc]
        self.symmetric_difference_update(other)
        return self


class _Keys:
    """The keys a session was shown together (``_Shown.together``): an immutable set that
    grows by a few keys without being copied.  A session that follows many keys and begins
    to follow one more at an answer (a new key written) once copied every key it followed
    at that answer, so each write of a new key cost more than the one before (12,000 keys
    followed: 0.6 ms a put, against 0.07).  The keys added since the set was last copied
    whole are kept beside it (``extra``), and folded in once they are about the square root
    of its size: a membership test is two lookups, an addition copies about that root."""

    __slots__ = ("base", "extra")

    def __init__(self, base: frozenset[str] = frozenset(), extra: frozenset[str] = frozenset()) -> None:
        self.base = base
        self.extra = extra  # none of them in ``base``

    def __contains__(self, key: object) -> bool:
        return key in self.base or key in self.extra

    def __len__(self) -> int:
        return len(self.base) + len(self.extra)

    def __iter__(self) -> Iterator[str]:
        yield from self.base
        yield from self.extra

    def common(self, keys: AbstractSet[str]) -> set[str]:
        """The keys of ``keys`` that are here (neither set copied)."""
        out = set(keys & self.base)
        if self.extra:
            out.update(keys & self.extra)
        return out

    def missing(self, keys: AbstractSet[str]) -> set[str]:
        """The keys of ``keys`` that are not here."""
        out = set(keys - self.base)
        if self.extra:
            out -= self.extra
        return out

    def plus(self, keys: Collection[str]) -> _Keys:
        """These keys and ``keys``, none of which is here."""
        if not keys:
            return self
        extra = self.extra.union(keys)
        if len(extra) > max(64, isqrt(len(self.base))):
            return _Keys(self.base | extra)
        return _Keys(self.base, extra)


_NO_KEYS = _Keys()


@dataclass(frozen=True, slots=True)
class _Shown:
    """What a session has been shown of other sessions' events: every one at or before
    ``position``; each event of a key in ``together`` at or before ``upto``; and each event
    of key ``k`` at or before ``ahead[k]`` (greater than ``upto`` for a key in ``together``).

    A keyed answer shows its keys' events without the others between them, so it runs
    ahead of ``news()``.  It shows every key the session follows up to one point, so those
    are kept together, one number for the set, rather than a number per key: a session
    that never calls ``news()`` follows more keys at every claim, and copying a number per
    key at every answer made each answer cost more than the one before.  ``ahead`` holds
    the keys that differ.  Nothing at or below ``position`` is kept.

    ``of`` is the count of changes (:class:`_Interest`) of the session's keys at which
    ``together`` was exactly those keys (-1: not known to be): while the keys have not
    changed since, an answer need not compare the sets."""

    position: int
    ahead: dict[str, int] = field(default_factory=dict)
    together: _Keys = _NO_KEYS
    upto: int = 0
    of: int = -1

    def since(self, key: str) -> int:
        """Every event of ``key`` at or before this was shown."""
        a = self.ahead.get(key)
        if a is not None:
            return a if a > self.position else self.position
        if self.upto > self.position and key in self.together:
            return self.upto
        return self.position

    def has(self, e: EventRow | EventKey) -> bool:
        """Shown already, or never news (:data:`NOT_NEWS_OPS`): either way, not shown again."""
        return e.pos <= self.since(e.key) or e.op in NOT_NEWS_OPS

    def moved_to(self, position: int) -> _Shown:
        """The same, with every event at or before ``position`` shown."""
        ahead = {k: v for k, v in self.ahead.items() if v > position}
        if self.upto > position:
            return _Shown(position, ahead, self.together, self.upto, self.of)
        return _Shown(position, ahead)

    def showing(
        self, keys: set[str] | frozenset[str], upto: int, position: int, of: int = -1, added: list[str] | None = None
    ) -> _Shown:
        """The same, with every event of ``keys`` at or before ``upto`` and every event at or
        before ``position`` shown (``of``: the count of changes of the session's keys, when
        ``keys`` are exactly those keys; ``added``: when they are ``together`` and these,
        nothing else changed since ``together`` was shown)."""
        if upto <= position:
            return self.moved_to(position)
        if upto >= self.upto:
            if of >= 0 and of == self.of:  # the same keys as before (nothing followed or dropped since): the same set
                together = self.together
            elif added is not None:  # the same and a few more: not copied
                together = self.together.plus(added)
            else:
                together = _Keys(frozenset(keys))
            ahead = {k: v for k, v in self.ahead.items() if v > (upto if k in together else position)}
            if self.upto > position and added is None and together is not self.together:
                for k in self.together:
                    if k not in together:  # keys no longer followed keep their point
                        ahead.setdefault(k, self.upto)
            return _Shown(position, ahead, together, upto, of)
        # A capped answer that stopped before the keys kept together: they keep their point
        # (they were shown further), the others are shown up to ``upto``.
        ahead = {k: v for k, v in self.ahead.items() if v > position}
        for k in keys if added is None else added:
            if k not in self.together and ahead.get(k, 0) < upto:
                ahead[k] = upto
        return _Shown(position, ahead, self.together, self.upto, self.of)

    def past_own(self, upto: int, pos: int) -> _Shown:
        """The same, where every position after ``upto`` up to ``pos`` is the session's own
        event: what was shown up to ``upto`` is shown up to ``pos``."""
        if self.position == upto:
            return self.moved_to(pos)
        if self.upto == upto:
            ahead = {k: v for k, v in self.ahead.items() if v > (pos if k in self.together else self.position)}
            return _Shown(self.position, ahead, self.together, pos, self.of)
        return self

    def per_key(self) -> dict[str, int]:
        """Each key shown past ``position`` and how far (the form a session's row keeps)."""
        out = dict.fromkeys(self.together, self.upto) if self.upto > self.position else {}
        out.update((k, v) for k, v in self.ahead.items() if v > self.position)
        return out


class Stored:
    """A key's values as stored, decoded when first asked (:meth:`Session.scan_stored`)."""

    __slots__ = ("_clock", "_values")

    def __init__(self, clock: str) -> None:
        self._clock = clock
        self._values: list[Any] | None = None

    @property
    def values(self) -> list[Any]:
        if self._values is None:
            self._values = live_values(DVVSet.from_stored_json(load_json(self._clock)))
        return self._values


class Session:
    """One agent's connection: reads return contexts, writes carry them, answers carry news.

    News is delivered exactly once: what a keyed answer (a read or a write) shows of the
    session's keys, ``news()`` does not show again, and ``news()`` shows everything else.
    What was shown moves only when the transaction that collected it has committed: a
    failed call leaves the session where it was.  A named session is kept in the store
    (see ``docs/news.md``): at most every ``store.session_save_interval`` seconds (riding
    on the session's own write when it makes one) and when closed, always as it stood
    after the last answer delivered, so a restart repeats a little news, never skips any."""

    def __init__(self, store: Store, agent: str | None, name: str | None) -> None:
        self.store = store
        self.agent = None if agent is None else check_agent(agent)
        self.name = name
        self._interest = _Interest()
        # A face that hands news out through take_news() (the agent facade) sets this: then
        # collected news waits in the session, and only take_news() counts as delivering it.
        self.holds_news = False
        self._lock = threading.RLock()  # one call at a time: what was shown moves in order
        self._snap: tuple[int, Tx] | None = None  # (thread, its read transaction): snapshot()
        self._requests = 0
        self._request_prefix = store.rng.new_id("q")[:13]
        self._undelivered: list[dict[str, Any]] = []
        self._undelivered_truncated = False
        self._collected = False  # a transaction collected news since take_news(): see deliver()
        self._saved: tuple[int, dict[str, int], frozenset[str]] | None = None
        self._saved_at = 0.0
        self._row_saved = 0.0  # the saved time of the row kept in the store (the authority's clock)
        if name is not None:
            name = self.name = check_agent(name, "session")
            self.id = name
            with store.backend.transaction(write=False) as tx:
                row = tx.load_session(name)
                head = tx.head()
            if row is not None and self.agent is not None and row.agent and row.agent != self.agent:
                raise Invalid("session", f"session {name!r} belongs to agent {row.agent}; choose another session name")
            if row is None:
                self._shown = _Shown(head, {})
                self._delivered = self._shown
                # Kept from the start: a server that restarts before this session's first save
                # must resume it here, not at a later head.
                self._save()
            else:
                self.interest = set(row.interest)
                self._shown = _Shown(row.position, {k: int(v) for k, v in row.ahead.items() if v > row.position})
                self._delivered = self._shown
                self._saved = (row.position, self._shown.per_key(), frozenset(self.interest))
                self._saved_at = store.clock.now()
                self._row_saved = row.saved
            store._named.add(self)
        else:
            self.id = store.rng.new_id("x")[:13]
            with store.backend.transaction(write=False) as tx:
                self._shown = _Shown(tx.head(), {})
            self._delivered = self._shown

    @property
    def interest(self) -> set[str]:
        """The keys this session follows: each keyed answer carries their news."""
        return self._interest

    @interest.setter
    def interest(self, keys: set[str]) -> None:
        self._interest = _Interest(keys, self._interest.changes + 1)

    @property
    def position(self) -> int:
        """Every other session's event at or before this log position has been shown."""
        return self._shown.position

    # ------------------------------------------------------------------ news
    def _collect(
        self, tx: Tx, head: int, keys: Iterable[str] | None, limit: int | None = None
    ) -> tuple[_Shown, list[dict[str, Any]], bool]:
        """The news after what this session was shown: of ``keys``, or (None) of every key.

        Returns what the session will have been shown once the answer is delivered, the
        news and whether it was capped; the session itself is not changed here."""
        limit = self.store.news_limit if limit is None else limit
        if keys is None:
            return self._everything(tx, head, limit)
        shown = self._shown
        if head == shown.position and not shown.ahead and shown.upto <= head:
            return shown, [], False  # shown up to the head already: nothing to read (a read with no news)
        # ``of``: the count of changes of the session's keys when those are the keys asked;
        # ``same``: they are the keys last shown together, unchanged since (no set compared).
        of = self._interest.changes if keys is self._interest else -1
        same = of >= 0 and of == shown.of and shown.upto > shown.position
        if same and head <= shown.upto:
            return shown, [], False  # every key followed is shown up to the head already
        # ``added``: the keys last shown together and these are the keys followed, nothing
        # else changed since (a session that begins to follow a key compares no sets either).
        added = None
        if of >= 0 and not same and shown.of >= 0 and shown.upto > shown.position:
            added = self._interest.added_since(shown.of)
        wanted = keys if isinstance(keys, (set, frozenset)) else set(keys)
        # Each key's events are shown up to max(position, ahead[key]).  A session that only
        # reads and writes its own keys while others write elsewhere never moves ``position``
        # (only news() shows those events), so its keys run ahead together: most share one
        # point, the head at its last answer, and keys it touches for the first time start at
        # ``position``.  Group the keys by that point.
        position = shown.position
        own: dict[str, int] = {k: v for k, v in shown.ahead.items() if v > position and k in wanted}
        counts: dict[int, int] = {}
        for v in own.values():
            counts[v] = counts.get(v, 0) + 1
        together = shown.upto > position
        if together:  # set operations, not a loop over every key followed
            kept: _Keys | AbstractSet[str] = shown.together if same or added is not None else shown.together.common(wanted)
            n = len(kept) - sum(1 for k in own if k in kept)
            if n:
                counts[shown.upto] = counts.get(shown.upto, 0) + n
        n = len(wanted) - sum(counts.values())
        if n:
            counts[position] = counts.get(position, 0) + n
        start = _scan_start(counts, position, head)
        # The log after ``start`` is read whole (up to the watermark), one page after another,
        # and filtered in memory: it covers every key shown up to ``start`` or later.  A long
        # stretch is skimmed (positions, keys and ops) and only the events found are read
        # whole; a short one is read whole at once.  The keys shown only up to an earlier
        # point are asked from there by key (SQLite walks each key's chain, PostgreSQL its
        # (key, pos) index).
        rows: list[EventKey | EventRow] = []
        skimming = head - start > _SKIM_PAST
        read: Callable[..., Sequence[EventKey | EventRow]] = tx.skim if skimming else tx.events
        after = start
        while after < head:  # nothing is read past the watermark (a read at the head asks nothing)
            got = read(after, exclude_session=self.id, limit=_SCAN)
            # Nothing past ``head``, the watermark: an event after it may have company still to
            # commit before it (PostgreSQL), and a position past it would skip that for ever.
            page = [r for r in got if r.pos <= head]
            rows += page
            if len(got) < _SCAN or len(page) < len(got):
                break
            after = page[-1].pos
        # The keys shown only up to a point before ``start``, grouped by that point.
        behind: dict[int, list[str]] = {}
        for k, v in own.items():
            if v < start:
                behind.setdefault(v, []).append(k)
        if together and shown.upto < start:
            behind.setdefault(shown.upto, []).extend(k for k in kept if k not in own)
        if position < start and counts.get(position):
            if added is not None:
                rest: Iterable[str] = added
            else:
                rest = shown.together.missing(wanted) if together else wanted
            behind.setdefault(position, []).extend(k for k in rest if k not in own)
        asked = {k for ks in behind.values() for k in ks}  # their events after ``start`` come with the rest of theirs
        hits = [r for r in rows if r.key in wanted and r.key not in asked and not shown.has(r)]
        if skimming:
            found = tx.events_at([r.pos for r in hits]) if hits else []
        else:
            found = [r for r in hits if isinstance(r, EventRow)]  # read whole already
        for after, ks in behind.items():
            # Each group is read until it holds limit + 1 pieces of news or runs out, so
            # that events that are never news cannot hide how far it was read.
            group: list[EventRow] = []
            while len(group) <= limit:
                got = tx.events(after, keys=ks, exclude_session=self.id, limit=limit + 1)
                group += [r for r in got if not shown.has(r) and r.pos <= head]
                if len(got) <= limit or got[-1].pos > head:
                    break
                after = got[-1].pos
            found += group
        if behind:
            found.sort(key=lambda r: r.pos)
        truncated = len(found) > limit
        if truncated:
            found = found[:limit]
        upto = found[-1].pos if truncated else head  # every event of `wanted` up to here is shown
        # The position moves up to the first event still not shown (when the log was read from it).
        if start == shown.position:
            for r in rows:
                if not shown.has(r) and not (r.pos <= upto and r.key in wanted):
                    break
                position = r.pos
            else:
                position = head
        return shown.showing(wanted, upto, position, of, added), [event_json(e) for e in found], truncated

    def _everything(self, tx: Tx, head: int, limit: int) -> tuple[_Shown, list[dict[str, Any]], bool]:
        shown = self._shown
        found: list[EventRow] = []
        after = shown.position
        batch = max(limit + 1, _SCAN)
        while True:
            rows = tx.events(after, exclude_session=self.id, limit=batch)
            fetched = len(rows)
            rows = [r for r in rows if r.pos <= head]  # never past the watermark (see _collect)
            for r in rows:
                if not shown.has(r):  # a keyed answer showed it already
                    found.append(r)
                    if len(found) > limit:
                        break
            if len(found) > limit or fetched < batch or len(rows) < fetched:
                break
            after = rows[-1].pos
        truncated = len(found) > limit
        if truncated:
            found = found[:limit]
        position = found[-1].pos if truncated else head
        return shown.moved_to(position), [event_json(e) for e in found], truncated

    def _shown_now(self, shown: _Shown, news: list[dict[str, Any]], truncated: bool) -> None:
        """The answer carrying ``news`` is being returned: it counts as shown."""
        self._shown = shown
        self._collected = True
        if not self.holds_news:
            self._delivered = shown
            return
        # Every piece of news this session collects is also kept until a face hands it to
        # the agent: layers above (the task board) read and write on the agent's behalf
        # and would otherwise swallow news the agent was never shown.
        self._undelivered.extend(news)
        self._undelivered_truncated |= truncated
        if len(self._undelivered) > _UNDELIVERED_MAX:
            # Too much waiting: forget it and go back to what was delivered, so the next
            # answers collect it again, in order, capped (nothing is skipped).
            self._shown = self._delivered
            self._undelivered = []
            self._undelivered_truncated = True

    def take_news(self) -> tuple[list[dict[str, Any]], bool]:
        """The news collected since it was last taken (each event once), for a face to deliver."""
        with self._lock:
            news, truncated = self._undelivered, self._undelivered_truncated
            self._undelivered, self._undelivered_truncated = [], False
            self._delivered = self._shown
            self._collected = False
            return news, truncated

    def deliver(self) -> tuple[list[dict[str, Any]], bool]:
        """The news a face's answer carries (:meth:`take_news`): what the call's transactions
        collected, each as of its own snapshot; a call that ran none (or only ones that
        collect nothing) first catches up (:meth:`catch_up`).  What others commit after the
        call's last transaction comes with the next answer, as on the embedded store."""
        with self._lock:
            if not self._collected:
                self.catch_up()
            return self.take_news()

    def set_aside(self) -> None:
        """What was collected since the last answer waits for the next one, which still
        catches up (:meth:`deliver`): for a call that answers nobody (a background heartbeat)."""
        with self._lock:
            self._collected = False

    def catch_up(self) -> tuple[list[dict[str, Any]], bool]:
        """The news an answer would carry now: what others changed in this session's keys."""
        with self._lock:
            with self._reading() as tx:
                shown, news, truncated = self._collect(tx, tx.head(), self.interest)
            self._save_if_due()  # as of the answers before this one
            self._shown_now(shown, news, truncated)
            return news, truncated

    def news(self, *, limit: int | None = None) -> News:
        """Everything other sessions wrote since this session last looked, less what keyed
        answers showed already (capped at ``limit``, default ``store.news_limit``)."""
        if limit is not None:
            _check_limit(limit, NEWS_MAX_LIMIT)
        with self._lock:
            with self._reading() as tx:
                shown, events, truncated = self._collect(tx, tx.head(), None, limit)
            self._save_if_due()
            self._shown_now(shown, events, truncated)
            return News(events, truncated, shown.position)

    # ------------------------------------------------------------ persistence
    def _row(self, now: float) -> SessionRow | None:
        """The row to keep, if it differs from the one kept or the one kept is getting old:
        what was delivered, not what an answer still on its way shows (a restart then repeats
        that answer's news).  A session in use is saved again unchanged about once a day, so
        that retention forgets sessions unused, not sessions with nothing new."""
        if self.name is None:
            return None
        d = self._delivered
        state = (d.position, d.per_key(), frozenset(self.interest))
        refresh = min(_SESSION_REFRESH_S, self.store.session_retention / 10)
        if state == self._saved and now - self._row_saved < refresh:
            return None
        return SessionRow(self.name, self.agent or "", d.position, sorted(self.interest), state[1], now)

    def _kept(self, row: SessionRow) -> None:
        self._saved = (row.position, dict(row.ahead), frozenset(row.interest))
        self._saved_at = self.store.clock.now()
        self._row_saved = row.saved

    def _save(self) -> None:
        def work(tx: Tx) -> SessionRow | None:
            row = self._row(tx.now())
            if row is not None:
                tx.save_session(row)
                self.store._forget_idle_sessions(tx)
            return row

        self._no_snapshot("saving a session")
        row = self.store.writes.run(work)
        if row is not None:
            self._kept(row)

    def _save_due(self) -> bool:
        return self.name is not None and self.store.clock.now() - self._saved_at >= self.store.session_save_interval

    def _save_if_due(self) -> None:
        if not self._save_due() or self._snap is not None:  # in a snapshot: at the next answer after it
            return
        if self._row(self.store.clock.now()) is None:
            return
        try:
            self._save()
        except Unavailable:
            pass  # kept at the next write or the next try; until then a restart repeats more

    def save(self) -> None:
        """Keep this named session's position in the store now (a no-op for an unnamed one)."""
        with self._lock:
            if self.name is not None and self._row(self.store.clock.now()) is not None:  # else nothing to keep
                self._save()

    def close(self) -> None:
        """Save (named sessions) and stop tracking; the session must not be used after."""
        with self._lock:
            if self.name is not None:
                self.store._named.discard(self)
                if self._row(self.store.clock.now()) is not None:  # else no write transaction at all
                    self._save()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one snapshot of the store and share one read transaction.

        A layer that reads several things before deciding (a claim reads the task, its
        marker and its lease) pays one transaction instead of one per read: on PostgreSQL,
        one watermark, one BEGIN and one COMMIT.  Every answer inside is as of the same
        moment, and the news collected by the first read is not looked for again.  Nothing
        may be written inside (a write would wait for, or be refused by, the read
        transaction held open): a write of any session of this store in this thread raises
        ``RuntimeError`` there.  Nested, the outer one serves; other threads using this
        session wait until it ends."""
        with self._lock:
            if self._snap is not None:
                yield
                return
            me = threading.get_ident()
            held = self.store._snapshots
            with self.store.backend.transaction(write=False) as tx:
                self._snap = (me, tx)
                held.add(me)
                try:
                    yield
                finally:
                    held.discard(me)
                    self._snap = None

    def _reading(self) -> AbstractContextManager[Tx]:
        """This thread's snapshot's transaction, lent (:meth:`snapshot`), else a new one."""
        snap = self._snap
        if snap is not None and snap[0] == threading.get_ident():
            return nullcontext(snap[1])
        return self.store.backend.transaction(write=False)

    def _no_snapshot(self, what: str) -> None:
        if self.store._snapshots and threading.get_ident() in self.store._snapshots:
            raise RuntimeError(f"{what} inside Session.snapshot() of this store: end the snapshot first (it holds a read transaction open)")

    def get(self, key: str, *, secrets: bool = False) -> Versioned:
        """Read ``key``.  Keys holding secrets (``@auth/…``) are readable only by comity's own
        layers (``secrets``)."""
        check_key(key, system=True)
        if not secrets:
            _not_secret(key)
        codec = self.store.codec
        with self._lock:
            self.interest.add(key)
            with self._reading() as tx:
                row = tx.load(key)
                head = tx.head()
                shown, news, truncated = self._collect(tx, head, self.interest)
            clock = DVVSet.empty() if row is None else DVVSet.from_stored_json(load_json(row.clock))
            out = Versioned(key, live_values(clock), codec.seal(key, clock.join(), head), news, truncated, crdt_of(clock))
            self._save_if_due()  # as of the answers before this one
            self._shown_now(shown, news, truncated)
            return out

    def get_many(self, keys: list[str], *, secrets: bool = False) -> list[Versioned]:
        """Several keys read from one snapshot (the news rides on the first)."""
        if not keys:  # no answer to carry news: collecting it would only be thrown away
            return []
        for k in keys:
            check_key(k, system=True)
            if not secrets:
                _not_secret(k)
        codec = self.store.codec
        with self._lock:
            self.interest.update(keys)
            with self._reading() as tx:
                rows = tx.load_many(keys)
                head = tx.head()
                shown, news, truncated = self._collect(tx, head, self.interest)
            out = []
            for k, row in zip(keys, rows):
                clock = DVVSet.empty() if row is None else DVVSet.from_stored_json(load_json(row.clock))
                out.append(Versioned(k, live_values(clock), codec.seal(k, clock.join(), head), type=crdt_of(clock)))
            if out:
                out[0].news, out[0].news_truncated = news, truncated
                self._save_if_due()
                self._shown_now(shown, news, truncated)
            return out

    def log(self, key: str | None = None, *, after: int = 0, limit: int = 100, values: bool = True) -> list[dict[str, Any]]:
        """The audit trail: events in log order, with their values (unless ``values`` is off:
        a reader that looks only at who did what to which key skips decoding them)."""
        if key is not None:
            check_key(key, system=True)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise Invalid("after", f"must be a log position (an integer >= 0), got {after!r}")
        _check_limit(limit, LOG_MAX_LIMIT)
        with self._reading() as tx:
            rows = tx.events(after, keys=None if key is None else (key,), limit=limit)
            if key is None:  # the whole log is read as a cursor: never past the watermark
                head = tx.head()
                rows = [r for r in rows if r.pos <= head]
        # The events of keys holding secrets stay in the audit trail, without their values.
        return [event_json(e, with_value=values and not is_secret(e.key)) for e in rows]

    def keys(self, prefix: str = "", *, limit: int = 1000, deleted: bool = False, secrets: bool = False) -> list[str]:
        """Keys under ``prefix``; with ``deleted``, also keys whose values are all tombstones."""
        if not isinstance(prefix, str):
            raise Invalid("prefix", "must be a string")
        if len(prefix) > KEY_MAX_BYTES + 1:
            raise Invalid("prefix", f"is {len(prefix)} characters; keys are at most {KEY_MAX_BYTES}")
        _check_limit(limit, KEYS_MAX_LIMIT)
        with self._reading() as tx:
            if not secrets:
                if is_secret(prefix):
                    return []
                hidden = [p for p in SECRET_PREFIXES if p.startswith(prefix)]
                if hidden:  # the listing spans keys holding secrets: leave them out
                    n = sum(len(tx.keys(p, KEYS_MAX_LIMIT, live_only=False)) for p in hidden)
                    return [k for k in tx.keys(prefix, limit + n, live_only=not deleted) if not is_secret(k)][:limit]
            return tx.keys(prefix, limit, live_only=not deleted)

    def scan(self, prefix: str, *, limit: int = 100_000) -> list[Versioned]:
        """Every live key under ``prefix`` with its values and context, from one snapshot."""
        codec = self.store.codec
        with self._reading() as tx:
            rows = tx.scan(prefix, limit)
            head = tx.head()
        out = []
        for key, row in rows:
            clock = DVVSet.from_stored_json(load_json(row.clock))
            out.append(Versioned(key, live_values(clock), codec.seal(key, clock.join(), head)))
        return out

    def scan_values(self, prefix: str, *, limit: int = 100_000) -> list[tuple[str, list[Any]]]:
        """Every live key under ``prefix`` with its values, from one snapshot, without contexts:
        for a reader that will not write those keys back (the ready queue's markers), it costs
        no seal per key and no read of the head."""
        return [(key, stored.values) for key, stored in self.scan_stored(prefix, limit=limit)]

    def scan_stored(self, prefix: str, *, limit: int = 1000, after: str | None = None) -> list[tuple[str, Stored]]:
        """Live keys under ``prefix`` (after the key ``after``), from one snapshot, each with its
        values decoded only when asked (:class:`Stored`): for a reader that looks at a few of
        many (a claim picks one ready task among the first several)."""
        with self._reading() as tx:
            rows = tx.scan(prefix, limit, after=after)
        return [(key, Stored(row.clock)) for key, row in rows]

    def expired_leases(self, prefix: str = "", *, limit: int = 1000) -> tuple[list[LeaseRow], float]:
        """Held leases under ``prefix`` that have expired by the authority's clock, and that time."""
        with self._reading() as tx:
            now = tx.now()
            return tx.expired(prefix, now, limit), now

    def now(self) -> float:
        """The authority's clock: what leases and reservations are judged by."""
        with self._reading() as tx:
            return tx.now()

    def head(self) -> int:
        """The log's current position."""
        with self._reading() as tx:
            return tx.head()

    def acted(self, agent: str) -> bool:
        """Whether ``agent`` has acted in this store (has any event in the log)."""
        with self._reading() as tx:
            return tx.acted(check_agent(agent, "agent"))

    def leases(self, prefix: str = "", *, limit: int = 100_000) -> tuple[list[LeaseRow], float]:
        """Leases under ``prefix`` and the authority's time they are to be judged by."""
        with self._reading() as tx:
            return tx.leases(prefix, limit), tx.now()

    # ----------------------------------------------------------------- writes
    def _require_agent(self) -> str:
        if self.agent is None:
            raise Invalid("agent", "writes need an agent name")
        return self.agent

    def txn(
        self,
        guards: list[Guard] | None = None,
        ops: list[Op] | None = None,
        *,
        request_id: str | None = None,
        system: bool = False,
        digest: str | None = None,
    ) -> TxnResult:
        """The guarded transaction: every guard holds and every op applies, or nothing does.

        ``system`` lets comity's own layers (tasks, sequences) write their '@' keys.  With a
        ``request_id`` the outcome is recorded in the same transaction and a retry returns it
        (``replayed``); ``digest`` says what "the same request" is, when not its operations."""
        agent = self._require_agent()
        self._no_snapshot("a write")
        record = request_id is not None
        if request_id is None:
            # Unique without asking the RNG each time: the session id is random, the count is not.
            self._requests += 1
            request_id = f"{self._request_prefix}.{self._requests}"
        elif not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
            raise Invalid("request_id", "must be a string of 1 to 128 characters")
        guards = list(guards or [])
        ops = list(ops or [])
        caller = Caller(agent, self.id)
        with self._lock:
            try:
                return self._txn(caller, request_id, guards, ops, record, system, digest)
            except (StaleContext, Fenced) as e:
                if not system:
                    self._record_refusal(caller, request_id, guards, ops, e)
                raise

    def _record_refusal(self, caller: Caller, request_id: str, guards: list[Guard], ops: list[Op], e: StaleContext | Fenced) -> None:
        """Keep a refused write in the log (``write.refused`` on ``@refused``): who tried, on
        which key, what its context had seen and which events it missed.  The refusal itself is
        unchanged; this is what `comity.work.conflicts` shows.  Comity's own layers (tasks,
        sequences) retry on contention and record their refusals themselves."""
        key = e.details.get("key") or e.details.get("resource")
        if not isinstance(key, str):
            return
        seen: int | None = None
        kind = "write"
        for o in ops:
            if getattr(o, "key", None) == key:
                kind = type(o).__name__.lower()
                context = getattr(o, "context", None)
                if isinstance(context, str):
                    try:
                        seen = self.store.codec.open(context, key, "context").pos
                    except Invalid:
                        seen = None
        for g in guards:
            context = getattr(g, "context", None)
            if getattr(g, "key", None) == key and isinstance(context, str):
                kind = "guard"
                try:
                    seen = self.store.codec.open(context, key, "context").pos
                except Invalid:
                    seen = None
        news = e.details.get("news") or []
        detail: dict[str, Any] = {  # merged into the event as the log shows it: no "key" here
            "target": key,
            "error": e.code,
            "write": kind,
            "reason": e.message[:500],
            "missed": [n["pos"] for n in news if isinstance(n, dict) and "pos" in n][:20],
            "writers": sorted({str(n["agent"]) for n in news if isinstance(n, dict) and "agent" in n})[:20],
        }
        for name in ("token", "current", "holder"):
            if name in e.details:
                detail[name] = e.details[name]
        note = Note(REFUSED_KEY, REFUSED_OP, detail, seen=seen)
        executor = self.store.executor
        try:
            self.store.writes.run(
                lambda tx: executor.execute(tx, caller, f"{request_id}.refused"[:128], [], [note], record=False, system=True)
            )
        except Exception:  # noqa: BLE001 - the refusal is what the caller must hear; its record is for looking back
            pass

    def _txn(self, caller: Caller, request_id: str, guards: list[Guard], ops: list[Op], record: bool, system: bool,
             digest: str | None) -> TxnResult:  # fmt: skip
        store = self.store

        def work(tx: Tx) -> tuple[dict[str, Any], bool, _Shown, list[dict[str, Any]], bool, SessionRow | None]:
            try:
                outcome, replayed = store.executor.execute(
                    tx, caller, request_id, guards, ops, record=record, system=system, digest=digest
                )
            except (StaleContext, Fenced, LeaseExpired, NotFound):
                # Refused by the state: what it tried to change is now this session's concern,
                # so the next answer carries the news that explains the refusal.
                self._interested(guards, ops)
                raise
            self._interested(guards, ops)
            if record and not replayed:
                store._prune_requests(tx, tx.now())
            s = self._shown
            pos, appended = outcome["pos"], outcome["appended"]
            news: list[dict[str, Any]] = []
            truncated = False
            if not replayed and pos == s.position + appended:
                # Positions are issued in order under the write lock (and in a group commit, in
                # the order its transactions run): if this transaction's events directly follow
                # what the session had seen, nobody else wrote between.
                shown = _Shown(pos, {})
            elif not replayed and pos == s.upto + appended and s.upto > s.position and s.of == self._interest.changes:
                # Every key the session follows (unchanged since its last keyed answer, so this
                # transaction's keys among them) was shown up to ``upto``, and nobody wrote
                # between: they are shown up to here.  Its position stays behind what others
                # wrote elsewhere, for news() to show.
                shown = s.past_own(s.upto, pos)  # the positions after ``upto`` are all its own
            else:
                # Never past the watermark: on PostgreSQL, writers of other keys may still be
                # committing positions before this one (tx.head() is its own head on SQLite).
                upto = tx.head() if replayed else min(pos, tx.head())
                shown, news, truncated = self._collect(tx, upto, self.interest)
                if not replayed and not truncated and upto < pos and upto == pos - appended:
                    # PostgreSQL: the watermark is below this transaction's own events, and as
                    # many positions follow it up to ``pos`` as it appended: they are all its own.
                    shown = shown.past_own(upto, pos)
            # When a save is due, it rides on the session's own write, as it stood before this answer.
            row = self._row(tx.now()) if self._save_due() else None
            if row is not None:
                tx.save_session(row)
            return outcome, replayed, shown, news, truncated, row

        try:
            outcome, replayed, shown, news, truncated, row = store.writes.run(work)
        except NeedsAuthority as need:  # a replica: only its authority may decide this
            self._interested(guards, ops)
            outcome, replayed = self.store.at_authority(
                need, caller, request_id, guards, ops, record=record, system=system, digest=digest
            )
            with self._reading() as tx:
                shown, news, truncated = self._collect(tx, tx.head(), self.interest)
            self._save_if_due()
            self._shown_now(shown, news, truncated)
            return TxnResult(outcome["pos"], outcome["results"], news, truncated, replayed)
        if row is not None:
            self._kept(row)
        self._shown_now(shown, news, truncated)
        return TxnResult(outcome["pos"], outcome["results"], news, truncated, replayed)

    def recorded(self, request_id: str) -> tuple[str, dict[str, Any]] | None:
        """The (digest, outcome) recorded under ``request_id``, if a request with it was applied
        within the retention window: a layer above checks it before acting again."""
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
            raise Invalid("request_id", "must be a string of 1 to 128 characters")
        with self._reading() as tx:
            prior = tx.recorded(request_id)
        return None if prior is None else (prior[0], json.loads(prior[1]))

    def _interested(self, guards: list[Guard], ops: list[Op]) -> None:
        for o in ops:
            if isinstance(o, (Put, Create, Delete, Update)):
                self._interest.add(o.key)
        for g in guards:
            key = getattr(g, "key", None)
            if key is not None:
                self._interest.add(key)

    def _write(self, op: Put | Create | Delete, request_id: str | None) -> Written:
        r = self.txn(ops=[op], request_id=request_id)
        res = r.results[0]
        return Written(res["key"], res["op"], res["values"], res["context"], res["pos"], r.news, r.news_truncated, r.replayed)

    def put(self, key: str, value: Any, *, context: str | None = None, keep_both: bool = False, request_id: str | None = None) -> Written:
        """Write ``value`` over what ``context`` saw; refused as StaleContext if anything newer is
        there (or kept beside it as a sibling with ``keep_both``)."""
        return self._write(Put(key, value, context, keep_both), request_id)

    def create(self, key: str, value: Any, *, request_id: str | None = None) -> Written:
        """Write ``value`` only if ``key`` has no live value; StaleContext names who has it."""
        return self._write(Create(key, value), request_id)

    def update(self, key: str, op: str, arg: Any = None, *, type: str | None = None, request_id: str | None = None) -> TxnResult:
        """Apply a CRDT operation to ``key`` (typed by ``type`` on its first update).

        Never stale: concurrent updates merge.  The result's ``results[0]`` has the
        ``type``, the new ``value`` and a ``context``."""
        return self.txn(ops=[Update(key, op, arg, type)], request_id=request_id)

    def delete(self, key: str, *, context: str | None = None, request_id: str | None = None) -> Written:
        """Leave a tombstone; the same context rules as put."""
        return self._write(Delete(key, context), request_id)
