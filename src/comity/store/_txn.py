"""The one primitive: the guarded transaction.

Guards are checked and operations applied inside a single backend write
transaction, all or nothing, as etcd's ``Txn``: a key's context still covers
its values (:class:`Unchanged`), a key is absent (:class:`Absent`), a lease's
fencing token is still current (:class:`Holds`).  Every write is an event with
a dot from the key's dotted version vector set, so concurrent writes kept with
``keep_both`` become siblings and a later write whose context covers them
resolves them (Preguiça et al., "Dotted Version Vectors", 2010).

Values inside a key's DVVSet are wrapped: ``[value]`` is live, ``[]`` a tombstone,
``[state, type]`` a CRDT's state, and ``[value, {"fence": …}]`` a value written on a
replica cut off from its authority under a lease whose token only the authority can
judge (``"deleted": true`` in the mark makes it a tombstone).

On a replica (a store with an upstream), what needs the authority (absence, sequences,
leases, comity's own coordinated keys) is not executed locally: the executor raises
:class:`NeedsAuthority` and the session forwards the transaction (comity.sync).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Union

from ..causal import HLC, Dot, DVVSet, HLCTimestamp, VersionVector
from ..crdt import TYPES, OutOfRights, UpdateContext, crdt_type
from ..errors import Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Step
from ..render import describe_key
from ._backend import LEASE_PREFIX, EventRow, KeyRow, LeaseRow, StoreMeta, Tx
from ._codec import ContextCodec, check_key, compact_json, dump_value, load_json

__all__ = [
    "NeedsAuthority",
    "Unchanged",
    "Absent",
    "Holds",
    "Put",
    "Create",
    "Delete",
    "Acquire",
    "Renew",
    "Release",
    "Update",
    "Next",
    "Note",
    "Guard",
    "Op",
    "Executor",
    "event_json",
    "named_writers",
    "live_values",
    "is_live",
    "authority_needs",
]

MAX_TTL_S = 7 * 24 * 3600.0
DEFAULT_LEASE_S = 300.0


# ------------------------------------------------------------------ guards and ops


@dataclass(frozen=True, slots=True)
class Unchanged:
    """Guard: nothing was written to ``key`` that ``context`` (from a read) did not see."""

    key: str
    context: str | None


@dataclass(frozen=True, slots=True)
class Absent:
    """Guard: ``key`` has no live value."""

    key: str


@dataclass(frozen=True, slots=True)
class Holds:
    """Guard: the caller's fencing ``token`` for ``resource`` is current and unexpired."""

    resource: str
    token: int


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` having read ``context``.  Stale unless the context covers every
    current value; with ``keep_both`` the value is kept beside them as a sibling instead."""

    key: str
    value: Any
    context: str | None = None
    keep_both: bool = False
    label: str | None = None  # the event's op name in the log (comity's own layers)


@dataclass(frozen=True, slots=True)
class Create:
    """Write ``value`` only if ``key`` has no live value."""

    key: str
    value: Any
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Leave a tombstone, under the same context rules as :class:`Put`."""

    key: str
    context: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """Apply ``op(arg)`` to the CRDT held by ``key`` (typed ``type`` by its first update).

    Needs no context and is never stale: CRDT operations commute (Shapiro et al. 2011)."""

    key: str
    op: str
    arg: Any = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Next:
    """Take the next number of sequence ``name`` (or the next ``count`` of them, a block):
    unique, increasing, never reissued."""

    name: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class Note:
    """Log an event on ``key`` without changing its state (a refused attempt, a heartbeat),
    so the key's history shows it.  System keys only."""

    key: str
    label: str
    detail: dict[str, Any]
    seen: int | None = None


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take the lease on ``resource`` if free or expired (or, with ``steal``, from anyone),
    with a fencing token greater than every earlier one."""

    resource: str
    ttl: float
    steal: bool = False


@dataclass(frozen=True, slots=True)
class Renew:
    """Extend the lease on ``resource`` held with ``token`` by ``ttl`` seconds from now; with no
    ``ttl``, by the length it was acquired or last renewed with (a lease keeps its length)."""

    resource: str
    token: int
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Release:
    resource: str
    token: int


Guard = Union[Unchanged, Absent, Holds]
Op = Union[Put, Create, Delete, Update, Next, Note, Acquire, Renew, Release]

SEQ_PREFIX = "@seq/"
ESCROW_PREFIX = "@escrow/"  # rights a replica holds: written by that replica alone (comity.sync)
MAX_BLOCK = 1_000_000
_LABEL = re.compile(r"[a-z][a-z0-9_.\-]{0,31}")
_KEY_OPS = (Put, Create, Delete)
_LEASE_OPS = (Acquire, Renew, Release)


class NeedsAuthority(Exception):
    """Raised on a replica by a transaction that only its authority may execute; ``reasons``
    say why.  When the only reason is ``"holds"``, a cut-off replica may execute it
    provisionally: the authority judges its lease tokens when it arrives."""

    def __init__(self, reasons: set[str]) -> None:
        super().__init__(", ".join(sorted(reasons)))
        self.reasons = reasons

    @property
    def provisional(self) -> bool:
        return self.reasons == {"holds"}


# ----------------------------------------------------------------------- helpers


def _seen(seen: VersionVector | None, e: EventRow) -> bool:
    """Whether a writer whose context had seen ``seen`` had seen the write ``e`` (a note, with
    no dot, never)."""
    return seen is not None and seen.contains(Dot(e.replica, e.counter))


def _named(key: str) -> str:
    """A key as a message names it: comity's own keys as what they mean ("task T-1")."""
    meaning = describe_key(key)
    return meaning if meaning != key else repr(key)



def is_crdt(w: list[Any]) -> bool:
    return len(w) == 2 and isinstance(w[1], str)


def is_live(w: list[Any]) -> bool:
    """A wrapped value that is not a tombstone."""
    return bool(w) and not (len(w) == 2 and isinstance(w[1], dict) and w[1].get("deleted"))


def live_values(clock: DVVSet) -> list[Any]:
    """What a reader sees: every live plain value, and each CRDT type's siblings merged into one
    value (concurrent updates on two replicas are never shown side by side)."""
    values = clock.values()
    if len(values) == 1 and len(values[0]) == 1:
        return [values[0][0]]  # one plain value (a tombstone or a CRDT's state is [] or a pair)
    out: list[Any] = []
    merged: dict[str, Any] = {}
    for w in values:
        if not is_live(w):
            continue
        if is_crdt(w):
            state = TYPES[w[1]].from_json(w[0])
            merged[w[1]] = state if w[1] not in merged else merged[w[1]].merge(state)
        else:
            out.append(w[0])
    return out + [state.value() for state in merged.values()]


def crdt_of(clock: DVVSet) -> str | None:
    """The CRDT type a key holds, or None for a plain (or absent) key."""
    for w in clock.values():
        if is_crdt(w):
            return str(w[1])
    return None


def has_live(clock: DVVSet) -> bool:
    for w in clock.values():
        if len(w) == 1 or is_live(w):  # [value]: a plain live value
            return True
    return False


def replica_owned(key: str, replica_id: str) -> bool:
    """An escrow key of this replica's: it alone writes it, so it needs no authority."""
    return key.startswith(ESCROW_PREFIX) and key.endswith("/" + replica_id)


def authority_needs(guards: list[Guard], ops: list[Op], replica_id: str) -> set[str]:
    """What in a transaction only the authority may decide (empty: a replica runs it itself).

    Absence (create), sequences, leases and fencing tokens, and comity's own coordinated
    keys (tasks, reservations, tokens) are decided in one place; plain keys, CRDT updates
    and notes are not."""
    reasons: set[str] = set()
    for g in guards:
        if isinstance(g, Absent):
            reasons.add("create")
        elif isinstance(g, Holds):
            reasons.add("holds")
    for o in ops:
        if isinstance(o, Create):
            reasons.add("create")
        elif isinstance(o, Next):
            reasons.add("sequence")
        elif isinstance(o, _LEASE_OPS):
            reasons.add("lease")
        elif isinstance(o, (Put, Delete)) and o.key.startswith("@") and not replica_owned(o.key, replica_id):
            reasons.add("coordinated")
        elif isinstance(o, Update) and o.op == "escrow":
            reasons.add("escrow")
    return reasons


def _keys_of(guards: list[Guard], ops: list[Op], request_id: str | None) -> list[str]:
    """Every key a transaction reads or writes, as the backend's locks name them."""
    keys: list[str] = []
    for g in guards:
        keys.append(LEASE_PREFIX + g.resource if isinstance(g, Holds) else g.key)
    for o in ops:
        if isinstance(o, _LEASE_OPS):
            keys.append(LEASE_PREFIX + o.resource)
        elif isinstance(o, Next):
            keys.append(SEQ_PREFIX + o.name)
        else:
            keys.append(o.key)
    if request_id is not None:
        keys.append("@request/" + request_id)
    return keys


def event_json(e: EventRow, *, with_value: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pos": e.pos,
        "key": e.key,
        "op": e.op,
        "agent": e.agent,
        "session": e.session,
        "dot": [e.replica, e.counter],
        "hlc": e.hlc,
        "request_id": e.request_id,
    }
    if e.seen is not None:
        out["seen"] = e.seen
    if e.opos is not None:
        out["origin_pos"] = e.opos  # it came from replica e.replica, where it is at this position
    if e.detail:
        out.update(json.loads(e.detail))
    if with_value and e.value is not None:
        out["value"] = json.loads(e.value)
    return out


def named_writers(news: list[dict[str, Any]]) -> str:
    """Who wrote the events of a refusal's news, as its message says: "bob (put at pos 12)";
    an event with no position in this log (a refusal forwarded from the authority, whose
    event has not been pulled here) is named without one."""
    return ", ".join(
        f"{n.get('agent')} ({n.get('op')} at pos {n['pos']})" if "pos" in n else f"{n.get('agent')} ({n.get('op')}, not in this log yet)"
        for n in news
    ) or "another writer"


def _digest(agent: str, guards: list[Guard], ops: list[Op]) -> str:
    def enc(x: Any) -> Any:
        return [type(x).__name__, *(getattr(x, f) for f in x.__slots__)]

    body = json.dumps([agent, [enc(g) for g in guards], [enc(o) for o in ops]], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def check_ttl(ttl: object, field: str) -> float:
    """A lease length: seconds in (0, a week]; NaN, infinities and booleans are not."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (0 < ttl <= MAX_TTL_S):
        raise Invalid(field, f"must be a number of seconds in (0, {int(MAX_TTL_S)}], got {ttl!r:.40}")
    return float(ttl)


def _check_token(token: object, field: str) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 1:
        raise Invalid(field, f"must be a positive integer fencing token from an acquire, got {token!r}")
    return token


def _at(prefix: str, e: Invalid) -> Invalid:
    return Invalid(f"{prefix}.{e.field}", e.message.split(": ", 1)[-1])


def validate(guards: list[Guard], ops: list[Op], max_value_bytes: int, system: bool = False) -> dict[int, str]:
    """Check shapes before touching the store; returns the JSON text of each value-writing op.

    Field names (``ops[0].value``) are built only when something is wrong: this runs on
    every write."""
    texts: dict[int, str] = {}
    if not ops and not guards:
        raise Invalid("ops", "a transaction needs at least one guard or operation")
    for i, g in enumerate(guards):
        try:
            if isinstance(g, (Unchanged, Absent)):
                check_key(g.key, system=system)
            elif isinstance(g, Holds):
                check_key(g.resource, "resource", system=system)
                _check_token(g.token, "token")
            else:
                raise Invalid("type", f"unknown guard {type(g).__name__}; use Unchanged, Absent or Holds")
        except Invalid as e:
            raise _at(f"guards[{i}]", e) from None
    seen_keys: set[str] = set()
    for i, o in enumerate(ops):
        try:
            if isinstance(o, (Put, Create, Delete, Note)):
                check_key(o.key, system=system)
                if o.key in seen_keys:
                    raise Invalid("key", f"{o.key!r} is written twice in one transaction; combine the writes")
                seen_keys.add(o.key)
                if isinstance(o, (Put, Create)):
                    texts[i] = dump_value(o.value, max_value_bytes)
                if o.label is not None and (not system or _LABEL.fullmatch(o.label) is None):
                    raise Invalid("label", "event labels are for comity's own layers (lowercase, up to 32 characters)")
                if isinstance(o, Note):
                    if not system:
                        raise Invalid("type", "notes are for comity's own layers")
                    texts[i] = dump_value(o.detail, max_value_bytes, "detail")
            elif isinstance(o, Update):
                check_key(o.key, system=system)
                if o.key in seen_keys:
                    raise Invalid("key", f"{o.key!r} is written twice in one transaction; combine the writes")
                seen_keys.add(o.key)
                if not isinstance(o.op, str) or not o.op:
                    raise Invalid("op", "name the operation, e.g. 'add' or 'inc'")
                if o.type is not None:
                    crdt_type(o.type)
                texts[i] = dump_value({"op": o.op, "arg": o.arg}, max_value_bytes, "arg")
            elif isinstance(o, Next):
                check_key(o.name, "name")
                if isinstance(o.count, bool) or not isinstance(o.count, int) or not 1 <= o.count <= MAX_BLOCK:
                    raise Invalid("count", f"must be a whole number of sequence numbers in [1, {MAX_BLOCK}], got {o.count!r}")
                if SEQ_PREFIX + o.name in seen_keys:
                    raise Invalid("name", f"sequence {o.name!r} is advanced twice in one transaction")
                seen_keys.add(SEQ_PREFIX + o.name)
            elif isinstance(o, _LEASE_OPS):
                check_key(o.resource, "resource", system=system)
                if isinstance(o, Acquire) or (isinstance(o, Renew) and o.ttl is not None):
                    check_ttl(o.ttl, "ttl")
                if isinstance(o, (Renew, Release)):
                    _check_token(o.token, "token")
            else:
                raise Invalid("type", f"unknown operation {type(o).__name__}")
        except Invalid as e:
            if len(ops) == 1 and not guards:
                raise  # one operation: name its field as the caller wrote it ("key", not "ops[0].key")
            raise _at(f"ops[{i}]", e) from None
    return texts


# ------------------------------------------------------------------------ execute


@dataclass(slots=True)
class Caller:
    agent: str
    session: str


class Executor:
    """Runs guarded transactions for one store (one replica)."""

    def __init__(self, meta: StoreMeta, codec: ContextCodec, hlc: HLC, max_value_bytes: int) -> None:
        self.meta = meta
        self.codec = codec
        self.hlc = hlc
        self.max_value_bytes = max_value_bytes
        self.authority = meta.upstream is None  # a replica forwards what only its authority may decide

    # -- the stale-write refusal, with the news of who wrote since
    def _stale(
        self, tx: Tx, key: str, row: KeyRow | None, after: int | None, rejected: Any, what: str,
        seen: VersionVector | None = None,
    ) -> StaleContext:  # fmt: skip
        """The refusal of a write to ``key``, naming who wrote what the writer had not seen: the
        key's events after its read (``after``, a position in this log), less those whose dot
        its context covers (``seen``); failing that, the key's last event here.

        On a replica neither position is to be trusted alone: a key's state can arrive before
        its events (a forwarded write brings back the key, the events follow with a later
        pull), so an event may come after a read that had seen it; a context read at another
        replica carries that log's position; and a key whose state came without any of its
        events has a row whose ``pos`` is 0 (no event here is its last write, though notes
        on it may be): then nobody is named but "another writer"."""
        found: list[EventRow] = []
        if row is not None:
            if after is not None:
                found = [e for e in tx.events(after, keys=(key,), limit=20) if not _seen(seen, e)]
            if not found and row.pos > 0:
                found = [e for e in tx.events(row.pos - 1, keys=(key,), limit=1) if e.pos == row.pos and not _seen(seen, e)]
        news = [event_json(e) for e in found]
        writers = named_writers(news)
        name = _named(key)
        reread = Step("read", {"key": key}, "read it again, merge, and write with the context it returns")
        if what == "exists":
            msg = f"{name} already exists: written by {writers}; choose another key, or read it and write with its context"
            steps: tuple[Step, ...] = (reread,)
        else:
            if what == "no-context":
                msg = f"{name} exists and this write carried no context: written by {writers}"
            else:
                msg = f"{name} changed since your read: written by {writers}"
            msg += "; read it again and retry with its context, or keep both values as siblings"
            steps = (reread,)
            if rejected is not None and not key.startswith("@"):
                steps += (Step("write", {"key": key, "value": rejected, "keep_both": True}, "or keep both values as siblings"),)
        return StaleContext(msg, key=key, news=news, rejected=rejected, next=steps)

    def _clock(self, tx: Tx, key: str, rows: dict[str, KeyRow | None], clocks: dict[str, DVVSet]) -> DVVSet:
        if key not in clocks:
            row = tx.load(key)
            rows[key] = row
            clocks[key] = DVVSet.empty() if row is None else DVVSet.from_stored_json(load_json(row.clock))
        return clocks[key]

    def execute(
        self,
        tx: Tx,
        caller: Caller,
        request_id: str,
        guards: list[Guard],
        ops: list[Op],
        *,
        record: bool = True,
        system: bool = False,
        digest: str | None = None,
        provisional: bool = False,
        foreign: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Apply a guarded transaction inside ``tx``; returns (outcome, replayed).

        With ``record`` the outcome is stored under ``request_id`` in the same transaction,
        and a retry with that id returns it instead of acting twice.  A caller that made
        up no id of its own (``record=False``) cannot retry with it, so nothing is kept.
        ``digest`` says what "the same request" is when the caller knows better than the
        operations (a verb whose operations depend on what it read: its arguments).

        On a replica, what needs the authority raises :class:`NeedsAuthority` before anything
        is done; with ``provisional`` (a replica cut off from its authority), lease guards are
        checked against the last leases the replica heard of, and the values written are marked
        with the tokens, for the authority to judge when they arrive.  ``foreign``: the
        transaction comes from another replica, whose contexts' log positions are its own (the
        events record what was seen by dots only)."""
        texts = validate(guards, ops, self.max_value_bytes, system)
        if not self.authority:
            needs = authority_needs(guards, ops, self.meta.replica_id)
            if needs and not (provisional and needs == {"holds"}):
                raise NeedsAuthority(needs)
        lock = getattr(tx, "lock", None)
        if lock is not None:
            # A backend whose writers run at once (PostgreSQL) locks every key this transaction
            # reads or writes, all first and in one order (SQLite's writers take turns already).
            lock(_keys_of(guards, ops, request_id if record else None))
            expect = getattr(tx, "expect", None)
            if expect is not None:
                expect(len(ops))  # each operation appends one event
        if record:
            if digest is None:
                digest = _digest(caller.agent, guards, ops)
            prior = tx.recorded(request_id)
            if prior is not None:
                if prior[0] != digest:
                    raise Invalid(
                        "request_id",
                        f"{request_id!r} was already used for a different request; use a new id for a new request",
                    )
                return json.loads(prior[1]), True

        rows: dict[str, KeyRow | None] = {}
        clocks: dict[str, DVVSet] = {}
        now = tx.now()
        fence: list[list[Any]] = []

        for g in guards:
            if isinstance(g, Unchanged):
                clock = self._clock(tx, g.key, rows, clocks)
                ctx = None if g.context is None else self.codec.open(g.context, g.key, "context")
                if ctx is None:
                    if has_live(clock):
                        raise self._stale(tx, g.key, rows[g.key], None, None, "no-context")
                elif not clock.covered_by(ctx.seen):
                    raise self._stale(tx, g.key, rows[g.key], None if foreign else ctx.pos, None, "changed", ctx.seen)
            elif isinstance(g, Absent):
                clock = self._clock(tx, g.key, rows, clocks)
                if has_live(clock):
                    raise self._stale(tx, g.key, rows[g.key], None, None, "exists")
            elif provisional and not self.authority:
                self._check_holds_here(tx, g.resource, g.token, caller.agent)
                fence.append([g.resource, g.token])
            else:
                self._check_holds(tx, g.resource, g.token, now, caller.agent)
        mark = {"fence": fence, "agent": caller.agent} if fence else None

        results: list[dict[str, Any]] = []
        last_pos = 0
        appended = 0
        for i, o in enumerate(ops):
            if isinstance(o, _KEY_OPS):
                res, last_pos = self._write(tx, caller, request_id, o, texts.get(i), rows, clocks, mark, foreign)
                appended += 1
            elif isinstance(o, Update):
                res, last_pos = self._crdt(tx, caller, request_id, o, texts[i], rows, clocks)
                appended += 1
            elif isinstance(o, Next):
                res, last_pos = self._next(tx, caller, request_id, o, rows, clocks)
                appended += 1
            elif isinstance(o, Note):
                res, last_pos = self._note(tx, caller, request_id, o, texts[i], rows, clocks)
                appended += 1
            else:
                res, pos = self._lease(tx, caller, request_id, o, now)
                last_pos = pos or last_pos
                appended += 1 if pos else 0
            results.append(res)

        outcome = {"pos": last_pos or tx.head(), "results": results, "appended": appended}
        if record:
            assert digest is not None
            tx.record(request_id, digest, compact_json(outcome), now)
        return outcome, False

    def _write(
        self,
        tx: Tx,
        caller: Caller,
        request_id: str,
        o: Put | Create | Delete,
        text: str | None,
        rows: dict[str, KeyRow | None],
        clocks: dict[str, DVVSet],
        mark: dict[str, Any] | None = None,
        foreign: bool = False,
    ) -> tuple[dict[str, Any], int]:
        key = o.key
        clock = self._clock(tx, key, rows, clocks)
        row = rows[key]
        if isinstance(o, Delete) and not has_live(clock):
            raise NotFound(f"{key!r} does not exist (or is already deleted); nothing to delete", key=key)
        if not isinstance(o, Delete) and crdt_of(clock) is not None:
            raise Invalid("key", f"{key!r} is a {crdt_of(clock)} CRDT; change it with update, not put or create")
        seen_pos: int | None = None
        value = o.value if isinstance(o, (Put, Create)) else None
        keep_both = isinstance(o, Put) and o.keep_both
        if isinstance(o, Create):
            if has_live(clock):
                raise self._stale(tx, key, row, None, value, "exists")
            seen = clock.join()  # absence was checked: the write supersedes tombstones
        elif o.context is None:
            if has_live(clock) and not keep_both:
                raise self._stale(tx, key, row, None, value, "no-context")
            seen = VersionVector() if has_live(clock) else clock.join()
        else:
            ctx = self.codec.open(o.context, key, "context")
            seen = ctx.seen
            seen_pos = None if foreign else ctx.pos  # another replica's read position means nothing here
            if not keep_both and not clock.covered_by(seen):
                raise self._stale(tx, key, row, seen_pos, value, "changed", seen)
        wrapped: list[Any] = [] if isinstance(o, Delete) else [value]
        if mark is not None:  # provisional: kept with the tokens it was written under
            wrapped = [None, {**mark, "deleted": True}] if isinstance(o, Delete) else [value, mark]
        op = o.label or ("create" if isinstance(o, Create) else "delete" if isinstance(o, Delete) else "put")
        new, joined, counter, pos = self._commit(tx, caller, request_id, key, op, clock, seen, wrapped, text, seen_pos, rows, clocks)
        live = live_values(new)
        result: dict[str, Any] = {
            "key": key,
            "op": op,
            "values": live,
            "context": self.codec.seal(key, joined, pos),
            "pos": pos,
            "dot": [self.meta.replica_id, counter],
        }
        if mark is not None:
            result["provisional"] = mark["fence"]
        return result, pos

    def _stamp(self, row: KeyRow | LeaseRow | None) -> str:
        # Events of one key carry increasing HLC times even across processes: the encoding is
        # fixed-width, so comparing strings compares times, and only a lagging clock decodes.
        stamp = self.hlc.now().encode()
        if row is not None and row.hlc >= stamp:
            stamp = self.hlc.update(HLCTimestamp.decode(row.hlc)).encode()
        return stamp

    def _commit(
        self,
        tx: Tx,
        caller: Caller,
        request_id: str,
        key: str,
        op: str,
        clock: DVVSet,
        seen: VersionVector,
        wrapped: list[Any],
        text: str | None,
        seen_pos: int | None,
        rows: dict[str, KeyRow | None],
        clocks: dict[str, DVVSet],
        more: dict[str, Any] | None = None,
    ) -> tuple[DVVSet, VersionVector, int, int]:
        """Record one write: the key's new DVVSet, its event in the log, its new state."""
        row = rows[key]
        replica = self.meta.replica_id
        new = clock.event(seen, wrapped, replica)
        joined = new.join()
        counter = joined.get(replica)
        stamp = self._stamp(row)
        n_values = new.size()
        extra: dict[str, Any] = {}
        if n_values > 1:
            extra["siblings"] = n_values
        if len(seen) and op != "next" and not is_crdt(wrapped):
            # What the writer had seen of the key, by dot: on another replica, where log
            # positions mean nothing, `why` still tells what this write saw.
            extra["saw"] = seen.to_json()
        if len(wrapped) == 2 and isinstance(wrapped[1], dict):
            extra["provisional"] = wrapped[1]["fence"]
        if more:
            extra.update(more)
        detail = compact_json(extra) if extra else None
        event = EventRow(
            key, op, caller.agent, caller.session, replica, counter, stamp, request_id, text, detail,
            prev=row.pos if row is not None else 0, seen=seen_pos,
        )
        pos = tx.append(event)
        # A value just written is live (a single plain [value]); otherwise ask the clock.
        live = (len(wrapped) == 1 and n_values == 1) or has_live(new)
        state = KeyRow(compact_json(new.to_json()), stamp, pos, live)
        tx.save(key, state, row)
        clocks[key] = new
        rows[key] = state
        return new, joined, counter, pos

    def _crdt(
        self,
        tx: Tx,
        caller: Caller,
        request_id: str,
        o: Update,
        text: str,
        rows: dict[str, KeyRow | None],
        clocks: dict[str, DVVSet],
    ) -> tuple[dict[str, Any], int]:
        key = o.key
        clock = self._clock(tx, key, rows, clocks)
        held = crdt_of(clock)
        if held is None and has_live(clock):
            raise Invalid("key", f"{key!r} holds a plain value, not a CRDT; write it with put, or use another key")
        type_name = held or o.type
        if type_name is None:
            raise Invalid("type", f"{key!r} has no CRDT type yet: give it a type ({', '.join(TYPES)})")
        if o.type is not None and o.type != type_name:
            raise Invalid("type", f"{key!r} is a {type_name}, not a {o.type}; give no type, or use another key")
        cls = crdt_type(type_name)
        states = [w[0] for w in clock.values() if is_crdt(w) and w[1] == type_name]
        state = cls.new()
        for st in states:  # siblings of a CRDT merge; they are never shown side by side
            state = state.merge(cls.from_json(st))
        if o.op == "escrow":
            raise Invalid(
                "op", f"escrow takes a share of {key!r}'s rights from a replica's upstream; this store is the authority itself"
            )
        stamp = HLCTimestamp.decode(self._stamp(rows[key]))
        try:
            delta = state.update(o.op, o.arg, self.meta.replica_id, UpdateContext(time=stamp))
        except OutOfRights as e:
            if not self.authority:
                raise NeedsAuthority({"rights"}) from None  # the authority may hold enough
            raise StaleContext(
                f"{key!r} is a bounded counter at {e.value}: this store holds {e.have} of its rights and {e.need}"
                " are needed; it never goes below 0 (rights held by replicas come back when they transfer them)",
                key=key,
                value=e.value,
                rights=e.have,
            ) from None
        new_state = state.merge(delta).to_json()
        dump_value(new_state, self.max_value_bytes, "value")
        event_text = compact_json({"op": o.op, "arg": o.arg, "delta": delta.to_json()})
        new, joined, counter, pos = self._commit(
            tx, caller, request_id, key, f"update.{o.op}"[:32], clock, clock.join(), [new_state, type_name], event_text, None, rows, clocks
        )
        return {
            "key": key,
            "type": type_name,
            "value": cls.from_json(new_state).value(),
            "context": self.codec.seal(key, joined, pos),
            "pos": pos,
        }, pos

    def _next(
        self, tx: Tx, caller: Caller, request_id: str, o: Next, rows: dict[str, KeyRow | None], clocks: dict[str, DVVSet]
    ) -> tuple[dict[str, Any], int]:
        key = SEQ_PREFIX + o.name
        clock = self._clock(tx, key, rows, clocks)
        current = live_values(clock)
        n = (max(current) if current else 0) + 1
        last = n + o.count - 1
        block = {"first": n, "count": o.count} if o.count > 1 else None
        _, _, _, pos = self._commit(tx, caller, request_id, key, "next", clock, clock.join(), [last], str(last), None, rows, clocks, block)
        if o.count == 1:
            return {"sequence": o.name, "value": n, "pos": pos}, pos
        return {"sequence": o.name, "value": n, "last": last, "count": o.count, "pos": pos}, pos

    def _note(
        self,
        tx: Tx,
        caller: Caller,
        request_id: str,
        o: Note,
        text: str,
        rows: dict[str, KeyRow | None],
        clocks: dict[str, DVVSet],
    ) -> tuple[dict[str, Any], int]:
        self._clock(tx, o.key, rows, clocks)
        row = rows[o.key]
        stamp = self._stamp(row)
        event = EventRow(
            o.key, o.label, caller.agent, caller.session, self.meta.replica_id, 0, stamp, request_id, None, text,
            prev=row.pos if row is not None else 0, seen=o.seen,
        )
        pos = tx.append(event)
        if row is not None:
            tx.touch(o.key, pos)
            row.pos = pos
        return {"key": o.key, "op": o.label, "pos": pos}, pos

    # -- leases: fencing tokens never rewind; expiry is judged by the authority's clock
    def _check_holds_here(self, tx: Tx, resource: str, token: int, agent: str) -> None:
        """A cut-off replica's check of a lease guard, against the leases it last heard of.
        Expiry is not judged here: the authority judges the token when the write arrives."""
        lease = tx.lease(resource)
        if lease is None or token > lease.token:
            raise Fenced(f"this replica has heard of no lease on {resource!r} with token {token}", resource=resource, token=token)
        if token < lease.token or lease.holder != agent:
            raise Fenced(
                f"token {token} for {resource!r} is not {agent}'s current one: this replica last heard of token"
                f" {lease.token} held by {lease.holder or 'nobody'}",
                resource=resource,
                token=token,
                current=lease.token,
                holder=lease.holder,
            )

    def write_event(
        self, tx: Tx, caller: Caller, request_id: str, key: str, op: str, seen: VersionVector, wrapped: list[Any],
        detail: dict[str, Any] | None = None,
    ) -> tuple[DVVSet, int]:
        """One write of ``wrapped`` to ``key`` over what ``seen`` covers, as its own event (for
        comity.sync, which writes on the authority's behalf when it fences a late write)."""
        rows: dict[str, KeyRow | None] = {}
        clocks: dict[str, DVVSet] = {}
        clock = self._clock(tx, key, rows, clocks)
        text = None if not wrapped or not is_live(wrapped) else compact_json(wrapped[0])
        new, _, _, pos = self._commit(tx, caller, request_id, key, op, clock, seen, wrapped, text, None, rows, clocks, detail)
        return new, pos

    def _check_holds(self, tx: Tx, resource: str, token: int, now: float, agent: str) -> LeaseRow:
        lease = tx.lease(resource)
        if lease is None or token > lease.token:
            raise Fenced(f"no lease on {_named(resource)} was ever granted with token {token}", resource=resource, token=token)
        if token < lease.token:
            raise Fenced(
                f"token {token} for {_named(resource)} was superseded by token {lease.token}"
                f" (held by {lease.holder or 'nobody'}); stop: another agent took over",
                resource=resource,
                token=token,
                current=lease.token,
                holder=lease.holder,
            )
        if lease.holder is None:
            raise Fenced(f"the lease on {_named(resource)} with token {token} was released", resource=resource, token=token)
        if lease.holder != agent:
            # A token is its holder's: another agent cannot renew, complete or release with it.
            raise Fenced(
                f"the lease on {_named(resource)} with token {token} is held by {lease.holder}, not {agent}",
                resource=resource,
                token=token,
                holder=lease.holder,
            )
        if lease.expires <= now:
            raise LeaseExpired(
                f"the lease on {_named(resource)} with token {token} expired {now - lease.expires:.1f}s ago;"
                " acquire it again (you may get the work back if nobody took it)",
                resource=resource,
                token=token,
            )
        return lease

    def _lease(self, tx: Tx, caller: Caller, request_id: str, o: Acquire | Renew | Release, now: float) -> tuple[dict[str, Any], int]:
        resource = o.resource
        if isinstance(o, Acquire):
            lease = tx.lease(resource)
            previous = None
            if lease is not None and lease.holder is not None and lease.expires > now:
                if not o.steal:
                    raise StaleContext(
                        f"{_named(resource)} is held by {lease.holder} (token {lease.token}) for another"
                        f" {lease.expires - now:.1f}s; wait for it to expire, or steal it explicitly",
                        key=LEASE_PREFIX + resource,
                        holder=lease.holder,
                        token=lease.token,
                        expires=lease.expires,
                    )
                previous = lease.holder
            elif lease is not None and lease.holder is not None:
                previous = lease.holder
            token = (lease.token if lease is not None else 0) + 1
            expires = now + o.ttl
            detail = {"token": token, "expires": expires, "previous": previous, "ttl": o.ttl}
            op = "steal" if o.steal and previous else "acquire"
            pos, stamp = self._lease_event(tx, caller, request_id, resource, op, token, detail, lease)
            tx.save_lease(LeaseRow(resource, caller.agent, token, expires, pos, stamp))
            return {"resource": resource, "holder": caller.agent, **detail}, pos
        lease = self._check_holds(tx, resource, o.token, now, caller.agent)
        if isinstance(o, Renew):
            # Logged like every mutation: a renewal is the sign of life of an agent in long silent work.
            ttl = o.ttl if o.ttl is not None else self._lease_length(tx, lease)
            expires = now + ttl
            detail = {"token": lease.token, "expires": expires, "ttl": ttl}
            pos, stamp = self._lease_event(tx, caller, request_id, resource, "renew", lease.token, detail, lease)
            tx.save_lease(LeaseRow(resource, lease.holder, lease.token, expires, pos, stamp))
            return {"resource": resource, "holder": lease.holder, "token": lease.token, "expires": expires, "ttl": ttl}, pos
        pos, stamp = self._lease_event(tx, caller, request_id, resource, "release", lease.token, {"token": lease.token}, lease)
        tx.save_lease(LeaseRow(resource, None, lease.token, now, pos, stamp))
        return {"resource": resource, "holder": None, "token": lease.token}, pos

    def _lease_length(self, tx: Tx, lease: LeaseRow) -> float:
        """The length the lease was acquired or last renewed with: its last event says.  (A lease
        granted before events recorded it: from its expiry and that event's time.)"""
        last = tx.events(lease.pos - 1, keys=(LEASE_PREFIX + lease.resource,), limit=1)
        if last and last[0].pos == lease.pos and last[0].detail:
            detail = json.loads(last[0].detail)
            if isinstance(detail.get("ttl"), (int, float)) and 0 < detail["ttl"] <= MAX_TTL_S:
                return float(detail["ttl"])
            if last[0].hlc:
                granted = HLCTimestamp.decode(last[0].hlc).wall_ms / 1000.0
                if 0 < lease.expires - granted <= MAX_TTL_S:
                    return lease.expires - granted
        return DEFAULT_LEASE_S

    def _lease_event(
        self,
        tx: Tx,
        caller: Caller,
        request_id: str,
        resource: str,
        op: str,
        token: int,
        detail: dict[str, Any],
        lease: LeaseRow | None,
    ) -> tuple[int, str]:
        stamp = self._stamp(lease)
        e = EventRow(
            LEASE_PREFIX + resource, op, caller.agent, caller.session, self.meta.replica_id, token, stamp, request_id,
            None, compact_json(detail), prev=lease.pos if lease is not None else 0,
        )
        return tx.append(e), stamp
