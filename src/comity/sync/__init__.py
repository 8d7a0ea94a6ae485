"""Replication: replicas that work cut off, and anti-entropy that merges them without loss.

A replica is a store file of the same store with its own replica id and an upstream
(:func:`clone`).  Agents use it as any store, offline.  :func:`sync_with` exchanges
per-key state deltas with the upstream (or any replica of the store) both ways, found
by a digest of version vectors per replica, so its cost follows the divergence.
What only the authority may decide is forwarded to it, failing fast when it cannot be
reached, except what was escrowed beforehand (:mod:`comity.sync.escrow`).  Importing
this package installs the forwarding in every store opened in the process.
"""

from __future__ import annotations

from typing import Any

from ..errors import Invalid, Unavailable
from ..store import Store
from ..store._api import set_authority
from ._client import SyncResult, covers, repair, sync
from ._clone import clone
from ._digest import leaves, state_hash
from ._endpoint import Endpoint
from ._exchange import CONFLICT_PREFIX, Applied, apply, collect, vector
from ._link import Link, connect
from ._upstream import AUTH_SETTING, Upstream, last_reached, mark_reached, unreachable
from .escrow import escrowed, reserve_numbers, take_number

__all__ = [
    "clone",
    "sync_with",
    "repair_with",
    "status",
    "sync",
    "repair",
    "SyncResult",
    "Endpoint",
    "Link",
    "connect",
    "Upstream",
    "apply",
    "collect",
    "vector",
    "covers",
    "Applied",
    "state_hash",
    "leaves",
    "reserve_numbers",
    "take_number",
    "escrowed",
    "last_reached",
    "CONFLICT_PREFIX",
]

set_authority(Upstream)


def _link_to(store: Store, location: str | None, auth: str | None) -> tuple[Link, bool]:
    where = location if location is not None else store.upstream
    if where is None:
        raise Invalid("with", "this store has no upstream: name the replica to sync with")
    upstream = store.upstream is not None and where.strip() == store.upstream
    if auth is None and upstream:
        with store.backend.transaction(write=False) as tx:
            auth = tx.setting(AUTH_SETTING) or None
    try:
        return connect(where, src=store.replica_id, auth=auth), upstream
    except Unavailable as e:
        if upstream:
            raise unreachable(store, str(e.details.get("reason", e.message))) from None
        raise


def sync_with(store: Store, location: str | None = None, *, auth: str | None = None, pull: bool = True, push: bool = True) -> SyncResult:
    """One anti-entropy exchange with ``location`` (default: this replica's upstream)."""
    link, upstream = _link_to(store, location, auth)
    try:
        result = sync(store, link, pull=pull, push=push)
    except Unavailable as e:
        if upstream and e.details.get("unreachable"):
            raise unreachable(store, str(e.details.get("reason", e.message))) from None
        raise
    finally:
        link.close()
    if upstream:
        mark_reached(store)
    return result


def repair_with(store: Store, location: str | None = None, *, auth: str | None = None) -> dict[str, Any]:
    """Compare every key's state with ``location``'s by digest and exchange what differs."""
    link, _ = _link_to(store, location, auth)
    try:
        return repair(store, link)
    finally:
        link.close()


def status(store: Store, *, with_hash: bool = False) -> dict[str, Any]:
    """This replica: its id, upstream, when that was last reached, its digest, what it holds in escrow."""
    with store.backend.transaction(write=False) as tx:
        vv = vector(tx, store.replica_id)
    out: dict[str, Any] = {
        "replica": store.replica_id,
        "store": store.store_id,
        "location": store.location,
        "upstream": store.upstream,
        "last_reached": last_reached(store) if store.upstream else None,
        "vector": vv,
        "escrow": escrowed(store),
    }
    if with_hash:
        out.update(state_hash(store))
    return out

