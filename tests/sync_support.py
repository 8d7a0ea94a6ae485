"""Helpers for replication tests: replicas of a store, and a link that can be cut."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import comity
from comity.runtime import Clock, InProcessTransport, SeededRng, Unreachable
from comity.sync import Endpoint, Link, Upstream, clone

_seeds = itertools.count(1000)


class Wire:
    """An in-process transport to one store's endpoint that a test can cut, heal, record and replay."""

    def __init__(self, upstream: comity.Store) -> None:
        self.upstream = upstream
        self.address = upstream.location
        self.inner = InProcessTransport()
        self.endpoint = Endpoint(upstream)
        self.inner.register(self.address, self.endpoint.handle)
        self.cut = False
        self.fail_after: int | None = None  # messages to deliver before the link breaks
        self.log: list[Any] = []

    def register(self, address: str, handler: Any) -> None:
        self.inner.register(address, handler)

    def request(self, src: str, dest: str, message: Any) -> Any:
        if self.cut:
            raise Unreachable(f"{dest} is cut off from {src}")
        if self.fail_after is not None:
            if self.fail_after <= 0:
                raise Unreachable("the link broke mid-exchange")
            self.fail_after -= 1
        self.log.append(message)
        return self.inner.request(src, dest, message)

    def send(self, src: str, dest: str, message: Any) -> None:
        self.request(src, dest, message)


class Replica:
    """A replica store, its wire to the upstream store, and a link over it."""

    def __init__(self, store: comity.Store, wire: Wire) -> None:
        self.store = store
        self.wire = wire
        store.authority = Upstream(store, transport=wire)

    def link(self) -> Link:
        return Link(self.wire, self.store.replica_id, self.wire.address)

    def sync(self, **kw: Any) -> comity.sync.SyncResult:
        return comity.sync.sync(self.store, self.link(), **kw)

    def session(self, agent: str | None = None, **kw: Any) -> comity.Session:
        return self.store.session(agent, **kw)


def make_replica(upstream: comity.Store, path: Path, clock: Clock, source: str | None = None) -> Replica:
    """Clone ``upstream`` into ``path`` and link the clone to the same ``upstream`` object."""
    clone(source or upstream.location, path, clock=clock, rng=SeededRng(next(_seeds)))
    store = comity.open(path, clock=clock, rng=SeededRng(next(_seeds)))
    return Replica(store, Wire(upstream))


def values(store: comity.Store, key: str) -> list[Any]:
    return sorted(store.session().get(key).values, key=repr)


def same_state(*stores: comity.Store) -> bool:
    hashes = {comity.sync.state_hash(s)["state_hash"] for s in stores}
    return len(hashes) == 1
