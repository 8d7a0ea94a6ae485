"""Running anti-entropy: one exchange in both directions, and repair by digest.

``sync(store, link)`` asks the peer for its digest (``hello``), pulls the batches it
lacks, pushes the batches the peer lacks, and pulls once more if the push made the
peer write (a fence, on the authority): every step is idempotent, so an exchange cut
short is finished by the next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ComityError, Invalid
from ..store import Store
from ._digest import bucket_states, leaves, state_hash
from ._endpoint import check_vector
from ._exchange import DEFAULT_BYTES, DEFAULT_EVENTS, apply, collect, vector
from ._link import Link

__all__ = ["SyncResult", "sync", "repair", "covers"]

MAX_ROUNDS = 100_000


def covers(a: dict[str, int], b: dict[str, int]) -> bool:
    """Whether digest ``a`` holds every event digest ``b`` does."""
    return all(a.get(r, 0) >= n for r, n in b.items())


@dataclass
class SyncResult:
    replica: str
    peer: str
    peer_replica: str = ""
    sent: int = 0  # events sent
    received: int = 0  # events received
    keys_sent: int = 0
    keys_received: int = 0  # keys whose state changed here
    bytes: int = 0
    messages: int = 0
    fenced: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0
    vector: dict[str, int] = field(default_factory=dict)
    peer_vector: dict[str, int] = field(default_factory=dict)

    @property
    def in_sync(self) -> bool:
        return self.complete and self.vector == self.peer_vector

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "bytes": self.bytes,
            "keys_sent": self.keys_sent,
            "keys_received": self.keys_received,
            "messages": self.messages,
            "fenced": self.fenced,
            "complete": self.complete,
            "in_sync": self.in_sync,
            "seconds": round(self.seconds, 6),
            "replica": self.replica,
            "peer": self.peer,
            "peer_replica": self.peer_replica,
            "vector": self.vector,
            "peer_vector": self.peer_vector,
        }


def _local(store: Store) -> dict[str, int]:
    with store.backend.transaction(write=False) as tx:
        return vector(tx, store.replica_id)


def sync(
    store: Store,
    link: Link,
    *,
    pull: bool = True,
    push: bool = True,
    max_events: int = DEFAULT_EVENTS,
    max_bytes: int = DEFAULT_BYTES,
) -> SyncResult:
    """One anti-entropy exchange with the peer behind ``link`` (both ways by default)."""
    started = store.clock.monotonic()
    bytes_before, messages_before = link.bytes, link.messages
    me, sid = store.replica_id, store.store_id
    res = SyncResult(me, link.label)
    hello = link.call({"type": "hello", "store": sid})
    res.peer_replica = str(hello.get("replica", ""))
    if res.peer_replica == me:
        raise Invalid("with", f"{link.label} is this replica itself ({me}); sync with another replica or its upstream")
    theirs = check_vector(hello.get("vector"), "vector")
    local = _local(store)

    def pull_all() -> None:
        nonlocal theirs, local
        for _ in range(MAX_ROUNDS):
            if covers(local, theirs):
                return
            answer = link.call({"type": "pull", "store": sid, "have": local})
            batch = answer["batch"]
            done = apply(store, batch)
            res.received += done.events
            res.keys_received += done.keys
            res.fenced += done.fenced
            theirs = check_vector(batch.get("vector", theirs), "vector")
            moved = done.vector != local
            local = done.vector
            if batch.get("complete", True):
                return
            if not moved:  # the peer sent what cannot be taken in yet: stop, the next exchange retries
                res.complete = False
                return
        res.complete = False

    def push_all() -> bool:
        nonlocal theirs
        wrote = False
        for _ in range(MAX_ROUNDS):
            with store.backend.transaction(write=False) as tx:
                batch = collect(tx, me, theirs, max_events=max_events, max_bytes=max_bytes)
            if not batch["ranges"]:
                return wrote
            answer = link.call({"type": "push", "store": sid, "batch": batch})
            res.sent += len(batch["events"])
            res.keys_sent += len(batch["states"])
            fenced = answer.get("fenced") or []
            res.fenced += fenced
            wrote = wrote or bool(fenced)
            after = check_vector(answer.get("vector"), "vector")
            moved = after != theirs
            theirs = after
            if batch["complete"]:
                return wrote
            if not moved:
                res.complete = False
                return wrote
        res.complete = False
        return wrote

    if pull:
        pull_all()
    if push:
        push_all()
        if pull and not covers(local, theirs):
            pull_all()  # what the peer wrote taking our batch in (fences) comes back now
    res.vector = _local(store)
    res.peer_vector = theirs
    res.bytes = link.bytes - bytes_before
    res.messages = link.messages - messages_before
    res.seconds = store.clock.monotonic() - started
    return res


def repair(store: Store, link: Link, *, buckets: int | None = None) -> dict[str, Any]:
    """Compare every key's state with the peer's by digest and exchange the keys of the leaves
    that differ, both ways (for replicas whose logs cannot say what differs)."""
    sid = store.store_id
    if buckets is None:
        n_keys = state_hash(store)["keys"]
        buckets = min(65536, max(1024, 1 << max(0, math.ceil(math.log2(max(1, n_keys // 32))))))
    bytes_before = link.bytes
    mine = leaves(store, buckets)
    theirs = link.call({"type": "digest", "store": sid, "buckets": buckets})["leaves"]
    if not isinstance(theirs, list) or len(theirs) != buckets:
        raise ComityError(f"{link.label} answered a digest of the wrong shape")
    differing = [i for i in range(buckets) if mine[i] != theirs[i]]
    received = sent = 0
    for start in range(0, len(differing), 256):
        chunk = differing[start : start + 256]
        answer = link.call({"type": "buckets", "store": sid, "n": buckets, "buckets": chunk})
        received += apply(store, answer["batch"]).keys
        batch = bucket_states(store, buckets, set(chunk))
        sent += int(link.call({"type": "merge", "store": sid, "batch": batch}).get("keys", 0))
    return {"buckets": buckets, "differing": len(differing), "keys_received": received, "keys_sent": sent, "bytes": link.bytes - bytes_before}
