"""The CRDT types' edges, written for the mutants the laws let through (docs/mutation.md):
every malformed state refused by ``from_json`` with a message naming where it is wrong,
every bad operation refused as ``Invalid`` naming the op and what it takes, and the
per-replica bound of the counters."""

from __future__ import annotations

from typing import Any

import pytest

from comity.causal import HLCTimestamp
from comity.crdt import TYPES, UpdateContext
from comity.crdt._protocol import COUNT_MAX
from comity.errors import Invalid

NAN, INF = float("nan"), float("inf")
CTX = UpdateContext(time=HLCTimestamp(5, 0))

BAD_STATES: list[tuple[str, Any, str]] = [
    ('gcounter', [], 'gcounter: version vector must be a JSON object of replica -> counter, got list'),
    ('gcounter', {'r1': -1}, "gcounter: VersionVector: counter of replica 'r1' must be >= 0, got -1"),
    ('gcounter', {'r1': 'x'}, "gcounter: VersionVector: counter of replica 'r1' must be an integer, got 'x'"),
    ('gcounter', {1: 2}, 'gcounter: VersionVector: replica id must be a string, got 1'),
    ('pncounter', [], 'pncounter: expected dict, got []'),
    ('pncounter', {'inc': {}}, "pncounter: expected keys 'inc' and 'dec', got ['inc']"),
    ('pncounter', {'inc': {}, 'dec': []}, 'pncounter: version vector must be a JSON object of replica -> counter, got list'),
    ('pncounter', {'inc': {'r': -1}, 'dec': {}}, "pncounter: VersionVector: counter of replica 'r' must be >= 0, got -1"),
    ('pncounter', {'inc': {}, 'dec': {}, 'x': {}}, "pncounter: expected keys 'inc' and 'dec', got ['dec', 'inc', 'x']"),
    ('lww', [], 'lww: expected dict, got []'),
    ('lww', {'time': 'bad', 'actor': 'r', 'value': 1}, "not an encoded HLC timestamp: 'bad' (expected 15 digits, '.', 10 digits)"),
    ('lww', {'time': '000000000000005.0000000000', 'actor': 1, 'value': 1}, 'lww actor: expected str, got 1'),
    ('lww', {'actor': 'r'}, "lww: expected null or keys 'time', 'actor', 'value', got ['actor']"),
    ('lww', {'time': '000000000000005.0000000000', 'actor': 'r', 'value': 1, 'extra': 1}, "lww: expected null or keys 'time', 'actor', 'value', got ['actor', 'extra', 'time', 'value']"),
    ('mvreg', [], 'mvreg: expected dict, got []'),
    ('mvreg', {'store': {}, 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'mvreg store: expected list, got {}'),
    ('mvreg', {'store': [['r1', 1]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "mvreg store: each write is [replica, counter, value], got ['r1', 1]"),
    ('mvreg', {'store': [['r1', 1, 'v'], ['r1', 1, 'w']], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "mvreg store: dot Dot(replica='r1', counter=1) appears twice"),
    ('mvreg', {'store': [['r1', 'x', 'v']], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "mvreg write counter: expected int, got 'x'"),
    ('mvreg', {'store': [], 'context': []}, 'causal context: expected dict, got []'),
    ('mvreg', {'store': [], 'context': {'vv': {}}}, "causal context: expected keys 'vv' and 'cloud', got ['vv']"),
    ('mvreg', {'store': [], 'context': {'vv': {}, 'cloud': {}}}, 'causal context cloud: expected list, got {}'),
    ('mvreg', {'store': [], 'context': {'vv': {}, 'cloud': [['r1']]}}, "causal context cloud: a dot is [replica, counter], got ['r1']"),
    ('mvreg', {'store': [['r1', 1, NAN]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'mvreg value: must be a JSON value (null, bool, number, string, list, object): Out of range float values are not JSON compliant'),
    ('mvreg', {'context': {'vv': {'r1': 1}, 'cloud': []}}, "mvreg: expected keys 'store' and 'context', got ['context']"),
    ('orset', {'store': {}, 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'orset store: expected list, got {}'),
    ('orset', {'store': [['x']], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "orset store: each element is [value, dots], got ['x']"),
    ('orset', {'store': [['x', [['r1', 1]]], ['x', [['r1', 1]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'orset store: element "x" appears twice'),
    ('orset', {'store': [['x', {}]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'orset element dots: expected list, got {}'),
    ('orset', {'store': [['x', []]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'orset store: element "x" has no dots'),
    # four dots the context lacks: the message names the first three
    ('mvreg', {'store': [['r1', i, f'v{i}'] for i in range(1, 5)], 'context': {'vv': {}, 'cloud': []}},
     "mvreg: dots [Dot(replica='r1', counter=1), Dot(replica='r1', counter=2), Dot(replica='r1', counter=3)] are in the store but not the context"),
    ('orset', {'store': [['x', [['r1', 0]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'orset element dots: counters start at 1, got 0'),
    ('orset', {'store': [[INF, [['r1', 1]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'orset element: must be a JSON value (null, bool, number, string, list, object): Out of range float values are not JSON compliant'),
    ('flag', {'store': {}, 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'dot set: expected list, got {}'),
    ('flag', {'store': [['r1']], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "dot set: a dot is [replica, counter], got ['r1']"),
    ('flag', {'store': [['r1', 1], ['r1', 1]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'dot set: a dot appears twice'),
    ('ormap', {'store': {}, 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'ormap store: expected list, got {}'),
    ('ormap', {'store': [['f', 'gcounter']], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "ormap store: each field is [name, type, store], got ['f', 'gcounter']"),
    ('ormap', {'store': [[1, 'gcounter', []]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'ormap field name: expected str, got 1'),
    ('ormap', {'store': [['f', 'nope', []]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "ormap field 'f': unknown CRDT type 'nope'"),
    ('ormap', {'store': [['f', 'gcounter', []], ['f', 'gcounter', []]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "ormap field 'f': an empty field is absent, not listed"),
    ('ormap', {'store': [['f', 'gcounter', {}]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'gcounter field: expected list, got {}'),
    ('ormap', {'store': [['f', 'gcounter', [['r1', 1]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "gcounter field: each entry is [replica, counter, state], got ['r1', 1]"),
    ('ormap', {'store': [['f', 'gcounter', [['r1', 1, {}], ['r1', 1, {}]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "gcounter field: dot Dot(replica='r1', counter=1) appears twice"),
    ('ormap', {'store': [['f', 'gcounter', [['r1', 1, []]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'gcounter: version vector must be a JSON object of replica -> counter, got list'),
    ('ormap', {'store': [['f', 'orset', {}]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'orset store: expected list, got {}'),
    ('ormap', {'store': [['f', 'mvreg', [['r1', 1]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "mvreg store: each write is [replica, counter, value], got ['r1', 1]"),
    ("ormap", {"store": [["f", "gcounter", [["r1", 1, {"r1": 1}]]], ["f", "gcounter", [["r1", 2, {"r1": 2}]]]],
               "context": {"vv": {"r1": 2}, "cloud": []}}, "ormap store: field ('f', 'gcounter') appears twice"),
    ('bcounter', [], 'bcounter: expected dict, got []'),
    ('bcounter', {'inc': {}}, "bcounter: expected keys 'inc', 'dec' and 'moved', got ['inc']"),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': {}}, 'bcounter moved: expected list, got {}'),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': [['a', 'b']]}, "bcounter: each transfer is [from, to, n], got ['a', 'b']"),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': [['a', '', 1]]}, "bcounter: each transfer is [from, to, n], got ['a', '', 1]"),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': [[1, 'b', 1]]}, "bcounter: each transfer is [from, to, n], got [1, 'b', 1]"),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': [['a\x1f', 'b', 1]]}, "bcounter: each transfer is [from, to, n], got ['a\\x1f', 'b', 1]"),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': ['ab1']}, "bcounter: each transfer is [from, to, n], got 'ab1'"),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': [['a', 'b', 'x']]}, "bcounter: VersionVector: counter of replica 'a\\x1fb' must be an integer, got 'x'"),
    ('bcounter', {'inc': {}, 'dec': {}, 'moved': [['a', 'b', -1]]}, "bcounter: VersionVector: counter of replica 'a\\x1fb' must be >= 0, got -1"),
    ('bcounter', {'inc': [], 'dec': {}, 'moved': []}, 'bcounter: version vector must be a JSON object of replica -> counter, got list'),
    ('bcounter', {'inc': {}, 'dec': {'r': -1}, 'moved': []}, "bcounter: VersionVector: counter of replica 'r' must be >= 0, got -1"),
    ('ormap', {'store': [['hits', 1, [['r1', 1, {'r1': 2}]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'ormap field type: expected str, got 1'),
    ('ormap', {'store': [['hits', 'gcounter', [['r1', 'x', {'r1': 2}]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, "gcounter field counter: expected int, got 'x'"),
    ('ormap', {'store': [['hits', 'gcounter', [[1, 1, {'r1': 2}]]]], 'context': {'vv': {'r1': 1}, 'cloud': []}}, 'gcounter field replica: expected str, got 1'),
    ('lww', {'time': '000000000000005.0000000000', 'actor': 'r', 'value': NAN}, 'lww value: must be a JSON value (null, bool, number, string, list, object): Out of range float values are not JSON compliant'),
]


@pytest.mark.parametrize(("type_name", "state", "message"), BAD_STATES)
def test_a_malformed_state_is_refused_naming_where(type_name: str, state: Any, message: str) -> None:
    with pytest.raises(ValueError) as e:
        TYPES[type_name].from_json(state)
    assert str(e.value) == message


BAD_OPS: list[tuple[Any, ...]] = [
    ('gcounter', 'nope', None, 'op', "op: unknown op 'nope' for a gcounter; use one of: inc"),
    ('gcounter', 'inc', 0, 'arg', 'arg: inc takes a positive integer up to 9223372036854775807 (default 1), got 0'),
    ('gcounter', 'inc', 'x', 'arg', "arg: inc takes a positive integer up to 9223372036854775807 (default 1), got 'x'"),
    ('gcounter', 'inc', 9223372036854775808, 'arg', 'arg: inc takes a positive integer up to 9223372036854775807 (default 1), got 9223372036854775808'),
    ('pncounter', 'nope', None, 'op', "op: unknown op 'nope' for a pncounter; use one of: inc, dec"),
    ('pncounter', 'dec', -1, 'arg', 'arg: dec takes a positive integer up to 9223372036854775807 (default 1), got -1'),
    ('pncounter', 'inc', True, 'arg', 'arg: inc takes a positive integer up to 9223372036854775807 (default 1), got True'),
    ('flag', 'enable', 1, 'arg', 'arg: enable takes no arg (pass null), got 1'),
    ('flag', 'disable', 'x', 'arg', "arg: disable takes no arg (pass null), got 'x'"),
    ('flag', 'toggle', None, 'op', "op: unknown op 'toggle' for a flag; use one of: enable, disable"),
    ('orset', 'add', NAN, 'arg', 'arg: must be a JSON value (null, bool, number, string, list, object): Out of range float values are not JSON compliant'),
    ('orset', 'add_all', 'x', 'arg', "arg: add_all takes a list of JSON values, got 'x'"),
    ('orset', 'remove_all', 1, 'arg', 'arg: remove_all takes a list of JSON values, got 1'),
    ('orset', 'pop', None, 'op', "op: unknown op 'pop' for a orset; use one of: add, remove, add_all, remove_all"),
    ('mvreg', 'set', NAN, 'arg', 'arg: must be a JSON value (null, bool, number, string, list, object): Out of range float values are not JSON compliant'),
    ('lww', 'set', INF, 'arg', 'arg: must be a JSON value (null, bool, number, string, list, object): Out of range float values are not JSON compliant'),
    ('mvreg', 'get', None, 'op', "op: unknown op 'get' for a mvreg; use one of: set"),
    ('ormap', 'update', 'x', 'arg', 'arg: update takes {"field": name, "type": type name, "op": op, "arg": arg}, got \'x\''),
    ('ormap', 'update', {'field': 1, 'type': 'gcounter', 'op': 'inc'}, 'arg', 'arg: the field name must be a string, got 1'),
    ('ormap', 'update', {'field': 'f', 'type': 'nope', 'op': 'inc'}, 'arg', "arg: unknown CRDT type 'nope' for field 'f'; use one of: gcounter, pncounter, lww, mvreg, orset, flag, ormap"),
    ('ormap', 'update', {'field': 'f', 'type': 'gcounter', 'op': 1}, 'arg', "arg: the op of field 'f' must be a string, got 1"),
    ('ormap', 'update', {'field': 'f', 'type': 'gcounter', 'op': 'inc', 'x': 1}, 'arg', 'arg: update takes {"field": name, "type": type name, "op": op, "arg": arg}, got {\'field\': \'f\', \'type\': \'gcounter\', \'op\': \'inc\', \'x\': 1}'),
    ('ormap', 'update', {'field': 'f', 'type': 'gcounter', 'op': 'nope'}, 'arg', "arg: field 'f' (gcounter): op: unknown op 'nope' for a gcounter; use one of: inc"),
    ('ormap', 'remove', 1, 'arg', 'arg: remove takes a field name (a string), got 1'),
    ('ormap', 'nope', None, 'op', "op: unknown op 'nope' for a ormap; use one of: update, remove"),
    ('lww', 'get', 1, 'op', "op: unknown op 'get' for a lww; use one of: set"),
    ('bcounter', 'bogus', 1, 'op', "op: unknown op 'bogus' for a bcounter; use one of: inc, dec, transfer"),
    ('bcounter', 'inc', 0, 'arg', 'arg: inc takes a positive integer up to 9223372036854775807 (default 1), got 0'),
    ('bcounter', 'dec', 0, 'arg', 'arg: dec takes a positive integer up to 9223372036854775807 (default 1), got 0'),
    ('bcounter', 'transfer', {'to': 'r2', 'n': 0}, 'arg', 'arg: transfer takes a positive integer up to 9223372036854775807 (default 1), got 0'),
    ('bcounter', 'transfer', 3, 'arg', 'arg: transfer takes {"to": REPLICA, "n": N}'),
    ('bcounter', 'transfer', {'to': '', 'n': 1}, 'arg', "arg: transfer needs another replica's id in 'to', got ''"),
    ('bcounter', 'transfer', {'to': 5, 'n': 1}, 'arg', "arg: transfer needs another replica's id in 'to', got 5"),
    ('ormap', 'update', {'field': 'f', 'type': 'gcounter', 'op': 'inc', 'arg': 0}, 'arg', "arg: field 'f' (gcounter): arg: inc takes a positive integer up to 9223372036854775807 (default 1), got 0"),
]


@pytest.mark.parametrize(("type_name", "op", "arg", "field", "message"), BAD_OPS)
def test_a_bad_operation_is_invalid_naming_the_op_and_what_it_takes(type_name: str, op: str, arg: Any, field: str, message: str) -> None:
    state = TYPES[type_name].new()
    with pytest.raises(Invalid) as e:
        state.update(op, arg, "r1", CTX)
    assert (e.value.field, e.value.message) == (field, message)
    assert state == TYPES[type_name].new()  # a refused op changes nothing


@pytest.mark.parametrize(("type_name", "op"), [("gcounter", "inc"), ("pncounter", "inc"), ("pncounter", "dec")])
def test_a_replica_count_stops_at_the_bound_naming_the_op(type_name: str, op: str) -> None:
    s = TYPES[type_name].new()
    s = s.merge(s.update(op, COUNT_MAX - 1, "r1", CTX))
    s = s.merge(s.update(op, 1, "r1", CTX))  # exactly the bound is allowed
    with pytest.raises(Invalid) as e:
        s.update(op, 1, "r1", CTX)
    assert e.value.message == f"arg: {op} 1 would take this replica's count past {COUNT_MAX}; use a smaller step or another key"
    other = s.update(op, 5, "r2", CTX)  # the bound is per replica
    assert other.value() != s.value()


def test_a_bounded_counter_stores_its_transfers_and_reads_them_back() -> None:
    """The stored form of a bounded counter with a transfer, exactly, and back: the rights
    moved stay with the replica they went to (a replica that only ever received rights is
    among the shares)."""
    from comity.crdt import BCounter

    c = BCounter.new().update("inc", 5, "r1").update("transfer", {"to": "r2", "n": 3}, "r1").update("dec", 1, "r2")
    assert c.to_json() == {"inc": {"r1": 5}, "dec": {"r2": 1}, "moved": [["r1", "r2", 3]]}
    back = BCounter.from_json(c.to_json())
    assert back == c and hash(back) == hash(c) and back.to_json() == c.to_json()
    assert back.shares() == {"r1": 2, "r2": 2} and back.value() == 4
    assert back.rights("r2") == 2 and back.rights("r3") == 0
    spent = back.update("dec", 2, "r2")
    assert spent.shares() == {"r1": 2} and spent.value() == 2


def test_an_unknown_type_lists_every_type_by_name() -> None:
    from comity.crdt import crdt_type

    with pytest.raises(Invalid) as e:
        crdt_type("hashmap")
    assert e.value.field == "type" and e.value.message == "type: unknown CRDT type 'hashmap'; use one of: " + ", ".join(TYPES)


def _apply(state: Any, op: str, arg: Any, actor: str) -> Any:
    return state.merge(state.update(op, arg, actor, CTX))


def test_an_lww_write_needs_an_encodable_hlc_time() -> None:
    from comity.crdt import LWWRegister

    with pytest.raises(Invalid) as e:
        LWWRegister.new().update("set", 1, "r1")
    assert (e.value.field, e.value.message) == ("time", "time: an lww register orders writes by HLC time: pass ctx=UpdateContext(time=...)")
    with pytest.raises(Invalid) as e:
        LWWRegister.new().update("set", 1, "r1", UpdateContext(time=HLCTimestamp(10**15, 0)))
    assert (e.value.field, e.value.message) == ("time", "time: HLC timestamp (1000000000000000, 0) is outside the encodable range")


def test_an_empty_actor_is_invalid_saying_what_an_actor_is() -> None:
    with pytest.raises(Invalid) as e:
        TYPES["gcounter"].new().update("inc", 1, "", CTX)
    assert (e.value.field, e.value.message) == ("actor", "actor: the actor must be a non-empty replica id, got ''")


def test_one_increment_of_exactly_the_bound_is_allowed() -> None:
    assert _apply(TYPES["gcounter"].new(), "inc", COUNT_MAX, "r1").value() == COUNT_MAX


def test_rights_add_up_across_repeated_increments_and_transfers() -> None:
    from comity.crdt import BCounter

    c = BCounter.new()
    for op, arg, actor in [("inc", 6, "r1"), ("inc", 4, "r1"), ("transfer", {"to": "r2", "n": 3}, "r1"),
                           ("transfer", {"to": "r2", "n": 2}, "r1"), ("transfer", {"to": "r3", "n": 1}, "r1"),
                           ("inc", 4, "r3"), ("transfer", {"to": "r2", "n": 1}, "r3")]:  # fmt: skip
        c = _apply(c, op, arg, actor)
    assert c.value() == 14 and c.shares() == {"r1": 4, "r2": 6, "r3": 4}
    assert c.to_json()["moved"] == [["r1", "r2", 5], ["r1", "r3", 1], ["r3", "r2", 1]]


def test_replica_ids_with_spaces_keep_their_rights() -> None:
    from comity.crdt import BCounter

    c = _apply(_apply(BCounter.new(), "inc", 5, "site a"), "transfer", {"to": "site b", "n": 2}, "site a")
    assert c.shares() == {"site a": 3, "site b": 2} and c.rights("site b") == 2
    assert c.to_json()["moved"] == [["site a", "site b", 2]]
    assert BCounter.from_json(c.to_json()) == c


def test_out_of_rights_says_who_holds_what() -> None:
    from comity.crdt import BCounter
    from comity.crdt.bcounter import OutOfRights

    c = _apply(BCounter.new(), "inc", 3, "r1")
    with pytest.raises(OutOfRights) as e:
        c.update("dec", 5, "r1", CTX)
    assert (e.value.actor, e.value.have, e.value.need, e.value.value) == ("r1", 3, 5, 3)
    assert str(e.value) == "replica r1 holds 3 of the counter's rights; 5 needed (value 3)"


def test_states_differing_in_one_part_are_not_equal() -> None:
    from comity.causal._vv import Dot
    from comity.causal import VersionVector
    from comity.crdt import BCounter, ORSet, PNCounter
    from comity.crdt._dots import DotContext

    b = _apply(BCounter.new(), "inc", 3, "r1")
    assert _apply(b, "transfer", {"to": "r2", "n": 1}, "r1") != b  # the same incs and decs, rights moved
    p = _apply(PNCounter.new(), "inc", 2, "r1")
    assert _apply(p, "dec", 1, "r1") != p
    vv = VersionVector({"r1": 1})
    assert DotContext(vv) != DotContext(vv, [Dot("r2", 3)]) and DotContext(vv) == DotContext(vv)
    removed = _apply(_apply(ORSet.new(), "add", "x", "r1"), "remove", "x", "r1")
    assert removed.value() == ORSet.new().value() and removed != ORSet.new()  # the same elements, more seen


def test_a_malformed_dot_is_refused_as_a_dot_by_default() -> None:
    from comity.crdt._dots import dot_from_json

    with pytest.raises(ValueError) as e:
        dot_from_json("x")
    assert str(e.value) == "dot: a dot is [replica, counter], got 'x'"


def test_expect_refuses_a_bool_for_an_int_and_names_every_kind_of_a_tuple() -> None:
    from comity.crdt._protocol import expect

    with pytest.raises(ValueError) as e:
        expect(True, int, "n")
    assert str(e.value) == "n: expected int, got True"
    assert expect(True, bool, "n") is True
    with pytest.raises(ValueError) as e:
        expect("x", (int, float), "n")
    assert str(e.value) == "n: expected int or float, got 'x'"


def test_canonical_json_has_sorted_keys_and_no_spaces() -> None:
    from comity.crdt._protocol import canonical

    assert canonical({"b": [1, 2], "a": None}) == '{"a":null,"b":[1,2]}'


def test_an_ormap_reads_its_fields_back_and_lists_no_empty_one() -> None:
    from comity.crdt import ORMap

    m = _apply(ORMap.new(), "update", {"field": "f", "type": "gcounter", "op": "inc", "arg": 2}, "r1")
    back = ORMap.from_json(m.to_json())
    assert back == m and back.value() == m.value() == {"f": 2}
    # adding no elements to a field changes nothing: its delta lists no field, and reads back
    delta = m.update("update", {"field": "g", "type": "orset", "op": "add_all", "arg": []}, "r1", CTX)
    assert delta.to_json()["store"] == []
    assert ORMap.from_json(delta.to_json()) == delta
