"""DVVSet: the unit tests of dvvset.erl, ported, and Hypothesis laws.

Erlang atoms become strings; ``{Entries, Anonymous}`` literals become ``C(entries, anonymous)``.
The history test checks DVVSet against a reference model of "no lost update".
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comity.causal import Dot, DVVSet, VersionVector


def C(entries: list[tuple[str, int, list[Any]]], anonymous: list[Any] | None = None) -> DVVSet:
    """A clock literal, as dvvset.erl's tests write ``{[{a,1,[v1]}], []}``."""
    return DVVSet(entries, anonymous or [])


def VV(**counters: int) -> VersionVector:
    return VersionVector(counters)


# ------------------------------------------------------------ dvvset.erl eunit


def test_join() -> None:
    a = DVVSet.new("v1")
    a1 = a.update("a")
    b = DVVSet.new_with(a1.join(), "v2")
    b1 = b.update_with(a1, "b")
    assert a.join() == VV()
    assert a1.join() == VV(a=1)
    assert b1.join() == VV(a=1, b=1)
    assert list(b1.join().items()) == [("a", 1), ("b", 1)]


def test_update() -> None:
    a0 = DVVSet.new("v1").update("a")
    a1 = DVVSet.new_with(a0.join(), "v2").update_with(a0, "a")
    a2 = DVVSet.new_with(a1.join(), "v3").update_with(a1, "b")
    a3 = DVVSet.new_with(a0.join(), "v4").update_with(a1, "b")
    a4 = DVVSet.new_with(a0.join(), "v5").update_with(a1, "a")
    assert a0 == C([("a", 1, ["v1"])])
    assert a1 == C([("a", 2, ["v2"])])
    assert a2 == C([("a", 2, []), ("b", 1, ["v3"])])
    assert a3 == C([("a", 2, ["v2"]), ("b", 1, ["v4"])])
    assert a4 == C([("a", 3, ["v5", "v2"])])


def test_sync() -> None:
    x = C([("x", 1, [])])
    a = DVVSet.new("v1").update("a")
    y = DVVSet.new("v2").update("b")
    a1 = DVVSet.new_with(a.join(), "v2").update("a")
    a3 = DVVSet.new_with(a1.join(), "v3").update("b")
    a4 = DVVSet.new_with(a1.join(), "v3").update("c")
    w = C([("a", 1, [])])
    z = C([("a", 2, ["v2", "v1"])])
    sync = DVVSet.sync_all
    assert sync([w, z]) == C([("a", 2, ["v2"])])
    assert sync([w, z]) == sync([z, w])
    assert sync([a, a1]) == sync([a1, a])
    assert sync([a4, a3]) == sync([a3, a4])
    assert sync([a4, a3]) == C([("a", 2, []), ("b", 1, ["v3"]), ("c", 1, ["v3"])])
    assert sync([x, a]) == C([("a", 1, ["v1"]), ("x", 1, [])])
    assert sync([x, a]) == sync([a, x])
    assert sync([a, y]) == C([("a", 1, ["v1"]), ("b", 1, ["v2"])])
    assert sync([y, a]) == sync([a, y])
    assert sync([a, x]) == sync([x, a])
    # F = fun(L, R) -> L > R end: a reversed order; a4 has a single value anyway.
    lww = a4.lww(lambda v: -int(v[1:]))
    assert lww == sync([a4, lww])


def test_sync_update() -> None:
    a0 = DVVSet.new("v1").update("a")  # Mary writes v1 without a context
    vv1 = a0.join()  # Peter reads v1 with its version vector
    a1 = DVVSet.new("v2").update_with(a0, "a")  # Mary writes v2 without a context
    a2 = DVVSet.new_with(vv1, "v3").update_with(a1, "a")  # Peter writes v3 with the context of v1
    assert vv1 == VV(a=1)
    assert a0 == C([("a", 1, ["v1"])])
    assert a1 == C([("a", 2, ["v2", "v1"])])
    # v3 supersedes v1 (Peter saw it) but not v2 (he did not).
    assert a2 == C([("a", 3, ["v3", "v2"])])
    assert a1.event(vv1, "v3", "a") == a2


