"""The store's one primitive, the guarded transaction, and what is built on it.

Parametrized over backends (``conftest.BACKENDS``): every backend must pass this file
unchanged.  Time is a virtual clock (``clock`` fixture); nothing sleeps.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import comity
from comity.store._api import REFUSED_KEY
from comity import Fenced, Invalid, LeaseExpired, NotFound, StaleContext
from comity.runtime import VirtualClock
from comity.store import Absent, Acquire, Create, Delete, Holds, Next, Put, Release, Renew, Unchanged

# ------------------------------------------------------------------------ helpers


def snapshot(store: comity.Store, resources: tuple[str, ...] = ("r",)) -> tuple[Any, ...]:
    """Everything a refused or invalid request must leave alone: the log (but for the record
    of a refused write itself, a ``write.refused`` note on ``@refused``), every key's values,
    and the named leases (a renew writes no event, so leases are read directly)."""
    s = store.session()
    log = [e for e in s.log(limit=10_000) if e["key"] != REFUSED_KEY]
    keys = sorted({e["key"] for e in log if not e["key"].startswith("@")})
    values = {k: s.get(k).values for k in keys}
    with store.backend.transaction(write=False) as tx:
        leases = {r: tx.lease(r) for r in resources}
    return log, values, leases


def acquire(s: comity.Session, resource: str = "r", ttl: float = 10.0, *, steal: bool = False) -> int:
    token = s.txn(ops=[Acquire(resource, ttl, steal)]).results[0]["token"]
    assert isinstance(token, int)
    return token


def holds(s: comity.Session, token: int, resource: str = "r") -> None:
    """A guard-only transaction: raises unless ``token`` is current and unexpired."""
    s.txn(guards=[Holds(resource, token)])


def flip(token: str, i: int) -> str:
    c = token[i]
    return token[:i] + ("A" if c != "A" else "B") + token[i + 1 :]


# --------------------------------------------------------------- reads and writes


def test_get_of_absent_key_has_no_values_and_a_context_that_creates_it(store: comity.Store) -> None:
    s = store.session("alice")
    v = s.get("files/a.txt")
    assert v.values == []
    assert isinstance(v.context, str) and v.context
    w = s.put("files/a.txt", {"n": 1}, context=v.context)
    assert w.values == [{"n": 1}] and w.op == "put"
    assert s.get("files/a.txt").values == [{"n": 1}]


def test_blind_write_to_absent_key_is_allowed(store: comity.Store) -> None:
    s = store.session("alice")
    assert s.put("k", 1).values == [1]
    assert s.create("k2", 2).values == [2]


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -1.5, 2**63, "", "ünïcødé ✓", [], {}, {"a": [1, {"b": None}], "c": "d"}],
    # ASCII ids: an escaped non-ASCII id is not found again when named on the command line
    # by a second run in the same process (mutmut's), so tools/mutation.py could not run it.
    ids=lambda v: repr(v) if repr(v).isascii() else "non-ascii-string",
)
def test_json_values_round_trip(store: comity.Store, value: Any) -> None:
    s = store.session("alice")
    s.put("k", value)
    v = store.session().get("k")
    assert v.values == [value] and type(v.values[0]) is type(value)
    assert [e["value"] for e in s.log("k")] == [value]


def test_create_of_existing_key_is_stale_and_names_the_first_writer(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    first = alice.create("k", "alice's")
    before = snapshot(store)
    with pytest.raises(StaleContext) as ei:
        bob.create("k", "bob's")
    e = ei.value
    assert "alice" in str(e) and "'k'" in str(e)
    assert e.key == "k"
    assert e.rejected == "bob's"
    assert e.news and e.news[0]["agent"] == "alice" and e.news[0]["pos"] == first.pos
    assert e.to_json()["error"] == "stale_context"
    assert snapshot(store) == before


def test_write_without_context_to_existing_key_is_stale(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    before = snapshot(store)
    with pytest.raises(StaleContext) as ei:
        bob.put("k", 2)
    assert "alice" in str(ei.value) and ei.value.rejected == 2 and ei.value.news
    with pytest.raises(StaleContext):
        bob.delete("k")
    assert snapshot(store) == before


def test_put_with_fresh_context_replaces_and_returns_a_new_context(store: comity.Store) -> None:
    s = store.session("alice")
    s.create("k", 1)
    v = s.get("k")
    w = s.put("k", 2, context=v.context)
    assert w.values == [2]
    assert w.context != v.context
    assert w.pos == store.info()["head"]
    # the returned context is fresh: the writer can go on without re-reading
    w2 = s.put("k", 3, context=w.context)
    assert w2.values == [3] and w2.pos > w.pos
    # and the old one is not
    with pytest.raises(StaleContext):
        s.put("k", 4, context=v.context)
    assert s.get("k").values == [3]


def test_put_with_old_context_after_another_write_is_stale_with_the_news(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 0)
    old = alice.get("k").context
    bobs = bob.put("k", "bob", context=bob.get("k").context)
    before = snapshot(store)
    with pytest.raises(StaleContext) as ei:
        alice.put("k", "alice", context=old)
    e = ei.value
    assert "bob" in e.message
    assert [(n["agent"], n["op"], n["pos"]) for n in e.news] == [("bob", "put", bobs.pos)]
    assert e.rejected == "alice"
    assert snapshot(store) == before
    assert alice.get("k").values == ["bob"]


def test_keep_both_stores_a_sibling_and_a_covering_write_resolves_them(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 0)
    ctx = alice.get("k").context
    bob.put("k", "bob", context=bob.get("k").context)
    w = alice.put("k", "alice", context=ctx, keep_both=True)
    assert sorted(w.values) == ["alice", "bob"]
    v = bob.get("k")
    assert sorted(v.values) == ["alice", "bob"]
    with pytest.raises(ValueError):
        v.value  # noqa: B018 - siblings have no single value
    # a write whose context covers both siblings resolves them
    r = bob.put("k", "merged", context=v.context)
    assert r.values == ["merged"]
    assert alice.get("k").values == ["merged"]


def test_keep_both_without_context_keeps_a_sibling(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    assert sorted(bob.put("k", 2, keep_both=True).values) == [1, 2]
    assert sorted(alice.get("k").values) == [1, 2]


def test_keep_both_with_fresh_context_is_a_plain_replace(store: comity.Store) -> None:
    s = store.session("alice")
    s.create("k", 1)
    assert s.put("k", 2, context=s.get("k").context, keep_both=True).values == [2]


def test_a_write_resolving_only_what_it_saw_keeps_the_newer_sibling(store: comity.Store) -> None:
    a, b, c = store.session("a"), store.session("b"), store.session("c")
    a.create("k", 0)
    ctx0 = a.get("k").context
    b.put("k", "b", context=ctx0, keep_both=True)
    ctx_b = c.get("k").context  # saw "b"
    a.put("k", "a", context=ctx0, keep_both=True)  # sibling of "b", unseen by c
    with pytest.raises(StaleContext):
        c.put("k", "c", context=ctx_b)
    assert sorted(c.put("k", "c", context=ctx_b, keep_both=True).values) == ["a", "c"]


def test_delete_leaves_a_tombstone_and_create_works_after(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    d = alice.delete("k", context=alice.get("k").context)
    assert d.op == "delete" and d.values == []
    assert bob.get("k").values == []
    assert [e["op"] for e in bob.log("k")] == ["create", "delete"]
    c = bob.create("k", 2)
    assert c.values == [2]
    assert alice.get("k").values == [2]


def test_delete_with_stale_context_is_refused(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    old = alice.get("k").context
    bob.put("k", 2, context=bob.get("k").context)
    before = snapshot(store)
    with pytest.raises(StaleContext) as ei:
        alice.delete("k", context=old)
    assert "bob" in str(ei.value)
    assert snapshot(store) == before
    assert alice.get("k").values == [2]


def test_a_delete_since_the_read_makes_a_put_stale(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    old = alice.get("k").context
    bob.delete("k", context=bob.get("k").context)
    with pytest.raises(StaleContext) as ei:
        alice.put("k", 2, context=old)
    assert ei.value.news[0]["op"] == "delete" and ei.value.news[0]["agent"] == "bob"
    assert alice.get("k").values == []


# ---------------------------------------------------------------- the transaction


def test_txn_applies_every_op_or_none(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("a", 1)
    alice.create("b", 1)
    ctx_a, old_b = alice.get("a").context, alice.get("b").context
    bob.put("b", 2, context=bob.get("b").context)
    before = snapshot(store)
    with pytest.raises(StaleContext):
        alice.txn(ops=[Put("a", 10, ctx_a), Create("c", 10), Put("b", 10, old_b)])
    assert snapshot(store) == before
    r = alice.txn(ops=[Put("a", 10, ctx_a), Create("c", 10), Put("b", 10, alice.get("b").context)])
    assert [x["key"] for x in r.results] == ["a", "c", "b"]
    positions = [x["pos"] for x in r.results]
    assert positions == sorted(positions) and len(set(positions)) == 3 and r.pos == positions[-1]
    assert [alice.get(k).values for k in "acb"] == [[10], [10], [10]]


def test_a_failing_guard_applies_no_op(store: comity.Store) -> None:
    s = store.session("alice")
    s.create("x", 1)
    before = snapshot(store)
    with pytest.raises(StaleContext):
        s.txn(guards=[Absent("x")], ops=[Put("a", 1), Create("b", 1)])
    assert snapshot(store) == before


def test_absent_guard(store: comity.Store) -> None:
    s = store.session("alice")
    s.txn(guards=[Absent("k")], ops=[Put("other", 1)])
    s.create("k", 1)
    with pytest.raises(StaleContext) as ei:
        s.txn(guards=[Absent("k")], ops=[Put("other2", 1)])
    assert "alice" in str(ei.value)
    s.delete("k", context=s.get("k").context)
    s.txn(guards=[Absent("k")], ops=[Put("other2", 1)])  # a tombstone is absent
    assert s.get("other2").values == [1]


def test_unchanged_guard(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.txn(guards=[Unchanged("k", None)], ops=[Put("out", 0)])  # absent, no context: fine
    alice.create("k", 1)
    with pytest.raises(StaleContext):
        alice.txn(guards=[Unchanged("k", None)], ops=[Put("out", 1, alice.get("out").context)])
    ctx = alice.get("k").context
    alice.txn(guards=[Unchanged("k", ctx)], ops=[Put("out", 2, alice.get("out").context)])
    bob.put("k", 2, context=bob.get("k").context)
    before = snapshot(store)
    with pytest.raises(StaleContext) as ei:
        alice.txn(guards=[Unchanged("k", ctx)], ops=[Put("out", 3, alice.get("out").context)])
    assert "bob" in str(ei.value)
    assert snapshot(store) == before
    assert alice.get("out").values == [2]
    assert alice.get("k").values == [2]  # a guard reads, never writes


# ------------------------------------------------------------------------- leases


def test_lease_acquire_while_held_is_refused(store: comity.Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    assert acquire(alice, ttl=10) == 1
    clock.advance(9.9)
    before = snapshot(store)
    with pytest.raises(StaleContext) as ei:
        acquire(bob)
    assert "alice" in str(ei.value)
    with pytest.raises(StaleContext):
        acquire(alice)  # not even the holder: renew instead
    assert snapshot(store) == before
    holds(alice, 1)


def test_expired_lease_goes_to_the_next_with_a_greater_token_and_fences_the_old(
    store: comity.Store, clock: VirtualClock
) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    t1 = acquire(alice, ttl=10)
    clock.advance(10)
    with pytest.raises(LeaseExpired):
        holds(alice, t1)
    with pytest.raises(LeaseExpired):
        alice.txn(ops=[Renew("r", t1, 10)])
    t2 = acquire(bob, ttl=10)
    assert t2 > t1
    before = snapshot(store)
    with pytest.raises(Fenced):
        holds(alice, t1)
    with pytest.raises(Fenced):
        alice.txn(guards=[Holds("r", t1)], ops=[Put("guarded", "alice")])
    with pytest.raises(Fenced):
        alice.txn(ops=[Renew("r", t1, 10)])
    with pytest.raises(Fenced):
        alice.txn(ops=[Release("r", t1)])
    assert snapshot(store) == before
    bob.txn(guards=[Holds("r", t2)], ops=[Put("guarded", "bob")])
    assert bob.get("guarded").values == ["bob"]


def test_a_token_is_its_holders_alone(store: comity.Store) -> None:
    """The guard owns the rule: another agent presenting the holder's current token is
    Fenced (naming the holder) for a guarded write, a renew and a release, and nothing moves."""
    alice, bob = store.session("alice"), store.session("bob")
    t = acquire(bob)
    before = snapshot(store)
    for call in (
        lambda: holds(alice, t),
        lambda: alice.txn(guards=[Holds("r", t)], ops=[Put("guarded", "alice")]),
        lambda: alice.txn(ops=[Renew("r", t, 10)]),
        lambda: alice.txn(ops=[Release("r", t)]),
    ):
        with pytest.raises(Fenced) as ei:
            call()
        assert ei.value.details["holder"] == "bob" and "not alice" in ei.value.message
    assert snapshot(store) == before
    holds(bob, t)  # the holder's own token still holds


def test_a_superseded_token_is_fenced_not_stale(store: comity.Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    t1 = acquire(alice, ttl=10)
    t2 = acquire(bob, ttl=10, steal=True)
    with pytest.raises(Fenced) as ei:
        alice.txn(guards=[Holds("r", t1)], ops=[Put("out", 1)])
    assert type(ei.value) is Fenced and ei.value.details["current"] == t2 and ei.value.details["holder"] == "bob"


def test_renew_extends_the_lease(store: comity.Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    t = acquire(alice, ttl=10)
    clock.advance(8)
    alice.txn(ops=[Renew("r", t, 10)])
    clock.advance(8)  # 16s after the acquire, 8s after the renew
    holds(alice, t)
    with pytest.raises(StaleContext):
        acquire(bob)
    clock.advance(2)
    with pytest.raises(LeaseExpired):
        holds(alice, t)
    assert acquire(bob) == t + 1


def test_release_keeps_the_token(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    t = acquire(alice)
    alice.txn(ops=[Release("r", t)])
    with pytest.raises(Fenced):
        holds(alice, t)
    assert acquire(bob) == t + 1


def test_holds_a_token_never_granted_is_fenced(store: comity.Store) -> None:
    s = store.session("alice")
    with pytest.raises(Fenced):
        holds(s, 1)
    t = acquire(s)
    with pytest.raises(Fenced):
        holds(s, t + 1)


def test_fencing_tokens_never_repeat(make_store: Callable[..., comity.Store], clock: VirtualClock) -> None:
    store = make_store()
    a, b = store.session("alice"), store.session("bob")
    tokens = [acquire(a, ttl=5)]
    clock.advance(5)
    tokens.append(acquire(b, ttl=5))  # after expiry
    tokens.append(acquire(a, ttl=5, steal=True))  # stolen
    a.txn(ops=[Release("r", tokens[-1])])
    tokens.append(acquire(b, ttl=5))  # after release
    store.close()
    store = make_store()  # reopened: tokens do not rewind
    tokens.append(acquire(store.session("carol"), ttl=5, steal=True))
    assert tokens == sorted(set(tokens)) and tokens == [1, 2, 3, 4, 5]
    assert acquire(store.session("carol"), "other") == 1  # per resource


# ---------------------------------------------------------------------- retries


def test_a_retried_request_returns_the_recorded_outcome_once(store: comity.Store) -> None:
    alice = store.session("alice")
    alice.create("k", 0)
    ctx = alice.get("k").context
    first = alice.put("k", 1, context=ctx, request_id="req-1")
    # the retry comes from another connection of the same agent (a CLI retry is a new process)
    again = store.session("alice").put("k", 1, context=ctx, request_id="req-1")
    assert not first.replayed and again.replayed
    assert (again.key, again.op, again.values, again.context, again.pos) == (
        first.key, first.op, first.values, first.context, first.pos,
    )
    assert [e["op"] for e in alice.log("k")] == ["create", "put"]


def test_a_retried_create_is_not_refused_by_its_first_attempt(store: comity.Store) -> None:
    s = store.session("alice")
    first = s.create("k", 1, request_id="c-1")
    again = s.create("k", 1, request_id="c-1")
    assert again.replayed and again.pos == first.pos
    assert len(s.log("k")) == 1


def test_a_retried_acquire_does_not_take_a_second_token(store: comity.Store) -> None:
    s = store.session("alice")
    r1 = s.txn(ops=[Acquire("r", 10)], request_id="a-1")
    r2 = s.txn(ops=[Acquire("r", 10)], request_id="a-1")
    assert r2.replayed and r2.results == r1.results
    assert acquire(s, steal=True) == r1.results[0]["token"] + 1


def test_reusing_a_request_id_for_another_request_is_invalid(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("k", 1, request_id="req-1")
    before = snapshot(store)
    attempts: list[Callable[[], object]] = [
        lambda: alice.put("k2", 1, request_id="req-1"),  # another key
        lambda: alice.put("k", 2, request_id="req-1"),  # another value
        lambda: alice.put("k", 1, keep_both=True, request_id="req-1"),  # another mode
        lambda: bob.put("k", 1, request_id="req-1"),  # another agent
    ]
    for attempt in attempts:
        with pytest.raises(Invalid) as ei:
            attempt()
        assert ei.value.field.endswith("request_id")
    assert snapshot(store) == before


# ------------------------------------------------------------------------- news


def test_news_shows_others_writes_to_keys_the_session_read(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    made = alice.create("k", 1)
    alice.create("unrelated", 1)
    v = bob.get("k")
    assert [(n["agent"], n["op"], n["key"], n["pos"]) for n in v.news] == [("alice", "create", "k", made.pos)]
    assert bob.position == made.pos  # "unrelated" was not shown: news() still has it
    assert bob.get("k").news == []  # shown once
    w = alice.put("k", 2, context=alice.get("k").context)
    assert [n["pos"] for n in bob.get("k").news] == [w.pos]
    # a session's own writes are never its news
    mine = bob.put("k", 3, context=bob.get("k").context)
    assert mine.news == [] and bob.get("k").news == []
    assert [n["pos"] for n in alice.get("k").news] == [mine.pos]  # not alice's own put


def test_a_write_carries_news_of_its_keys(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    bob.get("k")
    alice.create("k", 1)
    ctx = alice.get("k").context
    alice.put("k", 2, context=ctx)
    w = bob.put("k", 3, keep_both=True)
    assert [(n["agent"], n["op"]) for n in w.news] == [("alice", "create"), ("alice", "put")]
    assert bob.get("k").news == []


def test_news_position_advances_and_news_is_capped(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    start = bob.position
    alice.txn(ops=[Put(f"n/{i}", i) for i in range(60)])
    first = bob.news()
    assert len(first.events) == store.news_limit == 50 and first.truncated
    assert first.position == first.events[-1]["pos"] > start
    rest = bob.news()
    assert len(rest.events) == 10 and not rest.truncated
    assert rest.position == store.info()["head"]
    assert [e["pos"] for e in first.events + rest.events] == sorted({e["pos"] for e in first.events + rest.events})
    assert bob.news().events == []


def test_news_of_a_read_is_capped_too(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    bob.get("hot")
    ctx = None
    for i in range(store.news_limit + 5):
        ctx = alice.put("hot", i, context=ctx).context
    v = bob.get("hot")
    assert len(v.news) == store.news_limit and v.news_truncated
    assert v.to_json()["news_truncated"] is True
    v2 = bob.get("hot")
    assert len(v2.news) == 5 and not v2.news_truncated
    assert [n["pos"] for n in v.news + v2.news] == [e["pos"] for e in bob.log("hot")]


def test_news_of_a_session_far_behind_still_finds_its_keys(store: comity.Store) -> None:
    """Past a few hundred events the backend is asked for the keys' events directly."""
    alice, bob = store.session("alice"), store.session("bob")
    bob.get("hot")
    ctx = None
    mine = []
    for i in range(store.news_limit + 5):
        w = alice.put("hot", i, context=ctx)
        ctx = w.context
        mine.append(w.pos)
        if i % 10 == 0:
            alice.txn(ops=[Put(f"noise/{i}/{j}", j) for j in range(40)])
    v = bob.get("hot")
    assert [n["pos"] for n in v.news] == mine[: store.news_limit] and v.news_truncated
    v2 = bob.get("hot")
    assert [n["pos"] for n in v2.news] == mine[store.news_limit :] and not v2.news_truncated


