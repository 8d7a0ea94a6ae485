"""The guarded transaction's edges, written for the mutants of ``comity.store._txn`` that the
conformance suite let through (docs/mutation.md): the words and next steps of each stale
refusal, the news it carries, a lease's length kept by a renewal, what an acquire and a
block of sequence numbers answer and log, the refusals of shapes, CRDT keys, and what a
replica must leave to its authority.  Real stores on the virtual clock; nothing mocked."""

from __future__ import annotations

import pytest

from comity.errors import Invalid, StaleContext, Step
from comity.runtime import VirtualClock
from comity.store import Absent, Acquire, Create, Delete, Holds, Next, Put, Release, Renew, Store, Unchanged, Update
from comity.store._txn import MAX_TTL_S, NeedsAuthority, Note, authority_needs, check_ttl

REREAD = "read it again, merge, and write with the context it returns"


def _acquire(s: object, resource: str = "r", ttl: float = 10.0, steal: bool = False) -> dict:  # type: ignore[type-arg]
    return s.txn(ops=[Acquire(resource, ttl, steal)]).results[0]  # type: ignore[attr-defined, no-any-return]


# ------------------------------------------------------------- stale refusals


def test_a_create_of_an_existing_key_says_who_wrote_it_and_to_read_it(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    alice.put("k", 2, context=alice.get("k").context)
    with pytest.raises(StaleContext) as e:
        bob.create("k", 3)
    assert e.value.message == (
        "'k' already exists: written by alice (put at pos 2); choose another key, or read it and write with its context"
    )
    assert [n["pos"] for n in e.value.news] == [2]  # the last event of the key only
    assert e.value.next == (Step("read", {"key": "k"}, REREAD),)
    assert e.value.rejected == 3 and e.value.key == "k"
    with pytest.raises(StaleContext) as e:
        bob.txn(guards=[Absent("k")], ops=[Put("other", 1)])
    assert e.value.message.startswith("'k' already exists: written by alice (put at pos 2);")
    assert e.value.rejected is None


def test_a_write_without_context_names_the_writer_and_offers_keeping_both(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    with pytest.raises(StaleContext) as e:
        bob.put("k", 2)
    assert e.value.message == (
        "'k' exists and this write carried no context: written by alice (create at pos 1);"
        " read it again and retry with its context, or keep both values as siblings"
    )
    assert e.value.next == (
        Step("read", {"key": "k"}, REREAD),
        Step("write", {"key": "k", "value": 2, "keep_both": True}, "or keep both values as siblings"),
    )
    with pytest.raises(StaleContext) as e:  # a guard has no value to keep: only read again
        bob.txn(guards=[Unchanged("k", None)], ops=[Put("other", 1)])
    assert e.value.message.startswith("'k' exists and this write carried no context: written by alice (create at pos 1);")
    assert e.value.next == (Step("read", {"key": "k"}, REREAD),)


def test_a_write_over_a_changed_key_lists_every_write_since_the_read(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 0)
    stale = bob.get("k").context
    for i in range(1, 25):
        alice.put("k", i, context=alice.get("k").context)
    with pytest.raises(StaleContext) as e:
        bob.put("k", "mine", context=stale)
    news = e.value.news
    assert [n["pos"] for n in news] == list(range(2, 22))  # from the read on, at most 20
    writers = ", ".join(f"alice (put at pos {p})" for p in range(2, 22))
    assert e.value.message == (
        f"'k' changed since your read: written by {writers};"
        " read it again and retry with its context, or keep both values as siblings"
    )
    with pytest.raises(StaleContext) as e:
        bob.txn(guards=[Unchanged("k", stale)], ops=[Put("other", 1)])
    assert e.value.message.startswith("'k' changed since your read: written by alice (put at pos 2),")
    assert e.value.next == (Step("read", {"key": "k"}, REREAD),)


def test_a_stale_write_to_comitys_own_key_offers_no_siblings_and_names_it(store: Store) -> None:
    s = store.session("alice")
    s.txn(ops=[Put("@task/T-1", 1)], system=True)
    with pytest.raises(StaleContext) as e:
        s.txn(ops=[Put("@task/T-1", 2)], system=True)
    assert e.value.message.startswith("task T-1 exists and this write carried no context: written by alice (put at pos 1);")
    assert e.value.next == (Step("read", {"key": "@task/T-1"}, REREAD),)


def test_a_delete_of_nothing_is_not_found(store: Store) -> None:
    from comity.errors import NotFound

    s = store.session("alice")
    with pytest.raises(NotFound) as e:
        s.delete("k")
    assert e.value.message == "'k' does not exist (or is already deleted); nothing to delete"
    w = s.put("k", 1)
    s.delete("k", context=w.context)
    with pytest.raises(NotFound):
        s.delete("k", context=s.get("k").context)


# --------------------------------------------------------------------- leases


def test_an_acquire_answers_and_logs_its_token_expiry_length_and_predecessor(store: Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    got = _acquire(alice, ttl=30)
    assert got == {"resource": "r", "holder": "alice", "token": 1, "expires": clock.now() + 30, "previous": None, "ttl": 30}
    clock.advance(22.5)
    with pytest.raises(StaleContext) as e:
        _acquire(bob)
    assert e.value.message == "'r' is held by alice (token 1) for another 7.5s; wait for it to expire, or steal it explicitly"
    assert (e.value.key, e.value.details["holder"], e.value.details["token"]) == ("@lease/r", "alice", 1)
    assert e.value.details["expires"] == clock.now() + 7.5
    stolen = _acquire(bob, ttl=5, steal=True)
    assert (stolen["token"], stolen["previous"], stolen["holder"]) == (2, "alice", "bob")
    assert bob.log("@lease/r")[-1]["op"] == "steal"
    clock.advance(5)  # expired at exactly now: free, and its holder is the predecessor
    after = _acquire(alice, ttl=5)
    assert (after["token"], after["previous"]) == (3, "bob")
    assert alice.log("@lease/r")[-1]["op"] == "acquire"
    alice.txn(ops=[Release("r", 3)])
    fresh = _acquire(bob, steal=True)  # a steal of a released lease takes it from nobody: an acquire
    assert (fresh["token"], fresh["previous"]) == (4, None)
    assert bob.log("@lease/r")[-1]["op"] == "acquire"
    assert [e["dot"][1] for e in bob.log("@lease/r")] == [1, 2, 3, 3, 4]  # an event's counter is its token


def test_a_renewal_without_a_length_keeps_the_leases_own(store: Store, clock: VirtualClock) -> None:
    s = store.session("alice")
    t = _acquire(s, ttl=40)["token"]
    clock.advance(10)
    r = s.txn(ops=[Renew("r", t)]).results[0]
    assert r == {"resource": "r", "holder": "alice", "token": t, "expires": clock.now() + 40, "ttl": 40}
    s.txn(ops=[Renew("r", t, 15)])
    clock.advance(10)
    assert s.txn(ops=[Renew("r", t)]).results[0]["ttl"] == 15
    assert s.log("@lease/r")[-1]["op"] == "renew" and s.log("@lease/r")[-1]["ttl"] == 15
    assert s.txn(ops=[Release("r", t)]).results[0] == {"resource": "r", "holder": None, "token": t}
    with store.backend.transaction(write=False) as tx:
        lease = tx.lease("r")
    assert lease is not None and (lease.holder, lease.expires) == (None, clock.now())


def test_a_renewal_logs_its_new_expiry_and_length(store: Store, clock: VirtualClock) -> None:
    s = store.session("alice")
    t = _acquire(s, ttl=40)["token"]
    clock.advance(10)
    s.txn(ops=[Renew("r", t, 15)])
    last = s.log("@lease/r")[-1]
    assert (last["op"], last["token"], last["expires"], last["ttl"]) == ("renew", t, clock.now() + 15, 15)


def test_a_lease_length_is_in_a_week_at_most(store: Store) -> None:
    assert check_ttl(MAX_TTL_S, "ttl") == MAX_TTL_S and check_ttl(1, "ttl") == 1.0
    with pytest.raises(Invalid) as e:
        check_ttl(MAX_TTL_S + 1, "ttl")
    assert e.value.message == "ttl: must be a number of seconds in (0, 604800], got 604801.0"
    s = store.session("alice")
    assert _acquire(s, ttl=MAX_TTL_S)["ttl"] == MAX_TTL_S


# ------------------------------------------------------------------ sequences


def test_a_block_of_sequence_numbers_is_answered_and_logged_as_a_block(store: Store) -> None:
    s = store.session("alice")
    one = s.txn(ops=[Next("n")]).results[0]
    assert set(one) == {"sequence", "value", "pos"} and one["value"] == 1
    block = s.txn(ops=[Next("n", 5)]).results[0]
    assert block == {"sequence": "n", "value": 2, "last": 6, "count": 5, "pos": block["pos"]}
    event = s.log("@seq/n")[-1]
    assert (event["value"], event["first"], event["count"]) == (6, 2, 5)
    assert "first" not in s.log("@seq/n")[0]
    assert s.txn(ops=[Next("n")]).results[0]["value"] == 7
    assert s.txn(ops=[Next("m", 1_000_000)]).results[0]["last"] == 1_000_000
    for count in (0, 1_000_001, True, 1.0):
        with pytest.raises(Invalid) as e:
            s.txn(ops=[Next("n", count)])  # type: ignore[arg-type]
        assert e.value.message == f"count: must be a whole number of sequence numbers in [1, 1000000], got {count!r}"
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Next("n"), Next("n")])
    assert e.value.message == "ops[1].name: sequence 'n' is advanced twice in one transaction"


# ------------------------------------------------------------------- shapes


def test_the_refusals_of_a_transactions_shape(store: Store) -> None:
    s = store.session("alice")
    cases = [
        (lambda: s.txn(), "ops", "ops: a transaction needs at least one guard or operation"),
        (lambda: s.txn(guards=[object()]), "guards[0].type",  # type: ignore[list-item]
         "guards[0].type: unknown guard object; use Unchanged, Absent or Holds"),
        (lambda: s.txn(ops=[object()]), "type", "type: unknown operation object"),  # type: ignore[list-item]
        (lambda: s.txn(ops=[Put("k", 1), Delete("k")]), "ops[1].key",
         "ops[1].key: 'k' is written twice in one transaction; combine the writes"),
        (lambda: s.txn(ops=[Put("k", 1), Update("k", "inc", 1, "gcounter")]), "ops[1].key",
         "ops[1].key: 'k' is written twice in one transaction; combine the writes"),
        # a note's label is checked first: outside comity's own layers it is refused as a label
        (lambda: s.txn(ops=[Note("notes", "heard", {})]), "label",
         "label: event labels are for comity's own layers (lowercase, up to 32 characters)"),
        (lambda: s.txn(ops=[Put("k", 1, label="mine")]), "label",
         "label: event labels are for comity's own layers (lowercase, up to 32 characters)"),
        (lambda: s.txn(ops=[Put("@k", 1, label="Bad")], system=True), "label",
         "label: event labels are for comity's own layers (lowercase, up to 32 characters)"),
        (lambda: s.txn(ops=[Put("@k", 1, label="a" * 33)], system=True), "label",
         "label: event labels are for comity's own layers (lowercase, up to 32 characters)"),
        (lambda: s.txn(ops=[Update("c", "", 1, "gcounter")]), "op", "op: name the operation, e.g. 'add' or 'inc'"),
        (lambda: s.txn(guards=[Holds("", 1)]), "guards[0].resource", None),
        (lambda: s.txn(ops=[Renew("r", 1, 0)]), "ttl", None),
    ]
    for call, field, message in cases:
        with pytest.raises(Invalid) as e:
            call()
        assert e.value.field == field, (field, e.value.message)
        if message is not None:
            assert e.value.message == message
    assert s.head() == 0
    labelled = s.txn(ops=[Put("@k", 1, label="a" * 32)], system=True).results[0]
    assert labelled["op"] == "a" * 32
    noted = s.txn(ops=[Note("@notes", "heard", {"from": "x"}, seen=0)], system=True).results[0]
    assert noted == {"key": "@notes", "op": "heard", "pos": 2}
    entry = s.log("@notes")[-1]
    assert (entry["op"], entry["from"], entry["seen"], entry["dot"][1]) == ("heard", "x", 0, 0)


def test_crdt_keys_and_plain_keys_refuse_each_others_writes_in_words(store: Store) -> None:
    s = store.session("alice")
    s.update("c", "inc", 2, type="gcounter")
    s.put("plain", 1)
    cases = [
        (lambda: s.put("c", 5, context=s.get("c").context), "key",
         "key: 'c' is a gcounter CRDT; change it with update, not put or create"),
        (lambda: s.update("plain", "inc", 1, type="gcounter"), "key",
         "key: 'plain' holds a plain value, not a CRDT; write it with put, or use another key"),
        (lambda: s.update("new", "inc", 1), "type", None),
        (lambda: s.update("c", "inc", 1, type="pncounter"), "type",
         "type: 'c' is a gcounter, not a pncounter; give no type, or use another key"),
        (lambda: s.update("c", "escrow", 1), "op",
         "op: escrow takes a share of 'c''s rights from a replica's upstream; this store is the authority itself"),
    ]
    for call, field, message in cases:
        with pytest.raises(Invalid) as e:
            call()
        assert e.value.field == field
        if message is not None:
            assert e.value.message == message
    assert e.value is not None
    with pytest.raises(Invalid) as e:
        s.update("new", "inc", 1)
    assert e.value.message.startswith("type: 'new' has no CRDT type yet: give it a type (")
    r = s.update("c", "inc", 3).results[0]
    assert (r["key"], r["type"], r["value"]) == ("c", "gcounter", 5)
    assert s.log("c")[-1]["op"] == "update.inc"


def test_a_bounded_counter_below_its_rights_is_refused_with_what_it_holds(store: Store) -> None:
    s = store.session("alice")
    s.update("b", "inc", 3, type="bcounter")
    with pytest.raises(StaleContext) as e:
        s.update("b", "dec", 5)
    assert e.value.message.startswith("'b' is a bounded counter at 3: this store holds 3 of its rights and 5 are needed;")
    assert (e.value.key, e.value.details["value"], e.value.details["rights"]) == ("b", 3, 3)
    assert s.get("b").values == [3]


# ------------------------------------------------------------------- replicas


def test_what_only_the_authority_may_decide() -> None:
    me = "r1"
    assert authority_needs([], [Put("k", 1), Update("c", "inc", 1), Delete("k")], me) == set()
    assert authority_needs([Unchanged("k", None)], [Put("@escrow/x/r1", 1)], me) == set()
    assert authority_needs([Absent("k")], [], me) == {"create"}
    assert authority_needs([Holds("r", 1)], [], me) == {"holds"}
    assert authority_needs([], [Create("k", 1)], me) == {"create"}
    assert authority_needs([], [Next("n")], me) == {"sequence"}
    for op in (Acquire("r", 1), Renew("r", 1), Release("r", 1)):
        assert authority_needs([], [op], me) == {"lease"}
    assert authority_needs([], [Put("@task/T-1", 1)], me) == {"coordinated"}
    assert authority_needs([], [Delete("@task/T-1")], me) == {"coordinated"}
    assert authority_needs([], [Put("@escrow/x/r2", 1)], me) == {"coordinated"}  # another replica's
    assert authority_needs([], [Put("@escrow/x/r11", 1)], me) == {"coordinated"}
    assert authority_needs([], [Update("c", "escrow", 1)], me) == {"escrow"}
    need = NeedsAuthority({"lease", "create"})
    assert str(need) == "create, lease" and not need.provisional
    assert NeedsAuthority({"holds"}).provisional


def test_the_keys_a_transaction_locks_on_an_engine_whose_writers_run_at_once() -> None:
    """PostgreSQL locks every key a transaction reads or writes, first and in one order;
    the names are those its locks take (a lease's and a sequence's keys, the request's)."""
    from comity.store._txn import Guard, Op, _keys_of

    guards: list[Guard] = [Unchanged("a", None), Holds("r", 1), Absent("b")]
    ops: list[Op] = [Put("c", 1), Acquire("l", 1), Renew("m", 1), Release("n", 1), Next("seq"), Update("d", "inc"), Delete("e")]
    assert _keys_of(guards, ops, "q-1") == [
        "a", "@lease/r", "b", "c", "@lease/l", "@lease/m", "@lease/n", "@seq/seq", "d", "e", "@request/q-1",
    ]
    assert _keys_of([], [Create("k", 1)], None) == ["k"]


def test_a_note_on_a_key_with_history_joins_its_chain(store: Store) -> None:
    """A note on a key that has a row (a heartbeat on an agent's key) is its latest event,
    chained to the one before: the key's log shows all of them."""
    s = store.session("alice")
    s.txn(ops=[Put("@agent/alice", 1)], system=True)
    s.txn(ops=[Note("@agent/alice", "beat", {"n": 1})], system=True)
    s.txn(ops=[Note("@agent/alice", "beat", {"n": 2})], system=True)
    assert [(e["op"], e.get("n")) for e in s.log("@agent/alice")] == [("put", None), ("beat", 1), ("beat", 2)]
    assert s.get("@agent/alice").values == [1]  # a note changes no state
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Note("@agent/alice", "beat", {"bad": {1}})], system=True)  # type: ignore[dict-item]
    assert e.value.field == "detail"


