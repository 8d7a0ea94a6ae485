"""The Store and its sessions: the Python API every face is a thin layer over."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..causal import HLC, DVVSet
from ..errors import Fenced, Invalid, LeaseExpired, NotFound, StaleContext
from ..runtime import Clock, Rng, SystemClock, SystemRng
from ._backend import Backend, LeaseRow, SessionRow, Tx
from ._codec import DEFAULT_MAX_VALUE_BYTES, ContextCodec, check_key
from ._txn import (
    Caller,
    Create,
    Delete,
    Executor,
    Guard,
    Op,
    Put,
    Update,
    crdt_of,
    event_json,
    live_values,
)

__all__ = ["Store", "Session", "Versioned", "Written", "TxnResult", "News", "DEFAULT_NEWS_LIMIT"]

DEFAULT_NEWS_LIMIT = 50
_SCAN = 256
_UNDELIVERED_MAX = 500
_AGENT_MAX = 128


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


def check_agent(agent: object, field: str = "agent") -> str:
    if not isinstance(agent, str) or not agent:
        if field == "agent":
            raise Invalid(field, "writes need an agent name: pass --agent NAME or set COMITY_AGENT")
        raise Invalid(field, f"must be an agent name, got {agent!r}")
    if len(agent) > _AGENT_MAX or not all(c.isalnum() or c in "_.-@+:" for c in agent):
        raise Invalid(field, f"{agent[:40]!r} is not a valid name: use up to {_AGENT_MAX} letters, digits and _ . - @ + :")
    return agent


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
        meta = backend.meta
        self.meta = meta
        self.codec = ContextCodec(meta.store_id, meta.secret)
        self.executor = Executor(meta, self.codec, HLC(self.clock), max_value_bytes)

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
            "max_value_bytes": self.max_value_bytes,
        }

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session:
    """One agent's connection: reads return contexts, writes carry them, answers carry news."""

    def __init__(self, store: Store, agent: str | None, name: str | None) -> None:
        self.store = store
        self.agent = None if agent is None else check_agent(agent)
        self.name = name
        self.interest: set[str] = set()
        self._requests = 0
        self._request_prefix = store.rng.new_id("q")[:13]
        self._undelivered: list[dict[str, Any]] = []
        self._undelivered_truncated = False
        if name is not None:
            check_agent(name, "session")
            self.id = name
            with store.backend.transaction(write=False) as tx:
                row = tx.load_session(name)
                if row is None:
                    self.position = tx.head()
                else:
                    self.position = row.position
                    self.interest = set(row.interest)
        else:
            self.id = store.rng.new_id("x")[:13]
            with store.backend.transaction(write=False) as tx:
                self.position = tx.head()

    # ------------------------------------------------------------------ news
    def _collect(self, tx: Tx, head: int, keys: Iterable[str] | None) -> tuple[list[dict[str, Any]], bool]:
        """News after this session's position; advances the position to what was shown."""
        limit = self.store.news_limit
        # An active session is near the head, so scanning what came after its position and
        # filtering in memory is cheapest; far behind, ask the log's (key, pos) index instead.
        rows = tx.events(self.position, exclude_session=self.id, limit=(_SCAN if keys is not None else limit) + 1)
        if keys is not None:
            wanted = keys if isinstance(keys, (set, frozenset)) else set(keys)
            if len(rows) <= _SCAN:
                rows = [r for r in rows if r.key in wanted]
            else:
                rows = tx.events(self.position, keys=wanted, exclude_session=self.id, limit=limit + 1)
        truncated = len(rows) > limit
        if truncated:
            rows = rows[:limit]
            self.position = rows[-1].pos
        else:
            self.position = max(self.position, head)
        if self.name is not None:
            tx.save_session(SessionRow(self.name, self.agent or "", self.position, sorted(self.interest)))
        news = [event_json(e) for e in rows]
        self._hold(news, truncated)
        return news, truncated

    def _hold(self, news: list[dict[str, Any]], truncated: bool) -> None:
        # Every piece of news this session collects is also kept until a face hands it to
        # the agent: layers above (the task board) read and write on the agent's behalf
        # and would otherwise swallow news the agent was never shown.
        self._undelivered.extend(news)
        self._undelivered_truncated |= truncated
        if len(self._undelivered) > _UNDELIVERED_MAX:
            del self._undelivered[: len(self._undelivered) - _UNDELIVERED_MAX]
            self._undelivered_truncated = True

    def take_news(self) -> tuple[list[dict[str, Any]], bool]:
        """The news collected since it was last taken (each event once), for a face to deliver."""
        news, truncated = self._undelivered, self._undelivered_truncated
        self._undelivered, self._undelivered_truncated = [], False
        return news, truncated

    def _quiet(self, tx: Tx, head: int) -> tuple[list[dict[str, Any]], bool]:
        self.position = head
        if self.name is not None:
            tx.save_session(SessionRow(self.name, self.agent or "", self.position, sorted(self.interest)))
        return [], False

    def catch_up(self) -> tuple[list[dict[str, Any]], bool]:
        """The news an answer would carry now: what others changed in this session's keys."""
        with self.store.backend.transaction(write=self.name is not None) as tx:
            return self._collect(tx, tx.head(), self.interest)

    def news(self, *, limit: int | None = None) -> News:
        """Everything other sessions wrote since this session last looked (capped)."""
        saved = self.store.news_limit
        if limit is not None:
            self.store.news_limit = limit
        try:
            with self.store.backend.transaction(write=self.name is not None) as tx:
                events, truncated = self._collect(tx, tx.head(), None)
        finally:
            self.store.news_limit = saved
        return News(events, truncated, self.position)

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> Versioned:
        check_key(key, system=True)
        codec = self.store.codec
        with self.store.backend.transaction(write=self.name is not None) as tx:
            row = tx.load(key)
            head = tx.head()
            self.interest.add(key)
            news, truncated = self._collect(tx, head, self.interest)
        clock = DVVSet.empty() if row is None else DVVSet.from_stored_json(json.loads(row.clock))
        return Versioned(key, live_values(clock), codec.seal(key, clock.join(), head), news, truncated, crdt_of(clock))

    def get_many(self, keys: list[str]) -> list[Versioned]:
        """Several keys read from one snapshot (the news rides on the first)."""
        for k in keys:
            check_key(k, system=True)
        codec = self.store.codec
        with self.store.backend.transaction(write=self.name is not None) as tx:
            rows = [tx.load(k) for k in keys]
            head = tx.head()
            self.interest.update(keys)
            news, truncated = self._collect(tx, head, self.interest)
        out = []
        for k, row in zip(keys, rows):
            clock = DVVSet.empty() if row is None else DVVSet.from_stored_json(json.loads(row.clock))
            out.append(Versioned(k, live_values(clock), codec.seal(k, clock.join(), head), type=crdt_of(clock)))
        if out:
            out[0].news, out[0].news_truncated = news, truncated
        return out

    def log(self, key: str | None = None, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The audit trail: events in log order, with their values."""
        if key is not None:
            check_key(key, system=True)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise Invalid("after", f"must be a log position (an integer >= 0), got {after!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise Invalid("limit", f"must be an integer in [1, 10000], got {limit!r}")
        with self.store.backend.transaction(write=False) as tx:
            rows = tx.events(after, keys=None if key is None else (key,), limit=limit)
        return [event_json(e, with_value=True) for e in rows]

    def keys(self, prefix: str = "", *, limit: int = 1000, deleted: bool = False) -> list[str]:
        """Keys under ``prefix``; with ``deleted``, also keys whose values are all tombstones."""
        if not isinstance(prefix, str):
            raise Invalid("prefix", "must be a string")
        with self.store.backend.transaction(write=False) as tx:
            return tx.keys(prefix, limit, live_only=not deleted)

    def scan(self, prefix: str, *, limit: int = 100_000) -> list[Versioned]:
        """Every live key under ``prefix`` with its values and context, from one snapshot."""
        codec = self.store.codec
        with self.store.backend.transaction(write=False) as tx:
            rows = tx.scan(prefix, limit)
            head = tx.head()
        out = []
        for key, row in rows:
            clock = DVVSet.from_stored_json(json.loads(row.clock))
            out.append(Versioned(key, live_values(clock), codec.seal(key, clock.join(), head)))
        return out

    def expired_leases(self, prefix: str = "", *, limit: int = 1000) -> tuple[list[LeaseRow], float]:
        """Held leases under ``prefix`` that have expired by the authority's clock, and that time."""
        with self.store.backend.transaction(write=False) as tx:
            now = tx.now()
            return tx.expired(prefix, now, limit), now

    def now(self) -> float:
        """The authority's clock: what leases and reservations are judged by."""
        with self.store.backend.transaction(write=False) as tx:
            return tx.now()

    def head(self) -> int:
        """The log's current position."""
        with self.store.backend.transaction(write=False) as tx:
            return tx.head()

    def leases(self, prefix: str = "", *, limit: int = 100_000) -> tuple[list[LeaseRow], float]:
        """Leases under ``prefix`` and the authority's time they are to be judged by."""
        with self.store.backend.transaction(write=False) as tx:
            return tx.leases(prefix, limit), tx.now()

    # ----------------------------------------------------------------- writes
    def _require_agent(self) -> str:
        if self.agent is None:
            raise Invalid("agent", "writes need an agent name: pass --agent NAME or set COMITY_AGENT")
        return self.agent

    def txn(
        self,
        guards: list[Guard] | None = None,
        ops: list[Op] | None = None,
        *,
        request_id: str | None = None,
        system: bool = False,
    ) -> TxnResult:
        """The guarded transaction: every guard holds and every op applies, or nothing does.

        ``system`` lets comity's own layers (tasks, sequences) write their '@' keys."""
        agent = self._require_agent()
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
        with self.store.backend.transaction(write=True) as tx:
            try:
                outcome, replayed = self.store.executor.execute(tx, caller, request_id, guards, ops, record=record, system=system)
            except (StaleContext, Fenced, LeaseExpired, NotFound):
                # Refused by the state: what it tried to change is now this session's concern,
                # so the next answer carries the news that explains the refusal.
                self._interested(guards, ops)
                raise
            self._interested(guards, ops)
            if not replayed and outcome["pos"] == self.position + outcome["appended"]:
                # Positions are issued in order under the write lock: if this transaction's
                # events directly follow what the session had seen, nobody else wrote between.
                news, truncated = self._quiet(tx, outcome["pos"])
            else:
                news, truncated = self._collect(tx, tx.head() if replayed else outcome["pos"], self.interest)
        return TxnResult(outcome["pos"], outcome["results"], news, truncated, replayed)

    def _interested(self, guards: list[Guard], ops: list[Op]) -> None:
        for o in ops:
            if isinstance(o, (Put, Create, Delete, Update)):
                self.interest.add(o.key)
        for g in guards:
            key = getattr(g, "key", None)
            if key is not None:
                self.interest.add(key)

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
