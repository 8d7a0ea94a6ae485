"""The kernel's edges, written for the mutants the laws let through (docs/mutation.md):
errors that name what is wrong, boundaries (a counter of 0, a drift of 0 ms, equal keys
in ``last``), and the stored form of a DVVSet."""

from __future__ import annotations

import pytest

from comity.causal import HLC, DVVSet, HLCTimestamp, VersionVector
from comity.causal._dvvset import _merge
from comity.causal._vv import Dot
from comity.runtime import VirtualClock


# ------------------------------------------------------------------ HLC timestamps


def test_an_hlc_timestamp_out_of_range_says_so() -> None:
    with pytest.raises(ValueError, match=r"HLC timestamp \(1000000000000000, 0\) is outside the encodable range"):
        HLCTimestamp(10**15, 0).encode()


@pytest.mark.parametrize(
    "bad",
    [
        "00000000000001a.0000000001",  # a letter in the wall part
        "000000000000012.000000000a",  # a letter in the logical part
        "000000000000012.a000000000",  # ... at its first place
        "000000000000012.\u0661000000000",  # a non-ASCII digit at the logical part's first place
        "000000000000012.٠٠٠٠٠٠٠٠٠١",  # Arabic-Indic digits are digits, not ASCII
        "٠٠٠٠٠٠٠٠٠٠٠٠٠١٢.0000000001",
        "000000000000012x0000000001",
        "00000000000012.00000000001",  # the dot one place early
    ],
)
def test_decoding_anything_but_ascii_digits_dot_digits_is_refused_naming_the_format(bad: str) -> None:
    with pytest.raises(ValueError) as e:
        HLCTimestamp.decode(bad)
    assert str(e.value) == f"not an encoded HLC timestamp: {bad!r} (expected 15 digits, '.', 10 digits)"


def test_decoding_reads_both_parts() -> None:
    assert HLCTimestamp.decode("000000000000012.0000000034") == HLCTimestamp(12, 34)


def test_the_greatest_encodable_timestamp_round_trips() -> None:
    top = HLCTimestamp(10**15 - 1, 10**10 - 1)
    assert top.encode() == "9" * 15 + "." + "9" * 10 and HLCTimestamp.decode(top.encode()) == top


def test_a_drift_bound_of_zero_is_allowed_and_a_negative_one_is_not() -> None:
    HLC(VirtualClock(), max_drift_ms=0)
    with pytest.raises(ValueError, match=r"^max_drift_ms must be >= 0 or None, got -1$"):
        HLC(VirtualClock(), max_drift_ms=-1)


def test_a_remote_time_too_far_ahead_says_by_how_much() -> None:
    clock = VirtualClock(1000.0)
    hlc = HLC(clock, max_drift_ms=10)
    with pytest.raises(ValueError) as e:
        hlc.update(HLCTimestamp(1_000_000 + 50, 0))
    assert "is 50 ms ahead of physical time 1000000 ms" in str(e.value)


# -------------------------------------------------------------- version vectors


def test_a_dot_with_counter_zero_is_in_no_vector() -> None:
    vv = VersionVector({"a": 3})
    assert not vv.contains(Dot("a", 0)) and vv.contains(Dot("a", 1)) and vv.contains(Dot("a", 3))
    assert not vv.contains(Dot("a", 4))


def test_merged_vectors_are_equal_hash_alike_and_list_replicas_in_order() -> None:
    a, b = VersionVector({"b": 1}), VersionVector({"a": 2, "c": 1})
    ab, ba = a.merge(b), b.merge(a)
    assert ab == ba and hash(ab) == hash(ba) and {ab: 1}[ba] == 1
    assert list(ab.to_json()) == ["a", "b", "c"] == list(ba.to_json())
    same = a.merge(VersionVector({"b": 1}))  # nothing grew
    assert same == a and hash(same) == hash(a)
    grown = VersionVector({"a": 1, "b": 1}).merge(VersionVector({"a": 2}))
    assert grown.to_json() == {"a": 2, "b": 1} and hash(grown) == hash(VersionVector({"b": 1, "a": 2}))