def test_event() -> None:
    a = DVVSet.new("v1").update("a")
    # dvvset:event/3 on A's entries, reached through update/2 with A's values kept.
    assert DVVSet(a.entries, ["v2"]).update("a") == C([("a", 2, ["v2", "v1"])])
    assert DVVSet(a.entries, ["v2"]).update("b") == C([("a", 1, ["v1"]), ("b", 1, ["v2"])])


def test_lww_last() -> None:
    def ts(v: Any) -> Any:
        return v[1]

    x = C([("a", 4, [5, 2]), ("b", 1, []), ("c", 1, [3])])
    y = C([("a", 4, [5, 2]), ("b", 1, []), ("c", 1, [3])], [10, 0])
    z = C([("a", 4, [5, 2]), ("b", 1, [1])], [3])
    a = C([("a", 4, [[5, 1002345], [7, 1002340]]), ("b", 1, [[4, 1001340]])], [[2, 1001140]])
    assert x.last(lambda v: v) == 5
    assert y.last(lambda v: v) == 10
    assert x.lww(lambda v: v) == C([("a", 4, [5]), ("b", 1, []), ("c", 1, [])])
    assert y.lww(lambda v: v) == C([("a", 4, []), ("b", 1, []), ("c", 1, [])], [10])
    assert z.lww(lambda v: v) == C([("a", 4, [5]), ("b", 1, [])])
    assert a.lww(ts) == C([("a", 4, [[5, 1002345]]), ("b", 1, [])])


def test_reconcile() -> None:
    x = C([("a", 4, [5, 2]), ("b", 1, []), ("c", 1, [3])])
    y = C([("a", 4, [5, 2]), ("b", 1, []), ("c", 1, [3])], [10, 0])
    assert x.reconcile(sum) == C([("a", 4, []), ("b", 1, []), ("c", 1, [])], [10])
    assert y.reconcile(sum) == C([("a", 4, []), ("b", 1, []), ("c", 1, [])], [20])
    assert x.reconcile(min) == C([("a", 4, []), ("b", 1, []), ("c", 1, [])], [2])
    assert y.reconcile(min) == C([("a", 4, []), ("b", 1, []), ("c", 1, [])], [0])


def test_less() -> None:
    # dvvset.erl uses the list [a] as one replica id here; it sorts after every atom.
    a = DVVSet.new("v1").update("[a]")
    b = DVVSet.new_with(a.join(), "v2").update("a")
    b2 = DVVSet.new_with(a.join(), "v2").update("b")
    b3 = DVVSet.new_with(a.join(), "v2").update("z")
    c = DVVSet.new_with(b.join(), "v3").update_with(a, "c")
    d = DVVSet.new_with(c.join(), "v4").update_with(b2, "d")
    assert a.less(b)
    assert a.less(c)
    assert b.less(c)
    assert b.less(d)
    assert b2.less(d)
    assert a.less(d)
    assert not b2.less(c)
    assert not b.less(b2)
    assert not b2.less(b)
    assert not a.less(a)
    assert not c.less(c)
    assert not d.less(b2)
    assert not b3.less(d)


def test_equal() -> None:
    a = C([("a", 4, ["v5", "v0"]), ("b", 0, []), ("c", 1, ["v3"])], ["v0"])
    b = C([("a", 4, ["v555", "v0"]), ("b", 0, []), ("c", 1, ["v3"])])
    c = C([("a", 4, ["v5", "v0"]), ("b", 0, [])], ["v6", "v1"])
    # only the causal history is compared
    assert a.equal(b)
    assert b.equal(a)
    assert not a.equal(c)
    assert not b.equal(c)


def test_size() -> None:
    assert DVVSet.new("v1").size() == 1
    assert C([("a", 4, ["v5", "v0"]), ("b", 0, []), ("c", 1, ["v3"])], ["v4", "v1"]).size() == 5


def test_ids_values() -> None:
    a = C([("a", 4, ["v0", "v5"]), ("b", 0, []), ("c", 1, ["v3"])], ["v1"])
    b = C([("a", 4, ["v0", "v555"]), ("b", 0, []), ("c", 1, ["v3"])])
    c = C([("a", 4, []), ("b", 0, [])], ["v1", "v6"])
    assert a.ids() == ["a", "b", "c"]
    assert b.ids() == ["a", "b", "c"]
    assert c.ids() == ["a", "b"]
    assert sorted(a.values()) == ["v0", "v1", "v3", "v5"]
    assert sorted(b.values()) == ["v0", "v3", "v555"]
    assert sorted(c.values()) == ["v1", "v6"]


