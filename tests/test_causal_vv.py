"""Laws of VersionVector: a join-semilattice under merge, ordered by descends."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import comity.causal
from comity.causal import Dot, Ordering, VersionVector

REPLICAS = ["a", "b", "c", "d"]

vvs = st.dictionaries(st.sampled_from(REPLICAS), st.integers(0, 5)).map(VersionVector)


def test_public_surface() -> None:
    assert comity.causal.__all__ == ["Dot", "Ordering", "VersionVector", "DVVSet", "HLC", "HLCTimestamp"]


def test_zero_counters_are_omitted() -> None:
    v = VersionVector({"b": 2, "a": 0, "c": 1})
    assert v == VersionVector({"c": 1, "b": 2})
    assert hash(v) == hash(VersionVector({"c": 1, "b": 2}))
    assert len(v) == 2
    assert list(v) == ["b", "c"]
    assert list(v.items()) == [("b", 2), ("c", 1)]
    assert v.get("a") == 0 and v.get("zz") == 0
    assert v.to_json() == {"b": 2, "c": 1}
    assert repr(v) == "VersionVector({'b': 2, 'c': 1})"


def test_compare_examples() -> None:
    a = VersionVector({"a": 1})
    ab = VersionVector({"a": 1, "b": 1})
    b = VersionVector({"b": 1})
    assert a.compare(ab) is Ordering.BEFORE
    assert ab.compare(a) is Ordering.AFTER
    assert a.compare(b) is Ordering.CONCURRENT
    assert a.compare(VersionVector({"a": 1})) is Ordering.EQUAL
    assert VersionVector().compare(a) is Ordering.BEFORE


@settings(max_examples=300)
@given(vvs, vvs)
def test_merge_commutative(a: VersionVector, b: VersionVector) -> None:
    assert a.merge(b) == b.merge(a)


@settings(max_examples=300)
@given(vvs, vvs, vvs)
def test_merge_associative(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@settings(max_examples=300)
@given(vvs)
def test_merge_idempotent(a: VersionVector) -> None:
    assert a.merge(a) == a
    assert a.merge(VersionVector()) == a


@settings(max_examples=300)
@given(vvs, vvs)
def test_merge_is_least_upper_bound(a: VersionVector, b: VersionVector) -> None:
    m = a.merge(b)
    assert m.descends(a) and m.descends(b)
    for r in m:  # least: each entry comes from one side
        assert m.get(r) == max(a.get(r), b.get(r))


@settings(max_examples=300)
@given(vvs, vvs)
def test_compare_consistent_with_descends(a: VersionVector, b: VersionVector) -> None:
    o = a.compare(b)
    flipped = {
        Ordering.EQUAL: Ordering.EQUAL,
        Ordering.BEFORE: Ordering.AFTER,
        Ordering.AFTER: Ordering.BEFORE,
        Ordering.CONCURRENT: Ordering.CONCURRENT,
    }
    assert b.compare(a) is flipped[o]  # antisymmetric
    assert (o is Ordering.EQUAL) == (a == b)
    assert (o in (Ordering.EQUAL, Ordering.AFTER)) == a.descends(b)
    assert (o in (Ordering.EQUAL, Ordering.BEFORE)) == b.descends(a)
    assert (o in (Ordering.EQUAL, Ordering.AFTER)) == (a.merge(b) == a)
    if a == b:
        assert hash(a) == hash(b)


@settings(max_examples=300)
@given(vvs, st.sampled_from(REPLICAS + ["e"]))
def test_increment_issues_a_new_dot(a: VersionVector, replica: str) -> None:
    b, dot = a.increment(replica)
    assert dot == Dot(replica, a.get(replica) + 1)
    assert not a.contains(dot)
    assert b.contains(dot)
    assert b.compare(a) is Ordering.AFTER
    assert all(b.get(r) == a.get(r) for r in a if r != replica)
    assert list(b) == sorted(b)


@settings(max_examples=300)
@given(vvs)
def test_json_round_trip(a: VersionVector) -> None:
    obj = a.to_json()
    assert VersionVector.from_json(obj) == a
    assert VersionVector.from_json(json.loads(json.dumps(obj))) == a


@pytest.mark.parametrize(
    "bad",
    [None, [], [["a", 1]], "a", 3, {"a": -1}, {"a": 1.0}, {"a": "1"}, {"a": True}, {"a": None}, {1: 1}],
)
def test_from_json_rejects_bad_shapes(bad: Any) -> None:
    with pytest.raises(ValueError):
        VersionVector.from_json(bad)


def test_from_json_error_names_the_replica() -> None:
    with pytest.raises(ValueError, match="'b'"):
        VersionVector.from_json({"a": 1, "b": -2})