def test_vector_errors_name_the_replica_and_the_counter() -> None:
    with pytest.raises(ValueError, match=r"^VersionVector: replica id must be a string, got 1$"):
        VersionVector({1: 2})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"^VersionVector: counter of replica 'a' must be an integer, got 'x'$"):
        VersionVector({"a": "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"^version vector must be a JSON object of replica -> counter, got list$"):
        VersionVector.from_json([1])


def test_compare_tells_each_relation() -> None:
    a, b = VersionVector({"a": 1}), VersionVector({"b": 1})
    assert a.compare(a).value == "equal"
    assert a.compare(a.merge(b)).value == "before" and a.merge(b).compare(a).value == "after"
    assert a.compare(b).value == "concurrent" and b.compare(a).value == "concurrent"
    assert VersionVector({"a": 2, "b": 1}).compare(VersionVector({"a": 1, "b": 2})).value == "concurrent"
    assert VersionVector({"a": 1, "b": 1}).compare(VersionVector({"a": 1, "b": 2})).value == "before"


# ----------------------------------------------------------------------- DVVSet


def test_equal_compares_replicas_counters_and_value_counts() -> None:
    base = DVVSet([("a", 2, ["x"])])
    assert base.equal(DVVSet([("a", 2, ["other value"])]))  # values ignored
    assert not base.equal(DVVSet([("b", 2, ["x"])]))  # another replica
    assert not base.equal(DVVSet([("a", 3, ["x"])]))  # another counter
    assert not base.equal(DVVSet([("a", 2, ["x", "y"])]))  # another number of values
    assert not base.equal(DVVSet([("a", 2, ["x"]), ("b", 1, ["y"])]))


def test_dvvset_equality_needs_entries_and_anonymous_values_alike() -> None:
    a = DVVSet([("a", 1, ["x"])], ["v"])
    assert a == DVVSet([("a", 1, ["x"])], ["v"])
    assert a != DVVSet([("a", 1, ["x"])], ["w"]) and a != DVVSet([("b", 1, ["x"])], ["v"])
    assert hash(a) == hash(DVVSet([("a", 1, ["x"])], ["v"]))
    assert repr(a) == "DVVSet([('a', 1, ['x'])], ['v'])"


def test_the_stored_form_round_trips() -> None:
    d = DVVSet([("a", 2, ["x", "y"]), ("b", 1, [{"k": 1}])], ["anon"])
    assert DVVSet.from_stored_json(d.to_json()) == d
    assert DVVSet.from_stored_json({"e": [["a", 1, ["x"]]]}) == DVVSet([("a", 1, ["x"])])


def test_update_needs_one_anonymous_value_and_says_which_call() -> None:
    server = DVVSet.new("x").update("r")
    for op, call in (("update", lambda c: c.update("r")), ("update_with", lambda c: c.update_with(server, "r"))):
        with pytest.raises(ValueError) as e:
            call(DVVSet([("a", 1, ["x"])]))
        assert str(e.value) == (f"DVVSet.{op} needs a client clock with exactly one anonymous value "
                                "(from DVVSet.new or new_with), got 0")  # fmt: skip


def test_last_prefers_the_later_of_equal_keys_and_says_when_there_is_none() -> None:
    d = DVVSet([("a", 1, [("t", 1)]), ("b", 1, [("t", 1)])])
    assert d.last(lambda v: v[1]) == ("t", 1)
    kept = d.lww(lambda v: v[1])
    assert kept.values() == [("t", 1)] and kept.ids() == ["a", "b"]
    assert kept.entries[1][2] == (("t", 1),) and kept.entries[0][2] == ()  # ties go to the later entry
    anon = DVVSet([("a", 1, [1])], [1])
    assert anon.lww(lambda v: v).anonymous == (1,) and anon.lww(lambda v: v).entries[0][2] == ()
    with pytest.raises(ValueError, match=r"^a DVVSet with no values has no last value$"):
        DVVSet.empty().last(lambda v: v)


def test_sync_all_of_nothing_is_empty() -> None:
    assert DVVSet.sync_all([]) == DVVSet.empty()
    one = DVVSet([("a", 1, ["x"])])
    assert DVVSet.sync_all([one]) == one


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("a", 1)], "DVVSet: entry 0 must be [replica, counter, [values...]], got ('a', 1)"),
        ([(1, 1, [])], "DVVSet: entry 0: replica id must be a string, got 1"),
        ([("a", -1, [])], "DVVSet: entry 0 ('a'): counter must be an integer >= 0, got -1"),
        ([("a", 1, "x")], "DVVSet: entry 0 ('a'): values must be a list, got str"),
        ([("b", 1, []), ("a", 1, [])], "DVVSet: entries must be sorted by replica without repeats; 'a' follows 'b'"),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(entries: list[object], message: str) -> None:
    with pytest.raises(ValueError) as e:
        DVVSet(entries)  # type: ignore[arg-type]
    assert str(e.value) == message


