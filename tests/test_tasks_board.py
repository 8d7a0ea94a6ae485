"""The task board through the Python API: add, list, show, ready, assign, claim, done,
release, fail, the triage race, and bad input.

Time is a virtual clock; nothing sleeps.  One CLI check (``task claim`` with neither an
ID nor ``--next``) runs the real binary.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

import comity
from comity import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext
from comity.runtime import VirtualClock
from comity.work import Board, why

# ------------------------------------------------------------------------ fixtures


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def st(make_store: Callable[..., comity.Store], vclock: VirtualClock) -> comity.Store:
    """A store of each backend (conftest), on the virtual clock."""
    return make_store(clock=vclock)


def board(store: comity.Store, agent: str) -> Board:
    return Board(store.session(agent))


def all_events(store: comity.Store) -> list[dict[str, Any]]:
    s = store.session()
    out: list[dict[str, Any]] = []
    while True:
        page = s.log(after=out[-1]["pos"] if out else 0, limit=10_000)
        if not page:
            return out
        out += page


def state_snapshot(store: comity.Store) -> tuple[Any, ...]:
    """What an invalid request must leave alone: the log head and every lease."""
    s = store.session()
    rows, _ = s.leases("")
    return s.head(), sorted((r.resource, r.holder, r.token, r.expires) for r in rows)


def assert_invalid(store: comity.Store, field: str, call: Callable[[], Any]) -> Invalid:
    before = state_snapshot(store)
    with pytest.raises(Invalid) as ei:
        call()
    assert ei.value.field == field or ei.value.field.endswith("." + field), (ei.value.field, field)
    assert ei.value.exit_code == 2
    assert state_snapshot(store) == before, "an invalid request changed the store"
    return ei.value


def done_events(store: comity.Store, task_id: str) -> list[dict[str, Any]]:
    return [e for e in store.session().log("@task/" + task_id, limit=10_000) if e["op"] == "task.done"]


# --------------------------------------------------------------- add, list, show


def test_add_list_show(st: comity.Store) -> None:
    a = board(st, "alice")
    t1 = a.add("first", body="details", labels=["x", "y", "x"])
    t2 = a.add("second")
    assert t1["id"] == "T-1" and t2["id"] == "T-2"
    assert t1["state"] == "open" and t1["lease"] is None
    assert t1["labels"] == ["x", "y"]
    assert t1["created_by"] == "alice"
    assert isinstance(t1["context"], str) and t1["context"]

    listed = board(st, "bob").tasks()
    assert [t["id"] for t in listed] == ["T-1", "T-2"]
    assert all(t["state"] == "open" for t in listed)
    assert board(st, "bob").tasks(status="done") == []

    shown = board(st, "bob").show("T-1")
    assert shown["title"] == "first" and shown["body"] == "details"
    # ids may be given bare or padded with spaces
    assert board(st, "bob").show("1")["id"] == "T-1"
    assert board(st, "bob").show(" T-2 ")["id"] == "T-2"


def test_show_of_unknown_task_is_not_found(st: comity.Store) -> None:
    with pytest.raises(NotFound):
        board(st, "alice").show("T-99")
    with pytest.raises(NotFound):
        board(st, "alice").claim("T-99")


def test_list_reports_claimed_and_done_states(st: comity.Store) -> None:
    a = board(st, "alice")
    t1, t2, _ = a.add("a"), a.add("b"), a.add("c")
    c1 = a.claim(t1["id"])
    c2 = a.claim(t2["id"])
    a.done(t2["id"], c2.token)
    states = {t["id"]: t["state"] for t in a.tasks()}
    assert states == {"T-1": "claimed", "T-2": "done", "T-3": "open"}
    claimed = a.tasks(status="claimed")
    assert [t["id"] for t in claimed] == ["T-1"]
    assert claimed[0]["lease"]["holder"] == "alice" and claimed[0]["lease"]["token"] == c1.token


# ------------------------------------------------------------------------- ready


def test_ready_respects_dependencies(st: comity.Store) -> None:
    a = board(st, "alice")
    base = a.add("base")
    top = a.add("top", deps=[base["id"]])
    assert top["deps"] == ["T-1"]
    assert [t["id"] for t in a.ready()] == ["T-1"]
    with pytest.raises(StaleContext):
        a.claim(top["id"])  # waits on T-1
    c = a.claim(base["id"])
    assert a.ready() == []  # base is claimed, top still waits
    a.done(base["id"], c.token)
    assert [t["id"] for t in a.ready()] == ["T-2"]
    assert a.claim(top["id"]).token >= 1


def test_dependency_on_a_missing_task_is_refused_and_changes_nothing(st: comity.Store) -> None:
    a = board(st, "alice")
    a.add("exists")
    before = state_snapshot(st)
    with pytest.raises(NotFound):
        a.add("needs ghost", deps=["T-42"])
    assert state_snapshot(st) == before


def test_assigned_task_is_ready_only_for_its_assignee(st: comity.Store) -> None:
    tri = board(st, "triage")
    t = tri.add("for alice", assignee="alice")
    u = tri.add("for anyone")
    assert [x["id"] for x in board(st, "alice").ready()] == [t["id"], u["id"]]
    assert [x["id"] for x in board(st, "bob").ready()] == [u["id"]]

    v = tri.add("assigned later")
    tri.assign(v["id"], "alice")
    assert v["id"] not in [x["id"] for x in board(st, "bob").ready()]
    assert v["id"] in [x["id"] for x in board(st, "alice").ready()]


def test_only_the_assignee_may_claim_an_assigned_task(st: comity.Store) -> None:
    tri = board(st, "triage")
    t = tri.add("for alice", assignee="alice")
    with pytest.raises(StaleContext) as ei:
        board(st, "bob").claim(t["id"])
    assert ei.value.details.get("assignee") == "alice"
    assert "alice" in ei.value.message
    c = board(st, "alice").claim(t["id"])
    assert c.task["claimed_by"] == "alice" and c.task["state"] == "claimed"


def test_claim_next_takes_a_ready_task_and_none_when_empty(st: comity.Store) -> None:
    a = board(st, "alice")
    with pytest.raises(NotFound):
        a.claim_next()
    a.add("one")
    c = a.claim_next()
    assert c.task["id"] == "T-1" and c.token >= 1
    with pytest.raises(NotFound):
        board(st, "bob").claim_next()


# ------------------------------------------------------------------------ claims


def test_claim_of_a_claimed_task_is_refused_naming_the_holder(st: comity.Store) -> None:
    t = board(st, "triage").add("x")
    c = board(st, "carol").claim(t["id"])
    with pytest.raises(StaleContext) as ei:
        board(st, "bob").claim(t["id"])
    assert ei.value.details.get("holder") == "carol"
    assert "carol" in ei.value.message
    # the refusal is on the task's history; the holder's claim is untouched
    ops = [e["op"] for e in st.session().log("@task/" + t["id"])]
    assert ops[-1] == "task.claim-refused"
    assert board(st, "x").show(t["id"])["lease"]["token"] == c.token


def test_two_sessions_that_read_the_same_task_one_claim_wins_and_the_loser_hears_who(st: comity.Store) -> None:
    t = board(st, "triage").add("x")
    bob, carol = board(st, "bob"), board(st, "carol")
    ctx_b = bob.show(t["id"])["context"]
    ctx_c = carol.show(t["id"])["context"]
    won = carol.claim(t["id"], context=ctx_c)
    with pytest.raises(StaleContext) as ei:
        bob.claim(t["id"], context=ctx_b)
    assert "carol" in ei.value.message
    assert any(n["agent"] == "carol" and n["op"] == "task.claim" for n in ei.value.news)
    assert board(st, "x").show(t["id"])["lease"] == {"holder": "carol", "token": won.token, "expires": won.expires}


def test_concurrent_claims_from_two_threads_exactly_one_wins(make_store: Callable[..., comity.Store], vclock: VirtualClock) -> None:
    """Two handles (two connections) on one store, claiming at once, 20 times."""
    s1 = make_store("c.db", clock=vclock)
    s2 = make_store("c.db", clock=vclock)
    try:
        ids = [board(s1, "triage").add(f"t{i}")["id"] for i in range(20)]
        boards = {"bob": board(s1, "bob"), "carol": board(s2, "carol")}
        for tid in ids:
            barrier = threading.Barrier(2)
            results: dict[str, Any] = {}

            def go(name: str) -> None:
                barrier.wait()
                try:
                    results[name] = boards[name].claim(tid)
                except ComityError as e:
                    results[name] = e

            threads = [threading.Thread(target=go, args=(n,)) for n in boards]
            for th in threads:
                th.start()
            for th in threads:
                th.join(10)
            winners = [n for n, r in results.items() if not isinstance(r, Exception)]
            assert len(winners) == 1, results
            (winner,) = winners
            (loser,) = [n for n in boards if n != winner]
            err = results[loser]
            assert isinstance(err, StaleContext), err
            assert winner in err.message
            assert err.details.get("holder") == winner
    finally:
        s1.close()
        s2.close()


# ---------------------------------------------------------------- done, release, fail


def test_done_is_idempotent_for_the_same_token(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    first = a.done(t["id"], c.token, result="ok")
    assert first["state"] == "done" and first["completed_by"] == "alice" and first["done_token"] == c.token
    assert not first.get("replayed")
    head = st.session().head()
    again = a.done(t["id"], c.token, result="ok")
    assert again["replayed"] is True and again["state"] == "done"
    assert st.session().head() == head
    assert len(done_events(st, t["id"])) == 1


def test_a_second_completion_with_another_token_is_refused(st: comity.Store, vclock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    alice, bob = board(st, "alice"), board(st, "bob")
    ca = alice.claim(t["id"], ttl=10)
    vclock.advance(11)
    cb = bob.claim(t["id"])
    assert cb.token > ca.token
    bob.done(t["id"], cb.token)
    with pytest.raises(Fenced) as ei:  # a zombie: its token was superseded
        alice.done(t["id"], ca.token)
    assert ei.value.exit_code == 3 and ei.value.details["current"] == cb.token and ei.value.details["holder"] == "bob"
    assert "superseded" in ei.value.message
    # the same agent with a token never granted is refused too, as the store refuses it
    with pytest.raises(Fenced) as ei:
        bob.done(t["id"], cb.token + 1)
    assert "ever granted with token" in ei.value.message
    assert len(done_events(st, t["id"])) == 1
    assert board(st, "x").show(t["id"])["completed_by"] == "bob"


def test_a_superseded_token_is_fenced_before_the_successor_completes(st: comity.Store, vclock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    ca = board(st, "alice").claim(t["id"], ttl=10)
    vclock.advance(11)
    cb = board(st, "bob").claim(t["id"])
    for call in (
        lambda: board(st, "alice").done(t["id"], ca.token),
        lambda: board(st, "alice").checkpoint(t["id"], ca.token, "still mine?"),
        lambda: board(st, "alice").renew(t["id"], ca.token),
        lambda: board(st, "alice").release(t["id"], ca.token),
    ):
        with pytest.raises(Fenced) as ei:
            call()
        assert ei.value.details["current"] == cb.token and "superseded" in ei.value.message
    assert board(st, "x").show(t["id"])["lease"]["holder"] == "bob"


def test_a_token_is_its_holders_on_every_fenced_verb(st: comity.Store) -> None:
    """Alice presenting bob's token is refused by the board as Fenced, naming bob: the
    rule the store's guard owns, tested here at the layer that calls it."""
    t = board(st, "triage").add("bob's work")
    claim = board(st, "bob").claim(t["id"], ttl=600)
    alice = board(st, "alice")
    before = board(st, "x").show(t["id"])
    for call in (
        lambda: alice.done(t["id"], claim.token, result="stolen"),
        lambda: alice.renew(t["id"], claim.token),
        lambda: alice.release(t["id"], claim.token),
        lambda: alice.checkpoint(t["id"], claim.token, "mine now"),
        lambda: alice.fail(t["id"], claim.token, reason="no"),
    ):
        with pytest.raises(Fenced) as ei:
            call()
        assert ei.value.details["holder"] == "bob" and "bob" in ei.value.message
    after = board(st, "x").show(t["id"])
    assert after["lease"] == before["lease"] and after["checkpoints"] == before["checkpoints"]
    assert board(st, "bob").done(t["id"], claim.token)["state"] == "done"


