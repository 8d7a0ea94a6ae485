"""Leases with fencing tokens, task takeover, liveness and stealing, on a virtual clock.

Nothing sleeps: expiry is judged by the store's clock, which the tests advance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import comity
from comity import Fenced, Invalid, LeaseExpired, StaleContext
from comity.coord import Leases, PhiAccrual, agents, heartbeat
from comity.runtime import VirtualClock
from comity.store import Holds, Put
from comity.work import Board

# ------------------------------------------------------------------------ fixtures


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def store(make_store: Callable[..., comity.Store], vclock: VirtualClock) -> comity.Store:
    """A store of each backend (conftest), on the virtual clock."""
    return make_store(clock=vclock)


def leases(store: comity.Store, agent: str) -> Leases:
    return Leases(store.session(agent))


def status(store: comity.Store, agent: str, **kw: Any) -> Any:
    found = {a.agent: a for a in agents(store.session(), **kw)}
    return found.get(agent)


# ------------------------------------------------------------ acquire, renew, release


def test_acquire_renew_release(store: comity.Store, vclock: VirtualClock) -> None:
    alice = leases(store, "alice")
    t0 = vclock.now()
    lease = alice.acquire("build", ttl=10)
    assert (lease.resource, lease.holder, lease.token, lease.expires) == ("build", "alice", 1, t0 + 10)
    got, now = alice.get("build")
    assert got == lease and now == t0

    vclock.advance(8)
    renewed = alice.renew("build", lease.token, ttl=10)
    assert renewed.token == lease.token and renewed.expires == t0 + 18
    vclock.advance(8)  # 16 s after the acquire: alive only because of the renew
    alice.check("build", lease.token)

    alice.release("build", lease.token)
    got, _ = alice.get("build")
    assert got is not None and got.holder is None and got.token == lease.token  # a release keeps its token
    assert alice.get("never")[0] is None


def test_a_held_lease_is_refused_to_another_agent_naming_the_holder(store: comity.Store) -> None:
    lease = leases(store, "alice").acquire("build", ttl=10)
    with pytest.raises(StaleContext) as ei:
        leases(store, "bob").acquire("build", ttl=10)
    assert ei.value.details.get("holder") == "alice" and ei.value.details.get("token") == lease.token
    assert "alice" in ei.value.message
    assert leases(store, "x").get("build")[0] == lease


def test_expiry_is_judged_by_the_store_clock(store: comity.Store, vclock: VirtualClock) -> None:
    alice, bob = leases(store, "alice"), leases(store, "bob")
    lease = alice.acquire("build", ttl=10)
    vclock.advance(9.999)
    alice.check("build", lease.token)
    with pytest.raises(StaleContext):
        bob.acquire("build", ttl=10)
    vclock.advance(0.001)  # exactly at `expires`: expired
    with pytest.raises(LeaseExpired):
        alice.check("build", lease.token)
    with pytest.raises(LeaseExpired):
        alice.renew("build", lease.token)
    with pytest.raises(LeaseExpired):
        alice.release("build", lease.token)
    taken = bob.acquire("build", ttl=10)
    assert taken.holder == "bob" and taken.token == lease.token + 1


def test_release_then_use_is_fenced_and_reacquire_gets_a_greater_token(store: comity.Store) -> None:
    alice = leases(store, "alice")
    lease = alice.acquire("build", ttl=10)
    alice.release("build", lease.token)
    with pytest.raises(Fenced):
        alice.renew("build", lease.token)
    with pytest.raises(Fenced):
        alice.check("build", lease.token)
    with pytest.raises(Fenced):
        alice.release("build", lease.token)
    again = alice.acquire("build", ttl=10)
    assert again.token == lease.token + 1


def test_a_token_never_granted_is_fenced(store: comity.Store) -> None:
    alice = leases(store, "alice")
    with pytest.raises(Fenced):
        alice.check("build", 1)
    lease = alice.acquire("build", ttl=10)
    with pytest.raises(Fenced):
        alice.renew("build", lease.token + 1)


def test_superseded_token_is_fenced_for_renew_and_fenced_writes(store: comity.Store, vclock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    old = Leases(alice).acquire("build", ttl=10)
    vclock.advance(11)
    # expired but not yet superseded: LeaseExpired
    with pytest.raises(LeaseExpired):
        Leases(alice).renew("build", old.token)
    new = Leases(bob).acquire("build", ttl=10)
    assert new.token > old.token
    # superseded: Fenced, and the fenced write does not happen
    head = alice.head()
    with pytest.raises(Fenced) as ei:
        Leases(alice).renew("build", old.token)
    assert ei.value.details.get("current") == new.token and ei.value.details.get("holder") == "bob"
    with pytest.raises(Fenced):
        alice.txn(guards=[Holds("build", old.token)], ops=[Put("out", "alice's result")])
    # nothing written but the record of the refused write itself (docs/dashboard.md)
    assert [e["op"] for e in alice.log(after=head)] == ["write.refused"] * 2 and alice.get("out").values == []
    bob.txn(guards=[Holds("build", new.token)], ops=[Put("out", "bob's result")])
    assert bob.get("out").values == ["bob's result"]


def test_steal_at_the_lease_level_bumps_the_token_and_fences_the_holder(store: comity.Store) -> None:
    alice, bob = leases(store, "alice"), leases(store, "bob")
    a = alice.acquire("build", ttl=100)
    b = bob.acquire("build", ttl=100, steal=True)
    assert b.holder == "bob" and b.token == a.token + 1
    with pytest.raises(Fenced):
        alice.renew("build", a.token)
    bob.check("build", b.token)
    ops = [e["op"] for e in store.session().log("@lease/build")]
    assert ops == ["acquire", "steal"]


def test_bad_lease_input_is_invalid(store: comity.Store) -> None:
    alice = leases(store, "alice")
    head = store.session().head()
    for ttl in (0, -1, 7 * 24 * 3600 + 1, True, float("nan"), "10"):
        with pytest.raises(Invalid) as ei:
            alice.acquire("build", ttl=ttl)  # type: ignore[arg-type]
        assert ei.value.field.endswith("ttl")
    lease = alice.acquire("build", ttl=10)
    head = store.session().head()
    for token in (0, -1, True, "1", 1.0):
        with pytest.raises(Invalid) as ei:
            alice.renew("build", token)  # type: ignore[arg-type]
        assert ei.value.field.endswith("token")
        with pytest.raises(Invalid):
            alice.release("build", token)  # type: ignore[arg-type]
    assert store.session().head() == head
    assert alice.get("build")[0] == lease


# The ways a lease changes hands; after each, someone acquires it again.
_CHANGES = st.lists(st.sampled_from(["release", "expire", "steal"]), min_size=1, max_size=12)
_resources = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=_CHANGES, agents_=st.lists(st.sampled_from(["a", "b", "c"]), min_size=13, max_size=13))
def test_tokens_strictly_increase_across_release_expiry_and_steal(
    store: comity.Store, vclock: VirtualClock, changes: list[str], agents_: list[str]
) -> None:
    resource = f"r{next(_resources)}"
    holder = agents_[0]
    lease = leases(store, holder).acquire(resource, ttl=10)
    tokens = [lease.token]
    for change, nxt in zip(changes, agents_[1:]):
        if change == "release":
            leases(store, holder).release(resource, lease.token)
            lease = leases(store, nxt).acquire(resource, ttl=10)
        elif change == "expire":
            vclock.advance(10)
            lease = leases(store, nxt).acquire(resource, ttl=10)
        else:
            lease = leases(store, nxt).acquire(resource, ttl=10, steal=True)
        holder = nxt
        tokens.append(lease.token)
        # every earlier token is now dead
        for old in tokens[:-1]:
            with pytest.raises(Fenced):
                leases(store, holder).check(resource, old)
    assert tokens == sorted(set(tokens))
    assert tokens == list(range(1, len(tokens) + 1))


# ------------------------------------------------------------- task lease expiry


def test_expired_task_lease_orphans_the_task_and_hands_over_the_last_checkpoint(
    store: comity.Store, vclock: VirtualClock
) -> None:
    tri, alice, bob = Board(store.session("triage")), Board(store.session("alice")), Board(store.session("bob"))
    t = tri.add("migrate the db")
    ca = alice.claim(t["id"], ttl=30)
    alice.checkpoint(t["id"], ca.token, "schema written", ttl=30)
    vclock.advance(10)
    alice.checkpoint(t["id"], ca.token, "data half copied; resume at row 5000", ttl=30)
    assert bob.ready() == []
    with pytest.raises(StaleContext):
        bob.claim(t["id"])

    vclock.advance(30)  # past the renewed expiry
    ready = bob.ready()
    assert [x["id"] for x in ready] == [t["id"]] and ready[0]["state"] == "orphaned"
    assert tri.show(t["id"])["state"] == "orphaned"
    assert [x["id"] for x in tri.tasks(status="orphaned")] == [t["id"]]
    with pytest.raises(LeaseExpired):  # expired, not yet superseded
        alice.checkpoint(t["id"], ca.token, "too late")

    cb = bob.claim(t["id"])
    assert cb.token > ca.token
    assert cb.handoff and cb.handoff[-1]["note"] == "data half copied; resume at row 5000"
    assert cb.handoff[-1]["agent"] == "alice" and cb.handoff[-1]["token"] == ca.token
    assert [h["note"] for h in cb.handoff] == ["schema written", "data half copied; resume at row 5000"]
    assert cb.task["attempts"] == 2

    with pytest.raises(Fenced):
        alice.done(t["id"], ca.token)
    bob.done(t["id"], cb.token)
    shown = tri.show(t["id"])
    assert shown["state"] == "done" and shown["completed_by"] == "bob" and shown["done_token"] == cb.token
    dones = [e for e in store.session().log("@task/" + t["id"]) if e["op"] == "task.done"]
    assert [e["agent"] for e in dones] == ["bob"]


def test_the_expired_holder_may_reclaim_its_own_orphaned_task(store: comity.Store, vclock: VirtualClock) -> None:
    alice = Board(store.session("alice"))
    t = alice.add("x")
    c1 = alice.claim(t["id"], ttl=5)
    alice.checkpoint(t["id"], c1.token, "mine")
    vclock.advance(400)
    c2 = alice.claim(t["id"], ttl=5)
    assert c2.token > c1.token and c2.handoff[-1]["note"] == "mine"
    with pytest.raises(Fenced):
        alice.done(t["id"], c1.token)
    alice.done(t["id"], c2.token)


# ---------------------------------------------------------------------- liveness


def _act(session: comity.Session, i: int) -> None:
    """One action: a single plain write (one event in the log)."""
    session.put(f"work/{session.agent}/{i}", i)


def test_an_agent_is_suspected_only_after_enough_actions_and_silence_past_ttl(
    store: comity.Store, vclock: VirtualClock
) -> None:
    ttl = 300.0
    # A few actions are not enough to judge by, however long the silence.
    early = store.session("early")
    for i in range(5):
        _act(early, i)
        vclock.advance(10)
        assert not status(store, "early", ttl=ttl).suspected
    vclock.advance(100_000)
    assert not status(store, "early", ttl=ttl).suspected

    # A regular rhythm: an action every 10 s (virtual), never suspected while it lasts.
    alice = store.session("alice")
    for i in range(20):
        _act(alice, i)
        s = status(store, "alice", ttl=ttl)
        assert s is not None and not s.suspected and s.silent_s == 0
        vclock.advance(10)
    # Then silence: not suspected at any point up to ttl, however large phi is.
    waited = 10.0
    while waited < ttl:
        s = status(store, "alice", ttl=ttl)
        assert not s.suspected, (waited, s)
        vclock.advance(10)
        waited += 10
    s = status(store, "alice", ttl=ttl)
    assert s.silent_s == pytest.approx(ttl) and not s.suspected  # silent exactly ttl: not yet
    vclock.advance(1)
    s = status(store, "alice", ttl=ttl)
    assert s.suspected and s.phi >= PhiAccrual().threshold and s.actions == 20


def test_a_slow_but_regular_agent_is_not_suspected_just_past_ttl(store: comity.Store, vclock: VirtualClock) -> None:
    """Past ttl is necessary, not sufficient: phi over the agent's own rhythm decides."""
    bob = store.session("bob")
    for i in range(12):
        _act(bob, i)
        vclock.advance(1000 + (i % 3) * 50)
    # Silent for about one usual interval, well past a 300 s ttl: not suspected.
    s = status(store, "bob", ttl=300)
    assert s.silent_s > 300 and not s.suspected and s.phi < PhiAccrual().threshold
    vclock.advance(10_000)
    assert status(store, "bob", ttl=300).suspected


