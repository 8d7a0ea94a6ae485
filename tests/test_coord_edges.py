"""The coordination package's edges, in process (tools/mutation.py runs only in-process
tests, so the mutants the process races cannot see are killed here): leases' system flag
and listings; the sequence allocator's numbers, floors, units, the race for a unit
(interleaved through the store) and a replica's escrowed numbers; reservations' paths,
refusals in words, retries and the race between a read and its write; liveness' φ by hand,
its window and thresholds, and what ``agents`` and ``activity`` list."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest

import comity
from comity.coord import Leases, allocate, heartbeat, next_number, overlaps, release, reservations, reserve, reserve_block, sequences
from comity.coord.leases import DEFAULT_TTL_S, Lease
from comity.coord.liveness import AGENT_PREFIX, HEARTBEAT_OP, AgentStatus, PhiAccrual, activity, agents, phi_series, recent_events
from comity.coord.reservations import RESERVATIONS_KEY, Reservation, normalize
from comity.coord.sequences import ALLOC_PREFIX, Allocation, raise_to, unit_key
from comity.errors import Fenced, Invalid, LeaseExpired, NotFound, StaleContext
from comity.runtime import VirtualClock
from comity.store import Put

reservations_module = importlib.import_module("comity.coord.reservations")  # the package re-exports a function of that name


# ------------------------------------------------------------ sequences: numbers, floors, units


def test_a_new_sequence_starts_at_one_and_a_retried_request_gets_its_number(store: comity.Store) -> None:
    s = store.session("alice")
    assert [next_number(s, "fz"), next_number(s, "fz")] == [1, 2]
    first = next_number(s, "fz", request_id="r-7")
    assert first == 3 and next_number(s, "fz", request_id="r-7") == 3  # the retry, not a fourth number
    assert next_number(s, "fz") == 4 and next_number(s, "other") == 1


def test_a_request_id_reused_for_another_request_is_refused_not_replayed(store: comity.Store) -> None:
    """The caller's digest says what "the same request" is (the task board's add, say), not
    the Next it makes: the same id with another digest is another request."""
    s = store.session("alice")
    assert next_number(s, "fz", request_id="r-1", digest="add 'a'") == 1
    assert next_number(s, "fz", request_id="r-1", digest="add 'a'") == 1
    with pytest.raises(Invalid) as e:
        next_number(s, "fz", request_id="r-1", digest="add 'b'")
    assert e.value.field == "request_id"
    assert next_number(s, "fz") == 2


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
    assert (e.value.message, e.value.key) == ("sequence 'fz' kept changing while seeding; retry", "@seq/fz")
    monkeypatch.setattr(s, "txn", real)


def test_a_floor_of_one_is_written_and_numbers_start_above_it(store: comity.Store) -> None:
    s = store.session("alice")
    raise_to(s, "fresh", 1)
    assert s.get("@seq/fresh").values == [1]
    assert next_number(s, "fresh") == 2
    assert allocate(s, "other", floor=1).number == 2  # greater than the floor, even on a new sequence


def test_a_floor_raised_while_another_caller_takes_a_number_is_seeded_on_a_second_read(
    store: comity.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: bob takes a number between alice's read of the sequence and her seed.  Her
    write is refused (its context missed bob's); she reads again, and seeds above it."""
    alice, bob = store.session("alice"), store.session("bob")
    real = alice.get
    reads: list[str] = []

    def bob_between(key: str, **kw: Any) -> Any:
        got = real(key, **kw)
        reads.append(key)
        if len(reads) == 1:
            assert next_number(bob, "fz") == 1
        return got

    monkeypatch.setattr(alice, "get", bob_between)
    raise_to(alice, "fz", 10)
    monkeypatch.setattr(alice, "get", real)
    assert reads == ["@seq/fz", "@seq/fz"]
    assert next_number(alice, "fz") == 11


# ------------------------------------------------------------------------ leases


def test_a_lease_in_json_and_what_system_leases_may_do(store: comity.Store) -> None:
    """A lease's JSON names its four parts; only comity's own layers (``system``) take
    leases on '@' keys, and their lost races are theirs to record, not ``write.refused``."""
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


def test_a_system_lease_is_released_and_checked_as_system_and_its_refusals_are_not_logged(store: comity.Store) -> None:
    """``Leases(system=True)`` passes the flag on every verb: only comity's own layers may
    touch '@' resources, and their lost races are not recorded as ``write.refused``."""
    alice = store.session("alice")
    mine = Leases(alice, system=True).acquire("@x/1", 30)
    Leases(alice, system=True).check("@x/1", mine.token)
    with pytest.raises(Invalid):
        Leases(alice).check("@x/1", mine.token)  # not a system caller: '@' is not its to name
    with pytest.raises(Invalid):
        Leases(alice).release("@x/1", mine.token)
    head = alice.head()
    with pytest.raises(Fenced):
        Leases(alice, system=True).check("@x/1", mine.token + 1)
    assert alice.head() == head  # a system refusal is not logged
    Leases(alice, system=True).release("@x/1", mine.token)
    assert [e["op"] for e in alice.log("@lease/@x/1")] == ["acquire", "release"]
    head = alice.head()
    with pytest.raises(Fenced):
        Leases(alice, system=True).release("@x/1", mine.token + 1)
    with pytest.raises(Fenced):
        Leases(alice, system=True).check("@x/1", mine.token)  # released
    assert alice.head() == head
    # and a plain lease's refusals are logged, one each
    plain = Leases(alice).acquire("locks/y", 30)
    head = alice.head()
    with pytest.raises(Fenced):
        Leases(alice).release("locks/y", plain.token + 1)
    with pytest.raises(Fenced):
        Leases(alice).check("locks/y", plain.token + 1)
    assert [e["op"] for e in alice.log(after=head)] == ["write.refused", "write.refused"]