def test_map() -> None:
    a = C([("a", 4, []), ("b", 0, []), ("c", 1, [])], [10])
    b = C([("a", 4, [5, 0]), ("b", 0, []), ("c", 1, [2])], [20, 10])
    assert a.map(lambda x: x * 2) == C([("a", 4, []), ("b", 0, []), ("c", 1, [])], [20])
    assert b.map(lambda x: x * 2) == C([("a", 4, [10, 0]), ("b", 0, []), ("c", 1, [4])], [40, 20])


# ------------------------------------------------------------ comity additions


def test_values_and_dots() -> None:
    c = C([("a", 4, ["a4", "a3"]), ("c", 1, ["c1"])], ["x"])
    assert c.values() == ["x", "a4", "a3", "c1"]
    assert c.dotted_values() == [(Dot("a", 4), "a4"), (Dot("a", 3), "a3"), (Dot("c", 1), "c1")]
    assert not c.covered_by(VV(a=4, c=1))  # the anonymous value has no dot
    d = C([("a", 4, ["a4", "a3"]), ("b", 2, []), ("c", 1, ["c1"])])
    assert d.covered_by(VV(a=4, c=1))
    assert not d.covered_by(VV(a=3, b=9, c=1))
    assert not d.covered_by(VV(a=4))
    assert DVVSet.empty().covered_by(VV())


def test_update_needs_one_anonymous_value() -> None:
    with pytest.raises(ValueError, match="exactly one anonymous value"):
        DVVSet.empty().update("a")
    with pytest.raises(ValueError, match="exactly one anonymous value"):
        C([], ["x", "y"]).update_with(DVVSet.empty(), "a")


def test_last_of_no_values() -> None:
    with pytest.raises(ValueError):
        C([("a", 2, [])]).last(lambda v: v)


def test_lww_considers_only_the_newest_value_of_each_entry() -> None:
    # As dvvset:find_entry/2 does: older siblings in an entry are not candidates.
    c = C([("a", 2, [1, 9]), ("b", 1, [5])])
    assert c.last(lambda v: v) == 5


def test_anonymous_values_make_sync_order_dependent() -> None:
    # dvvset:sync/2 drops the anonymous values of a strictly older history, so with
    # anonymous values the fold order matters (the store never leaves any: every
    # write goes through event()).
    a = C([("p", 1, [])], ["x"])
    b = C([("q", 1, [])], ["y"])
    c = C([("p", 1, []), ("q", 1, [])])
    assert sorted(a.sync(b).sync(c).values()) == ["x", "y"]
    assert a.sync(b.sync(c)).values() == []