def test_heartbeats_are_not_actions(store: comity.Store, vclock: VirtualClock) -> None:
    carol = store.session("carol")
    for _ in range(10):
        heartbeat(carol)
        vclock.advance(10)
    s = status(store, "carol", ttl=1)
    assert s.actions == 0 and s.last_heartbeat is not None and not s.suspected
    with pytest.raises(Invalid):
        heartbeat(store.session())


def test_agents_lists_the_leases_each_holds(store: comity.Store, vclock: VirtualClock) -> None:
    t = Board(store.session("triage")).add("x")
    c = Board(store.session("alice")).claim(t["id"], ttl=60)
    vclock.advance(20)
    s = status(store, "alice")
    assert s.holds == [{"resource": "@task/" + t["id"], "token": c.token, "expires_in_s": 40.0}]
    vclock.advance(40)
    assert status(store, "alice").holds == []  # expired leases are not held


def test_two_claims_are_not_enough_actions_to_suspect_an_agent(store: comity.Store, vclock: VirtualClock) -> None:
    """One action is one transaction, however many events it writes (a claim writes three)."""
    tri = Board(store.session("triage"))
    t1, t2 = tri.add("a"), tri.add("b")
    zed = Board(store.session("zed"))
    vclock.advance(5)
    zed.claim(t1["id"], ttl=3600)
    vclock.advance(5)
    zed.claim(t2["id"], ttl=3600)
    vclock.advance(400)
    s = status(store, "zed", ttl=300)
    assert s.actions == 2 and not s.suspected, s  # two actions (six events), one interval: below min_samples