def test_a_leases_default_length_is_the_stores(store: comity.Store, clock: VirtualClock) -> None:
    from comity.store._txn import DEFAULT_LEASE_S

    assert DEFAULT_TTL_S == DEFAULT_LEASE_S
    t0 = clock.now()
    lease = Leases(store.session("alice")).acquire("build")
    assert lease.expires == t0 + DEFAULT_LEASE_S


def test_get_finds_the_lease_on_exactly_its_resource_and_under_lists_a_prefix(store: comity.Store, clock: VirtualClock) -> None:
    alice, bob = Leases(store.session("alice")), Leases(store.session("bob"))
    ab = alice.acquire("locks/ab", 10)
    assert alice.get("locks/a") == (None, clock.now())  # 'locks/ab' starts with it, but is another resource
    a = bob.acquire("locks/a", 20)
    b = alice.acquire("locks/b", 30)
    other = alice.acquire("other", 40)
    alice.release("locks/b", b.token)
    released = Lease("locks/b", None, b.token, clock.now())  # a release ends the lease now, keeping its token
    assert alice.get("locks/b") == (released, clock.now())
    assert alice.get("locks/a") == (a, clock.now())
    assert bob.get("locks/ab") == (ab, clock.now())
    clock.advance(5)
    listed, now = bob.under("locks/")
    assert now == clock.now()
    assert listed == [a, ab, released]  # by resource, released ones included
    assert bob.under("locks/", limit=2)[0] == [a, ab]
    assert bob.under("locks/", limit=1)[0] == [a]
    assert bob.under("")[0] == [a, ab, released, other]
    assert bob.under("nothing/")[0] == []


def test_a_renewal_keeps_the_length_it_was_acquired_with_unless_told(store: comity.Store, clock: VirtualClock) -> None:
    alice = Leases(store.session("alice"))
    lease = alice.acquire("build", 100)
    clock.advance(30)
    again = alice.renew("build", lease.token)
    assert (again.resource, again.holder, again.token, again.expires) == ("build", "alice", lease.token, clock.now() + 100)
    shorter = alice.renew("build", lease.token, 5)
    assert shorter.expires == clock.now() + 5
    clock.advance(5)
    with pytest.raises(LeaseExpired):
        alice.check("build", lease.token)


def test_a_steal_takes_a_held_lease_and_without_it_the_acquire_is_refused(store: comity.Store) -> None:
    alice, bob = Leases(store.session("alice")), Leases(store.session("bob"))
    a = alice.acquire("build", 100)
    with pytest.raises(StaleContext):
        bob.acquire("build", 100)
    got = bob.acquire("build", 100, steal=True)
    assert (got.holder, got.token) == ("bob", a.token + 1)


# ---------------------------------------------- sequences: the race for a unit, a replica's escrow


def test_allocate_refuses_a_unit_whose_key_holds_something_else(store: comity.Store) -> None:
    """Not a record: the unit's number cannot be known, so allocation is refused, not
    given a second number."""
    s = store.session("alice")
    key = unit_key("db", "T-9")
    s.txn(ops=[Put(key, "not a record")], system=True)
    with pytest.raises(StaleContext):
        allocate(s, "db", unit="T-9")
    assert s.get(key).values == ["not a record"]


def test_an_allocation_is_logged_as_one(store: comity.Store) -> None:
    s = store.session("alice")
    got = allocate(s, "db", unit="T-1")
    assert [(e["op"], e["agent"], e["value"]) for e in s.log(unit_key("db", "T-1"))] == [("allocate", "alice", got.record)]