def test_json_form() -> None:
    c = C([("a", 2, [{"k": [1, 2]}, None]), ("b", 1, [])], ["x"])
    assert c.to_json() == {"e": [["a", 2, [{"k": [1, 2]}, None]], ["b", 1, []]], "a": ["x"]}
    assert C([("a", 1, [])]).to_json() == {"e": [["a", 1, []]]}
    assert DVVSet.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert DVVSet.from_json({"e": []}) == DVVSet.empty()


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (None, "object"),
        ([], "object"),
        ({}, "'e'"),
        ({"e": [], "x": 1}, "unknown"),
        ({"e": {}}, "'e' must be a list"),
        ({"e": [], "a": "x"}, "'a' must be a list"),
        ({"e": [["a", 1]]}, "entry 0"),
        ({"e": [[1, 1, []]]}, "replica"),
        ({"e": [["a", -1, []]]}, "counter"),
        ({"e": [["a", 1.0, []]]}, "counter"),
        ({"e": [["a", True, []]]}, "counter"),
        ({"e": [["a", 1, "v"]]}, "values must be a list"),
        ({"e": [["a", 1, {"v": 1}]]}, "values must be a list"),
        ({"e": [["a", 1, ["v", "w"]]]}, "counter is 1"),
        ({"e": [["b", 1, []], ["a", 1, []]]}, "sorted"),
        ({"e": [["a", 1, []], ["a", 2, []]]}, "sorted"),
    ],
)
def test_from_json_rejects_bad_shapes(bad: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        DVVSet.from_json(bad)


# ----------------------------------------------------------------------- laws

REPLICAS = ["a", "b", "c", "d"]


@st.composite
def clocks(draw: st.DrawFn, anonymous: bool = True) -> DVVSet:
    """Well-formed clocks: the value of dot (r, k) is always f"{r}{k}", as in a real history."""
    entries = []
    for r in draw(st.lists(st.sampled_from(REPLICAS), unique=True).map(sorted)):
        n = draw(st.integers(1, 6))
        live = draw(st.integers(0, n))
        entries.append((r, n, [f"{r}{n - i}" for i in range(live)]))
    anon = draw(st.lists(st.sampled_from(["x", "y", "z", "w"]), unique=True, max_size=3)) if anonymous else []
    return DVVSet(entries, anon)


def same(a: DVVSet, b: DVVSet) -> bool:
    """Equal up to the order of anonymous values (sync's union is a set in dvvset.erl)."""
    return a.entries == b.entries and Counter(a.anonymous) == Counter(b.anonymous)


@settings(max_examples=400)
@given(clocks(), clocks())
def test_sync_commutative(a: DVVSet, b: DVVSet) -> None:
    ab, ba = a.sync(b), b.sync(a)
    assert ab.equal(ba)
    assert Counter(ab.values()) == Counter(ba.values())
    assert same(ab, ba)


@settings(max_examples=400)
@given(clocks(anonymous=False), clocks(anonymous=False), clocks(anonymous=False))
def test_sync_associative(a: DVVSet, b: DVVSet, c: DVVSet) -> None:
    # Without anonymous values (see test_anonymous_values_make_sync_order_dependent).
    assert a.sync(b).sync(c) == a.sync(b.sync(c))


@settings(max_examples=400)
@given(clocks())
def test_sync_idempotent(a: DVVSet) -> None:
    assert a.sync(a) == a
    assert a.sync(DVVSet.empty()) == a
    assert DVVSet.empty().sync(a) == a


@settings(max_examples=400)
@given(clocks(), clocks())
def test_sync_is_an_upper_bound(a: DVVSet, b: DVVSet) -> None:
    m = a.sync(b)
    assert m.join() == a.join().merge(b.join())
    assert not m.less(a) and not m.less(b)
    # a value survives iff neither side has superseded it
    for side, other in ((a, b), (b, a)):
        ov = other.join()
        live_there = set(other.values())
        for dot, v in side.dotted_values():
            assert (v in m.values()) == (not ov.contains(dot) or v in live_there)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def any_clocks(draw: st.DrawFn) -> DVVSet:
    """Shape-valid clocks with arbitrary JSON values (not necessarily a real history)."""
    entries = []
    for r in draw(st.lists(st.text(max_size=4), unique=True, max_size=4).map(sorted)):
        vs = draw(st.lists(json_values, max_size=3))
        entries.append((r, len(vs) + draw(st.integers(0, 3)), vs))
    return DVVSet(entries, draw(st.lists(json_values, max_size=3)))


@settings(max_examples=300)
@given(any_clocks())
def test_json_round_trip(c: DVVSet) -> None:
    obj = c.to_json()
    back = DVVSet.from_json(json.loads(json.dumps(obj)))
    assert back == c
    assert back.to_json() == obj
    assert DVVSet.from_json(obj) == c


# ------------------------------------------------- multi-replica history test


@dataclass
class Write:
    dot: Dot
    covered: frozenset[int]  # ids of the writes the writer's context covered


@dataclass
class Client:
    context: VersionVector
    seen: frozenset[int]  # the read replica's knowledge: what `context` covers


@dataclass
class Model:
    """Reference model: a write supersedes exactly the writes its context covered."""

    writes: dict[int, Write] = field(default_factory=dict)
    knows: list[set[int]] = field(default_factory=list)  # per replica

    def live(self, known: set[int]) -> set[int]:
        dead: set[int] = set()
        for w in known:
            dead |= self.writes[w].covered
        return known - dead

    def vv(self, known: set[int]) -> VersionVector:
        d: dict[str, int] = {}
        for w in known:
            r, n = self.writes[w].dot
            d[r] = max(d.get(r, 0), n)
        return VersionVector(d)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("write"), st.integers(0, 7), st.integers(0, 3)),
        st.tuples(st.just("sync"), st.integers(0, 3), st.integers(0, 3)),
    ),
    min_size=8,
    max_size=60,
)