def test_news_with_a_large_limit_loses_nothing(store: comity.Store) -> None:
    # Regression: news(limit=L) with L > 256 showed 257 events, said "not truncated" and
    # moved the position to the head, so the rest were never shown.
    alice, bob = store.session("alice"), store.session("bob")
    alice.txn(ops=[Put(f"n/{i}", i) for i in range(400)])
    seen: list[int] = []
    for _ in range(5):
        n = bob.news(limit=1000)
        seen += [e["pos"] for e in n.events]
        if not n.truncated:
            break
    assert len(seen) == 400


def test_errors_do_not_move_the_news_position(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    old = bob.get("k").context
    at = bob.position
    w = alice.put("k", 2, context=alice.get("k").context)
    with pytest.raises(StaleContext) as ei:
        bob.put("k", 3, context=old)
    assert [n["pos"] for n in ei.value.news] == [w.pos]  # the error carries its own news
    with pytest.raises(Invalid):
        bob.put("bad key", 3)
    with pytest.raises(Invalid):
        bob.get("")
    assert bob.position == at
    assert [n["pos"] for n in bob.get("k").news] == [w.pos]  # still news


def test_a_named_session_keeps_its_position_across_connections(store: comity.Store) -> None:
    """Each block is one process (a CLI call): it opens the session, answers, and closes."""
    alice = store.session("alice")
    with store.session("bob", name="bob-cli") as s1:
        s1.get("k")
    w = alice.put("k", 1)
    with store.session("bob", name="bob-cli") as s2:
        assert s2.position == s1.position < w.pos
        assert [n["pos"] for n in s2.get("k").news] == [w.pos]
    with store.session("bob", name="bob-cli") as s3:
        assert s3.position == store.info()["head"]
        assert s3.get("k").news == []
    # the keys it read are remembered too: a write elsewhere still brings news of "k"
    w2 = alice.put("k", 2, context=alice.get("k").context)
    with store.session("bob", name="bob-cli") as s4:
        assert [n["pos"] for n in s4.put("elsewhere", 1).news] == [w2.pos]
    # other named sessions have their own positions
    assert store.session("bob", name="other").position == store.info()["head"]


# -------------------------------------------------------------------------- log


def test_log_is_in_order_with_strictly_increasing_positions(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    written = [alice.create("a", 1), bob.create("b", 1)]
    written.append(alice.put("a", 2, context=written[0].context))
    written.append(bob.delete("b", context=written[1].context))
    written.append(alice.put("a", 3, keep_both=True))
    log = alice.log()
    pos = [e["pos"] for e in log]
    assert pos == sorted(pos) and len(set(pos)) == len(pos)
    assert [(e["pos"], e["key"], e["op"]) for e in log] == [(w.pos, w.key, w.op) for w in written]
    assert [e["agent"] for e in log] == ["alice", "bob", "alice", "bob", "alice"]
    assert [e.get("value") for e in log] == [1, 1, 2, None, 3]
    assert [e["pos"] for e in alice.log("a")] == [written[0].pos, written[2].pos, written[4].pos]
    assert alice.log(after=written[1].pos, limit=2) == log[2:4]


def test_events_of_one_key_carry_increasing_hlc_times_across_store_handles(
    make_store: Callable[..., comity.Store],
) -> None:
    """Two handles on one store (two processes) on one clock: each key's events are still
    in HLC order, because a writer reads the key's last time before stamping."""
    a, b = make_store().session("a"), make_store().session("b")
    for i in range(3):
        a.put("k", i, keep_both=True)
        b.put("k", i, keep_both=True)
    times = [e["hlc"] for e in a.log("k")]
    assert times == sorted(set(times)) and len(times) == 6


def test_lease_events_carry_increasing_hlc_times_across_store_handles(
    make_store: Callable[..., comity.Store],
) -> None:
    # Regression: a lease event was stamped without the time of the lease's previous
    # event, so an acquire after a release made through another handle could be earlier.
    a, b = make_store().session("a"), make_store().session("b")
    a.put("warm-up", 1)  # a's clock is ahead of b's, as a busier process's would be
    a.put("warm-up-2", 1)
    t = acquire(a)
    a.txn(ops=[Release("r", t)])
    acquire(b)
    times = [e["hlc"] for e in a.log() if e["key"] == "@lease/r"]
    assert len(times) == 3 and times == sorted(set(times)), times


def test_valid_keys_are_accepted(store: comity.Store) -> None:
    s = store.session("alice")
    for key in ("k" * 512, "a/b.c-d_e:f+g=h@i,j~k", "0", "_x", ".hidden", "-dash", "files/db/0267.sql"):
        assert s.put(key, 1).values == [1], key
        assert s.get(key).values == [1]


def test_listing_keys_is_not_crowded_out_by_comitys_own_keys(store: comity.Store) -> None:
    s = store.session("alice")
    s.put("k", 1)
    for name in ("a", "b", "c"):
        s.txn(ops=[Next(name)])  # each sequence lives under an '@seq/' key
    assert s.keys() == ["k"]
    assert s.keys(limit=1) == ["k"]


# -------------------------------------------------------------------- bad input


@dataclass
class Setup:
    store: comity.Store
    s: comity.Session
    ctx: str  # a valid context of "k"
    ctx_other_key: str
    ctx_other_store: str
    token: int


@pytest.fixture
def setup(make_store: Callable[..., comity.Store]) -> Setup:
    other = make_store("other.db")
    other.session("zed").create("k", "elsewhere")
    ctx_other_store = other.session().get("k").context
    store = make_store()
    s = store.session("alice")
    s.create("k", 1)
    s.create("j", 1)
    token = acquire(s)
    return Setup(store, s, s.get("k").context, s.get("j").context, ctx_other_store, token)


def _garble(ctx: str) -> str:
    body, mac = ctx.split(".")
    return flip(body, len(body) // 2) + "." + mac


def _bad_mac(ctx: str) -> str:
    body, mac = ctx.split(".")
    return body + "." + flip(mac, 3)


BAD: list[tuple[str, Callable[[Setup], object], str]] = [
    # keys
    ("get-empty-key", lambda x: x.s.get(""), "key"),
    ("put-empty-key", lambda x: x.s.put("", 1), "key"),
    ("put-key-with-space", lambda x: x.s.put("a b", 1), "key"),
    ("put-key-too-long", lambda x: x.s.put("k" * 513, 1), "key"),
    ("put-key-leading-slash", lambda x: x.s.put("/etc/passwd", 1), "key"),
    ("put-key-empty-segment", lambda x: x.s.put("a//b", 1), "key"),
    ("put-key-trailing-slash", lambda x: x.s.put("a/", 1), "key"),
    ("put-key-newline", lambda x: x.s.put("a\n", 1), "key"),
    ("put-key-int", lambda x: x.s.put(5, 1), "key"),  # type: ignore[arg-type]
    ("put-key-none", lambda x: x.s.put(None, 1), "key"),  # type: ignore[arg-type]
    ("put-key-bytes", lambda x: x.s.put(b"k", 1), "key"),  # type: ignore[arg-type]
    ("create-bad-key", lambda x: x.s.create("a b", 1), "key"),
    ("delete-bad-key", lambda x: x.s.delete("", context=x.ctx), "key"),
    ("guard-bad-key", lambda x: x.s.txn(guards=[Absent("a b")], ops=[Put("z", 1)]), "key"),
    ("log-bad-key", lambda x: x.s.log("a b"), "key"),
    # values
    ("value-set", lambda x: x.s.put("z", {1, 2}), "value"),
    ("value-nan", lambda x: x.s.put("z", float("nan")), "value"),
    ("value-inf", lambda x: x.s.put("z", float("inf")), "value"),
    ("value-object", lambda x: x.s.put("z", object()), "value"),
    ("value-bytes", lambda x: x.s.create("z", b"raw"), "value"),
    ("value-nested-set", lambda x: x.s.put("z", {"a": [1, {2}]}), "value"),
    ("value-over-default-cap", lambda x: x.s.put("z", "x" * (1 << 20)), "value"),
    ("value-in-later-op", lambda x: x.s.txn(ops=[Put("y", 1), Put("z", float("nan"))]), "value"),
    # contexts
    ("context-garbage", lambda x: x.s.put("k", 2, context="garbage"), "context"),
    ("context-empty", lambda x: x.s.put("k", 2, context=""), "context"),
    ("context-three-parts", lambda x: x.s.put("k", 2, context="a.b.c"), "context"),
    ("context-not-a-string", lambda x: x.s.put("k", 2, context=42), "context"),  # type: ignore[arg-type]
    ("context-tampered", lambda x: x.s.put("k", 2, context=_garble(x.ctx)), "context"),
    ("context-bad-seal", lambda x: x.s.put("k", 2, context=_bad_mac(x.ctx)), "context"),
    ("context-truncated", lambda x: x.s.put("k", 2, context=x.ctx[:-3]), "context"),
    ("context-of-another-key", lambda x: x.s.put("k", 2, context=x.ctx_other_key), "context"),
    ("context-of-another-store", lambda x: x.s.put("k", 2, context=x.ctx_other_store), "context"),
    ("context-keep-both-tampered", lambda x: x.s.put("k", 2, context=_garble(x.ctx), keep_both=True), "context"),
    ("context-delete-of-another-key", lambda x: x.s.delete("k", context=x.ctx_other_key), "context"),
    ("context-guard-of-another-store", lambda x: x.s.txn(guards=[Unchanged("k", x.ctx_other_store)], ops=[Put("z", 1)]), "context"),
    # leases
    ("ttl-negative", lambda x: x.s.txn(ops=[Acquire("q", -1)]), "ttl"),
    ("ttl-zero", lambda x: x.s.txn(ops=[Acquire("q", 0)]), "ttl"),
    ("ttl-huge", lambda x: x.s.txn(ops=[Acquire("q", 1e12)]), "ttl"),
    ("ttl-over-a-week", lambda x: x.s.txn(ops=[Acquire("q", 7 * 24 * 3600 + 1)]), "ttl"),
    ("ttl-nan", lambda x: x.s.txn(ops=[Acquire("q", float("nan"))]), "ttl"),
    ("ttl-inf", lambda x: x.s.txn(ops=[Acquire("q", float("inf"))]), "ttl"),
    ("ttl-bool", lambda x: x.s.txn(ops=[Acquire("q", True)]), "ttl"),
    ("ttl-string", lambda x: x.s.txn(ops=[Acquire("q", "10")]), "ttl"),  # type: ignore[arg-type]
    ("renew-ttl-negative", lambda x: x.s.txn(ops=[Renew("r", x.token, -5)]), "ttl"),
    ("renew-ttl-huge", lambda x: x.s.txn(ops=[Renew("r", x.token, 1e12)]), "ttl"),
    ("token-zero", lambda x: x.s.txn(guards=[Holds("r", 0)]), "token"),
    ("token-negative", lambda x: x.s.txn(ops=[Release("r", -1)]), "token"),
    ("token-bool", lambda x: x.s.txn(ops=[Renew("r", True, 10)]), "token"),
    ("token-float", lambda x: x.s.txn(ops=[Release("r", 1.0)]), "token"),  # type: ignore[arg-type]
    ("token-string", lambda x: x.s.txn(guards=[Holds("r", "1")]), "token"),  # type: ignore[arg-type]
    ("resource-empty", lambda x: x.s.txn(ops=[Acquire("", 10)]), "resource"),
    # requests, agents, shapes
    ("request-id-empty", lambda x: x.s.put("z", 1, request_id=""), "request_id"),
    ("request-id-too-long", lambda x: x.s.put("z", 1, request_id="r" * 129), "request_id"),
    ("request-id-int", lambda x: x.s.put("z", 1, request_id=7), "request_id"),  # type: ignore[arg-type]
    ("agent-missing", lambda x: x.store.session().put("z", 1), "agent"),
    ("agent-with-space", lambda x: x.store.session("two words"), "agent"),
    ("agent-empty", lambda x: x.store.session(""), "agent"),
    ("session-name-bad", lambda x: x.store.session("alice", name="a b"), "session"),
    ("txn-empty", lambda x: x.s.txn(), "ops"),
    ("txn-same-key-twice", lambda x: x.s.txn(ops=[Put("z", 1), Delete("z")]), "key"),
    ("txn-unknown-op", lambda x: x.s.txn(ops=["put z 1"]), "type"),  # type: ignore[list-item]
    ("txn-unknown-guard", lambda x: x.s.txn(guards=[("k", None)]), "type"),  # type: ignore[list-item]
    ("log-after-negative", lambda x: x.s.log(after=-1), "after"),
    ("log-limit-zero", lambda x: x.s.log(limit=0), "limit"),
]


@pytest.mark.parametrize(("call", "expected_field"), [pytest.param(c, f, id=i) for i, c, f in BAD])
def test_bad_input_is_invalid_names_the_field_and_changes_nothing(
    setup: Setup, call: Callable[[Setup], object], expected_field: str
) -> None:
    before = snapshot(setup.store)
    position = setup.s.position
    with pytest.raises(Invalid) as ei:
        call(setup)
    e = ei.value
    assert e.field == expected_field or e.field.endswith("." + expected_field), e.field
    assert e.to_json()["error"] == "invalid" and e.to_json()["field"] == e.field
    assert e.message.startswith(e.field)
    assert snapshot(setup.store) == before
    assert setup.s.position == position


def test_every_single_character_change_to_a_context_is_refused(setup: Setup) -> None:
    """Tamper-evident: a changed context is refused unless it still decodes to the very
    same bytes (base64's unused padding bits)."""

    def raw(ctx: str) -> tuple[bytes, bytes] | None:
        try:
            body, mac = ctx.split(".")
            return (base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)),
                    base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
        except ValueError:
            return None

    before = snapshot(setup.store)
    for i in range(len(setup.ctx)):
        if setup.ctx[i] == ".":
            continue
        changed = flip(setup.ctx, i)
        if raw(changed) == raw(setup.ctx):
            continue
        with pytest.raises(Invalid) as ei:
            setup.s.put("k", 2, context=changed)
        assert ei.value.field.endswith("context")
    assert snapshot(setup.store) == before


def test_value_size_cap_is_configurable(make_store: Callable[..., comity.Store]) -> None:
    store = make_store(max_value_bytes=16)
    s = store.session("alice")
    assert s.put("k", "x" * 14).values == ["x" * 14]  # 16 bytes of JSON
    assert s.put("u", "é" * 7).values == ["é" * 7]  # 16 bytes of UTF-8
    before = snapshot(store)
    with pytest.raises(Invalid) as ei:
        s.put("k", "x" * 15, context=s.get("k").context)
    assert ei.value.field.endswith("value") and "16" in ei.value.message
    with pytest.raises(Invalid):
        s.create("v", "é" * 8)
    assert snapshot(store) == before
    with pytest.raises(Invalid):
        make_store("zero.db", max_value_bytes=0)


def test_value_size_cap_from_the_environment(
    make_store: Callable[..., comity.Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMITY_MAX_VALUE_BYTES", "8")
    s = make_store().session("alice")
    s.put("k", 1234567)
    with pytest.raises(Invalid):
        s.put("j", 123456789)
    monkeypatch.setenv("COMITY_MAX_VALUE_BYTES", "lots")
    with pytest.raises(Invalid) as ei:
        make_store("env.db")
    assert "COMITY_MAX_VALUE_BYTES" in ei.value.field


def _deep(depth: int) -> list[Any]:
    root: list[Any] = []
    cur = root
    for _ in range(depth):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return root


@pytest.mark.parametrize(
    ("key", "value", "expected_field"),
    [
        pytest.param("k", "\ud800", "value", id="lone-surrogate-value"),
        pytest.param("\ud800", 1, "key", id="lone-surrogate-key"),
        pytest.param("k", _deep(100_000), "value", id="deeply-nested-value"),  # ~200 KB, under the cap
    ],
)
def test_values_and_keys_json_cannot_carry_are_invalid(
    setup: Setup, key: Any, value: Any, expected_field: str
) -> None:
    # Regression: these raised UnicodeEncodeError / RecursionError instead of Invalid.
    before = snapshot(setup.store)
    with pytest.raises(Invalid) as ei:
        setup.s.put(key, value)
    assert ei.value.field.endswith(expected_field)
    assert snapshot(setup.store) == before


# ---------------------------------------------------------- causal metadata size


def test_metadata_of_a_key_written_by_many_agents_names_only_the_replica(store: comity.Store) -> None:
    """Version vectors have one entry per replica, never per client: 10,000 agents
    writing one key leave a clock of one entry."""
    n = 10_000
    first = store.session("first").put("shared", -1)
    ctx = first.context
    for i in range(n):
        w = store.session(f"agent-{i}").put("shared", i, context=ctx)
        ctx = w.context
    assert store.session().get("shared").values == [n - 1]
    with store.backend.transaction(write=False) as tx:
        row = tx.load("shared")
    assert row is not None
    clock = json.loads(row.clock)
    assert {entry[0] for entry in clock["e"]} == {store.replica_id}
    assert not clock.get("a")
    assert len(row.clock) < 200, row.clock
    assert len(ctx) < 200
    assert len({e["agent"] for e in store.session().log("shared", after=first.pos, limit=10_000)}) == n


# ----------------------------------------------------------- model-based history

KEYS = ("k0", "k1", "k2")
AGENTS = ("a", "b", "c")
TOMB = "<tombstone>"


@dataclass
class KeyModel:
    """One key on one replica: ``n`` events so far; the live dots and their values.
    A context is the number of events its reader had seen."""

    n: int = 0
    live: dict[int, Any] = field(default_factory=dict)

    def values(self) -> list[Any]:
        return sorted(v for v in self.live.values() if v != TOMB)

    def has_live(self) -> bool:
        return bool(self.values())


def test_random_histories_follow_the_model(make_store: Callable[..., comity.Store]) -> None:
    """Several sessions get / put (their last context, or none) / put keep_both / delete /
    create on three keys.  Every answer matches a reference model of dotted version
    vectors; every acknowledged write is present unless a later acknowledged write whose
    context covered it superseded it; a refused write changes nothing."""
    names = itertools.count()

    class History(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = make_store(f"history-{next(names)}.db")
            self.sessions = {a: self.store.session(a) for a in AGENTS}
            self.observer = self.store.session()
            self.model = {k: KeyModel() for k in KEYS}
            # per (agent, key): the last context and what it had seen
            self.ctx: dict[tuple[str, str], tuple[str, int]] = {}
            self.acked: list[tuple[str, int, Any]] = []  # (key, dot, value)
            self.superseded: set[tuple[str, int]] = set()
            self.values = itertools.count()

        def teardown(self) -> None:
            self.store.close()

        # -- the reference model: which events the new write supersedes, or None if stale
        def seen_by(self, key: str, kind: str, c: int | None, keep_both: bool = False) -> int | None:
            m = self.model[key]
            if kind == "create":
                return None if m.has_live() else m.n
            if c is None:  # no context: fine on an absent key, stale (or a sibling) otherwise
                if m.has_live():
                    return 0 if keep_both else None
                return m.n
            if not keep_both and any(d > c for d in m.live):
                return None
            return c

        def written(self) -> int:
            """Events in the log other than records of refused writes (which a refusal adds)."""
            log = self.observer.log(limit=10_000, values=False)
            return len([e for e in log if e["key"] != REFUSED_KEY])

        def attempt(self, agent: str, key: str, kind: str, keep_both: bool = False) -> None:
            s = self.sessions[agent]
            ctx, c = self.ctx.get((agent, key), (None, None))
            value = TOMB if kind == "delete" else next(self.values)
            seen = self.seen_by(key, kind, c, keep_both)
            before = (self.written(), self.observer.get(key).values)
            if kind == "delete" and not self.model[key].has_live():
                with pytest.raises(NotFound):  # nothing there to delete
                    s.delete(key, context=ctx)
                assert (self.written(), self.observer.get(key).values) == before
                return
            try:
                if kind == "create":
                    w = s.create(key, value)
                elif kind == "delete":
                    w = s.delete(key, context=ctx)
                else:
                    w = s.put(key, value, context=ctx, keep_both=keep_both)
            except StaleContext as e:
                assert seen is None, f"refused a write the model accepts: {e}"
                assert e.rejected == (None if kind == "delete" else value)
                assert e.news, "a refusal names who wrote"
                assert (self.written(), self.observer.get(key).values) == before
                return
            assert seen is not None, f"accepted a {kind} the model refuses"
            m = self.model[key]
            for d in [d for d in m.live if d <= seen]:
                self.superseded.add((key, d))
                del m.live[d]
            m.n += 1
            m.live[m.n] = value
            assert w.pos == self.store.info()["head"]
            assert sorted(w.values) == m.values()
            assert all(n["session"] != s.id for n in w.news)
            self.ctx[(agent, key)] = (w.context, m.n)
            if kind != "delete":
                self.acked.append((key, m.n, value))

        @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS))
        def get(self, agent: str, key: str) -> None:
            v = self.sessions[agent].get(key)
            assert sorted(v.values) == self.model[key].values()
            assert all(n["session"] != self.sessions[agent].id for n in v.news)
            self.ctx[(agent, key)] = (v.context, self.model[key].n)

        @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS), keep_both=st.booleans())
        def put(self, agent: str, key: str, keep_both: bool) -> None:
            self.attempt(agent, key, "put", keep_both)

        @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS))
        def delete(self, agent: str, key: str) -> None:
            self.attempt(agent, key, "delete")

        @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS))
        def create(self, agent: str, key: str) -> None:
            self.attempt(agent, key, "create")

        @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS))
        def forget(self, agent: str, key: str) -> None:
            self.ctx.pop((agent, key), None)  # the next write is blind

        @invariant()
        def acknowledged_writes_survive_unless_covered(self) -> None:
            current = {k: self.observer.get(k).values for k in KEYS}
            for key, dot, value in self.acked:
                present = value in current[key]
                assert present == ((key, dot) not in self.superseded), (key, dot, value, current[key])
            for k in KEYS:
                assert sorted(current[k]) == self.model[k].values()

        @invariant()
        def positions_only_grow(self) -> None:
            head = self.store.info()["head"]
            assert all(s.position <= head for s in self.sessions.values())

    run_state_machine_as_test(
        History, settings=settings(max_examples=100, stateful_step_count=30, deadline=None)
    )