def test_two_callers_racing_for_one_unit_both_get_the_number_recorded_first(store: comity.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race in-process: bob allocates for the unit after alice found it free and before
    she records her number.  Hers is refused; she gets bob's, and her own stays a gap."""
    alice, bob = store.session("alice"), store.session("bob")
    real = sequences.next_number
    raced: list[Any] = []

    def bob_first(session: comity.Session, name: str, **kw: Any) -> int:
        if session is alice and not raced:
            raced.append(allocate(bob, name, unit="T-1", detail={"by": "bob"}))
        return real(session, name, **kw)

    monkeypatch.setattr(sequences, "next_number", bob_first)
    got = allocate(alice, "db", unit="T-1", detail={"by": "alice"})
    monkeypatch.setattr(sequences, "next_number", real)
    (theirs,) = raced
    assert (theirs.number, theirs.held) == (1, False)
    assert (got.number, got.held, got.record) == (1, True, theirs.record)
    assert got.record == {"sequence": "db", "unit": "T-1", "number": 1, "agent": "bob", "by": "bob"}
    assert alice.get(unit_key("db", "T-1")).values == [theirs.record]
    assert next_number(alice, "db") == 3  # alice's 2 is a gap, never reissued


def test_a_race_lost_to_something_that_is_not_a_record_is_refused(store: comity.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    key = unit_key("db", "T-1")
    real = sequences.next_number

    def junk_first(session: comity.Session, name: str, **kw: Any) -> int:
        if session is alice and not bob.get(key).values:
            bob.txn(ops=[Put(key, ["junk"])], system=True)
        return real(session, name, **kw)

    monkeypatch.setattr(sequences, "next_number", junk_first)
    with pytest.raises(StaleContext) as e:
        allocate(alice, "db", unit="T-1")
    monkeypatch.setattr(sequences, "next_number", real)
    assert e.value.key == key
    assert alice.get(key).values == [["junk"]]


@pytest.fixture
def replica(store: comity.Store, tmp_path: Path, clock: VirtualClock) -> Any:
    from sync_support import make_replica

    r = make_replica(store, tmp_path / "replica.db", clock)
    yield r
    r.store.close()


def test_a_replica_spends_its_escrowed_numbers_first_then_asks_its_authority(store: comity.Store, replica: Any) -> None:
    here = replica.session("alice")
    block = reserve_block(here, "mig", 3)
    assert (block["sequence"], block["first"], block["last"], block["count"], block["escrowed"]) == ("mig", 1, 3, 3, 3)
    assert next_number(store.session("carol"), "mig") == 4  # the authority's next is past the block
    replica.wire.cut = True
    assert [next_number(here, "mig") for _ in range(3)] == [1, 2, 3]  # cut off: from the block, in order
    replica.wire.cut = False
    assert next_number(here, "mig") == 5  # the block is spent: from the authority
    assert next_number(store.session("carol"), "mig") == 6


def test_a_retried_block_reservation_gets_the_block_the_first_took(store: comity.Store, replica: Any) -> None:
    here = replica.session("alice")
    first = reserve_block(here, "mig", 2, request=("blk-1", "d1"))
    again = reserve_block(here, "mig", 2, request=("blk-1", "d1"))
    assert (again["first"], again["last"], again["escrowed"]) == (first["first"], first["last"], 2)
    other = reserve_block(here, "mig", 4)
    assert (other["first"], other["last"], other["escrowed"]) == (3, 6, 6)
    with pytest.raises(Invalid) as e:
        reserve_block(here, "mig", 0)
    assert e.value.field == "count"


# ---------------------------------------------------------------- reservations


def _why(e: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    return e.value.to_json()  # type: ignore[no-any-return]


def test_reserve_and_release_refuse_bad_calls_in_words(store: comity.Store) -> None:
    alice, nobody = store.session("alice"), store.session()
    cases: list[tuple[Any, dict[str, Any]]] = [
        (lambda: reserve(nobody, ["src/**"]), {"field": "agent", "message": "agent: reserving paths needs an agent name"}),
        (lambda: release(nobody, ["src/**"]), {"field": "agent", "message": "agent: releasing paths needs an agent name"}),
        (lambda: reserve(alice, []), {"field": "paths", "message": "paths: give at least one path or glob"}),
        (lambda: release(alice, []), {"field": "paths", "message": "paths: give at least one path or glob"}),
        (lambda: release(alice, "src/**"),  # type: ignore[arg-type]
         {"field": "paths", "message": "paths: give at least one path or glob"}),
        (lambda: reserve(alice, ["x"], ttl=0), {"field": "ttl", "message": "ttl: must be seconds in (0, 604800], got 0"}),
        (lambda: reserve(alice, ["x"], ttl=True), {"field": "ttl", "message": "ttl: must be seconds in (0, 604800], got True"}),
        (lambda: reserve(alice, [" "]), {"field": "paths", "message": "paths: each path or glob must be a non-empty string, e.g. 'src/app.py' or 'src/**'"}),
        (lambda: release(alice, [5]),  # type: ignore[list-item]
         {"field": "paths", "message": "paths: each path or glob must be a non-empty string, e.g. 'src/app.py' or 'src/**'"}),
        (lambda: reserve(alice, ["/etc/x"]), {"field": "paths", "message": "paths: '/etc/x' is absolute; use a path relative to the repository root"}),
        (lambda: reserve(alice, ["./."]), {"field": "paths", "message": "paths: './.' is empty or longer than 512 characters"}),
        (lambda: reserve(alice, ["a/../b"]), {"field": "paths", "message": "paths: 'a/../b': use a path relative to the repository, without '..'"}),
    ]
    head = alice.head()
    for call, want in cases:
        with pytest.raises(Invalid) as e:
            call()
        assert _why(e) == {"error": "invalid", **want}
    assert alice.head() == head


def test_a_path_is_normalized_before_it_is_compared(store: comity.Store) -> None:
    assert normalize("  ./src\\app.py ") == "src/app.py"
    assert normalize("././src//./a/") == "src/a"
    assert normalize("a" * 512) == "a" * 512
    with pytest.raises(Invalid) as e:
        normalize("a" * 513, "files")
    assert _why(e) == {"error": "invalid", "field": "files", "message": f"files: {'a' * 60!r} is empty or longer than 512 characters"}
    with pytest.raises(Invalid) as e:
        normalize("/" + "b" * 70, "files")
    assert e.value.message == f"files: {'/' + 'b' * 59!r} is absolute; use a path relative to the repository root"
    with pytest.raises(Invalid) as e:
        normalize("../" + "c" * 70)
    assert e.value.message == f"paths: {'../' + 'c' * 57!r}: use a path relative to the repository, without '..'"
    assert normalize("a b/c\x7f") == "a b/c\x7f"  # a space and DEL are characters of a name; below ' ' is not
    with pytest.raises(Invalid):
        normalize("a\x1fb")
    alice, bob = store.session("alice"), store.session("bob")
    (r,) = reserve(alice, ["src\\app.py", "./src/app.py"])  # one path, spelled twice
    assert r.pattern == "src/app.py"
    with pytest.raises(StaleContext):
        reserve(bob, ["src/app.py"])


def test_a_reservations_length_may_be_a_moment_or_a_week(store: comity.Store, clock: VirtualClock) -> None:
    (brief,) = reserve(store.session("alice"), ["a"], ttl=0.5)
    (week,) = reserve(store.session("alice"), ["b"], ttl=7 * 24 * 3600)
    assert (brief.expires, week.expires) == (clock.now() + 0.5, clock.now() + 604800)


def test_two_literal_segments_overlap_only_when_equal_and_a_literal_only_what_its_glob_matches() -> None:
    """Segment by segment: literals are compared, a literal is matched against a glob, and
    only two globs are judged by their literal ends."""
    for a, b in [("ab", "abab"), ("abc", "a?"), ("x.py", "x.py.py"), ("abc", "[ab]c")]:
        assert not overlaps(a, b) and not overlaps(b, a), (a, b)
        assert not overlaps("src/" + a, "src/" + b)


def test_two_globs_are_judged_by_the_literal_text_before_their_first_and_after_their_last_wildcard() -> None:
    """'a*b*c' begins with 'a' and ends with 'c' (not 'a*b', not 'b*c'): 'axbc' matches it and
    'ax*', and 'abxc' matches it and '*xc'."""
    assert overlaps("a*b*c", "ax*") and overlaps("ax*", "a*b*c")
    assert overlaps("a*b*c", "*xc") and overlaps("*xc", "a*b*c")
    assert not overlaps("a*b*c", "b*") and not overlaps("a*b*c", "*b")


def test_a_class_whose_first_member_is_a_bracket_closes_at_the_next_one(store: comity.Store) -> None:
    """fnmatch reads '[]a]' as one class of ']' and 'a' (and '[!]b]' as neither ']' nor 'b'):
    'a' matches it and '*a'.  They overlap, so the second exclusive reservation is refused.
    (A bug found through the mutants of `_literal_ends`: the class was taken to end at the
    first ']', its literal end was 'a]', and the overlap was missed.)"""
    import fnmatch

    for a, b, path in [("[]a]", "*a", "a"), ("[!]b]", "*a", "a"), ("x[]a]", "x*a", "xa"), ("[]a]y", "*ay", "ay"),
                       ("[!]b]", "[]a]", "a")]:
        assert fnmatch.fnmatchcase(path, a) and fnmatch.fnmatchcase(path, b)  # the example is right
        assert overlaps(a, b) and overlaps(b, a), (a, b)
    assert not overlaps("[]a]x", "*y") and not overlaps("x[!]]", "y*")
    # classes of one member, of a negated member, of ']' alone, and a literal 'X'
    for a, b, path in [("[a]b*", "ab*", "ab"), ("[!a]b*", "cb*", "cb"), ("[]]x*", "]x*", "]x")]:
        assert fnmatch.fnmatchcase(path, a) and fnmatch.fnmatchcase(path, b)
        assert overlaps(a, b) and overlaps(b, a), (a, b)
    assert not overlaps("aXb*", "aXc*")
    # a '[' never closed is a literal, as fnmatch reads it
    assert overlaps("a[b", "a*") and overlaps("a[b", "*[b") and not overlaps("a[b", "*c") and not overlaps("a[b", "a[c")
    reserve(store.session("alice"), ["src/[]a].py"])
    with pytest.raises(StaleContext):
        reserve(store.session("bob"), ["src/*a.py"])


def test_an_overlap_refusal_names_the_holder_the_pattern_and_the_time_left(store: comity.Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    (mine,) = reserve(alice, ["src/**"], ttl=600)
    clock.advance(100.4)
    with pytest.raises(StaleContext) as e:
        reserve(bob, ["src/app.py"], shared=True)
    assert _why(e) == {
        "error": "stale_context",
        "message": "'src/app.py' overlaps alice's exclusive reservation 'src/**' (token 1, 500s left); work elsewhere, or ask alice to release it",
        "key": RESERVATIONS_KEY,
        "news": [],
        "rejected": None,
        "conflict": {"pattern": "src/**", "holder": "alice", "shared": False, "token": 1, "expires": mine.expires},
        "next": [{"verb": "reservations", "args": {}, "why": "see who holds what, and work elsewhere"}],
    }
    (theirs,) = reserve(bob, ["docs/**"], shared=True)
    with pytest.raises(StaleContext) as e:
        reserve(alice, ["docs/a.md"])
    assert e.value.message == "'docs/a.md' overlaps bob's shared reservation 'docs/**' (token 2, 3600s left); work elsewhere, or ask bob to release it"
    assert e.value.details["conflict"] == theirs.to_json()


def test_a_release_of_nothing_held_says_what_to_do_next(store: comity.Store) -> None:
    alice = store.session("alice")
    reserve(alice, ["b"])
    with pytest.raises(NotFound) as e:
        release(alice, ["z", "a"])
    assert _why(e) == {
        "error": "not_found",
        "message": "alice holds no reservation on ['a', 'z']",
        "next": [{"verb": "reservations", "args": {}, "why": "see who holds what"}],
    }


def test_reserve_and_release_are_logged_by_name(store: comity.Store) -> None:
    alice = store.session("alice")
    reserve(alice, ["a"])
    release(alice, ["a"])
    assert [(e["op"], e["agent"]) for e in alice.log(RESERVATIONS_KEY)] == [("reserve", "alice"), ("release", "alice")]


def test_a_retried_reservation_gets_what_the_first_attempt_granted(store: comity.Store, clock: VirtualClock) -> None:
    alice = store.session("alice")
    rid = "r-" + "x" * 70
    first = reserve(alice, ["a", "b"], ttl=100, request=(rid, "d1"))
    clock.advance(30)
    head = alice.head()
    assert reserve(alice, ["a", "b"], ttl=100, request=(rid, "d1")) == first  # not renewed: the first's answer
    assert alice.head() == head
    with pytest.raises(Invalid) as e:
        reserve(alice, ["a"], request=(rid, "d2"))
    assert _why(e) == {
        "error": "invalid",
        "field": "request_id",
        "message": f"request_id: {rid[:60]!r} was already used for a different request; use a new id for a new request",
    }
    # a new request id renews
    (again, _) = reserve(alice, ["a", "b"], ttl=100, request=("r-2", "d1"))
    assert again.expires == first[0].expires + 30


def test_a_retried_release_gets_what_the_first_released(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    reserve(alice, ["a", "b"])
    reserve(bob, ["c"])
    assert release(bob, ["c"], request=("rb", "d")) == ["c"]
    assert release(alice, ["b", "a"], request=("ra", "d")) == ["a", "b"]
    head = alice.head()
    assert release(alice, ["b", "a"], request=("ra", "d")) == ["a", "b"]  # the retry: told, not refused
    assert release(bob, ["c"], request=("rb", "d")) == ["c"]
    assert alice.head() == head
    # what each agent released is kept beside the entries
    assert alice.get(RESERVATIONS_KEY).values[0]["released"] == {"bob": ["c"], "alice": ["a", "b"]}
    with pytest.raises(Invalid):
        release(alice, ["a"], request=("ra", "other"))
    with pytest.raises(NotFound):
        release(alice, ["a"])


def test_a_reservation_racing_another_is_judged_again_against_it(store: comity.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: bob reserves between alice's read of the reservations and her write.  Her
    write's context misses bob's, so it is refused by the store and judged again."""
    alice, bob = store.session("alice"), store.session("bob")
    real = reservations_module._load
    bobs: list[list[str]] = []  # what bob reserves at alice's next read
    loads: list[str] = []

    def bob_between(session: comity.Session) -> Any:
        got = real(session)
        if session is alice:
            loads.append("alice")
            if bobs:
                reserve(bob, bobs.pop())
        return got

    monkeypatch.setattr(reservations_module, "_load", bob_between)
    bobs.append(["src/app.py"])
    with pytest.raises(StaleContext) as e:
        reserve(alice, ["src/**"])
    assert e.value.details["conflict"]["holder"] == "bob" and len(loads) == 2  # refused on the second look
    loads.clear()
    bobs.append(["lib/x.py"])
    (r,) = reserve(alice, ["docs/**"])  # disjoint from bob's: granted on the second look, with the next token
    monkeypatch.setattr(reservations_module, "_load", real)
    assert len(loads) == 2 and (r.pattern, r.token) == ("docs/**", 3)
    assert {(x.pattern, x.holder, x.token) for x in reservations(alice)} == {
        ("src/app.py", "bob", 1), ("lib/x.py", "bob", 2), ("docs/**", "alice", 3)}


def test_reservations_that_keep_changing_give_up_after_fifty_tries(store: comity.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = store.session("alice")
    reserve(alice, ["a"])
    tries: list[str] = []

    def always_stale(*args: Any, **kwargs: Any) -> Any:
        tries.append("x")
        raise StaleContext("moved", key=RESERVATIONS_KEY)

    monkeypatch.setattr(alice, "txn", always_stale)
    for call in (lambda: reserve(alice, ["b"]), lambda: release(alice, ["a"])):
        tries.clear()
        with pytest.raises(StaleContext) as e:
            call()
        assert (e.value.message, e.value.key, len(tries)) == ("reservations kept changing under contention; retry", RESERVATIONS_KEY, 50)


def test_tokens_are_given_once_and_a_renewal_keeps_its_token(store: comity.Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    assert reservations(alice) == []
    a, b = reserve(alice, ["a", "b"], ttl=50)
    assert (a.token, b.token) == (1, 2)
    clock.advance(10)
    b2, c = reserve(alice, ["b", "c"], ttl=50, shared=True)  # renews b (now shared), adds c
    assert (b2.token, b2.shared, b2.expires, c.token) == (2, True, clock.now() + 50, 3)
    (d,) = reserve(bob, ["d"])
    assert d.token == 4
    assert sorted(reservations(bob), key=lambda r: r.token) == [a, b2, c, d]
    assert Reservation("p", "h", True, 7, 1.5).to_json() == {"pattern": "p", "holder": "h", "shared": True, "token": 7, "expires": 1.5}
    clock.advance(40)  # a expires now; the others were renewed or are newer
    assert [r.pattern for r in sorted(reservations(bob), key=lambda r: r.token)] == ["b", "c", "d"]


# -------------------------------------------------------------------- liveness


def _phi_by_hand(mean: float, std: float, elapsed: float) -> float:
    """-log10 of the normal distribution's upper tail: the paper's φ, computed independently."""
    return -math.log10(1 - NormalDist(mean, std).cdf(elapsed))


def test_the_detectors_settings_are_the_papers_defaults() -> None:
    assert PhiAccrual() == PhiAccrual(threshold=8.0, window=100, min_samples=5, min_std_s=1.0)


def test_phi_is_the_normal_tail_over_the_intervals_with_a_floor_on_sigma() -> None:
    d = PhiAccrual()
    # σ from the samples: mean 5, variance 25
    assert d.phi([0.0, 10.0], 12.0) == pytest.approx(_phi_by_hand(5, 5, 12), rel=1e-9)
    assert d.phi([2.0, 4.0, 6.0, 8.0], 9.0) == pytest.approx(_phi_by_hand(5, math.sqrt(5), 9), rel=1e-9)
    # a metronome: σ floored at min_std_s (1 s) ...
    assert d.phi([5.0] * 6, 7.0) == pytest.approx(_phi_by_hand(5, 1.0, 7), rel=1e-9)
    assert PhiAccrual(min_std_s=2.0).phi([5.0] * 6, 7.0) == pytest.approx(_phi_by_hand(5, 2.0, 7), rel=1e-9)
    # ... or at a tenth of the mean, whichever is larger
    assert d.phi([50.0] * 6, 60.0) == pytest.approx(_phi_by_hand(50, 5.0, 60), rel=1e-9)
    # at the mean, half the time an action is later: φ = log10(2)
    assert d.phi([50.0] * 6, 50.0) == pytest.approx(math.log10(2), rel=1e-12)
    # beyond what a float can hold, φ stops at 300 (p floored at 1e-300)
    assert d.phi([10.0] * 6, 1e9) == 300.0
    assert d.phi([], 5.0) == 0.0


def test_phi_judges_only_the_last_window_of_intervals() -> None:
    d = PhiAccrual()
    long_ago = [1000.0] + [10.0] * 100
    assert d.phi(long_ago, 13.0) == d.phi([10.0] * 100, 13.0) == pytest.approx(_phi_by_hand(10, 1.0, 13), rel=1e-9)
    assert d.phi([1000.0] + [10.0] * 99, 13.0) != d.phi([10.0] * 99, 13.0)  # 100 intervals: all of them count
    short = PhiAccrual(window=2)
    assert short.phi([100.0, 0.0, 10.0], 12.0) == pytest.approx(_phi_by_hand(5, 5, 12), rel=1e-9)


def test_suspicion_needs_enough_samples_silence_past_ttl_and_phi_at_the_threshold() -> None:
    iv = [10.0] * 5
    phi = PhiAccrual().phi(iv, 30.0)
    at = PhiAccrual(threshold=phi)
    assert at.suspects(iv, 30.0, ttl=29.0)  # φ exactly at the threshold: suspected
    assert not PhiAccrual(threshold=phi + 1e-9).suspects(iv, 30.0, ttl=29.0)
    assert not at.suspects(iv, 30.0, ttl=30.0)  # silent exactly ttl: not yet
    assert not at.suspects(iv[:4], 30.0, ttl=29.0)  # four samples are too few
    assert PhiAccrual(threshold=phi, min_samples=4).suspects(iv[:4], 30.0, ttl=29.0)


def test_an_agents_status_in_json() -> None:
    s = AgentStatus("alice", 3, 10.5, None, 2.34567, False, [{"resource": "r"}], 1.23456)
    assert s.to_json() == {
        "agent": "alice", "actions": 3, "last_action": 10.5, "last_heartbeat": None,
        "silent_s": 1.235, "phi": 2.346, "suspected": False, "holds": [{"resource": "r"}],
    }
    quiet = AgentStatus("bob", 0, None, 7.0, 0.0, True)
    assert quiet.to_json() == {
        "agent": "bob", "actions": 0, "last_action": None, "last_heartbeat": 7.0,
        "silent_s": None, "phi": 0.0, "suspected": True, "holds": [],
    }


def test_a_heartbeat_is_a_system_note_on_the_agents_key(store: comity.Store, clock: VirtualClock) -> None:
    alice = store.session("alice")
    pos = heartbeat(alice)
    assert pos == alice.head()
    assert [(e["pos"], e["op"], e["agent"]) for e in alice.log(AGENT_PREFIX + "alice")] == [(pos, HEARTBEAT_OP, "alice")]
    assert (AGENT_PREFIX, HEARTBEAT_OP) == ("@agent/", "heartbeat")
    with pytest.raises(Invalid) as e:
        heartbeat(store.session())
    assert _why(e) == {"error": "invalid", "field": "agent", "message": "agent: a heartbeat needs an agent name"}


def test_agents_lists_each_agents_progress_beats_and_holds_by_the_authoritys_clock(store: comity.Store, clock: VirtualClock) -> None:
    t0 = clock.now()
    alice, bob, carol = store.session("alice"), store.session("bob"), store.session("carol")
    for i in range(6):  # alice: an action every 10 s, the last at t0 + 50
        alice.put(f"a/{i}", i)
        clock.advance(10)
    heartbeat(bob)  # bob only beats
    lease = Leases(carol).acquire("build", 100)  # carol acts once and holds a lease
    gone = Leases(carol).acquire("old", 1)
    clock.advance(5.5)  # now t0 + 65.5
    listed = agents(store.session(), ttl=10)
    assert [a.agent for a in listed] == ["alice", "bob", "carol"]
    a, b, c = listed
    intervals = [10.0] * 5
    assert (a.actions, a.last_action, a.last_heartbeat, a.silent_s) == (6, t0 + 50, None, 15.5)
    assert a.phi == pytest.approx(PhiAccrual().phi(intervals, 15.5)) and a.phi > 0
    assert not a.suspected  # φ is low: an interval and a half
    assert agents(store.session(), ttl=10, detector=PhiAccrual(threshold=a.phi))[0].suspected
    assert not agents(store.session(), ttl=15.5, detector=PhiAccrual(threshold=a.phi))[0].suspected
    assert (b.actions, b.last_action, b.last_heartbeat, b.silent_s, b.phi, b.suspected, b.holds) == (0, None, t0 + 60, None, 0.0, False, [])
    assert (c.actions, c.last_action, c.silent_s) == (2, t0 + 60, 5.5)
    assert c.holds == [{"resource": "build", "token": lease.token, "expires_in_s": 94.5}]  # 'old' has expired
    Leases(carol).acquire("fine", 30.12345)
    assert [h["expires_in_s"] for h in agents(store.session(), ttl=10)[2].holds] == [94.5, 30.123]  # to the millisecond
    assert gone.expires < clock.now()
    with pytest.raises(Invalid) as e:
        agents(store.session(), ttl=0)
    assert e.value.field == "ttl"


def test_agents_judges_the_last_window_of_events(store: comity.Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("a", 1)  # the log's first event
    clock.advance(1)
    bob.put("b", 1)
    clock.advance(1)
    bob.put("c", 2)
    assert [(a.agent, a.actions) for a in agents(store.session())] == [("alice", 1), ("bob", 2)]
    assert [(a.agent, a.actions) for a in agents(store.session(), window_events=2)] == [("bob", 2)]
    assert [(a.agent, a.actions) for a in agents(store.session(), window_events=1)] == [("bob", 1)]
    window = recent_events(store.session(), 2)
    assert [e["pos"] for e in window] == [2, 3] and all("value" not in e for e in window)
    assert [e["pos"] for e in recent_events(store.session())] == [1, 2, 3]
    # the window read once, handed in: the same judgement
    assert agents(store.session(), events=window) == agents(store.session(), window_events=2)
    assert [a.agent for a in agents(store.session(), events=[])] == []


def test_phi_over_time_is_judged_from_the_actions_before_each_moment() -> None:
    d = PhiAccrual()
    times = [0.0, 10.0, 20.0, 30.0]
    series = phi_series(d, times, 0.0, 60.0, points=7)
    assert [t for t, _ in series] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    want = [d.phi([10.0] * (min(k, 3)), t - min(t, 30.0)) for k, t in enumerate([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0])]
    assert [p for _, p in series] == pytest.approx(want)
    assert phi_series(d, [5.0], 0.0, 10.0, points=3) == [(0.0, 0.0), (5.0, d.phi([], 0.0)), (10.0, 0.0)]
    assert phi_series(d, times, 0.0, 60.0, points=1) == []
    assert phi_series(d, times, 0.0, 0.0) == []
    assert phi_series(d, times, 5.0, 1.0) == []
    assert len(phi_series(d, times, 0.0, 60.0)) == 40
    assert len(phi_series(d, times, 0.0, 60.0, points=2)) == 2


def test_activity_lists_each_agents_sessions_and_last_action(store: comity.Store, clock: VirtualClock) -> None:
    t0 = clock.now()
    a1, a2, bob = store.session("alice", name="a-1"), store.session("alice", name="a-2"), store.session("bob", name="b-1")
    a1.put("x", 1)
    clock.advance(10)
    a2.txn(ops=[Put("y", 1), Put("y2", 1)])  # one action, two events
    clock.advance(10)
    heartbeat(a2)  # a beat among the actions is not one
    heartbeat(bob)  # bob only beats
    a1.put("z", 1)
    clock.advance(10.5)
    a2.put("w", 1)
    clock.advance(12)
    act = activity(store.session(), points=4)
    assert (act["now"], act["start"], act["window_events"]) == (t0 + 42.5, t0, 7)
    assert sorted(act["agents"]) == ["alice", "bob"]
    al = act["agents"]["alice"]
    w = {"pos": 7, "op": "put", "key": "w", "time": t0 + 30.5}
    assert al["last_action"] == w
    assert al["last_heartbeat"] == t0 + 20
    assert al["sessions_total"] == 2
    assert al["sessions"] == [  # the latest first
        {"session": "a-2", "events": 3, "first": t0 + 10, "last": w},
        {"session": "a-1", "events": 2, "first": t0, "last": {"pos": 6, "op": "put", "key": "z", "time": t0 + 20}},
    ]
    assert act["agents"]["bob"] == {"last_action": None, "last_heartbeat": t0 + 20, "sessions": [], "sessions_total": 0,
                                    "phi": [(round(t0 + k * 42.5 / 3, 3), 0.0) for k in range(4)]}
    assert [s["session"] for s in activity(store.session(), sessions_max=1)["agents"]["alice"]["sessions"]] == ["a-2"]
    d = PhiAccrual()
    want = [(round(t, 3), round(p, 3)) for t, p in phi_series(d, [t0, t0 + 10, t0 + 20, t0 + 30.5], t0, t0 + 42.5, 4)]
    assert al["phi"] == want and any(p != round(p, 2) for _, p in want) and any(t != round(t, 2) for t, _ in want)
    assert len(activity(store.session())["agents"]["alice"]["phi"]) == 40
    assert activity(store.session(), detector=PhiAccrual(min_std_s=5.0))["agents"]["alice"]["phi"] != activity(store.session())["agents"]["alice"]["phi"]
    assert activity(store.session(), window_events=1)["window_events"] == 1


def test_activity_keeps_an_agents_latest_twenty_sessions(store: comity.Store) -> None:
    for k in range(21):
        store.session("alice", name=f"s-{k:02d}").put(f"k/{k}", k)
    al = activity(store.session())["agents"]["alice"]
    assert al["sessions_total"] == 21
    assert [s["session"] for s in al["sessions"]] == [f"s-{k:02d}" for k in range(20, 0, -1)]


def test_phi_over_time_counts_an_action_at_the_moment_itself() -> None:
    d = PhiAccrual()
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 20.0]
    series = phi_series(d, times, 0.0, 20.0, points=5)  # at 0, 5, 10, 15, 20
    by_hand = [
        (0.0, d.phi([], 0.0)),
        (5.0, d.phi([1.0] * 4, 1.0)),
        (10.0, d.phi([1.0] * 4, 6.0)),
        (15.0, d.phi([1.0] * 4, 11.0)),
        (20.0, d.phi([1.0] * 4 + [16.0], 0.0)),  # the action at 20 is before the moment 20
    ]
    assert series == by_hand
    assert [p > d.threshold for _, p in series] == [False, False, False, True, False]


def test_a_character_class_ends_where_its_bracket_closes() -> None:
    """'a[bc]d' ends in the literal 'd', not in 'c]d' nor in '' (soundness and precision)."""
    assert overlaps("a[bc]d", "*bd") and overlaps("*bd", "a[bc]d")  # 'abd' matches both
    assert not overlaps("a[bc]de", "*xe") and not overlaps("*xe", "a[bc]de")
    assert not overlaps("a[b]c]d", "*x]d")  # 'abc]d': the class closes at the first ']'
    assert overlaps("a[b]c]d", "*c]d")


def test_agents_sees_the_whole_window_past_a_log_pages_length(store: comity.Store) -> None:
    """The window is read in one page of its own length, not the log's default page (100)."""
    store.session("alice").txn(ops=[Put(f"bulk/{i}", i) for i in range(120)])  # one action, 120 events
    store.session("bob").put("late", 1)
    assert [(a.agent, a.actions) for a in agents(store.session())] == [("alice", 1), ("bob", 1)]
    assert activity(store.session())["agents"]["alice"]["sessions"][0]["events"] == 120
    assert activity(store.session())["window_events"] == 121
