"""A hash of a replica's state, and a Merkle-style digest of it for repair.

The version vectors find what to send when the logs are intact.  To check that two
replicas hold the same state (or to repair one whose log was lost), every key's state
is hashed into one of ``n`` leaves (XOR of 64-bit BLAKE2b digests of the key and its
canonical DVVSet); two replicas compare their leaves and exchange only the keys of the
leaves that differ, so the bytes follow the divergence (a few kilobytes of leaves, then
the differing keys).  Computing the leaves reads every key once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..store import Store
from ..store._codec import compact_json
from ._exchange import Batch, empty_batch
from ._wire import lease_out, state_out

__all__ = ["leaves", "bucket_states", "state_hash", "canonical_state"]

_PAGE = 20_000


def canonical_state(clock_json: str) -> str:
    """A key's DVVSet as canonical JSON: equal states, equal text, on every replica."""
    return json.dumps(json.loads(clock_json), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _bucket(key: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % n


def _rows(store: Store) -> Any:
    after: str | None = None
    while True:
        with store.backend.transaction(write=False) as tx:
            page = tx.states(after, _PAGE)
        if not page:
            return
        yield from page
        after = page[-1][0]


def leaves(store: Store, n: int = 1024) -> list[str]:
    """The ``n`` leaf hashes (hex) of this replica's key states."""
    acc = [0] * n
    for key, row in _rows(store):
        h = hashlib.blake2b((key + "\x00" + canonical_state(row.clock)).encode(), digest_size=8).digest()
        acc[_bucket(key, n)] ^= int.from_bytes(h, "big")
    return [f"{x:016x}" for x in acc]


def bucket_states(store: Store, n: int, wanted: set[int]) -> Batch:
    """The states of every key whose leaf is in ``wanted`` (and the leases of this replica)."""
    batch = empty_batch()
    for key, row in _rows(store):
        if _bucket(key, n) in wanted:
            batch["states"][key] = state_out(row)
    with store.backend.transaction(write=False) as tx:
        batch["leases"] = [lease_out(r) for r in tx.leases("", 1_000_000)]
    return batch


def state_hash(store: Store) -> dict[str, Any]:
    """A hash of every key's state (tombstones included), the same on replicas that hold the
    same state whatever order they learned it in; with the number of keys."""
    h = hashlib.sha256()
    count = 0
    for key, row in _rows(store):
        h.update(compact_json([key, canonical_state(row.clock)]).encode())
        h.update(b"\n")
        count += 1
    return {"state_hash": h.hexdigest(), "keys": count}
