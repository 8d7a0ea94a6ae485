"""The serving side of replication: one handler answers a peer's messages about one store.

``comity serve`` exposes it at ``POST /v1/admin/sync`` (admin tokens only: a replica writes on
behalf of every agent whose events it carries); a store opened directly is served in
process.  The handler never raises: every answer is ``{"ok": true, …}`` or
``{"ok": false, "error": {…}}``, so every transport carries errors the same way.

Messages (each names the ``store`` it is for; replicas of another store are refused):

``hello``     this replica's id and digest (a version vector per replica), and its upstream
``pull``      the events (and key states) a peer with digest ``have`` lacks, one batch
``push``      take a batch in; answers the new digest (and anything fenced)
``txn``       run a guarded transaction forwarded by a replica, as its agent and session
``identity``  what a new replica needs to become one of this store (its id and secret)
``digest``    the leaves of a Merkle tree over every key's state, for repair
``buckets``   the states of the keys in some leaves; ``merge``: take states in
"""

from __future__ import annotations

from typing import Any

from ..errors import ComityError, Invalid
from ..store import Store
from ..store._api import check_agent
from ..store._backend import LEASE_PREFIX
from ..store._txn import SEQ_PREFIX, Absent, Acquire, Caller, Holds, Next, Release, Renew, Unchanged
from ._digest import bucket_states, leaves
from ._exchange import DEFAULT_BYTES, DEFAULT_EVENTS, apply, collect, states_batch, vector
from ._wire import decode_steps, error_out

__all__ = ["Endpoint", "check_vector"]


def check_vector(vv: Any, field: str) -> dict[str, int]:
    if not isinstance(vv, dict) or not all(
        isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0 for k, n in vv.items()
    ):
        raise Invalid(field, "must be an object of replica id -> origin position (an integer >= 0)")
    return vv


def _touched(guards: list[Any], ops: list[Any]) -> list[str]:
    keys: list[str] = []
    for s in [*guards, *ops]:
        if isinstance(s, (Holds, Acquire, Renew, Release)):
            keys += [s.resource, LEASE_PREFIX + s.resource]
        elif isinstance(s, Next):
            keys.append(SEQ_PREFIX + s.name)
        elif isinstance(s, (Unchanged, Absent)) or hasattr(s, "key"):
            keys.append(s.key)
    return keys


class Endpoint:
    """Answers replication messages for ``store``."""

    def __init__(self, store: Store, *, max_events: int = DEFAULT_EVENTS, max_bytes: int = DEFAULT_BYTES) -> None:
        self.store = store
        self.max_events = max_events
        self.max_bytes = max_bytes

    def handle(self, message: Any) -> dict[str, Any]:
        try:
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise Invalid("type", "a replication message is an object with a 'type'")
            kind = message["type"]
            handler = getattr(self, "_" + kind, None) if kind in _KINDS else None
            if handler is None:
                raise Invalid("type", f"unknown replication message {kind[:40]!r}; use one of: {', '.join(_KINDS)}")
            if kind != "identity" and message.get("store") != self.store.store_id:
                raise Invalid(
                    "store",
                    f"this is store {self.store.store_id}, not {str(message.get('store'))[:40]!r}: only replicas of one"
                    " store sync with each other (make one with a clone)",
                )
            answer: dict[str, Any] = handler(message)
            return {"ok": True, **answer}
        except ComityError as e:
            return error_out(e)

    # ------------------------------------------------------------------ messages
    def _identity(self, message: dict[str, Any]) -> dict[str, Any]:
        s = self.store
        return {"store": s.store_id, "secret": s.meta.secret.hex(), "replica": s.replica_id, "location": s.location}

    def _hello(self, message: dict[str, Any]) -> dict[str, Any]:
        s = self.store
        with s.backend.transaction(write=False) as tx:
            vv = vector(tx, s.replica_id)
        return {"replica": s.replica_id, "vector": vv, "upstream": s.upstream, "now": s.clock.now()}

    def _pull(self, message: dict[str, Any]) -> dict[str, Any]:
        have = check_vector(message.get("have", {}), "have")
        s = self.store
        with s.backend.transaction(write=False) as tx:
            batch = collect(tx, s.replica_id, have, max_events=self.max_events, max_bytes=self.max_bytes)
            batch["vector"] = vector(tx, s.replica_id)
        return {"replica": s.replica_id, "batch": batch}

    def _push(self, message: dict[str, Any]) -> dict[str, Any]:
        done = apply(self.store, message.get("batch"))
        return {"replica": self.store.replica_id, "vector": done.vector, "received": done.events, "keys": done.keys, "fenced": done.fenced}

    def _txn(self, message: dict[str, Any]) -> dict[str, Any]:
        agent = check_agent(message.get("agent"), "agent")
        session = message.get("session")
        request_id = message.get("request_id")
        if not isinstance(session, str) or not session or not isinstance(request_id, str) or not request_id:
            raise Invalid("session", "a forwarded transaction names its session and request id")
        guards = decode_steps(message.get("guards", []), "guards")
        ops = decode_steps(message.get("ops", []), "ops")
        digest = message.get("digest")
        if digest is not None and (not isinstance(digest, str) or len(digest) > 256):
            raise Invalid("digest", "must be a string (what makes a retry the same request)")
        s = self.store
        try:
            outcome, replayed = s.run(
                Caller(agent, session), request_id, guards, ops, record=bool(message.get("record")), system=bool(message.get("system")),
                digest=digest, foreign=True,
            )
        except ComityError as e:
            with s.backend.transaction(write=False) as tx:
                batch = states_batch(tx, _touched(guards, ops))
            return {**error_out(e), "ok": False, "replica": s.replica_id, "batch": batch}
        with s.backend.transaction(write=False) as tx:
            batch = states_batch(tx, _touched(guards, ops))
        return {"replica": s.replica_id, "outcome": outcome, "replayed": replayed, "batch": batch}

    def _digest(self, message: dict[str, Any]) -> dict[str, Any]:
        n = message.get("buckets", 1024)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 65536:
            raise Invalid("buckets", "must be an integer in [1, 65536]")
        return {"leaves": leaves(self.store, n)}

    def _buckets(self, message: dict[str, Any]) -> dict[str, Any]:
        n, wanted = message.get("n"), message.get("buckets")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 65536:
            raise Invalid("n", "must be an integer in [1, 65536]")
        if not isinstance(wanted, list) or not all(isinstance(b, int) and 0 <= b < n for b in wanted):
            raise Invalid("buckets", f"must be a list of leaf numbers in [0, {n})")
        return {"batch": bucket_states(self.store, n, set(wanted))}

    def _merge(self, message: dict[str, Any]) -> dict[str, Any]:
        done = apply(self.store, message.get("batch"))
        return {"keys": done.keys, "fenced": done.fenced}


_KINDS = ("hello", "pull", "push", "txn", "identity", "digest", "buckets", "merge")