def test_more_values_than_dots_is_refused() -> None:
    with pytest.raises(ValueError) as e:
        DVVSet([("a", 1, ["x", "y"])])
    assert str(e.value) == "DVVSet: entry 0 ('a') holds 2 values but its counter is 1; each value needs its own dot"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "DVVSet JSON must be an object with keys 'e' and 'a', got list"),
        ({"a": []}, "DVVSet JSON lacks 'e' (the entries list)"),
        ({"e": {}, "a": []}, "DVVSet JSON 'e' must be a list, got dict"),
        ({"e": [], "a": {}}, "DVVSet JSON 'a' must be a list, got dict"),
        ({"e": [["a", "1", []]], "a": []}, "DVVSet JSON: entry 0 ('a'): counter must be an integer >= 0, got '1'"),
    ],
)
def test_bad_json_is_refused_saying_what_is_wrong(obj: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        DVVSet.from_json(obj)
    assert str(e.value) == message


def test_merging_entries_keeps_the_larger_counter_and_the_larger_superseded_prefix() -> None:
    # dvvset:merge/5, case by case: (replica, counter, newest values first)
    assert _merge(("r", 5, ("e", "d")), ("r", 3, ("c",))) == ("r", 5, ("e", "d"))
    assert _merge(("r", 5, ("e",)), ("r", 5, ("e", "d"))) == ("r", 5, ("e",))
    assert _merge(("r", 5, ("e", "d", "c")), ("r", 4, ("d",))) == ("r", 5, ("e", "d"))
    assert _merge(("r", 3, ("c",)), ("r", 5, ("e", "d"))) == ("r", 5, ("e", "d"))
    assert _merge(("r", 4, ("d",)), ("r", 5, ("e", "d", "c"))) == ("r", 5, ("e", "d"))
    assert _merge(("r", 4, ("d", "c", "b")), ("r", 5, ("e", "d", "c"))) == ("r", 5, ("e", "d", "c"))


def test_an_event_of_a_new_replica_goes_in_replica_order() -> None:
    d = DVVSet([("a", 1, ["x"]), ("c", 1, ["y"])])
    after = d.event(d.join(), "z", "b")
    assert after.ids() == ["a", "b", "c"]
    again = after.event(after.join(), "w", "b")
    assert [e for e in again.entries if e[0] == "b"] == [("b", 2, ("w",))]


def test_a_history_with_a_greater_counter_on_the_same_replicas_is_later() -> None:
    """dvvset:less over entries naming the same replicas: one counter ahead is enough."""
    older, newer = DVVSet([("a", 1, []), ("b", 2, [])]), DVVSet([("a", 1, []), ("b", 3, [])])
    assert older.less(newer) and not newer.less(older) and not older.less(older)


def test_a_sync_keeps_one_of_each_anonymous_value() -> None:
    assert DVVSet([], ["x", "x"]).sync(DVVSet()) == DVVSet([], ["x"])
    assert DVVSet([], ["x", "y", "x"]).sync(DVVSet()) == DVVSet([], ["x", "y"])