def stored(c: DVVSet) -> DVVSet:
    """What a replica reads back after storing ``c`` (the store keeps clocks as JSON)."""
    return DVVSet.from_json(json.loads(json.dumps(c.to_json())))


@settings(max_examples=300)
@given(st.integers(2, 4), ops)
def test_history_no_lost_update(n_replicas: int, steps: list[tuple[str, int, int]]) -> None:
    names = ["c", "a", "d", "b"][:n_replicas]  # not in sorted order, on purpose
    replicas = [DVVSet.empty() for _ in names]
    model = Model(knows=[set() for _ in names])
    clients: list[Client] = []
    issued = Counter[str]()

    def check(i: int) -> None:
        c = replicas[i]
        assert Counter(c.values()) == Counter(model.live(model.knows[i]))
        assert c.join() == model.vv(model.knows[i])
        assert not c.anonymous
        for dot, w in c.dotted_values():
            assert model.writes[w].dot == dot

    for op, x, y in steps:
        if op == "read":
            i = x % n_replicas
            ctx = replicas[i].join()
            assert Counter(replicas[i].values()) == Counter(model.live(model.knows[i]))
            clients.append(Client(ctx, frozenset(model.knows[i])))
        elif op == "write":
            # a client with no read is a blind write: empty context
            client = clients[x % len(clients)] if clients else Client(VersionVector(), frozenset())
            j = y % n_replicas
            before = replicas[j]
            live = model.live(model.knows[j])
            assert before.covered_by(client.context) == (live <= client.seen)
            wid = len(model.writes)
            issued[names[j]] += 1
            model.writes[wid] = Write(Dot(names[j], issued[names[j]]), client.seen)
            model.knows[j] |= client.seen | {wid}
            replicas[j] = stored(before.event(client.context, wid, names[j]))
            assert wid in replicas[j].values()
            check(j)
        else:
            src, dst = x % n_replicas, y % n_replicas
            replicas[dst] = stored(replicas[dst].sync(replicas[src]))
            model.knows[dst] |= model.knows[src]
            check(dst)

    # final full anti-entropy
    merged = DVVSet.sync_all(replicas)
    assert same(merged, DVVSet.sync_all(reversed(replicas)))
    replicas = [stored(r.sync(merged)) for r in replicas]
    everything = set(model.writes)
    expected = Counter(model.live(everything))
    for r in replicas:
        assert r.equal(replicas[0])
        assert r.entries == replicas[0].entries
        assert Counter(r.values()) == expected  # no lost update, no resurrection
        assert r.join() == model.vv(everything)


@settings(max_examples=300)
@given(clocks(anonymous=False), st.sampled_from(REPLICAS + ["e"]))
def test_write_with_full_context_leaves_one_value(c: DVVSet, replica: str) -> None:
    ctx = c.join()
    assert c.covered_by(ctx)
    after = c.event(ctx, "new", replica)
    assert after.values() == ["new"]
    assert after.join().descends(ctx)
    assert after.dotted_values() == [(Dot(replica, ctx.get(replica) + 1), "new")]
    assert after == DVVSet.new_with(ctx, "new").update_with(c, replica)


@settings(max_examples=500)
@given(
    clocks(),
    st.dictionaries(st.sampled_from(REPLICAS + ["e"]), st.integers(1, 6), max_size=4),
    st.sampled_from(REPLICAS + ["e"]),
)
def test_event_is_a_client_write_synced_into_the_clock(c: DVVSet, seen: dict[str, int], replica: str) -> None:
    # event() takes a shortcut for clocks without anonymous values; with or without one, it
    # is what dvvset.erl spells out: new_with(context, value), then update_with the clock.
    ctx = VersionVector(seen)
    assert c.event(ctx, "new", replica) == DVVSet.new_with(ctx, "new").update_with(c, replica)