def test_an_update_answers_its_position_and_a_context(store: Store) -> None:
    s = store.session("alice")
    r = s.update("c", "inc", 2, type="gcounter").results[0]
    assert r["pos"] == s.head() == 1
    assert store.codec.open(r["context"], "c").pos == 1


def test_a_sequence_name_is_checked_as_a_key() -> None:
    from comity.store._txn import validate

    for bad in ("", "a b", "/x", 7):
        with pytest.raises(Invalid) as e:
            validate([], [Next(bad)], 100)  # type: ignore[arg-type]
        assert e.value.field == "name"
    assert validate([], [Next("jobs/daily")], 100) == {}


def test_an_update_whose_new_state_is_too_big_is_refused_though_its_argument_is_not(make_store: object) -> None:
    store = make_store(max_value_bytes=200)  # type: ignore[operator]
    s = store.session("alice")
    added = 0
    with pytest.raises(Invalid) as e:
        for i in range(50):
            s.update("labels", "add", f"label-number-{i:04d}", type="orset")  # each argument well under 200 bytes
            added += 1
    assert e.value.field == "value" and 0 < added < 50
    assert len(s.get("labels").values[0]) == added  # the refused add is not applied


def test_a_cut_off_replica_fences_a_token_it_has_not_heard_of_as_current(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """Cut off from its authority, a replica judges a lease guard against the last leases it
    heard of (expiry is left to the authority): a token it never heard of, another agent's,
    or one superseded or released is fenced here and now, with what it last heard."""
    from pathlib import Path

    from comity.errors import Fenced

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    alice, bob = replica.session("alice"), replica.session("bob")
    alice.put("files/a", 0)
    token = alice.txn(ops=[Acquire("files", 60)]).results[0]["token"]  # at the authority, heard here
    bob.txn(ops=[Acquire("other", 60)])
    bob.txn(ops=[Release("other", 1)])
    replica.wire.cut = True

    def guarded(s: object, resource: str, t: int) -> object:
        return s.txn(guards=[Holds(resource, t)], ops=[Put("files/a", "x", keep_both=True)])  # type: ignore[attr-defined]

    for resource, t in (("files", token + 1), ("nothing", 1)):
        with pytest.raises(Fenced) as e:
            guarded(alice, resource, t)
        assert e.value.message == f"this replica has heard of no lease on {resource!r} with token {t}"
        assert e.value.details == {"resource": resource, "token": t}
    with pytest.raises(Fenced) as e:
        guarded(bob, "files", token)
    assert e.value.message == (
        f"token {token} for 'files' is not bob's current one: this replica last heard of token {token} held by alice"
    )
    assert e.value.details == {"resource": "files", "token": token, "current": token, "holder": "alice"}
    with pytest.raises(Fenced) as e:  # released: its holder is nobody
        guarded(bob, "other", 1)
    assert e.value.message == "token 1 for 'other' is not bob's current one: this replica last heard of token 1 held by nobody"
    assert e.value.details == {"resource": "other", "token": 1, "current": 1, "holder": None}
    clock.advance(600)  # expired by now, but expiry is the authority's to judge
    done = guarded(alice, "files", token)
    assert done.results[0]["provisional"] == [["files", token]]  # type: ignore[attr-defined]
    replica.wire.cut = False
    bob.txn(ops=[Acquire("files", 60)])  # the authority's next token, heard here
    replica.wire.cut = True
    with pytest.raises(Fenced) as e:  # superseded
        guarded(alice, "files", token)
    assert e.value.message == (
        f"token {token} for 'files' is not alice's current one: this replica last heard of token {token + 1} held by bob"
    )
    assert e.value.details == {"resource": "files", "token": token, "current": token + 1, "holder": "bob"}
    replica.store.close()


def _granted_as_before(store: Store, resource: str, granted_ms: int, expires: float, pos: int | None = None) -> int:
    """A lease granted by a comity whose lease events did not record their length (before
    ``ttl`` was in them: the token, the expiry and the predecessor only), at HLC time
    ``granted_ms``; written through the backend as that comity wrote it.  ``pos`` overrides
    the lease row's position (0: a lease row no event of this log recorded)."""
    import json

    from comity.causal import HLCTimestamp
    from comity.store import EventRow, LeaseRow

    with store.backend.transaction(write=True) as tx:
        old = tx.lease(resource)
        token = (old.token if old is not None else 0) + 1
        stamp = HLCTimestamp(granted_ms, 0).encode()
        detail = json.dumps({"token": token, "expires": expires, "previous": None})
        at = tx.append(EventRow(
            "@lease/" + resource, "acquire", "alice", "old-session", store.replica_id, token, stamp, f"old-{resource}-{token}",
            None, detail, prev=old.pos if old is not None else 0,
        ))
        tx.save_lease(LeaseRow(resource, "alice", token, expires, at if pos is None else pos, stamp))
    return token


def test_a_renewal_of_a_lease_whose_event_has_no_length_takes_it_from_its_expiry(store: Store, clock: VirtualClock) -> None:
    """Renewed without a length, a lease keeps the one it was granted with; for a lease
    granted before events recorded it, that is its expiry less its event's time, if it is a
    lease length at all (in (0, a week]), and the default of 300 s otherwise."""
    s = store.session("alice")
    now_ms = int(clock.now() * 1000)
    now = now_ms / 1000

    def renewed(resource: str, granted_ms: int, expires: float) -> float:
        token = _granted_as_before(store, resource, granted_ms, expires)
        return s.txn(ops=[Renew(resource, token)]).results[0]["ttl"]  # type: ignore[no-any-return]

    assert renewed("a", now_ms, now + 40) == 40
    assert renewed("b", now_ms - 20_000, now + 40) == 60  # granted 20 s ago for 60 s
    assert renewed("c", now_ms, now + 0.5) == 0.5
    assert renewed("d", now_ms, now + MAX_TTL_S) == MAX_TTL_S
    assert renewed("e", now_ms - 1000, now + MAX_TTL_S) == 300  # a week and a second: no lease length
    assert renewed("f", now_ms + 5000, now + 5) == 300  # granted at its expiry (a clock ahead): no length
    assert renewed("a", now_ms - 10_000, now + 30) == 40  # the lease's own last event, not its first
    last = s.log("@lease/a")[-1]
    assert (last["op"], last["ttl"], last["expires"]) == ("renew", 40, clock.now() + 40)


def test_a_lease_row_no_event_recorded_is_renewed_for_the_default_length(store: Store, clock: VirtualClock) -> None:
    """A lease row whose position is not its key's event here (0: no event recorded it) says
    nothing of its length, though the key's log holds events of other grants: 300 s."""
    s = store.session("alice")
    now_ms = int(clock.now() * 1000)
    token = _granted_as_before(store, "r", now_ms, now_ms / 1000 + 40, pos=0)
    assert s.txn(ops=[Renew("r", token)]).results[0]["ttl"] == 300
    t = _acquire(s, "q", ttl=40)["token"]
    s.txn(ops=[Release("q", t)])
    token = _granted_as_before(store, "q", now_ms, now_ms / 1000 + 40, pos=0)
    assert s.txn(ops=[Renew("q", token)]).results[0]["ttl"] == 300  # not the 40 of q's first grant


def test_a_lease_keeps_its_recorded_length_when_its_event_time_is_ahead_of_the_clock(
    make_store: object, clock: VirtualClock
) -> None:
    """A lease's length is what its event recorded, even where the event's HLC time is ahead
    of this process's clock (the lease's previous event was stamped by a process whose clock
    runs 10 s ahead): a short lease, and one of a week exactly, keep theirs."""
    here = make_store("s.db")  # type: ignore[operator]
    ahead = make_store("s.db", clock=VirtualClock(clock.now() + 10))  # type: ignore[operator]
    for resource, ttl in (("short", 0.5), ("week", MAX_TTL_S)):
        t = _acquire(ahead.session("bob"), resource, ttl=1)["token"]
        ahead.session("bob").txn(ops=[Release(resource, t)])
        s = here.session("alice")
        t = _acquire(s, resource, ttl=ttl)["token"]
        assert s.log("@lease/" + resource)[-1]["hlc"] > s.log("@lease/" + resource)[-2]["hlc"]
        assert s.txn(ops=[Renew(resource, t)]).results[0]["ttl"] == ttl


def test_a_retried_request_id_is_the_same_request_only_for_the_same_kinds_of_operation(store: Store) -> None:
    """What "the same request" is includes each operation's kind: a release of token 1 on 'n'
    retried under the id of a first number of sequence 'n' is another request, though their
    fields are alike."""
    s = store.session("alice")
    first = s.txn(ops=[Next("n")], request_id="q-1")
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Release("n", 1)], request_id="q-1")
    assert e.value.message == "request_id: 'q-1' was already used for a different request; use a new id for a new request"
    again = s.txn(ops=[Next("n")], request_id="q-1")
    assert again.replayed and again.results == first.results


