"""Escrow: rights a replica takes from its authority while connected and spends cut off.

Numbered things need one authority (two replicas must never issue migration 0267 twice).
A replica that expects to be cut off reserves a block of a sequence while connected:
the authority takes ``count`` numbers at once (durably, never to be issued again), and
the replica records the block in a key only it writes (``@escrow/seq/NAME/<replica>``).
``seq next`` on the replica then takes the block's numbers one by one, each durable
before it is returned, online or not; when the block is spent it goes to the authority
again.  A copy of the replica file takes a new replica id, so it cannot spend its
original's block.  (The escrow of a bounded counter's rights is the counter's own
``transfer``: see :mod:`comity.crdt.bcounter`.)
"""

from __future__ import annotations

import json
from typing import Any

from ..causal import DVVSet
from ..errors import ComityError, Invalid, StaleContext
from ..store import Next, Put, Session, Store
from ..store._codec import check_key
from ..store._txn import ESCROW_PREFIX, MAX_BLOCK, live_values

__all__ = ["reserve_numbers", "take_number", "escrowed", "escrow_key"]

_RETRIES = 64
_SPENT_KEPT = 64  # spent blocks remembered, so a late retry of their reservation is recognised


def escrow_key(name: str, replica: str) -> str:
    return f"{ESCROW_PREFIX}seq/{name}/{replica}"


def _read(store: Store, key: str) -> tuple[list[list[int]], str]:
    """The blocks held, each ``[next, last, first]`` (spent ones kept, ``next > last``, so a
    retried reservation is recognised), and the context to write them with."""
    with store.backend.transaction(write=False) as tx:
        row = tx.load(key)
        head = tx.head()
    clock = DVVSet.empty() if row is None else DVVSet.from_stored_json(json.loads(row.clock))
    values = live_values(clock)
    if len(values) > 1:  # only this replica writes the key, always over its last read
        raise ComityError(f"{key!r} has {len(values)} values; refusing to spend a block that may be spent twice")
    blocks = [[b[0], b[1], b[2] if len(b) > 2 else b[0]] for b in values[0]["blocks"]] if values else []
    return blocks, store.codec.seal(key, clock.join(), head)


def _remaining(blocks: list[list[int]]) -> int:
    return sum(max(0, b[1] - b[0] + 1) for b in blocks)


def _kept(blocks: list[list[int]]) -> list[list[int]]:
    """The blocks to keep: every one with numbers left, and the latest spent ones."""
    spent = [b for b in blocks if b[0] > b[1]]
    return [b for b in blocks if b[0] <= b[1] or b in spent[-_SPENT_KEPT:]]


def reserve_numbers(session: Session, name: str, count: int, *, request: tuple[str, str] | None = None) -> dict[str, Any]:
    """Take ``count`` numbers of sequence ``name`` from the authority, for this replica to spend.
    With ``request`` (id, digest) a retry gets the recorded block, and records it here once."""
    store = session.store
    check_key(name, "name")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BLOCK:
        raise Invalid("count", f"must be a whole number in [1, {MAX_BLOCK}], got {count!r}")
    if store.upstream is None:
        raise Invalid(
            "store", f"this store is its own authority: sequence {name!r} needs no reservation here (take numbers as you go)"
        )
    rid, digest = request if request is not None else (None, None)
    got = session.txn(ops=[Next(name, count)], system=True, request_id=rid, digest=digest).results[0]  # at the authority
    first, last = int(got["value"]), int(got.get("last", got["value"]))
    key = escrow_key(name, store.replica_id)
    for _ in range(_RETRIES):
        blocks, context = _read(store, key)
        if any(b[2] == first for b in blocks):  # a retry: recorded by the first attempt
            return {"sequence": name, "first": first, "last": last, "count": count, "escrowed": _remaining(blocks)}
        blocks.append([first, last, first])
        try:
            session.txn(ops=[Put(key, {"sequence": name, "blocks": _kept(blocks)}, context=context, label="escrow")], system=True)
        except StaleContext:
            continue  # another process of this replica spent from it meanwhile
        return {"sequence": name, "first": first, "last": last, "count": count, "escrowed": _remaining(blocks)}
    raise StaleContext(f"{key!r} kept changing; numbers {first}..{last} are reserved but not recorded here", key=key)


def take_number(session: Session, name: str) -> int | None:
    """The next escrowed number of ``name`` on this replica (durable first), or None if none is left."""
    store = session.store
    if store.upstream is None:
        return None
    key = escrow_key(name, store.replica_id)
    for _ in range(_RETRIES):
        blocks, context = _read(store, key)
        live = [i for i, b in enumerate(blocks) if b[0] <= b[1]]
        if not live:
            return None
        i = live[0]
        nxt = blocks[i][0]
        blocks[i] = [nxt + 1, blocks[i][1], blocks[i][2]]
        try:
            session.txn(ops=[Put(key, {"sequence": name, "blocks": _kept(blocks)}, context=context, label="escrow.spend")], system=True)
        except StaleContext:
            continue  # another process took this number: take the next
        return nxt
    raise StaleContext(f"{key!r} kept changing under contention; retry", key=key)


def escrowed(store: Store) -> list[dict[str, Any]]:
    """The sequence blocks this replica holds."""
    prefix = f"{ESCROW_PREFIX}seq/"
    with store.backend.transaction(write=False) as tx:
        rows = tx.scan(prefix, 10_000)
    out = []
    for key, row in rows:
        if not key.endswith("/" + store.replica_id):
            continue
        values = live_values(DVVSet.from_stored_json(json.loads(row.clock)))
        if len(values) == 1:
            blocks = [[b[0], b[1]] for b in values[0]["blocks"] if b[0] <= b[1]]
            if blocks:
                out.append({"sequence": values[0]["sequence"], "blocks": blocks, "remaining": _remaining(blocks)})
    return out
