"""The sequence allocator's edges, in process (for the mutants the race tests cannot see:
tools/mutation.py runs only in-process tests): numbers from 1, retries, floors that only
ever raise, how a unit's key is spelled, what an allocation records."""

from __future__ import annotations

import pytest

import comity
from comity.coord import allocate, next_number
from comity.coord.sequences import ALLOC_PREFIX, Allocation, raise_to, unit_key
from comity.errors import StaleContext


def test_a_new_sequence_starts_at_one_and_a_retried_request_gets_its_number(store: comity.Store) -> None:
    s = store.session("alice")
    assert [next_number(s, "fz"), next_number(s, "fz")] == [1, 2]
    first = next_number(s, "fz", request_id="r-7")
    assert first == 3 and next_number(s, "fz", request_id="r-7") == 3  # the retry, not a fourth number
    assert next_number(s, "fz") == 4 and next_number(s, "other") == 1


def test_a_floor_raises_a_sequence_and_never_lowers_it(store: comity.Store) -> None:
    s = store.session("alice")
    raise_to(s, "fz", 10)
    assert s.get("@seq/fz").values == [10]
    assert [(e["op"], e["value"], e["agent"]) for e in s.log("@seq/fz")] == [("seed", 10, "alice")]
    head = s.head()
    raise_to(s, "fz", 10)  # already there: nothing written
    raise_to(s, "fz", 3)  # below: nothing written
    assert s.head() == head
    assert next_number(s, "fz") == 11
    raise_to(s, "fz", 11)
    assert s.head() == head + 1 and next_number(s, "fz") == 12


def test_a_units_key_spells_every_character_safely() -> None:
    assert ALLOC_PREFIX == "@alloc/"
    assert unit_key("migrations/db", "T-1/add users%") == "@alloc/migrations/db/T-1~2Fadd~20users~25"
    assert unit_key("m", "a.b_c-d") == "@alloc/m/a.b_c-d"
    assert unit_key("m", "") == "@alloc/m/~"


def test_an_allocation_records_who_took_it_for_which_unit(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    plain = allocate(alice, "db")
    assert plain == Allocation(1) and plain.held is False and plain.record is None
    got = allocate(alice, "db", unit="T-1/x", detail={"worktree": "/w/a"})
    assert got.number == 2 and got.held is False
    assert got.record == {"sequence": "db", "unit": "T-1/x", "number": 2, "agent": "alice", "worktree": "/w/a"}
    assert alice.get(unit_key("db", "T-1/x")).values == [got.record]
    again = allocate(bob, "db", unit="T-1/x", floor=50)  # held: the floor does not move it
    assert (again.number, again.held, again.record) == (2, True, got.record)
    assert allocate(bob, "db", floor=50).number == 51


def test_a_sequence_that_keeps_moving_while_seeding_says_so(store: comity.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    s = store.session("alice")
    real = s.txn

    def always_stale(*args: object, **kwargs: object) -> object:
        raise StaleContext("moved", key="@seq/fz")

    monkeypatch.setattr(s, "txn", always_stale)
    with pytest.raises(StaleContext) as e:
        raise_to(s, "fz", 5)
    assert e.value.message == "sequence 'fz' kept changing while seeding; retry"
    monkeypatch.setattr(s, "txn", real)


def test_a_lease_in_json_and_what_system_leases_may_do(store: comity.Store) -> None:
    """A lease's JSON names its four parts; only comity's own layers (``system``) take
    leases on '@' keys, and their lost races are theirs to record, not ``write.refused``."""
    from comity.coord.leases import Leases
    from comity.errors import Invalid

    alice, bob = store.session("alice"), store.session("bob")
    with pytest.raises(Invalid):
        Leases(alice).acquire("@x/1")
    mine = Leases(alice, system=True).acquire("@x/1", 30)
    assert mine.to_json() == {"resource": "@x/1", "holder": "alice", "token": 1, "expires": mine.expires}
    renewed = Leases(alice, system=True).renew("@x/1", mine.token, 45)
    assert renewed.to_json() == {"resource": "@x/1", "holder": "alice", "token": 1, "expires": renewed.expires}
    assert renewed.expires >= mine.expires + 15
    head = alice.head()
    with pytest.raises(StaleContext):
        Leases(bob, system=True).acquire("@x/1")
    assert alice.head() == head  # a system refusal is not logged for it
    Leases(alice).acquire("locks/y", 30)
    head = alice.head()
    with pytest.raises(StaleContext):
        Leases(bob).acquire("locks/y")
    assert [e["op"] for e in alice.log(after=head)] == ["write.refused"]