def test_a_recorded_request_with_a_context_that_is_not_text_is_refused_by_its_field(store: Store) -> None:
    """The request's digest is taken before its context is opened: a context of another type
    is still refused as a context, in words (never a traceback from the digest)."""
    s = store.session("alice")
    for context in (b"\x00", {1, 2}):
        with pytest.raises(Invalid) as e:
            s.txn(ops=[Put("k", 1, context=context)], request_id="q-ctx")  # type: ignore[arg-type]
        assert e.value.field == "context"
    assert s.head() == 0


def test_a_block_of_two_is_logged_as_a_block(store: Store) -> None:
    s = store.session("alice")
    s.txn(ops=[Next("n", 2)])
    event = s.log("@seq/n")[-1]
    assert (event["value"], event["first"], event["count"]) == (2, 1, 2)


def test_an_expired_lease_is_refused_with_how_long_ago_and_what_to_do(store: Store, clock: VirtualClock) -> None:
    from comity.errors import LeaseExpired

    s = store.session("alice")
    t = _acquire(s, ttl=10)["token"]
    clock.advance(12.5)
    with pytest.raises(LeaseExpired) as e:
        s.txn(ops=[Renew("r", t)])
    assert e.value.message == (
        "the lease on 'r' with token 1 expired 2.5s ago; acquire it again (you may get the work back if nobody took it)"
    )
    assert e.value.details == {"resource": "r", "token": 1}