def test_a_copied_store_file_takes_a_new_replica_id(tmp_path: Any) -> None:
    import shutil

    original = comity.open(tmp_path / "a.db")
    original.session("alice").put("k", 1)
    rid = original.replica_id
    original.backend.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
    original.close()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    copy = comity.open(tmp_path / "b.db")
    assert copy.replica_id != rid, "two files issuing dots under one replica id would collide"
    assert copy.session().get("k").values == [1]
    copy.session("bob").put("k", 2, context=copy.session().get("k").context)
    copy.close()
    again = comity.open(tmp_path / "a.db")
    assert again.replica_id == rid, "the original keeps its id"
    again.close()


# ------------------------------------------------------------------ replication (the backend's part)


def test_events_from_an_origin_and_the_origins_table(store: comity.Store) -> None:
    """What comity.sync asks of a backend: a log's events by origin, in origin order, those
    that arrived from elsewhere keeping their origin position; the per-origin digest; settings."""
    from comity.store import EventRow

    s = store.session("alice")
    for i in range(3):
        s.put(f"k{i}", i)
    me = store.replica_id
    with store.backend.transaction(write=True) as tx:
        assert tx.origins() == {}
        # Two events that came from replica "rX", at its positions 5 and 9.
        for origin in (5, 9):
            e = EventRow("far", "put", "bob", "x1", "rX", origin, "000000000000001.0000000000", "q", "1", None, 0, None, 0, origin)
            tx.append(e)
        tx.set_origin("rX", 9)
        tx.set_origin("rX", 4)  # never rewinds
        tx.set_setting("upstream_test", "somewhere")
        tx.set_setting("upstream_test", "elsewhere")
    with store.backend.transaction(write=False) as tx:
        assert tx.origins() == {"rX": 9}
        mine = tx.events_from(me, 0, 100)
        assert [e.key for e in mine] == ["k0", "k1", "k2"] and all(e.opos is None for e in mine)
        assert [e.origin for e in tx.events_from(me, mine[0].pos, 100)] == [mine[1].pos, mine[2].pos]
        far = tx.events_from("rX", 0, 100)
        assert [(e.origin, e.opos, e.key) for e in far] == [(5, 5, "far"), (9, 9, "far")]
        assert [e.origin for e in tx.events_from("rX", 5, 100)] == [9]
        assert [e.origin for e in tx.events_from("rX", 0, 1)] == [5]
        assert tx.events_from("nobody", 0, 10) == []
        assert tx.setting("upstream_test") == "elsewhere" and tx.setting("nothing") is None
        keys = [k for k, _ in tx.states(None, 100)]
        assert keys == ["k0", "k1", "k2"]
        assert [k for k, _ in tx.states("k0", 1)] == ["k1"]
    s.delete("k1", context=s.get("k1").context)
    with store.backend.transaction(write=False) as tx:
        rows = dict(tx.states(None, 100))
        assert rows["k1"].live is False and rows["k0"].live is True  # tombstones are states too
    assert [e["origin_pos"] for e in s.log() if e["key"] == "far"] == [5, 9]


def test_a_copy_remembers_every_event_of_its_original(tmp_path: Any) -> None:
    import shutil

    store = comity.open(tmp_path / "a.db")
    store.session("alice").put("k", 1)
    original, head = store.replica_id, store.info()["head"]
    store.close()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    copy = comity.open(tmp_path / "b.db")
    with copy.backend.transaction(write=False) as tx:
        assert copy.replica_id != original
        assert tx.origins() == {original: head, copy.replica_id: head}  # its own events come after
    copy.close()