# ------------------------------------------------------------------ phi accrual


_intervals = st.lists(st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False), min_size=1, max_size=50)
_elapsed = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(intervals=_intervals, e1=_elapsed, e2=_elapsed)
def test_phi_is_monotone_in_elapsed(intervals: list[float], e1: float, e2: float) -> None:
    d = PhiAccrual()
    lo, hi = sorted((e1, e2))
    p_lo, p_hi = d.phi(intervals, lo), d.phi(intervals, hi)
    assert 0.0 <= p_lo <= p_hi
    assert math.isfinite(p_hi)


@settings(max_examples=200, deadline=None)
@given(intervals=st.lists(st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False), max_size=20), elapsed=_elapsed,
       ttl=st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_suspects_never_before_ttl_nor_with_too_few_samples(intervals: list[float], elapsed: float, ttl: float) -> None:
    d = PhiAccrual()
    if elapsed <= ttl or len(intervals) < d.min_samples:
        assert not d.suspects(intervals, elapsed, ttl)


def test_phi_grows_with_silence_and_is_zero_without_history() -> None:
    d = PhiAccrual()
    assert d.phi([], 1e9) == 0.0
    intervals = [10.0, 11.0, 9.0, 10.0, 10.5, 9.5]
    values = [d.phi(intervals, e) for e in (0, 10, 20, 40, 80, 1e6)]
    assert values == sorted(values) and values[0] < 1 and values[-1] >= d.threshold
    assert d.suspects(intervals, 1e6, ttl=300) and not d.suspects(intervals, 299, ttl=300)