def test_the_events_a_fence_writes_carry_what_it_kept_and_what_it_set_aside(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """When the authority fences writes made under a lease a successor took, it writes on its
    own behalf: a conflict record holding the fenced write (its event's value), and on the key
    the values it keeps (the successor's, or a tombstone where the key had none before)."""
    from pathlib import Path

    from comity.sync import CONFLICT_PREFIX

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    up = upstream.session("carol")
    up.put("files/app.py", "v0")
    replica.sync()
    alice = replica.session("alice")
    token = alice.txn(ops=[Acquire("files", 60)]).results[0]["token"]
    replica.wire.cut = True
    alice.txn(guards=[Holds("files", token)], ops=[Put("files/app.py", "alice's", alice.get("files/app.py").context)])
    alice.txn(guards=[Holds("files", token)], ops=[Put("files/new.py", "alice's new")])
    clock.advance(120)
    bob = upstream.session("bob")
    taken = bob.txn(ops=[Acquire("files", 60)]).results[0]["token"]
    bob.txn(guards=[Holds("files", taken)], ops=[Put("files/app.py", "bob's", bob.get("files/app.py").context)])
    replica.wire.cut = False
    assert {f["key"] for f in replica.sync().fenced} == {"files/app.py", "files/new.py"}
    for store in (upstream, replica.store):
        s = store.session()
        app, new = s.log("files/app.py")[-1], s.log("files/new.py")[-1]
        assert (app["op"], app["agent"], app["value"]) == ("sync.fence", "comity", "bob's")
        assert (new["op"], "value" not in new) == ("sync.fence", True)  # a tombstone has no value
        assert s.get("files/new.py").values == []
        records = [s.log(k)[-1] for k in s.keys(CONFLICT_PREFIX)]
        assert sorted((r["op"], r["value"]["key"], r["value"]["value"]) for r in records) == [
            ("sync.conflict", "files/app.py", "alice's"), ("sync.conflict", "files/new.py", "alice's new"),
        ]
    replica.store.close()


def test_a_refusal_inside_a_transaction_keeps_its_words_whole_under_the_ops_field(store: Store) -> None:
    """A refusal of one op among several is named by its place (``ops[1].value``) and keeps its
    own words whole, ": " and all."""
    s = store.session("alice")
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Put("a", 1), Put("b", {1})])
    assert e.value.field == "ops[1].value"
    assert e.value.message == (
        "ops[1].value: must be JSON (strings, numbers, booleans, null, lists, objects): Object of type set is not JSON serializable"
    )
    with pytest.raises(Invalid) as e:
        s.txn(guards=[Absent("a")], ops=[Put("@task/T-1", 1)])
    assert e.value.message.startswith("ops[0].key: '@task/T-1': keys starting with '@' are comity's own")


