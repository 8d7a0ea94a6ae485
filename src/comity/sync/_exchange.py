"""Anti-entropy: what one replica sends another, and how the other takes it in.

The digest is a version vector *per replica* (docs/design.md, principle 3): for every replica
whose events a log holds, the origin position up to which it holds all of them.  Each
replica appends the events of every origin in that origin's order, so what it holds of
an origin is always a prefix, and two vectors say exactly which events one side lacks:
those with a greater origin position.  A batch carries those events (keeping their dot,
agent, session and HLC time) and the current state of every key they touch (its DVVSet,
merged on arrival), so the cost of a sync follows what differs, not the size of the store.

Taking a batch in is one write transaction, idempotent and order-tolerant: an event
already held (origin position within the vector) is skipped; a range that does not
start within what is held (an earlier batch was lost) brings its key states, which
always merge, but not its events, and the vector does not move, so the next exchange
sends them again.  Nothing is lost and nothing is applied twice.

On the authority (a store with no upstream), a value that a cut-off replica wrote under
a lease token is judged as it arrives: if a successor has taken the lease meanwhile,
the value is *fenced*: kept as a conflict record (``@conflict/…``), noted on the
lease's resource and the key for news and ``why``, and never left over the successor's
(Balegas et al. keep invariants the same way: what needs the authority is decided
there, the rest merges).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..causal import DVVSet, Dot, HLCTimestamp, VersionVector
from ..errors import Invalid, Unavailable
from ..store import EventRow, KeyRow, LeaseRow, Store, Tx
from ..store._backend import LEASE_PREFIX
from ..store._codec import compact_json
from ..store._txn import Caller, has_live, is_live
from ._wire import event_in, event_out, lease_in, lease_out, state_in, state_out

__all__ = ["Batch", "Applied", "vector", "collect", "apply", "CONFLICT_PREFIX", "empty_batch"]

CONFLICT_PREFIX = "@conflict/"
DEFAULT_EVENTS = 5000
DEFAULT_BYTES = 2 << 20  # under the server's request cap, with room for the key states
_EVENT_OVERHEAD = 120  # bytes of an event's fields besides its value and detail, roughly
SYNC_AGENT = "comity"  # who the authority's own writes (fences) are by


def vector(tx: Tx, replica: str) -> dict[str, int]:
    """This log's digest: per origin replica, up to which origin position it holds every event
    (its own: the head; every event it wrote is here)."""
    vv = tx.origins()
    vv[replica] = tx.head()
    return {r: n for r, n in vv.items() if n > 0}


Batch = dict[str, Any]


def empty_batch() -> Batch:
    return {"events": [], "ranges": {}, "states": {}, "leases": [], "complete": True}


def collect(
    tx: Tx, replica: str, have: dict[str, int], *, max_events: int = DEFAULT_EVENTS, max_bytes: int = DEFAULT_BYTES
) -> Batch:
    """What a peer whose digest is ``have`` lacks, up to a size: events in this log's order,
    the range of each origin they cover, the current state of every key they touch."""
    known = tx.origins()
    vv = {r: n for r, n in {**known, replica: tx.head()}.items() if n > 0}
    # This replica's own events all come after the log it was copied with (recorded when its id
    # was born): no need to walk that part of the log for them.
    floor = known.get(replica, 0)
    # A compacted log (Store.compact) no longer holds events before its horizon: a peer that
    # lacks some of them cannot be brought up to date from it, only cloned again.
    compacted = json.loads(tx.setting("compacted") or "{}").get("origins", {})
    for origin, gone in sorted(compacted.items()):
        if have.get(origin, 0) < int(gone) and vv.get(origin, 0) > have.get(origin, 0):
            raise Unavailable(
                f"this store's log was compacted: events of replica {origin} up to position {gone} are gone, and the"
                f" replica asking has them only up to {have.get(origin, 0)}; clone the replica again from this store",
                problem="compacted",
                origin=origin,
                compacted_upto=int(gone),
            )
    events: list[EventRow] = []
    ranges: dict[str, list[int]] = {}
    complete = True
    budget, size = max_events, 0
    for origin in sorted(vv):
        theirs, mine = have.get(origin, 0), vv[origin]
        if mine <= theirs:
            continue
        if budget <= 0 or size >= max_bytes:
            complete = False
            break
        found = tx.events_from(origin, max(theirs, floor) if origin == replica else theirs, budget + 1)
        if origin == replica:  # not past this log's head, the watermark on PostgreSQL: the range says up to it
            found = [e for e in found if e.origin <= mine]
        taken: list[EventRow] = []
        for e in found[:budget]:
            if taken and size >= max_bytes:
                break
            taken.append(e)
            size += _EVENT_OVERHEAD + len(e.value or "") + len(e.detail or "")
        if len(taken) == len(found):
            ranges[origin] = [theirs, mine]
        else:
            complete = False
            if taken:
                ranges[origin] = [theirs, taken[-1].origin]
        events += taken
        budget -= len(taken)
    events.sort(key=lambda e: e.pos)
    states: dict[str, Any] = {}
    leases: list[Any] = []
    for key in dict.fromkeys(e.key for e in events):
        if key.startswith(LEASE_PREFIX):
            lease = tx.lease(key[len(LEASE_PREFIX) :])
            if lease is not None:
                leases.append(lease_out(lease))
        else:
            row = tx.load(key)
            if row is not None:
                states[key] = state_out(row)
    return {"events": [event_out(e) for e in events], "ranges": ranges, "states": states, "leases": leases, "complete": complete}


def states_batch(tx: Tx, keys: list[str]) -> Batch:
    """The current states of ``keys`` and of the leases among them, without events."""
    batch = empty_batch()
    for key in dict.fromkeys(keys):
        if key.startswith(LEASE_PREFIX):
            lease = tx.lease(key[len(LEASE_PREFIX) :])
            if lease is not None:
                batch["leases"].append(lease_out(lease))
            continue
        row = tx.load(key)
        if row is not None:
            batch["states"][key] = state_out(row)
        lease = tx.lease(key)  # a task's key is also its lease's resource
        if lease is not None:
            batch["leases"].append(lease_out(lease))
    return batch


@dataclass
class Applied:
    """What taking a batch in did."""

    events: int = 0  # events appended to this log
    keys: int = 0  # keys whose state changed
    fenced: list[dict[str, Any]] = field(default_factory=list)
    vector: dict[str, int] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # (origin, origin pos) -> pos here


def _check_batch(batch: Any) -> tuple[list[EventRow], dict[str, tuple[int, int]], dict[str, tuple[DVVSet, str]], list[LeaseRow]]:
    if not isinstance(batch, dict):
        raise Invalid("batch", "must be an object with events, ranges, states and leases")
    raw_events = batch.get("events", [])
    raw_ranges = batch.get("ranges", {})
    raw_states = batch.get("states", {})
    raw_leases = batch.get("leases", [])
    if not isinstance(raw_events, list) or not isinstance(raw_ranges, dict) or not isinstance(raw_states, dict) or not isinstance(raw_leases, list):
        raise Invalid("batch", "events and leases must be lists, ranges and states objects")
    events = [event_in(item, i) for i, item in enumerate(raw_events)]
    ranges: dict[str, tuple[int, int]] = {}
    for origin, r in raw_ranges.items():
        if not isinstance(r, list) or len(r) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in r) or r[0] > r[1]:
            raise Invalid(f"ranges[{origin!r:.40}]", "must be [from, upto] origin positions, from <= upto")
        ranges[origin] = (r[0], r[1])
    states = {k: state_in(k, v) for k, v in raw_states.items()}
    leases = [lease_in(item, i) for i, item in enumerate(raw_leases)]
    return events, ranges, states, leases


def apply(store: Store, batch: Any) -> Applied:
    """Take a batch in, in one write transaction (see the module docstring)."""
    events, ranges, states, leases = _check_batch(batch)
    me = store.replica_id
    executor = store.executor
    done = Applied()
    latest: str | None = None
    with store.backend.transaction(write=True) as tx:
        have = tx.origins()
        takes = {o for o, (start, _) in ranges.items() if o != me and start <= have.get(o, 0)}
        chain: dict[str, int] = {}  # key -> the position of its latest event here (its history's head)
        # Keys with no row (nor lease) here when the batch began: each of their events starts no
        # chain (prev = 0), as a note on such a key does when written here, and the engine finds
        # them by key (``events_first``).  Chained to each other, a keyed read of the log showed
        # only the first (several refusals or heartbeats in one batch).
        unrooted: set[str] = set()

        def head_of(key: str) -> int:
            if key not in chain:
                if key.startswith(LEASE_PREFIX):
                    lease = tx.lease(key[len(LEASE_PREFIX) :])
                    chain[key] = lease.pos if lease is not None else 0
                else:
                    row = tx.load(key)
                    chain[key] = row.pos if row is not None else 0
                if not chain[key]:
                    unrooted.add(key)
            return chain[key]

        for e in events:
            if e.replica not in takes or e.origin <= have.get(e.replica, 0) or e.origin > ranges[e.replica][1]:
                continue
            head = head_of(e.key)
            e.prev = 0 if e.key in unrooted else head
            pos = tx.append(e)
            chain[e.key] = pos
            done.positions[(e.replica, e.origin)] = pos
            done.events += 1
            if latest is None or e.hlc > latest:
                latest = e.hlc
        for origin in takes:
            upto = ranges[origin][1]
            if upto > have.get(origin, 0):
                tx.set_origin(origin, upto)
                have[origin] = upto

        for key, (incoming, hlc) in states.items():
            if key.startswith(LEASE_PREFIX):
                continue
            row = tx.load(key)
            pre = DVVSet.empty() if row is None else DVVSet.from_stored_json(json.loads(row.clock))
            merged = pre.sync(incoming)
            pos = chain.get(key, row.pos if row is not None else 0)
            stamp = max(hlc, row.hlc) if row is not None else hlc
            if latest is None or stamp > latest:
                latest = stamp
            if row is not None and merged == pre and pos == row.pos:
                continue
            state = KeyRow(compact_json(merged.to_json()), stamp, pos, has_live(merged))
            tx.save(key, state, row)
            done.keys += 1
            if executor.authority:
                done.fenced += _fence(store, tx, key, pre, incoming, merged)
        for key, pos in chain.items():  # events (notes) of keys whose state did not come
            if key not in states and not key.startswith(LEASE_PREFIX):
                row = tx.load(key)
                if row is not None and row.pos != pos:
                    tx.touch(key, pos)

        for incoming_lease in leases:
            key = LEASE_PREFIX + incoming_lease.resource
            local = tx.lease(incoming_lease.resource)
            pos = chain.get(key, local.pos if local is not None else 0)
            if local is None or (incoming_lease.token, incoming_lease.hlc) > (local.token, local.hlc):
                incoming_lease.pos = pos
                tx.save_lease(incoming_lease)
            elif pos != local.pos:
                local.pos = pos
                tx.save_lease(local)
        for key, pos in chain.items():  # lease events whose lease row did not come
            if key.startswith(LEASE_PREFIX) and not any(LEASE_PREFIX + x.resource == key for x in leases):
                local = tx.lease(key[len(LEASE_PREFIX) :])
                if local is not None and local.pos != pos:
                    local.pos = pos
                    tx.save_lease(local)
        if latest is not None:
            executor.hlc.update(HLCTimestamp.decode(latest))  # what arrived happened before what we do next
        done.vector = {r: n for r, n in have.items() if n > 0}
    # This log's own entry as of the commit (what the transaction wrote, fences included): on
    # PostgreSQL a writer's head is the watermark when it began, which does not count them.
    with store.backend.transaction(write=False) as tx:
        head = tx.head()
    if head > 0:
        done.vector[me] = head
    return done


# ------------------------------------------------------------------ fencing


def _fence_marks(w: list[Any]) -> list[list[Any]] | None:
    if len(w) == 2 and isinstance(w[1], dict) and isinstance(w[1].get("fence"), list):
        return list(w[1]["fence"])
    return None


def _fence(store: Store, tx: Tx, key: str, pre: DVVSet, incoming: DVVSet, merged: DVVSet) -> list[dict[str, Any]]:
    """On the authority: fence the values written under a lease token a successor superseded
    (see the module docstring).  Returns what was fenced."""
    known = {r: n for r, n, _ in pre.entries}
    arrived = [(d, w) for d, w in incoming.dotted_values() if d.counter > known.get(d.replica, 0)]
    zombies: list[tuple[Dot, list[Any], list[dict[str, Any]]]] = []
    for d, w in arrived:
        marks = _fence_marks(w)
        if not marks:
            continue
        lost: list[dict[str, Any]] = []
        for mark in marks:
            if not (isinstance(mark, list) and len(mark) == 2 and isinstance(mark[0], str) and isinstance(mark[1], int)):
                lost.append({"resource": str(mark), "token": None, "current": None, "holder": None})
                continue
            resource, token = mark
            lease = tx.lease(resource)
            if lease is None or lease.token != token:
                lost.append({"resource": resource, "token": token, "current": lease.token if lease else None,
                             "holder": lease.holder if lease else None})  # fmt: skip
        if lost:
            zombies.append((d, w, lost))
    live_now = {d for d, w in merged.dotted_values()}
    zombies = [z for z in zombies if z[0] in live_now]
    if not zombies:
        return []
    z_dots = {d for d, _, _ in zombies}
    keep = [w for d, w in merged.dotted_values() if d not in z_dots and is_live(w)]
    if all(d in z_dots for d, _ in arrived):
        # Only the fenced writes arrived: whatever they superseded here comes back.
        still = {d for d, _ in merged.dotted_values()}
        keep += [w for d, w in pre.dotted_values() if d not in still and is_live(w) and w not in keep]
    caller = Caller(SYNC_AGENT, "sync")
    request_id = "sync-" + store.rng.new_id()[:16]
    seen = merged.join()
    out: list[dict[str, Any]] = []
    for d, w, lost in zombies:
        record = {
            "key": key,
            "value": w[0] if not w[1].get("deleted") else None,
            "deleted": bool(w[1].get("deleted")),
            "agent": w[1].get("agent"),
            "dot": [d.replica, d.counter],
            "fenced_by": lost,
        }
        name = f"{CONFLICT_PREFIX}{d.replica}.{d.counter}.{hashlib.sha1(key.encode()).hexdigest()[:12]}"
        store.executor.write_event(tx, caller, request_id, name, "sync.conflict", VersionVector(), [record])
        record["conflict"] = name
        out.append(record)
    detail = {"fenced": [{k: r[k] for k in ("agent", "dot", "fenced_by", "conflict")} for r in out]}
    for w in keep or [[]]:
        store.executor.write_event(tx, caller, request_id, key, "sync.fence", seen, w, detail)
        detail = {}
    for r in out:
        for lost_lease in r["fenced_by"]:
            resource = lost_lease["resource"]
            note = {"fenced_key": key, "writer": r["agent"], "writer_dot": r["dot"], "conflict": r["conflict"], **lost_lease}
            _note(store, tx, caller, request_id, resource, note)
    return out


def _note(store: Store, tx: Tx, caller: Caller, request_id: str, key: str, detail: dict[str, Any]) -> None:
    """A 'sync.fenced' note in the history of the lease's resource (a task's, for `why`)."""
    row = tx.load(key)
    lease = tx.lease(key)
    prev = row.pos if row is not None else (lease.pos if lease is not None else 0)
    stamp = store.executor.hlc.now().encode()
    if row is not None and row.hlc >= stamp:
        stamp = store.executor.hlc.update(HLCTimestamp.decode(row.hlc)).encode()
    e = EventRow(key, "sync.fenced", caller.agent, caller.session, store.replica_id, 0, stamp, request_id, None, compact_json(detail), prev)
    pos = tx.append(e)
    if row is not None:
        tx.touch(key, pos)