# ---------------------------------------------------------------------- stealing


def _busy(board: Board, task_id: str, token: int, clock: VirtualClock, n: int, every: float = 10) -> None:
    for i in range(n):
        clock.advance(every)
        board.checkpoint(task_id, token, f"step {i}", ttl=3600)


def test_steal_is_refused_while_the_holder_is_not_suspected(store: comity.Store, vclock: VirtualClock) -> None:
    tri, alice, bob = Board(store.session("triage")), Board(store.session("alice")), Board(store.session("bob"))
    t = tri.add("x")
    ca = alice.claim(t["id"], ttl=3600)
    _busy(alice, t["id"], ca.token, vclock, 10)
    vclock.advance(60)  # a little quiet, well within the rhythm's tolerance and the ttl
    with pytest.raises(StaleContext) as ei:
        bob.claim(t["id"], steal=True)
    assert ei.value.details.get("holder") == "alice" and "not suspected" in ei.value.message
    lease = tri.show(t["id"])["lease"]
    assert lease["holder"] == "alice" and lease["token"] == ca.token
    alice.checkpoint(t["id"], ca.token, "still mine")  # alice's token still works


def test_steal_from_a_suspected_holder_bumps_the_token_and_fences_the_holder(
    store: comity.Store, vclock: VirtualClock
) -> None:
    tri, alice, bob = Board(store.session("triage")), Board(store.session("alice")), Board(store.session("bob"))
    t = tri.add("x")
    ca = alice.claim(t["id"], ttl=3600)
    _busy(alice, t["id"], ca.token, vclock, 10)
    vclock.advance(1000)  # silent far past the default 300 s ttl; the lease (3600 s) is still live
    assert tri.show(t["id"])["state"] == "claimed"
    s = status(store, "alice")
    assert s.suspected
    assert s.holds and s.holds[0]["resource"] == "@task/" + t["id"]

    with pytest.raises(StaleContext):  # suspicion alone never revokes: without --steal, refused
        bob.claim(t["id"])
    cb = bob.claim(t["id"], steal=True)
    assert cb.token > ca.token
    assert cb.handoff[-1]["note"] == "step 9"
    assert [e["op"] for e in store.session().log("@lease/@task/" + t["id"])][-1] == "steal"

    with pytest.raises(Fenced):
        alice.done(t["id"], ca.token)
    with pytest.raises(Fenced):
        alice.checkpoint(t["id"], ca.token, "I'm back")
    bob.done(t["id"], cb.token)
    shown = tri.show(t["id"])
    assert shown["state"] == "done" and shown["completed_by"] == "bob"