def test_comitys_own_layers_guard_and_update_their_own_keys(store: Store) -> None:
    """With ``system``, '@' keys are comity's to guard, write and update; without it, refused
    (the check's default is the closed one)."""
    from comity.store._txn import validate

    s = store.session("alice")
    made = s.txn(guards=[Absent("@x/1")], ops=[Put("@x/1", 1), Update("@x/n", "inc", 2, "gcounter")], system=True)
    ctx = made.results[0]["context"]
    s.txn(guards=[Unchanged("@x/1", ctx)], ops=[Update("@x/n", "inc", 1)], system=True)
    assert s.get("@x/n").values == [3]
    for guards, ops in (([Absent("@x/2")], []), ([Unchanged("@x/1", ctx)], []), ([], [Update("@x/n", "inc", 1)])):
        with pytest.raises(Invalid):
            s.txn(guards=guards, ops=ops)  # type: ignore[arg-type]
        with pytest.raises(Invalid):
            validate(guards, ops, 1000)  # type: ignore[arg-type]
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Note("notes", None, {})])  # type: ignore[arg-type]
    assert e.value.message == "type: notes are for comity's own layers"


def test_an_updates_operation_and_argument_are_capped_together(make_store: object) -> None:
    """An update's operation and argument, as JSON, are capped at ``max_value_bytes`` (the
    field named is ``arg``), to the byte."""
    from comity.store._codec import compact_json

    arg = "x" * 50
    cap = len(compact_json({"op": "remove", "arg": arg}))
    s = make_store(max_value_bytes=cap).session("alice")  # type: ignore[operator]
    s.update("set", "remove", arg, type="orset")  # exactly at the cap: an element never added, removed
    with pytest.raises(Invalid) as e:
        s.update("set", "remove", arg + "x")
    assert e.value.field == "arg" and e.value.message.startswith(f"arg: is {cap + 1} bytes of JSON; the cap is {cap} bytes")


