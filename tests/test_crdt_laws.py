"""One set of laws for every CRDT in ``comity.crdt.TYPES``, then each type's semantics.

The laws run over histories of a small simulated cluster: 2-4 replicas ("r1".."r4")
apply random valid ops, each producing a delta, and deliver random earlier deltas to
one another (so deltas arrive late, out of order and more than once).  Every type
gets the same checks: convergence after all deltas reach everyone; merge is
commutative, associative and idempotent; JSON round trip; a replica is the join of
the deltas it applied, and shipping deltas equals shipping the full state.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import reduce
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import comity.crdt
from comity.causal import Dot, HLCTimestamp, VersionVector
from comity.crdt import (
    CRDT,
    TYPES,
    BCounter,
    OutOfRights,
    EWFlag,
    GCounter,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    UpdateContext,
    crdt_type,
)
from comity.crdt._dots import DotContext
from comity.errors import Invalid

# 200 examples per law per type (7 types x 4 laws = 5,600 simulated histories of up to
# 30 steps); no deadline, because a 2-core CI box stalls now and then.
LAWS = settings(max_examples=200, deadline=None)

REPLICAS = ["r1", "r2", "r3", "r4"]
NAMES = sorted(TYPES)

# --------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
# Mostly a small pool, so that adds, removes and sets of one element collide.
POOL = [0, 1, "x", "y", None, [1], {"k": "v"}]
elements = st.one_of(st.sampled_from(POOL), st.sampled_from(POOL), st.sampled_from(POOL), json_values)
times = st.builds(HLCTimestamp, st.integers(0, 4), st.integers(0, 3))
amounts = st.none() | st.integers(1, 5)

OPS: dict[str, st.SearchStrategy[tuple[str, Any]]] = {
    "gcounter": st.tuples(st.just("inc"), amounts),
    "pncounter": st.tuples(st.sampled_from(["inc", "dec"]), amounts),
    "lww": st.tuples(st.just("set"), elements),
    "mvreg": st.tuples(st.just("set"), elements),
    "orset": st.one_of(
        st.tuples(st.sampled_from(["add", "remove"]), elements),
        st.tuples(st.sampled_from(["add_all", "remove_all"]), st.lists(elements, max_size=3)),
    ),
    "flag": st.tuples(st.sampled_from(["enable", "disable"]), st.none()),
    # Decrements and transfers beyond the actor's rights are refused (OutOfRights): the plan skips them.
    "bcounter": st.one_of(
        st.tuples(st.sampled_from(["inc", "dec", "dec"]), amounts),
        st.tuples(st.just("transfer"), st.builds(lambda to, n: {"to": to, "n": n}, st.sampled_from(["r1", "r2", "r3", "r4"]), st.integers(1, 4))),
    ),
}
# One type per field name, so random updates never mix types on one field.
FIELDS = {"a": "gcounter", "b": "pncounter", "c": "lww", "d": "mvreg", "e": "orset", "f": "flag", "g": "ormap"}


def map_ops(depth: int) -> st.SearchStrategy[tuple[str, Any]]:
    fields = sorted(f for f, t in FIELDS.items() if depth > 0 or t != "ormap")

    def nested(field: str) -> st.SearchStrategy[tuple[str, Any]]:
        t = FIELDS[field]
        inner = map_ops(depth - 1) if t == "ormap" else OPS[t]
        return inner.map(lambda oa: ("update", {"field": field, "type": t, "op": oa[0], "arg": oa[1]}))

    updates = st.sampled_from(fields).flatmap(nested)
    return st.one_of(updates, updates, st.tuples(st.just("remove"), st.sampled_from(fields)))


OPS["ormap"] = map_ops(1)

Step = tuple[str, int, Any, Any]  # ("op", replica, (op, arg), time) | ("deliver", replica, delta index, None)


@st.composite
def plans(draw: st.DrawFn, name: str) -> tuple[int, list[Step]]:
    n = draw(st.integers(2, 4))
    step = st.one_of(
        st.tuples(st.just("op"), st.integers(0, n - 1), OPS[name], times),
        st.tuples(st.just("deliver"), st.integers(0, n - 1), st.integers(0, 63), st.none()),
    )
    return n, draw(st.lists(step, min_size=1, max_size=30))


@dataclass
class Run:
    new: CRDT
    states: list[CRDT]  # each replica's state at the end of the plan
    applied: list[list[CRDT]]  # the deltas each replica merged, its own and received, in order
    deltas: list[CRDT]  # every delta produced, in order
    snapshots: list[CRDT]  # every state any replica passed through


def simulate(name: str, plan: tuple[int, list[Step]]) -> Run:
    cls = TYPES[name]
    n, steps = plan
    bottom = cls.new()
    run = Run(bottom, [bottom] * n, [[] for _ in range(n)], [], [bottom])
    for kind, r, a, b in steps:
        if kind == "op":
            (op, arg), time = a, b
            if op == "transfer" and arg["to"] == REPLICAS[r]:
                continue  # a transfer to oneself is bad input (checked below)
            try:
                delta = run.states[r].update(op, arg, REPLICAS[r], UpdateContext(time=time))
            except OutOfRights:
                continue  # a bounded counter refuses to spend rights its replica does not hold
            run.deltas.append(delta)
        elif run.deltas:
            delta = run.deltas[a % len(run.deltas)]  # any earlier delta: late, reordered, repeated
        else:
            continue
        run.states[r] = run.states[r].merge(delta)
        run.applied[r].append(delta)
        run.snapshots.append(run.states[r])
    return run


def join(states: list[CRDT], start: CRDT) -> CRDT:
    return reduce(lambda x, y: x.merge(y), states, start)


# --------------------------------------------------------------------- laws


def test_every_type_has_an_op_strategy() -> None:
    assert sorted(OPS) == NAMES


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_replicas_converge_under_any_delivery(name: str, data: st.DataObject) -> None:
    plan = data.draw(plans(name), label="plan")
    run = simulate(name, plan)
    final = []
    for r, state in enumerate(run.states):
        order = data.draw(st.permutations(range(len(run.deltas))), label=f"heal order at r{r + 1}")
        final.append(join([run.deltas[i] for i in order], state))
    everything = join(run.deltas, run.new)
    for state in final:
        assert state == everything
        assert json.dumps(state.value(), sort_keys=True) == json.dumps(everything.value(), sort_keys=True)


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_merge_is_commutative_associative_idempotent(name: str, data: st.DataObject) -> None:
    run = simulate(name, data.draw(plans(name), label="plan"))
    pool = run.snapshots + run.deltas
    a, b, c = (data.draw(st.sampled_from(pool), label=label) for label in "abc")
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(run.new) == a == run.new.merge(a)


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_json_round_trip(name: str, data: st.DataObject) -> None:
    cls = TYPES[name]
    run = simulate(name, data.draw(plans(name), label="plan"))
    for state in run.snapshots + run.deltas:
        text = json.dumps(state.to_json(), allow_nan=False)
        back = cls.from_json(json.loads(text))
        assert back == state
        assert json.dumps(back.to_json(), allow_nan=False) == text
        assert json.loads(json.dumps(state.value(), allow_nan=False)) == state.value()


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(data=st.data())
def test_delta_merge_equals_full_state_merge(name: str, data: st.DataObject) -> None:
    run = simulate(name, data.draw(plans(name), label="plan"))
    for r, state in enumerate(run.states):
        assert join(run.applied[r], run.new) == state  # a replica is the join of the deltas it applied
        for q, other in enumerate(run.states):
            assert join(run.applied[r], other) == other.merge(state), (r, q)


# ----------------------------------------------------------- bad input


BAD: list[tuple[str, str, Any, str]] = [
    ("gcounter", "dec", 1, "op"),
    ("gcounter", "inc", 0, "arg"),
    ("gcounter", "inc", -2, "arg"),
    ("gcounter", "inc", 1.5, "arg"),
    ("gcounter", "inc", True, "arg"),
    ("gcounter", "inc", "3", "arg"),
    ("pncounter", "set", 1, "op"),
    ("pncounter", "dec", 0, "arg"),
    ("lww", "add", 1, "op"),
    ("lww", "set", float("nan"), "arg"),
    ("lww", "set", object(), "arg"),
    ("mvreg", "put", 1, "op"),
    ("mvreg", "set", {"k": {1, 2}}, "arg"),
    ("orset", "insert", 1, "op"),
    ("orset", "add", float("inf"), "arg"),
    ("orset", "add_all", "xy", "arg"),
    ("orset", "remove_all", 3, "arg"),
    ("flag", "toggle", None, "op"),
    ("flag", "enable", True, "arg"),
    ("ormap", "set", {}, "op"),
    ("ormap", "update", "a", "arg"),
    ("ormap", "update", {"field": "a", "type": "gcounter"}, "arg"),
    ("ormap", "update", {"field": "a", "type": "gcounter", "op": "inc", "extra": 1}, "arg"),
    ("ormap", "update", {"field": 1, "type": "gcounter", "op": "inc"}, "arg"),
    ("ormap", "update", {"field": "a", "type": "nope", "op": "inc"}, "arg"),
    ("ormap", "update", {"field": "a", "type": "gcounter", "op": "dec"}, "arg"),
    ("ormap", "update", {"field": "a", "type": "gcounter", "op": "inc", "arg": -1}, "arg"),
    ("ormap", "remove", 3, "arg"),
    ("bcounter", "set", 1, "op"),
    ("bcounter", "inc", 0, "arg"),
    ("bcounter", "dec", -1, "arg"),
    ("bcounter", "transfer", 3, "arg"),
    ("bcounter", "transfer", {"to": "r1", "n": 1}, "arg"),
    ("bcounter", "transfer", {"to": "r2"}, "arg"),
]


@pytest.mark.parametrize(("name", "op", "arg", "field"), BAD)
def test_bad_op_or_arg_is_invalid(name: str, op: str, arg: Any, field: str) -> None:
    state = TYPES[name].new()
    with pytest.raises(Invalid) as e:
        state.update(op, arg, "r1", UpdateContext(time=HLCTimestamp(1, 0)))
    assert e.value.field == field
    if field == "op":
        assert all(allowed in e.value.message for allowed in TYPES[name].ops)
    assert state == TYPES[name].new()


def test_lww_without_time_and_empty_actor_are_invalid() -> None:
    with pytest.raises(Invalid) as e:
        LWWRegister.new().update("set", 1, "r1")
    assert e.value.field == "time"
    for name in NAMES:
        op, arg = {"ormap": ("remove", "a"), "lww": ("set", 1)}.get(name, (next(iter(TYPES[name].ops)), None))
        with pytest.raises(Invalid) as e:
            TYPES[name].new().update(op, arg, "", UpdateContext(time=HLCTimestamp(1, 0)))
        assert e.value.field == "actor"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("obj", [17, "nope", [1, 2], {"x": "y"}, {"store": [], "context": {"vv": {}, "cloud": [["r1", 0]]}}])
def test_from_json_of_malformed_raises_value_error(name: str, obj: Any) -> None:
    with pytest.raises(ValueError):
        TYPES[name].from_json(obj)


@pytest.mark.parametrize("name", NAMES)
@LAWS
@given(obj=json_values)
def test_from_json_of_anything_returns_or_raises_value_error(name: str, obj: Any) -> None:
    try:
        state = TYPES[name].from_json(obj)
    except ValueError:
        return
    assert TYPES[name].from_json(json.loads(json.dumps(state.to_json()))) == state


def test_from_json_rejects_a_store_dot_outside_the_context() -> None:
    with pytest.raises(ValueError, match="not the context"):
        ORSet.from_json({"store": [["x", [["r1", 2]]]], "context": {"vv": {"r1": 1}, "cloud": []}})


# -------------------------------------------------------------- surface


def test_public_surface() -> None:
    assert comity.crdt.__all__ == [
        "CRDT", "UpdateContext", "GCounter", "PNCounter", "LWWRegister", "MVRegister", "ORSet", "EWFlag",
        "ORMap", "BCounter", "OutOfRights", "TYPES", "crdt_type",
    ]  # fmt: skip
    assert TYPES == {
        "gcounter": GCounter, "pncounter": PNCounter, "lww": LWWRegister, "mvreg": MVRegister,
        "orset": ORSet, "flag": EWFlag, "ormap": ORMap, "bcounter": BCounter,
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_each_type_names_itself_documents_its_ops_and_cites_a_paper(name: str) -> None:
    cls = TYPES[name]
    assert cls.type_name == name and crdt_type(name) is cls
    assert cls.ops and all(isinstance(k, str) and isinstance(v, str) and v for k, v in cls.ops.items())
    doc = sys.modules[cls.__module__].__doc__ or ""
    assert any(year in doc for year in ("2011", "2012", "2018")), f"{cls.__module__} cites no paper"
    assert json.dumps(cls.new().value()) is not None


def test_unknown_type_is_invalid() -> None:
    with pytest.raises(Invalid) as e:
        crdt_type("hashmap")
    assert e.value.field == "type"
    assert "gcounter" in e.value.message and "ormap" in e.value.message


# ------------------------------------------------------------- semantics

T = UpdateContext(time=HLCTimestamp(10, 0))


def apply(state: Any, op: str, arg: Any, actor: str, ctx: UpdateContext = T) -> Any:
    """The new state after an update at ``actor`` (state merged with its delta)."""
    return state.merge(state.update(op, arg, actor, ctx))


def test_dot_context_is_compact() -> None:
    c = DotContext.of([Dot("r1", 2), Dot("r2", 1), Dot("r1", 4)])
    assert c.vv == VersionVector({"r2": 1}) and c.cloud == {Dot("r1", 2), Dot("r1", 4)}
    c = c.add(Dot("r1", 1)).add(Dot("r1", 3))
    assert c == DotContext(VersionVector({"r1": 4, "r2": 1}))
    assert c.contains(Dot("r1", 3)) and not c.contains(Dot("r1", 5))
    assert c.next_dot("r1") == Dot("r1", 5) and c.next_dot("r9") == Dot("r9", 1)
    assert DotContext.of([Dot("r1", 3)]).next_dot("r1") == Dot("r1", 4)
    assert DotContext.from_json(c.to_json()) == c


def test_gcounter_sums_replicas_and_ships_one_entry() -> None:
    a = apply(GCounter.new(), "inc", 2, "r1")
    b = apply(apply(GCounter.new(), "inc", None, "r2"), "inc", 2, "r2")
    assert a.merge(b).value() == 5
    assert a.update("inc", 4, "r1") == GCounter(VersionVector({"r1": 6}))


def test_pncounter_is_incs_minus_decs() -> None:
    a = apply(apply(PNCounter.new(), "inc", 5, "r1"), "dec", 1, "r1")
    b = apply(PNCounter.new(), "dec", 3, "r2")
    assert a.merge(b).value() == 5 - 1 - 3
    assert b.value() == -3


def test_lww_greater_hlc_time_wins_then_replica() -> None:
    early = apply(LWWRegister.new(), "set", "early", "r9", UpdateContext(time=HLCTimestamp(5, 7)))
    late = apply(LWWRegister.new(), "set", "late", "r1", UpdateContext(time=HLCTimestamp(6, 0)))
    assert early.merge(late).value() == late.merge(early).value() == "late"
    tie1 = apply(LWWRegister.new(), "set", "one", "r1", T)
    tie2 = apply(LWWRegister.new(), "set", "two", "r2", T)
    assert tie1.merge(tie2).value() == tie2.merge(tie1).value() == "two"
    assert LWWRegister.new().value() is None and late.time == HLCTimestamp(6, 0)
    with pytest.raises(Invalid) as e:  # nested in a map, it still needs the time
        ORMap.new().update("update", field("r", "lww", "set", 1), "r1")
    assert e.value.field == "time"


def test_mvreg_keeps_concurrent_sets_as_siblings_until_a_later_set() -> None:
    a = apply(MVRegister.new(), "set", "from r1", "r1")
    b = apply(MVRegister.new(), "set", {"from": "r2"}, "r2")
    both = a.merge(b)
    assert both.value() == ["from r1", {"from": "r2"}]  # sorted by canonical JSON
    resolved = apply(both, "set", "resolved", "r2")
    assert resolved.value() == ["resolved"]
    assert a.merge(resolved).value() == ["resolved"]  # a stale replica learns the resolution
    assert MVRegister.new().value() == []


def test_orset_add_wins_over_concurrent_remove() -> None:
    base = apply(ORSet.new(), "add", "x", "r1")
    removed = apply(base, "remove", "x", "r2")
    readded = apply(base, "add", "x", "r1")
    assert removed.value() == []
    assert removed.merge(readded).value() == readded.merge(removed).value() == ["x"]


def test_orset_remove_of_an_observed_element_removes_it_everywhere() -> None:
    a = apply(ORSet.new(), "add_all", [3, "y", {"b": 2, "a": 1}, 3], "r1")
    assert a.value() == ["y", 3, {"a": 1, "b": 2}]  # sorted by canonical JSON: '"y"' < '3' < '{...}'
    b = apply(ORSet.new().merge(a), "remove_all", [{"a": 1, "b": 2}, "absent"], "r2")  # key order is not identity
    assert b.value() == ["y", 3]
    assert a.merge(b).value() == b.merge(a).value() == ["y", 3]
    assert apply(b, "remove", 3, "r2").merge(a).value() == ["y"]


def test_flag_enable_wins() -> None:
    on = apply(EWFlag.new(), "enable", None, "r1")
    off = apply(on, "disable", None, "r2")
    again = apply(on, "enable", None, "r1")
    assert off.value() is False and on.value() is True
    assert off.merge(again).value() is True
    assert on.merge(off).value() is False  # a disable that saw the enable wins over it


def field(name: str, type_name: str, op: str, arg: Any = None) -> dict[str, Any]:
    return {"field": name, "type": type_name, "op": op, "arg": arg}


def test_ormap_nested_counters_merge() -> None:
    a = apply(ORMap.new(), "update", field("n", "gcounter", "inc", 2), "r1")
    b = apply(ORMap.new(), "update", field("n", "gcounter", "inc", 3), "r2")
    ab = a.merge(b)
    assert ab.value() == {"n": 5}
    assert apply(ab, "update", field("n", "gcounter", "inc", 1), "r1").value() == {"n": 6}
    many = reduce(lambda m, r: apply(m, "update", field("n", "gcounter", "inc"), r), ["r1", "r2", "r1", "r1"], ab)
    assert many.value() == {"n": 9}
    assert [entry[:2] for entry in many.to_json()["store"][0][2]] == [["r1", 4], ["r2", 2]]  # one live dot per replica
    nested = apply(ab, "update", field("m", "ormap", "update", field("p", "pncounter", "dec", 4)), "r2")
    assert nested.value() == {"m": {"p": -4}, "n": 5}


def test_ormap_concurrent_update_wins_over_remove_and_observed_state_resets() -> None:
    base = apply(ORMap.new(), "update", field("s", "orset", "add", "seen"), "r1")
    removed = apply(base, "remove", "s", "r2")
    updated = apply(base, "update", field("s", "orset", "add", "new"), "r1")
    assert removed.value() == {}
    merged = removed.merge(updated)
    assert merged == updated.merge(removed)
    assert merged.value() == {"s": ["new"]}  # the update survives; what the remove saw is gone


def test_ormap_remove_resets_a_counter_without_rewinding_it() -> None:
    a = apply(ORMap.new(), "update", field("n", "gcounter", "inc", 5), "r1")
    b = apply(a, "remove", "n", "r1")
    assert b.value() == {}
    c = apply(b, "update", field("n", "gcounter", "inc", 1), "r1")
    assert c.value() == {"n": 1}
    assert a.merge(c).value() == c.merge(a).value() == {"n": 1}  # the stale 5 stays removed


def test_ormap_type_of_a_field_is_kept() -> None:
    a = apply(ORMap.new(), "update", field("x", "gcounter", "inc"), "r1")
    with pytest.raises(Invalid) as e:
        a.update("update", field("x", "orset", "add", 1), "r1")
    assert e.value.field == "arg" and "gcounter" in e.value.message
    b = apply(ORMap.new(), "update", field("x", "lww", "set", "v"), "r2")
    assert a.merge(b).value() == {"x@gcounter": 1, "x@lww": "v"}  # concurrent creations both survive
    assert apply(a.merge(b), "remove", "x", "r3").value() == {}


@LAWS
@given(data=st.data())
def test_bcounter_never_goes_below_zero_whatever_the_delivery(data: st.DataObject) -> None:
    """Balegas et al. 2015: each replica spends only its own rights, so no interleaving of
    decrements, transfers and merges takes the value below zero, nor any replica's rights."""
    run = simulate("bcounter", data.draw(plans("bcounter"), label="plan"))
    everything = join(run.deltas, run.new)
    for state in [*run.snapshots, *run.states, everything]:
        assert isinstance(state, BCounter)
        assert state.value() >= 0
        assert all(n >= 0 for n in state.shares().values())
        assert state.value() == sum(state.shares().values())


def test_bcounter_spends_only_its_own_rights_and_transfers_move_them() -> None:
    a = apply(BCounter.new(), "inc", 10, "r1")
    assert a.value() == 10 and a.rights("r1") == 10 and a.rights("r2") == 0
    with pytest.raises(OutOfRights) as e:
        a.update("dec", 1, "r2")
    assert (e.value.have, e.value.need) == (0, 1)
    a = apply(a, "transfer", {"to": "r2", "n": 4}, "r1")
    assert a.rights("r1") == 6 and a.rights("r2") == 4 and a.value() == 10
    b = apply(a, "dec", 4, "r2")  # r2, cut off, spends its share
    c = apply(a, "dec", 6, "r1")  # r1 spends its own at the same time
    merged = b.merge(c)
    assert merged.value() == 0 and merged.shares() == {}
    with pytest.raises(OutOfRights):
        merged.update("dec", 1, "r1")