def test_a_retried_done_from_a_non_holder_is_fenced(st: comity.Store) -> None:
    """After bob completed, alice retrying a done with bob's token is not a replay of
    bob's completion: the token is bob's."""
    t = board(st, "triage").add("x")
    claim = board(st, "bob").claim(t["id"])
    board(st, "bob").done(t["id"], claim.token, result="ok")
    with pytest.raises(Fenced) as ei:
        board(st, "alice").done(t["id"], claim.token, result="ok")
    assert ei.value.details["holder"] == "bob" and "not alice's" in ei.value.message
    assert board(st, "bob").done(t["id"], claim.token, result="ok")["replayed"] is True
    assert len(done_events(st, t["id"])) == 1


def test_release_returns_the_task_to_ready_and_fences_the_old_token(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    assert a.ready() == []
    r = a.release(t["id"], c.token)
    assert r["state"] == "open" and r["claimed_by"] is None and r["lease"] is None
    assert [x["id"] for x in board(st, "bob").ready()] == [t["id"]]
    with pytest.raises(Fenced):
        a.done(t["id"], c.token)
    c2 = board(st, "bob").claim(t["id"])
    assert c2.token > c.token


def test_fail_closes_the_task(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    f = a.fail(t["id"], c.token, reason="cannot reproduce")
    assert f["state"] == "failed" and f["result"] == "cannot reproduce" and f["completed_by"] == "alice"
    assert a.ready() == [] and board(st, "bob").ready() == []
    with pytest.raises(StaleContext):
        board(st, "bob").claim(t["id"])
    with pytest.raises(Fenced):  # the lease was released with the failure
        a.done(t["id"], c.token)
    with pytest.raises(StaleContext):
        a.assign(t["id"], "bob")


def test_fail_with_a_superseded_token_is_fenced(st: comity.Store, vclock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    ca = board(st, "alice").claim(t["id"], ttl=5)
    vclock.advance(6)
    with pytest.raises(LeaseExpired):
        board(st, "alice").fail(t["id"], ca.token)
    board(st, "bob").claim(t["id"])
    with pytest.raises(Fenced):
        board(st, "alice").fail(t["id"], ca.token)
    assert board(st, "x").show(t["id"])["state"] == "claimed"


def test_checkpoint_is_recorded_and_renews_the_lease(st: comity.Store, vclock: VirtualClock) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"], ttl=10)
    vclock.advance(8)
    cp = a.checkpoint(t["id"], c.token, "half done", ttl=10)
    assert cp["checkpoints"][-1]["note"] == "half done" and cp["checkpoints"][-1]["token"] == c.token
    vclock.advance(8)  # 16 s after the claim: alive only because the checkpoint renewed it
    assert a.show(t["id"])["state"] == "claimed"
    a.done(t["id"], c.token)


# -------------------------------------------------------------------- triage race


def test_triage_race_claim_on_an_old_read_is_refused_and_why_explains_it(st: comity.Store) -> None:
    tri, bob = board(st, "triage"), board(st, "bob")
    t = tri.add("fix the flaky test")
    ctx = bob.show(t["id"])["context"]  # bob reads the task...
    tri.assign(t["id"], "alice")  # ...triage assigns it to alice meanwhile
    before = state_snapshot(st)
    with pytest.raises(StaleContext) as ei:
        bob.claim(t["id"], context=ctx)
    e = ei.value
    assert e.exit_code == 3
    assert "triage" in e.message and "assign" in e.message
    assert [(n["agent"], n["op"]) for n in e.news] == [("triage", "task.assign")]
    # nothing was claimed: no lease was granted, the task is still alice's
    after = state_snapshot(st)
    assert after[1] == before[1]
    shown = board(st, "alice").show(t["id"])
    assert shown["state"] == "open" and shown["assignee"] == "alice"

    w = why(st.session(), t["id"])
    assert any(
        "bob" in line and "claim" in line and "did not see triage's assign" in line and "concurrent" in line
        for line in w["explanations"]
    ), w["explanations"]
    refused = [h for h in w["history"] if h["op"] == "task.claim-refused"]
    assigned = [h for h in w["history"] if h["op"] == "task.assign"]
    assert refused and assigned and assigned[0]["pos"] in refused[-1]["did_not_see"]
    # alice, the new assignee, can claim with her fresh read
    board(st, "alice").claim(t["id"], context=shown["context"])


def test_claim_on_an_old_read_is_accepted_when_the_change_assigned_it_to_me(st: comity.Store) -> None:
    tri, alice = board(st, "triage"), board(st, "alice")
    t = tri.add("x")
    ctx = alice.show(t["id"])["context"]
    tri.assign(t["id"], "alice")
    c = alice.claim(t["id"], context=ctx)
    assert c.task["claimed_by"] == "alice"


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", ["abc", "T-0", "T-", "T-1x", "-1", "", "T-1.5", None, True, 0, -3, "T-1234567890123"])
def test_bad_task_id_is_invalid_and_changes_nothing(st: comity.Store, bad: Any) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    assert_invalid(st, "id", lambda: a.show(bad))
    assert_invalid(st, "id", lambda: board(st, "bob").claim(bad))
    assert_invalid(st, "id", lambda: a.done(bad, c.token))
    assert_invalid(st, "id", lambda: a.checkpoint(bad, c.token, "note"))
    assert_invalid(st, "id", lambda: a.release(bad, c.token))
    assert_invalid(st, "id", lambda: a.fail(bad, c.token))
    assert_invalid(st, "id", lambda: a.assign(bad, "bob"))


@pytest.mark.parametrize("bad", [0, -1, True, False, "1", 1.0, None])
def test_bad_token_is_invalid_and_changes_nothing(st: comity.Store, bad: Any) -> None:
    a = board(st, "alice")
    t = a.add("x")
    a.claim(t["id"])
    assert_invalid(st, "token", lambda: a.done(t["id"], bad))
    assert_invalid(st, "token", lambda: a.checkpoint(t["id"], bad, "note"))
    assert_invalid(st, "token", lambda: a.release(t["id"], bad))
    assert_invalid(st, "token", lambda: a.fail(t["id"], bad))
    assert_invalid(st, "token", lambda: a.renew(t["id"], bad))


@pytest.mark.parametrize("bad", [True, 0, -1, "1"])
def test_bad_token_on_a_done_task_is_invalid(st: comity.Store, bad: Any) -> None:
    """Validation comes before state: True is not replayed as token 1, 0 is not 'already done'."""
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    assert c.token == 1
    a.done(t["id"], c.token)
    assert_invalid(st, "token", lambda: a.done(t["id"], bad))


@pytest.mark.parametrize("bad", [0, -5, 0.0, 7 * 24 * 3600 + 1, 1e12, float("inf"), float("nan"), True, "30"])
def test_bad_ttl_is_invalid_and_changes_nothing(st: comity.Store, bad: Any) -> None:
    a = board(st, "alice")
    t = a.add("x")
    assert_invalid(st, "ttl", lambda: a.claim(t["id"], ttl=bad))
    assert_invalid(st, "ttl", lambda: a.claim_next(ttl=bad))
    c = a.claim(t["id"])
    assert_invalid(st, "ttl", lambda: a.checkpoint(t["id"], c.token, "n", ttl=bad))
    assert_invalid(st, "ttl", lambda: a.renew(t["id"], c.token, ttl=bad))


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None, 42, "x" * 501])
def test_bad_title_is_invalid_and_changes_nothing(st: comity.Store, bad: Any) -> None:
    a = board(st, "alice")
    a.add("an earlier task")
    assert_invalid(st, "title", lambda: a.add(bad))
    assert [t["id"] for t in a.tasks()] == ["T-1"]
    # the id sequence did not move either: the next task is T-2
    assert a.add("next")["id"] == "T-2"


def test_other_bad_fields_are_invalid_and_change_nothing(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    assert_invalid(st, "labels", lambda: a.add("y", labels=[""]))
    assert_invalid(st, "labels", lambda: a.add("y", labels=["z" * 65]))
    assert_invalid(st, "deps", lambda: a.add("y", deps=["nope"]))
    assert_invalid(st, "body", lambda: a.add("y", body=5))  # type: ignore[arg-type]
    assert_invalid(st, "note", lambda: a.checkpoint(t["id"], c.token, ""))
    assert_invalid(st, "note", lambda: a.checkpoint(t["id"], c.token, "   "))
    assert_invalid(st, "result", lambda: a.done(t["id"], c.token, result=7))  # type: ignore[arg-type]
    assert_invalid(st, "assignee", lambda: a.assign(t["id"], ""))
    assert_invalid(st, "agent", lambda: Board(st.session()).claim(t["id"]))
    assert_invalid(st, "agent", lambda: Board(st.session()).add("no agent"))


@pytest.mark.parametrize("bad", ["", 5, "bad name!"])
def test_bad_assignee_on_add_is_invalid(st: comity.Store, bad: Any) -> None:
    """An assignee no session could have would make the task claimable by nobody."""
    a = board(st, "alice")
    assert_invalid(st, "assignee", lambda: a.add("y", assignee=bad))


# -------------------------------------------------------------------------- CLI


def test_cli_task_claim_needs_exactly_one_of_id_and_next(comity_cli: Callable[..., Any]) -> None:
    assert comity_cli("--agent", "alice", "task", "add", "x").returncode == 0
    log_before = comity_cli("log", "--json", "--limit", "10000")
    assert log_before.returncode == 0

    r = comity_cli("--agent", "bob", "task", "claim", "--json")
    assert r.returncode == 2, r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "invalid" and err["field"] == "ID"

    r = comity_cli("--agent", "bob", "task", "claim", "T-1", "--next")
    assert r.returncode == 2, r.stderr
    assert "ID" in r.stderr

    assert comity_cli("log", "--json", "--limit", "10000").stdout == log_before.stdout


def test_cli_triage_race_and_why(comity_cli: Callable[..., Any]) -> None:
    assert comity_cli("--agent", "triage", "task", "add", "flaky").returncode == 0
    shown = comity_cli("--agent", "bob", "task", "show", "T-1", "--json")
    assert shown.returncode == 0, shown.stderr
    ctx = json.loads(shown.stdout)["context"]
    assert comity_cli("--agent", "triage", "task", "assign", "T-1", "alice").returncode == 0
    r = comity_cli("--agent", "bob", "task", "claim", "T-1", "--context", ctx, "--json")
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["error"] == "stale_context"
    assert "triage" in r.stderr
    w = comity_cli("why", "T-1", "--json")
    assert w.returncode == 0, w.stderr
    lines = json.loads(w.stdout)["explanations"]
    assert any("bob" in x and "did not see triage's assign" in x and "concurrent" in x for x in lines), lines
    # nothing there -> 4; bad id -> 2
    assert comity_cli("why", "T-9").returncode == 4
    assert comity_cli("--agent", "bob", "task", "show", "T-x").returncode == 2


@pytest.mark.parametrize("bad", ["bad name!", "x" * 200])
def test_unusable_agent_name_on_assign_is_invalid(st: comity.Store, bad: str) -> None:
    a = board(st, "alice")
    t = a.add("y")
    assert_invalid(st, "assignee", lambda: a.assign(t["id"], bad))