def test_a_stale_write_names_only_the_writes_to_its_own_key(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 0)
    stale = bob.get("k").context
    alice.put("other", 1)
    alice.put("k", 1, context=alice.get("k").context)
    with pytest.raises(StaleContext) as e:
        bob.put("k", 2, context=stale)
    assert [(n["key"], n["pos"]) for n in e.value.news] == [("k", 3)]


def test_a_context_read_on_the_authority_and_stale_on_a_replica_names_the_write_it_had_not_seen(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """A context read on the authority is good on its replica, but its log position is the
    authority's: stale there, the replica's log holds no event after it, and the refusal
    names the key's last write here, which the context had not seen (it said "another
    writer" before)."""
    from pathlib import Path

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    up = upstream.session("carol")
    up.put("k", 0)
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    replica.wire.cut = True
    for i in range(5):
        up.put(f"other/{i}", i)
    read_there = up.put("k", 1, context=up.get("k").context).context
    alice = replica.session("alice")
    mine = alice.put("k", "alice's", context=alice.get("k").context)
    with pytest.raises(StaleContext) as e:
        alice.put("k", "again", context=read_there)
    assert e.value.message == (
        f"'k' changed since your read: written by alice (put at pos {mine.pos});"
        " read it again and retry with its context, or keep both values as siblings"
    )
    assert [(n["agent"], n["pos"]) for n in e.value.news] == [("alice", mine.pos)]
    replica.store.close()


def test_what_writes_answer_and_log_by_kind(store: Store) -> None:
    """A write answers its dot; a missing key's delete names the key; a release, a sequence
    number and an update are logged by what they are (a sequence number without what its
    writer saw of the sequence, an update with its operation, argument and delta)."""
    from comity.crdt import TYPES
    from comity.errors import NotFound

    s = store.session("alice")
    w = s.txn(ops=[Put("k", 1)]).results[0]
    assert w["dot"] == [store.replica_id, 1] and w["op"] == "put"
    with pytest.raises(NotFound) as e:
        s.delete("gone")
    assert e.value.details == {"key": "gone"}
    t = _acquire(s)["token"]
    s.txn(ops=[Release("r", t)])
    assert [e["op"] for e in s.log("@lease/r")] == ["acquire", "release"]
    s.txn(ops=[Next("n")])
    s.txn(ops=[Next("n")])
    assert [("saw" in e, e["value"]) for e in s.log("@seq/n")] == [(False, 1), (False, 2)]
    s.update("c", "inc", 2, type="gcounter")
    event = s.log("c")[-1]
    assert (event["op"], event["value"]["op"], event["value"]["arg"]) == ("update.inc", "inc", 2)
    assert set(event["value"]) == {"op", "arg", "delta"}
    with pytest.raises(Invalid) as e2:
        s.update("new", "inc", 1)
    assert e2.value.message == f"type: 'new' has no CRDT type yet: give it a type ({', '.join(TYPES)})"


def test_a_write_forwarded_from_a_replica_records_no_read_position_of_the_replicas(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """A replica forwards to its authority what only the authority decides; the contexts in it
    were read on the replica, whose log positions mean nothing on the authority: the event
    says what the write saw by dots only."""
    from pathlib import Path

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    up = upstream.session("carol")
    up.put("k", 0)
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    alice = replica.session("alice")
    alice.put("mine", 1)  # the replica's log moves apart from the authority's
    ctx = alice.get("k").context
    alice.txn(guards=[Absent("fresh")], ops=[Put("k", 1, context=ctx)])  # needs the authority: forwarded
    forwarded = upstream.session().log("k")[-1]
    assert forwarded["agent"] == "alice" and "seen" not in forwarded and forwarded["saw"]
    local = up.put("k", 2, context=up.get("k").context)
    assert upstream.session().log("k")[-1]["seen"] == local.pos - 1
    replica.store.close()


def test_a_transaction_of_guards_only_answers_the_head(store: Store) -> None:
    s = store.session("alice")
    ctx = s.put("k", 1).context
    s.put("other", 1)
    s.put("more", 1)
    done = s.txn(guards=[Unchanged("k", ctx)])
    assert done.pos == s.head() == 3 and done.results == []


@pytest.mark.parametrize("kind", ["sequence", "lease", "note", "update"])
def test_news_from_another_writer_comes_with_a_write_of_any_kind(store: Store, kind: str) -> None:
    """Each kind of op counts the one event it appends: a session's next answer carries what
    another writer wrote between its last answer and this write."""
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("x", 1)
    bob.put("x", 2, context=bob.get("x").context)
    ops = {
        "sequence": ([Next("n")], False),
        "lease": ([Acquire("r", 10)], False),
        "note": ([Note("@notes", "heard", {})], True),
        "update": ([Update("c", "inc", 1, "gcounter")], False),
    }[kind]
    done = alice.txn(ops=ops[0], system=ops[1])  # type: ignore[arg-type]
    assert done.pos == 3
    assert [(n["key"], n["agent"], n["pos"]) for n in done.news] == [("x", "bob", 2)]


def test_a_last_writer_wins_register_set_later_wins_though_its_clock_is_behind(
    make_store: object, clock: VirtualClock
) -> None:
    """An update is stamped after its key's last event, as every write is: a register set by a
    process whose clock runs 10 s behind the last setter's still wins, being the later write."""
    here = make_store("s.db")  # type: ignore[operator]
    ahead = make_store("s.db", clock=VirtualClock(clock.now() + 10))  # type: ignore[operator]
    ahead.session("bob").update("reg", "set", "bob's", type="lww")
    assert here.session("alice").update("reg", "set", "alice's").results[0]["value"] == "alice's"
    assert here.session().get("reg").values == ["alice's"]


def test_a_replica_short_of_a_bounded_counters_rights_says_only_its_authority_may_decide(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """A replica holding too few of a bounded counter's rights leaves the decrement to its
    authority, which may hold enough; with no way to reach it, the refusal says why."""
    from pathlib import Path

    from comity.errors import Unavailable

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    upstream.session("carol").update("b", "inc", 5, type="bcounter")
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    replica.store.authority = None  # replication not loaded in this process
    with pytest.raises(Unavailable) as e:
        replica.session("alice").update("b", "dec", 1)
    assert "only its authority may do this (rights);" in e.value.message
    replica.store.close()


def test_a_lease_event_after_an_acquire_stamped_ahead_is_stamped_later_still(
    make_store: object, clock: VirtualClock
) -> None:
    """An acquire keeps its event's HLC time in the lease's row, so the lease's next event,
    written by a process whose clock runs 10 s behind, is still stamped after it."""
    ahead = make_store("s.db", clock=VirtualClock(clock.now() + 10))  # type: ignore[operator]
    here = make_store("s.db")  # type: ignore[operator]
    token = _acquire(ahead.session("alice"), "r", 60)["token"]
    here.session("alice").txn(ops=[Release("r", token)])
    events = here.session().log("@lease/r")
    assert [e["op"] for e in events] == ["acquire", "release"]
    assert events[0]["hlc"] < events[1]["hlc"]


def test_a_renewal_is_stamped_after_its_lease_and_keeps_its_time_for_the_next_event(
    make_store: object, clock: VirtualClock
) -> None:
    """A renewal is stamped after the lease's last event, and keeps its own time in the
    lease's row: with the processes' clocks 10 s apart, the lease's events stay in order."""
    ahead = make_store("s.db", clock=VirtualClock(clock.now() + 10))  # type: ignore[operator]
    here = make_store("s.db")  # type: ignore[operator]
    token = _acquire(ahead.session("alice"), "r", 60)["token"]
    here.session("alice").txn(ops=[Renew("r", token)])  # after the acquire, though its clock is behind
    token2 = _acquire(here.session("bob"), "q", 60)["token"]
    ahead.session("bob").txn(ops=[Renew("q", token2)])  # stamped ahead, kept in the row
    here.session("bob").txn(ops=[Release("q", token2)])  # after the renewal, though behind
    for resource, ops in (("r", ["acquire", "renew"]), ("q", ["acquire", "renew", "release"])):
        events = here.session().log(f"@lease/{resource}")
        assert [e["op"] for e in events] == ops
        assert [e["hlc"] for e in events] == sorted(e["hlc"] for e in events)
        assert len({e["hlc"] for e in events}) == len(events)


def test_a_release_logs_the_token_it_released(store: Store) -> None:
    s = store.session("alice")
    token = _acquire(s)["token"]
    s.txn(ops=[Release("r", token)])
    release = store.session().log("@lease/r")[-1]
    assert release["op"] == "release" and release["token"] == token


def test_a_key_updated_twice_in_one_transaction_is_refused(store: Store) -> None:
    """Two updates of one key (or an update then a put) in one transaction are refused by the
    key, nothing written: the writes are to be combined."""
    s = store.session("alice")
    for second in (Update("c", "inc", 1, "gcounter"), Put("c", 1)):
        with pytest.raises(Invalid) as e:
            s.txn(ops=[Update("c", "inc", 1, "gcounter"), second])
        assert e.value.field == "ops[1].key" and "written twice in one transaction" in e.value.message
    assert store.session().log() == []


# ------------------------------------------------- the whole run of 1 December


def test_a_write_with_no_lease_guard_is_not_provisional(store: Store) -> None:
    """Only a write a cut-off replica kept under lease tokens is provisional: any other write
    answers and logs no ``provisional`` mark, and its value is plain."""
    s = store.session("alice")
    made = s.txn(ops=[Create("k", 1)]).results[0]
    assert set(made) == {"key", "op", "values", "context", "pos", "dot"}
    t = _acquire(s)["token"]
    put = s.txn(guards=[Holds("r", t)], ops=[Put("k", 2, made["context"])]).results[0]
    assert set(put) == {"key", "op", "values", "context", "pos", "dot"} and put["values"] == [2]
    gone = s.txn(ops=[Delete("k", put["context"])]).results[0]
    assert set(gone) == {"key", "op", "values", "context", "pos", "dot"} and gone["values"] == []
    assert [("provisional" in e) for e in s.log("k")] == [False, False, False]
    assert store.session("bob").get("k").values == []


def test_a_write_without_context_over_a_deleted_key_supersedes_its_tombstone(store: Store) -> None:
    """A key with no live value needs no context: the write covers what the key held (its
    tombstone), so the key holds one value, and the event says what the write saw."""
    s = store.session("alice")
    w = s.put("k", 1)
    s.delete("k", context=w.context)
    s.put("k", 2)
    event = s.log("k")[-1]
    assert event["saw"] == {store.replica_id: 2} and "siblings" not in event
    assert s.get("k").values == [2]


def test_a_note_is_stamped_after_its_keys_last_event_and_moves_the_key_to_itself(
    make_store: object, clock: VirtualClock
) -> None:
    """A note on a key with a row is stamped after the key's last event, though the noting
    process's clock runs 10 s behind the writer's, and the key's row moves to the note: a
    refusal of a create names the note as the key's last event."""
    ahead = make_store("s.db", clock=VirtualClock(clock.now() + 10))  # type: ignore[operator]
    here = make_store("s.db")  # type: ignore[operator]
    ahead.session("alice").txn(ops=[Put("@agent/alice", 1)], system=True)
    noted = here.session("alice").txn(ops=[Note("@agent/alice", "beat", {"n": 1})], system=True)
    events = here.session().log("@agent/alice")
    assert [e["op"] for e in events] == ["put", "beat"]
    assert events[0]["hlc"] < events[1]["hlc"]
    with pytest.raises(StaleContext) as e:
        here.session("bob").txn(ops=[Create("@agent/alice", 2)], system=True)
    assert [(n["op"], n["pos"]) for n in e.value.news] == [("beat", noted.pos)]


def test_a_transaction_ending_with_a_lease_answers_the_leases_position(store: Store) -> None:
    s = store.session("alice")
    done = s.txn(ops=[Put("k", 1), Acquire("r", 10)])
    assert done.pos == s.head() == 2 and done.results[1]["token"] == 1
    done = s.txn(ops=[Next("n"), Release("r", 1)])
    assert done.pos == s.head() == 4


def test_a_replica_in_touch_with_its_authority_leaves_a_lease_guarded_write_to_it(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """A write guarded by a lease token is the authority's to judge: a replica that can reach
    it forwards the write, which is applied there at once and is not provisional."""
    from pathlib import Path

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    alice = replica.session("alice")
    token = alice.txn(ops=[Acquire("files", 60)]).results[0]["token"]
    done = alice.txn(guards=[Holds("files", token)], ops=[Put("files/a", "x")]).results[0]
    assert "provisional" not in done
    assert upstream.session().get("files/a").values == ["x"]
    assert "provisional" not in upstream.session().log("files/a")[-1]
    replica.store.close()


def test_a_forwarded_guard_stale_at_the_authority_names_the_keys_last_write(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """A guard's context read on a replica carries the replica's log position, which means
    nothing at the authority: stale there, the refusal names the key's last write only, not
    the authority's writes from that position on."""
    from pathlib import Path

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    up = upstream.session("carol")
    up.put("k", 0)
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    alice = replica.session("alice")
    ctx = alice.get("k").context
    for i in range(1, 4):
        up.put("k", i, context=up.get("k").context)
    with pytest.raises(StaleContext) as e:
        alice.txn(guards=[Unchanged("k", ctx), Absent("fresh")], ops=[Put("other", 1)])  # needs the authority
    assert [(n["key"], n["agent"], n["pos"]) for n in e.value.news] == [("k", "carol", 4)]
    assert e.value.message.startswith("'k' changed since your read: written by carol (put at pos 4);")
    replica.store.close()


def test_a_refusal_on_a_replica_of_a_key_whose_state_came_without_its_events_names_no_other_key(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """A key created through the authority comes back to its replica as a state without events
    (its row at position 0) when the pull that follows the forwarded write fails: a write there
    without context is refused as written by "another writer", never by a write to another key."""
    from pathlib import Path

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    replica = make_replica(upstream, Path(str(tmp_path)) / "a.db", clock)
    alice, bob = replica.session("alice"), replica.session("bob")
    alice.put("mine", 1)  # the first event of the replica's log, on another key
    replica.wire.fail_after = 1  # the forwarded create is answered; the pull after it is lost
    alice.create("k", 1)  # needs the authority: forwarded, its state brought back
    replica.wire.fail_after = None
    assert replica.store.session().log("k") == [] and bob.get("k").values == [1]
    with pytest.raises(StaleContext) as e:
        bob.put("k", 2)
    assert e.value.news == []
    assert e.value.message.startswith("'k' exists and this write carried no context: written by another writer;")
    replica.store.close()


def test_a_key_deleted_on_one_replica_and_written_on_another_shows_the_write(
    make_store: object, tmp_path: object, clock: VirtualClock
) -> None:
    """A delete and a write made at once on two replicas are both kept (the tombstone beside the
    value); a reader sees the value, whichever replica's entry comes first in the key's clock."""
    from pathlib import Path

    from sync_support import make_replica

    upstream = make_store("up.db")  # type: ignore[operator]
    up = upstream.session("carol")
    for key in ("a", "b"):
        up.put(key, 0)
    replica = make_replica(upstream, Path(str(tmp_path)) / "r.db", clock)
    here = replica.session("alice")
    read_here, read_up = {k: here.get(k).context for k in "ab"}, {k: up.get(k).context for k in "ab"}
    here.delete("a", context=read_here["a"])
    up.put("a", "carol's", context=read_up["a"])
    up.delete("b", context=read_up["b"])
    here.put("b", "alice's", context=read_here["b"])
    replica.sync()
    for store in (upstream, replica.store):
        s = store.session()
        assert s.get("a").values == ["carol's"] and s.get("b").values == ["alice's"]
    replica.store.close()
