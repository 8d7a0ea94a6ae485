"""Laws of the sync merge: any delivery order, duplication, loss or delay converges, and
nothing acknowledged is lost.

Three replicas of one store write, delete and count on a few keys, and sync with one
another over a transport that loses messages, delivers some twice, and keeps copies of
others to deliver (and of pulled batches to apply) long after, out of order.  After
the faults stop and every pair has synced, every replica holds the same state (the
same hash), every write is present unless a later write *saw* it (its context covered
the write's dot: the DVVSet rule), and no event is in any log twice.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import comity
import comity.sync
from comity.causal import DVVSet
from comity.runtime import InProcessTransport, SeededRng, Unreachable, VirtualClock
from comity.sync import Endpoint, Link, apply, state_hash

KEYS = ["a", "b", "c"]
_run = itertools.count()


class Faulty:
    """A transport to several endpoints that a plan tells what to do with each message."""

    def __init__(self) -> None:
        self.inner = InProcessTransport()
        self.fate: list[str] = []  # what happens to the next messages: "ok", "lose", "twice", "keep"
        self.kept: list[tuple[str, str, Any]] = []  # (from, to, message): delivered again later

    def register(self, address: str, handler: Any) -> None:
        self.inner.register(address, handler)

    def request(self, src: str, dest: str, message: Any) -> Any:
        fate = self.fate.pop(0) if self.fate else "ok"
        if fate == "lose":
            raise Unreachable("lost")
        answer = self.inner.request(src, dest, message)
        if fate == "twice":
            answer = self.inner.request(src, dest, message)
        elif fate == "keep":
            self.kept.append((src, dest, message))
        return answer

    def send(self, src: str, dest: str, message: Any) -> None:
        self.request(src, dest, message)


class Cluster:
    def __init__(self, where: Path) -> None:
        self.clock = VirtualClock()
        seeds = itertools.count(1)
        root = comity.open(where / "r0.db", clock=self.clock, rng=SeededRng(next(seeds)))
        root.close()
        self.stores = [comity.open(where / "r0.db", clock=self.clock, rng=SeededRng(next(seeds)))]
        for i in (1, 2):
            comity.sync.clone(str(where / "r0.db"), where / f"r{i}.db", clock=self.clock, rng=SeededRng(next(seeds)))
            self.stores.append(comity.open(where / f"r{i}.db", clock=self.clock, rng=SeededRng(next(seeds))))
        self.net = Faulty()
        for s in self.stores:
            self.net.register(s.location, Endpoint(s, max_events=3).handle)
        self.sessions = [s.session(f"agent{i}") for i, s in enumerate(self.stores)]
        self.contexts: list[dict[str, str]] = [{} for _ in self.stores]
        self.writes: list[dict[str, Any]] = []  # every acknowledged write: key, dot, value, what it saw

    def link(self, i: int, j: int) -> Link:
        return Link(self.net, self.stores[i].replica_id, self.stores[j].location)

    def close(self) -> None:
        for s in self.stores:
            s.close()


def _written(c: Cluster, i: int, key: str, result: dict[str, Any], value: Any, saw: dict[str, int]) -> None:
    c.writes.append({"key": key, "dot": tuple(result["dot"]), "value": value, "saw": saw})
    c.contexts[i][key] = result["context"]


def _saw(c: Cluster, i: int, key: str) -> dict[str, int]:
    ctx = c.contexts[i].get(key)
    return {} if ctx is None else c.stores[i].codec.open(ctx, key).seen.to_json()


syncs = st.tuples(
    st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.lists(st.sampled_from(["ok", "lose", "twice", "twice", "keep"]), max_size=6)
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, 2), st.sampled_from(KEYS)),
        st.tuples(st.just("put"), st.integers(0, 2), st.sampled_from(KEYS), st.integers(0, 99)),
        st.tuples(st.just("delete"), st.integers(0, 2), st.sampled_from(KEYS)),
        st.tuples(st.just("count"), st.integers(0, 2), st.integers(1, 3)),
        syncs,
        syncs,
        st.tuples(st.just("late"), st.integers(0, 99)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=steps)
def test_any_delivery_order_duplication_loss_or_delay_converges_and_loses_nothing(tmp_path: Path, plan: list[Any]) -> None:
    where = tmp_path / f"run{next(_run)}"
    where.mkdir()
    c = Cluster(where)
    try:
        for step in plan:
            kind = step[0]
            if kind == "read":
                _, i, key = step
                c.contexts[i][key] = c.sessions[i].get(key).context
            elif kind == "put":
                _, i, key, value = step
                saw = _saw(c, i, key)
                w = c.sessions[i].put(key, value, context=c.contexts[i].get(key), keep_both=True)
                _written(c, i, key, {"dot": _dot_of(c, i, key, w.context), "context": w.context}, value, saw)
            elif kind == "delete":
                _, i, key = step
                if not c.sessions[i].get(key).values:
                    continue
                ctx = c.sessions[i].get(key).context
                saw = c.stores[i].codec.open(ctx, key).seen.to_json()
                w = c.sessions[i].delete(key, context=ctx)
                _written(c, i, key, {"dot": _dot_of(c, i, key, w.context), "context": w.context}, None, saw)
            elif kind == "count":
                _, i, n = step
                c.sessions[i].update("n", "inc", n, type="gcounter")
            elif kind == "sync":
                _, i, j, fates = step
                if i == j:
                    continue
                c.net.fate = list(fates)
                link = c.link(i, j)
                try:
                    comity.sync.sync(c.stores[i], link, max_events=3)
                except comity.Unavailable:
                    pass
            else:
                _, pick = step
                if c.net.kept:  # a message delivered long after it was sent, out of order
                    src, dest, message = c.net.kept.pop(pick % len(c.net.kept))
                    answer = c.net.inner.request(src, dest, message)
                    if message.get("type") == "pull" and answer.get("ok"):  # and its batch taken in late
                        apply(next(s for s in c.stores if s.replica_id == src), answer["batch"])
        # Heal: no more faults; every pair syncs until nothing moves.
        c.net.fate = []
        for _ in range(4):
            for i in range(3):
                for j in range(3):
                    if i != j:
                        comity.sync.sync(c.stores[i], c.link(i, j))
        hashes = {state_hash(s)["state_hash"] for s in c.stores}
        assert len(hashes) == 1
        for key in KEYS:
            expected = _expected_live(c, key)
            for s in c.stores:
                assert _live_dots(s, key) == expected, (key, s.replica_id)
        counts = {json.dumps(s.session().get("n").values) for s in c.stores}
        assert len(counts) == 1
        for s in c.stores:
            ids = [(e["dot"][0], e.get("origin_pos", e["pos"])) for e in s.session().log(limit=10_000)]
            assert len(ids) == len(set(ids))
    finally:
        c.close()


def _dot_of(c: Cluster, i: int, key: str, context: str) -> tuple[str, int]:
    """The dot a write just got: this replica's counter in the context it returned."""
    me = c.stores[i].replica_id
    return (me, c.stores[i].codec.open(context, key).seen.get(me))


def _expected_live(c: Cluster, key: str) -> set[tuple[str, int]]:
    """The writes no other write saw: they must all be there (deletes as tombstones)."""
    mine = [w for w in c.writes if w["key"] == key]
    covered = {w["dot"] for w in mine for o in mine if o is not w and w["dot"][1] <= o["saw"].get(w["dot"][0], 0)}
    return {w["dot"] for w in mine if w["dot"] not in covered and w["value"] is not None}


def _live_dots(store: comity.Store, key: str) -> set[tuple[str, int]]:
    with store.backend.transaction(write=False) as tx:
        row = tx.load(key)
    if row is None:
        return set()
    clock = DVVSet.from_stored_json(json.loads(row.clock))
    return {(d.replica, d.counter) for d, w in clock.dotted_values() if w}
