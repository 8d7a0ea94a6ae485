"""Edges of the work board (``comity.work.tasks``) and of ``why`` (``comity.work.why``),
pinned in-process at the layer that owns them: the exact refusal kinds, the words and
details of each refusal a user sees, the next steps it offers, the edges of every board
verb (add, assign, claim, claim_next, checkpoint, renew, done, release, fail, write), lease
lengths, retries answered from their recorded outcome, and the words of a task's or key's
causal history.

Each store is the real embedded SQLite store in ``tmp_path`` (``make_store``), on a
virtual clock; nothing sleeps.  A race is made deterministic by acting from another
session at a seam of the board (a subclass that does the other agent's real write just
before the board's own), never by faking the store.  These tests are the suite of the
``work`` package's mutation run (``tools/mutation.py``, ``docs/mutation.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import comity
from comity import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext
from comity.errors import Step
from comity.runtime import VirtualClock
from comity.work import Board, why
from conftest import count_transactions
from comity.work.tasks import (
    OPEN_PREFIX,
    STATES,
    TASK_PREFIX,
    Claim,
    Request,
    _then,
    parse_task_id,
    task_key,
    what_changed,
)

READY = Step("task_ready", {}, "find other work")
LIST = Step("task_list", {}, "see the board")


@pytest.fixture
def st(make_store: Callable[..., comity.Store], clock: VirtualClock) -> comity.Store:
    return make_store(clock=clock)


def board(store: comity.Store, agent: str | None) -> Board:
    return Board(store.session(agent))


def ops_of(store: comity.Store, key: str) -> list[str]:
    return [e["op"] for e in store.session().log(key, limit=10_000)]


def events_of(store: comity.Store, key: str, op: str) -> list[dict[str, Any]]:
    return [e for e in store.session().log(key, limit=10_000) if e["op"] == op]


_EVENT = ("pos", "key", "op", "agent", "session", "dot", "hlc", "request_id", "seen", "saw", "value")


def noted(e: dict[str, Any]) -> dict[str, Any]:
    """What a note (``task.fenced``, ``task.claim-refused``) recorded, without the event's own fields."""
    return {k: v for k, v in e.items() if k not in _EVENT}


def snapshot(store: comity.Store) -> tuple[Any, ...]:
    s = store.session()
    rows, _ = s.leases("")
    return s.head(), sorted((r.resource, r.holder, r.token, r.expires) for r in rows)


def refused(kind: type[ComityError], call: Callable[[], Any]) -> Any:
    with pytest.raises(kind) as ei:
        call()
    assert type(ei.value) is kind, ei.value
    return ei.value


# ------------------------------------------------------------------ pure helpers


def test_what_changed_puts_each_task_event_in_words() -> None:
    assert what_changed({"agent": "tri", "op": "task.assign", "value": {"assignee": "alice"}}) == "assigned to alice by tri"
    assert what_changed({"agent": "tri", "op": "task.assign", "value": {"assignee": None}}) == "assigned to nobody by tri"
    assert what_changed({"agent": "tri", "op": "task.assign", "value": "not a record"}) == "assigned to nobody by tri"
    assert what_changed({"agent": "tri", "op": "task.assign"}) == "assigned to nobody by tri"
    words = {"task.claim": "claimed", "task.done": "completed", "task.fail": "failed", "task.release": "released",
             "task.submitted": "submitted for verification", "task.reopen": "reopened"}
    for op, said in words.items():
        assert what_changed({"agent": "bob", "op": op}) == f"{said} by bob"
    assert what_changed({"agent": "bob", "op": "task.checkpoint"}) == "checkpoint by bob"
    assert what_changed({"agent": "bob", "op": "put"}) == "put by bob"
    assert what_changed({"op": "task.claim"}) == "claimed by someone"
    assert what_changed({"agent": "bob"}) == " by bob"


def test_then_adds_next_steps_only_to_an_error_that_has_none() -> None:
    bare = Fenced("x")
    assert _then(bare, READY, LIST) is bare and bare.next == (READY, LIST)
    own = Fenced("y", next=[LIST])
    assert _then(own, READY).next == (LIST,)


@pytest.mark.parametrize(("given", "canonical"), [("T-1", "T-1"), ("1", "T-1"), (7, "T-7"), (" T-12 ", "T-12"),
                                                   ("T-999999999999", "T-999999999999"), ("\t42\n", "T-42")])
def test_parse_task_id_accepts_both_spellings(given: Any, canonical: str) -> None:
    assert parse_task_id(given) == canonical


@pytest.mark.parametrize("bad", ["T-01", "007", "T-1000000000000", "t-1", "T 1", True, False, 1.0, ["T-1"], "T--1"])
def test_parse_task_id_refuses_other_spellings_naming_the_field(bad: Any) -> None:
    e = refused(Invalid, lambda: parse_task_id(bad, "deps"))
    assert e.field == "deps"
    assert e.message == f"deps: {bad!r} is not a task id; ids look like T-12 (or 12)"
    assert refused(Invalid, lambda: parse_task_id(bad)).field == "id"


def test_task_key_and_the_queue_marker_key(st: comity.Store) -> None:
    assert task_key("T-3") == "@task/T-3" == TASK_PREFIX + "T-3"
    a = board(st, "alice")
    for i in range(12):
        a.add(f"t{i}", labels=["l"], assignee="alice" if i == 11 else None)
    s = st.session()
    # The queue's markers are zero-padded to 12 digits, so a scan lists T-2 before T-10.
    assert s.keys(OPEN_PREFIX)[:3] == ["@open/000000000001", "@open/000000000002", "@open/000000000003"]
    assert s.get("@open/000000000012").values == [{"id": "T-12", "assignee": "alice", "deps": []}]
    assert [t["id"] for t in a.ready(full=False)][:3] == ["T-1", "T-2", "T-3"]
    assert [t["id"] for t in a.tasks()][8:] == ["T-9", "T-10", "T-11", "T-12"]


def test_claim_json_says_replayed_only_when_it_was() -> None:
    c = Claim({"id": "T-1"}, 3, 10.0, [{"note": "n"}], [{"pos": 1}])
    assert c.to_json() == {"task": {"id": "T-1"}, "token": 3, "expires": 10.0, "handoff": [{"note": "n"}], "news": [{"pos": 1}]}
    c.replayed = True
    assert c.to_json()["replayed"] is True


def test_a_request_derives_the_id_of_its_earlier_steps() -> None:
    r = Request("x" * 150, "d")
    assert r.derived("seq") == Request("x" * 100 + "#seq", "d")
    assert Request("abc", "d").derived("seq") == Request("abc#seq", "d")


# ------------------------------------------------------------------ input edges


def test_text_fields_at_their_caps(st: comity.Store) -> None:
    a = board(st, "alice")
    assert a.add("t" * 500)["title"] == "t" * 500
    e = refused(Invalid, lambda: a.add("t" * 501))
    assert e.field == "title" and e.message == "title: is 501 characters; the cap is 500"
    assert refused(Invalid, lambda: a.add("  ")).message == "title: must be a non-empty string"
    assert refused(Invalid, lambda: a.add(None)).message == "title: must be a non-empty string"  # type: ignore[arg-type]
    assert a.add("b", body="b" * 100_000)["body"] == "b" * 100_000
    assert refused(Invalid, lambda: a.add("b", body="b" * 100_001)).message == "body: is 100001 characters; the cap is 100000"
    assert refused(Invalid, lambda: a.add("b", body=3)).message == "body: must be a string"  # type: ignore[arg-type]
    t = a.add("n", body=None)  # type: ignore[arg-type]
    assert t["body"] == "" and a.add("m", body="  ")["body"] == "  "  # an optional text may be blank
    c = a.claim(t["id"])
    assert a.checkpoint(t["id"], c.token, "n" * 20_000)["checkpoints"][-1]["note"] == "n" * 20_000
    e = refused(Invalid, lambda: a.checkpoint(t["id"], c.token, "n" * 20_001))
    assert e.message == "note: is 20001 characters; the cap is 20000"
    assert refused(Invalid, lambda: a.fail(t["id"], c.token, reason="r" * 20_001)).field == "reason"
    assert refused(Invalid, lambda: a.done(t["id"], c.token, result="r" * 100_001)).field == "result"
    assert a.done(t["id"], c.token, result="r" * 100_000)["result"] == "r" * 100_000


@pytest.mark.parametrize("bad", [0, -1, True, False, "1", 1.0, None])
def test_a_bad_token_is_named_with_what_was_given(st: comity.Store, bad: Any) -> None:
    a = board(st, "alice")
    t = a.add("x")
    a.claim(t["id"])
    e = refused(Invalid, lambda: a.renew(t["id"], bad))
    assert e.field == "token" and e.message == f"token: must be the fencing token your claim returned, got {bad!r}"
    assert refused(Invalid, lambda: a.write("notes/x", 1, task=t["id"], token=bad)).field == "token"


def test_lease_lengths_at_their_edges(st: comity.Store, clock: VirtualClock) -> None:
    a = board(st, "alice")
    t1, t2, t3 = a.add("a"), a.add("b"), a.add("c")
    now = st.session().now()
    assert a.claim(t1["id"]).expires == now + 300.0  # the store's default lease
    week = a.claim(t2["id"], ttl=604_800)
    assert week.expires == now + 604_800.0
    assert a.claim(t3["id"], ttl=0.5).expires == now + 0.5
    for bad in (604_800.5, 0, -1, float("nan"), "10", True):
        e = refused(Invalid, lambda: a.renew(t2["id"], week.token, ttl=bad))
        assert e.field == "ttl" and e.message == f"ttl: must be seconds in (0, 604800], got {bad!r}"
    r = a.renew(t2["id"], week.token, ttl=7)
    assert r == {"id": "T-2", "token": week.token, "expires": now + 7.0, "ttl": 7.0}
    assert a.renew(t2["id"], week.token)["ttl"] == 7.0  # a renewal without a length keeps the last one
    clock.advance(2)
    assert a.renew(t2["id"], week.token, ttl=604_800)["expires"] == now + 2 + 604_800.0


def test_labels_are_deduplicated_in_order_and_each_one_checked(st: comity.Store) -> None:
    a = board(st, "alice")
    assert a.add("x", labels=["b", "a", "b", "l" * 64])["labels"] == ["b", "a", "l" * 64]
    assert a.add("y", labels=iter(["z"]))["labels"] == ["z"]
    for bad in ([""], ["l" * 65], [3], ["ok", None]):
        e = refused(Invalid, lambda: a.add("z", labels=bad))
        assert e.message == "labels: each label is a string of 1 to 64 characters"
    assert [t["id"] for t in a.tasks()] == ["T-1", "T-2"]


def test_an_agentless_session_is_refused_on_every_change(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    nobody = board(st, None)
    for call in (lambda: nobody.add("x"), lambda: nobody.claim(t["id"]), lambda: nobody.claim_next(),
                 lambda: nobody.assign(t["id"], "bob"), lambda: nobody.done(t["id"], c.token),
                 lambda: nobody.checkpoint(t["id"], c.token, "n"), lambda: nobody.release(t["id"], c.token),
                 lambda: nobody.fail(t["id"], c.token), lambda: nobody.write("notes/a", 1, task=t["id"], token=c.token)):
        e = refused(Invalid, call)
        assert e.field == "agent" and e.message == "agent: task changes need an agent name"
    assert nobody.show(t["id"])["id"] == "T-1"  # reading needs no name


# ------------------------------------------------------------------ reads


def test_an_unknown_task_is_not_found_with_the_next_step(st: comity.Store) -> None:
    a = board(st, "alice")
    for call in (lambda: a.show("T-9"), lambda: a.claim("T-9"), lambda: a.assign("T-9", "bob"),
                 lambda: a.done("T-9", 1), lambda: a.checkpoint("T-9", 1, "n")):
        e = refused(NotFound, call)
        assert e.message == "no task T-9" and e.details == {"id": "T-9"} and e.next == (LIST,)


def test_the_state_filter_names_the_states(st: comity.Store) -> None:
    a = board(st, "alice")
    e = refused(Invalid, lambda: a.tasks(status="closed"))
    assert e.field == "state"
    assert e.message == ("state: 'closed' is not a task state; use one of: open, claimed, orphaned, submitted, done, failed"
                         " (or none for every task)")
    long = refused(Invalid, lambda: a.tasks(status="x" * 100))
    assert long.message.startswith("state: '" + "x" * 39 + " is not a task state")
    assert STATES == ("open", "claimed", "orphaned", "submitted", "done", "failed")


def test_an_expired_lease_makes_a_task_orphaned_at_the_instant_it_expires(st: comity.Store, clock: VirtualClock) -> None:
    a = board(st, "alice")
    t, u, w = a.add("x"), a.add("y"), a.add("z")
    c = a.claim(t["id"], ttl=10)
    cu = a.claim(u["id"], ttl=20)
    a.done(w["id"], a.claim(w["id"]).token)
    clock.advance(9.5)
    shown = a.show(t["id"])
    assert shown["state"] == "claimed" and shown["lease"] == {"holder": "alice", "token": c.token, "expires": c.expires}
    clock.advance(0.5)  # expires == now: gone
    shown = a.show(t["id"])
    assert shown["state"] == "orphaned" and shown["lease"] is None and shown["status"] == "claimed"
    assert [x["id"] for x in a.tasks(status="orphaned")] == ["T-1"]
    assert [x["id"] for x in a.tasks(status="claimed")] == ["T-2"]
    assert [x["id"] for x in a.tasks(status="done")] == ["T-3"]
    assert a.tasks(status="done")[0]["lease"] is None
    assert {x["id"]: x["lease"] for x in a.tasks()}["T-2"] == {"holder": "alice", "token": cu.token, "expires": cu.expires}
    # released: the lease row stays, with no holder; the task is open again, not orphaned
    a.release(u["id"], cu.token)
    assert a.show(u["id"])["state"] == "open" and a.show(u["id"])["lease"] is None


def test_ready_lists_orphans_first_then_the_queue_each_for_whom_it_may_be(st: comity.Store, clock: VirtualClock) -> None:
    tri = board(st, "triage")
    ids = [tri.add(f"t{i}")["id"] for i in range(11)]  # T-1 .. T-11
    tri.assign("T-3", "alice")
    tri.assign("T-10", "alice")
    tri.assign("T-11", "bob")
    tri.add("waits", deps=["T-1"])  # T-12
    alice, bob = board(st, "alice"), board(st, "bob")
    c10 = alice.claim("T-10", ttl=5)
    c2 = bob.claim("T-2", ttl=5)
    bob.claim("T-11", ttl=5)
    alice.claim("T-4", ttl=500)
    clock.advance(6)  # T-2, T-10, T-11 are orphaned; T-4 is still held
    mine = alice.ready()
    assert [t["id"] for t in mine] == ["T-2", "T-10", "T-1", "T-3", "T-5", "T-6", "T-7", "T-8", "T-9"]
    assert [t["state"] for t in mine[:2]] == ["orphaned", "orphaned"] and mine[0]["title"] == "t1"
    assert mine[0]["lease"] is None and mine[0]["claimed_by"] == "bob" and "context" in mine[0]
    assert mine[2]["state"] == "open" and mine[2]["title"] == "t0" and mine[2]["lease"] is None and mine[2]["context"]
    assert [t["id"] for t in bob.ready()] == ["T-2", "T-11", "T-1", "T-5", "T-6", "T-7", "T-8", "T-9"]
    stubs = alice.ready(full=False)
    assert stubs[2] == {"id": "T-1", "state": "open", "assignee": None, "deps": []}
    assert stubs[3] == {"id": "T-3", "state": "open", "assignee": "alice", "deps": []}
    # the limit bounds the expired leases read (the longest expired first, and among leases that
    # expired at once in the order of their keys: @task/T-10,
    # @task/T-11, @task/T-2) as well as the answer
    assert [t["id"] for t in alice.ready(limit=1)] == ["T-10"]
    assert [t["id"] for t in alice.ready(limit=2)] == ["T-10", "T-1"]
    assert [t["id"] for t in alice.ready(limit=3)] == ["T-2", "T-10", "T-1"]
    assert [t["id"] for t in bob.ready(limit=4)] == ["T-2", "T-11", "T-1", "T-5"]
    # once T-1 is done, what waits on it is ready; an orphan that waits on undone work is not
    c1 = alice.claim("T-1")
    alice.done("T-1", c1.token)
    assert "T-12" in [t["id"] for t in bob.ready()]
    assert bob.ready(full=False)[-1] == {"id": "T-12", "state": "open", "assignee": None, "deps": ["T-1"]}
    assert c2.token and c10.token and ids


# ------------------------------------------------------------------ add


def test_add_writes_the_record_and_its_queue_marker(st: comity.Store) -> None:
    a = board(st, "alice")
    a.add("base")
    t = a.add("x", body="b", deps=["1", "T-1"], labels=["l"], assignee="bob")
    assert {k: t[k] for k in ("id", "title", "body", "labels", "deps", "status", "assignee", "claimed_by", "checkpoints",
                              "result", "created_by", "completed_by", "done_token", "attempts", "state", "lease")} == {
        "id": "T-2", "title": "x", "body": "b", "labels": ["l"], "deps": ["T-1", "T-1"], "status": "open", "assignee": "bob",
        "claimed_by": None, "checkpoints": [], "result": None, "created_by": "alice", "completed_by": None,
        "done_token": None, "attempts": 0, "state": "open", "lease": None}
    assert t["news"] == []
    assert ops_of(st, "@task/T-2") == ["task.add"]
    assert ops_of(st, "@open/000000000002") == ["task.open"]
    assert st.session().get("@open/000000000002").values == [{"id": "T-2", "assignee": "bob", "deps": ["T-1", "T-1"]}]
    e = refused(NotFound, lambda: a.add("y", deps=["T-1", "T-7"]))
    assert e.message == "dependency T-7 does not exist; add it first" and e.details == {"field": "deps"}


def test_assigning_to_a_name_that_never_acted_warns(st: comity.Store) -> None:
    from comity.server.auth import issue_token

    a = board(st, "alice")
    t = a.add("x", assignee="nobody-yet")
    assert t["warning"] == ("no agent named 'nobody-yet' has acted in this store yet; the task waits for it."
                            " If that is not the name you meant, assign it again")
    assert "warning" not in a.add("y", assignee="alice")  # oneself
    st.session("bob").put("notes/hello", 1)
    assert "warning" not in a.assign(t["id"], "bob")  # bob has acted
    issue_token(st.session("admin"), "carol")
    assert "warning" not in a.assign(t["id"], "carol")  # carol was issued a token
    assert "warning" not in a.assign(t["id"], None)
    assert a.assign(t["id"], "dave")["warning"].startswith("no agent named 'dave' has acted")


def test_add_with_a_request_id_is_answered_from_its_record(st: comity.Store) -> None:
    a = board(st, "alice")
    req = Request("req-1", "digest-a")
    first = a.add("x", labels=["l"], request=req)
    assert first["id"] == "T-1" and "replayed" not in first
    again = a.add("x", labels=["l"], request=req)
    assert again["replayed"] is True and again["news"] == [] and again["state"] == "open" and again["lease"] is None
    assert again["id"] == "T-1" and again["labels"] == ["l"] and again["context"] == first["context"]
    assert a.add("y")["id"] == "T-2"  # the retry took no number
    e = refused(Invalid, lambda: a.add("other", request=Request("req-1", "digest-b")))
    assert e.field == "request_id"
    assert e.message == "request_id: 'req-1' was already used for a different request; use a new id for a new request"
    long = refused(Invalid, lambda: a.add("other", request=Request("r" * 80, "d")) if a.add("z", request=Request("r" * 80, "c")) else None)
    assert long.message == f"request_id: {'r' * 60!r} was already used for a different request; use a new id for a new request"


# ------------------------------------------------------------------ assign


def test_assign_moves_the_queue_marker_and_refuses_closed_tasks(st: comity.Store) -> None:
    tri = board(st, "triage")
    t = tri.add("x", deps=[])
    u = tri.add("y", deps=[t["id"]])
    got = tri.assign(u["id"], "alice")
    assert got["assignee"] == "alice" and got["state"] == "open" and got["lease"] is None
    assert ops_of(st, "@task/T-2")[-1] == "task.assign"
    assert st.session().get("@open/000000000002").values == [{"id": "T-2", "assignee": "alice", "deps": ["T-1"]}]
    assert ops_of(st, "@open/000000000002") == ["task.open", "task.open"]
    a = board(st, "alice")
    c = a.claim(t["id"])
    claimed = tri.assign(t["id"], "alice")  # a claimed task has no marker: none is written
    assert claimed["state"] == "claimed" and claimed["lease"]["token"] == c.token
    assert st.session().get("@open/000000000001").values == []
    a.done(t["id"], c.token)
    e = refused(StaleContext, lambda: tri.assign(t["id"], "bob"))
    assert e.message == "task T-1 is done (by alice); it cannot be assigned" and e.key == "@task/T-1"
    cu = a.claim(u["id"])
    a.fail(u["id"], cu.token, reason="no")
    e = refused(StaleContext, lambda: tri.assign(u["id"], None))
    assert e.message == "task T-2 is failed (by alice); it cannot be assigned"


def test_assign_with_a_request_id_is_answered_from_its_record(st: comity.Store) -> None:
    tri = board(st, "triage")
    t = tri.add("x")
    req = Request("as-1", "d")
    first = tri.assign(t["id"], "alice", request=req)
    head = st.session().head()
    again = tri.assign(t["id"], "alice", request=req)
    assert again["replayed"] is True and again["news"] == [] and again["assignee"] == "alice"
    assert again["context"] == first["context"] and st.session().head() == head


# ------------------------------------------------------------------ claim refusals


def test_a_claim_on_an_old_read_names_every_change_it_missed(st: comity.Store) -> None:
    tri, bob = board(st, "triage"), board(st, "bob")
    t = tri.add("x")
    ctx = bob.show(t["id"])["context"]
    seen = st.session().head()
    tri.assign(t["id"], "carol")
    tri.assign(t["id"], None)
    st.session("carol").put("notes/unrelated", 1)
    e = refused(StaleContext, lambda: bob.claim(t["id"], context=ctx))
    assert e.message == "task T-1 changed since you read it: assigned to carol by triage, then assigned to nobody by triage"
    assert e.key == "@task/T-1"
    # each assign also rewrote the queue marker (seen + 2, seen + 4): not the task's news
    assert e.details["missed"] == [seen + 1, seen + 3]
    assert [(n["op"], n["pos"]) for n in e.news] == [("task.assign", seen + 1), ("task.assign", seen + 3)]
    assert all("value" not in n for n in e.news)
    assert e.next == (Step("task_show", {"id": "T-1"}, "read it again"), READY)
    [note] = events_of(st, "@task/T-1", "task.claim-refused")
    assert note["agent"] == "bob" and note["seen"] == seen and note["reason"] == e.message
    assert note["missed"] == [seen + 1, seen + 3]


def test_changes_that_do_not_matter_to_a_claim_do_not_refuse_it(st: comity.Store) -> None:
    tri, bob = board(st, "triage"), board(st, "bob")
    t = tri.add("x")
    ctx = bob.show(t["id"])["context"]
    tri.assign(t["id"], "bob")  # assigned to me: not a reason to refuse
    c = bob.claim(t["id"], context=ctx)
    assert c.task["claimed_by"] == "bob"
    ctx2 = bob.show(t["id"])["context"]
    bob.checkpoint(t["id"], c.token, "progress")  # a checkpoint does not matter
    bob.release(t["id"], c.token)  # a release does
    e = refused(StaleContext, lambda: bob.claim(t["id"], context=ctx2))
    assert e.message == "task T-1 changed since you read it: released by bob"
    assert [n["op"] for n in e.news] == ["task.release"]


def test_claim_refusals_for_closed_assigned_and_waiting_tasks(st: comity.Store) -> None:
    tri = board(st, "triage")
    a, b = board(st, "alice"), board(st, "bob")
    done_t, failed_t = tri.add("d"), tri.add("f")
    a.done(done_t["id"], a.claim(done_t["id"]).token)
    a.fail(failed_t["id"], a.claim(failed_t["id"]).token)
    e = refused(StaleContext, lambda: b.claim(done_t["id"]))
    assert e.message == "task T-1 was completed by alice" and e.next == (READY,) and e.key == "@task/T-1"
    e = refused(StaleContext, lambda: b.claim(failed_t["id"]))
    assert e.message == "task T-2 was failed by alice" and e.next == (READY,)
    assigned = tri.add("for carol", assignee="carol")
    e = refused(StaleContext, lambda: b.claim(assigned["id"]))
    assert e.message == "task T-3 is assigned to carol; only the assignee may claim it"
    assert e.details["assignee"] == "carol" and e.next == (READY,)
    base, other = tri.add("base"), tri.add("other")
    top = tri.add("top", deps=[base["id"], other["id"], done_t["id"]])
    e = refused(StaleContext, lambda: b.claim(top["id"]))
    assert e.message == "task T-6 waits on T-4, T-5, T-1; claim it once they are done"
    assert e.next == (Step("task_show", {"id": "T-4"}, "see what it waits on"), READY)
    notes = events_of(st, "@task/T-6", "task.claim-refused")
    assert [n["reason"] for n in notes] == [e.message] and "seen" not in notes[0]
    assert events_of(st, "@task/T-3", "task.claim-refused")[0]["assignee"] == "carol"


def test_a_claimed_task_is_refused_with_its_holder_token_and_time_left(st: comity.Store, clock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    c = board(st, "carol").claim(t["id"], ttl=600)
    clock.advance(100.4)
    e = refused(StaleContext, lambda: board(st, "bob").claim(t["id"]))
    assert e.message == f"task T-1 is claimed by carol (token {c.token}, 500s left)"
    assert e.details["holder"] == "carol" and e.next == (READY,)
    e = refused(StaleContext, lambda: board(st, "carol").claim(t["id"]))  # one's own claim too
    assert e.message == f"task T-1 is claimed by carol (token {c.token}, 500s left)"
    assert [n["holder"] for n in events_of(st, "@task/T-1", "task.claim-refused")] == ["carol", "carol"]


def test_steal_needs_a_suspected_holder_or_is_one_s_own(st: comity.Store, clock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    alice, bob = board(st, "alice"), board(st, "bob")
    ca = alice.claim(t["id"], ttl=3600)
    e = refused(StaleContext, lambda: bob.claim(t["id"], steal=True))
    assert e.message == ("task T-1 is held by alice, who is not suspected (phi 0.0); stealing takes only a suspected"
                         " agent's task")
    assert e.details["holder"] == "alice" and e.next == (READY,)
    # one's own claim may be taken again with steal: a greater token, the attempt counted
    again = alice.claim(t["id"], steal=True, ttl=60)
    assert again.token == ca.token + 1 and again.task["attempts"] == 2 and again.expires == st.session().now() + 60
    assert ops_of(st, "@lease/@task/T-1")[-1] == "steal"
    with pytest.raises(Fenced):
        alice.checkpoint(t["id"], ca.token, "old token")
    # a suspected holder: a regular rhythm, then silence far past the default ttl
    for i in range(10):
        clock.advance(10)
        alice.checkpoint(t["id"], again.token, f"step {i}", ttl=3600)
    clock.advance(1000)
    cb = bob.claim(t["id"], steal=True)
    assert cb.token == again.token + 1 and cb.task["claimed_by"] == "bob" and cb.task["attempts"] == 3
    assert cb.handoff[-1]["note"] == "step 9" and len(cb.handoff) == 10


def test_a_suspected_but_live_holder_is_refused_without_steal_naming_its_phi(st: comity.Store, clock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    alice, bob = board(st, "alice"), board(st, "bob")
    ca = alice.claim(t["id"], ttl=3600)
    for i in range(10):
        clock.advance(10)
        alice.checkpoint(t["id"], ca.token, f"step {i}", ttl=3600)
    clock.advance(250)  # silent, but not past the default 300 s: not suspected, phi high
    e = refused(StaleContext, lambda: bob.claim(t["id"], steal=True))
    assert "who is not suspected (phi " in e.message and "(phi 0.0)" not in e.message


# ------------------------------------------------------------------ claims


def test_a_claim_takes_the_lease_marks_the_task_and_removes_its_marker(st: comity.Store, clock: VirtualClock) -> None:
    a = board(st, "alice")
    t = a.add("x")
    a_cp = a.claim(t["id"])
    a.checkpoint(t["id"], a_cp.token, "first")
    a.release(t["id"], a_cp.token)
    assert st.session().get("@open/000000000001").values == [{"id": "T-1", "assignee": None, "deps": []}]
    assert ops_of(st, "@open/000000000001") == ["task.open", "task.claimed", "task.open"]
    b = board(st, "bob")
    c = b.claim(t["id"], ttl=42)
    assert c.token == a_cp.token + 1 and c.expires == st.session().now() + 42
    assert c.handoff == [{"agent": "alice", "token": a_cp.token, "note": "first", "at": st.session().now()}]
    assert c.task["state"] == "claimed" and c.task["claimed_by"] == "bob" and c.task["attempts"] == 2
    assert c.task["lease"] == {"holder": "bob", "token": c.token, "expires": c.expires}
    assert st.session().get("@open/000000000001").values == []
    assert ops_of(st, "@task/T-1")[-1] == "task.claim"
    assert c.replayed is False and c.news == []


def test_a_claim_with_a_request_id_is_answered_from_its_record(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    req = Request("cl-1", "d")
    first = a.claim(t["id"], request=req, ttl=50)
    head = st.session().head()
    again = a.claim(t["id"], request=req, ttl=50)
    assert again.replayed is True and again.news == [] and st.session().head() == head
    assert (again.token, again.expires) == (first.token, first.expires)
    assert again.task["lease"] == first.task["lease"] and again.task["state"] == "claimed"
    assert again.task["context"] == first.task["context"] and again.handoff == []
    assert again.to_json()["replayed"] is True
    nxt = a.claim_next(request=req)  # claim_next answers a retry the same way
    assert nxt.replayed is True and nxt.token == first.token


def test_claim_next_refuses_with_the_next_step_when_nothing_is_ready(st: comity.Store) -> None:
    a = board(st, "alice")
    e = refused(NotFound, lambda: a.claim_next())
    assert e.message == "nothing is ready to claim" and e.next == (LIST,)
    a.add("x", assignee="bob")
    assert refused(NotFound, lambda: a.claim_next()).message == "nothing is ready to claim"
    c = board(st, "bob").claim_next(ttl=30)
    assert c.task["id"] == "T-1" and c.expires == st.session().now() + 30
    assert ops_of(st, "@task/T-1").count("task.claim-refused") == 0


def test_claim_next_spreads_over_the_first_32_ready_tasks(make_store: Callable[..., comity.Store], clock: VirtualClock) -> None:
    picked = set()
    for n in range(6):
        st = make_store(f"s{n}.db", clock=clock)
        tri = board(st, "triage")
        for i in range(40):
            tri.add(f"t{i}")
        for _ in range(3):
            picked.add(int(board(st, "alice").claim_next().task["id"][2:]))
    assert picked <= set(range(1, 35)) and max(picked) > 8  # never beyond the first 32 still ready


# ------------------------------------------------------------------ fenced verbs


def test_a_superseded_token_is_refused_as_fenced_and_logged(st: comity.Store, clock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    alice, bob = board(st, "alice"), board(st, "bob")
    ca = alice.claim(t["id"], ttl=10)
    clock.advance(11)
    cb = bob.claim(t["id"])
    for action, call in (("checkpoint", lambda: alice.checkpoint(t["id"], ca.token, "n")),
                         ("release", lambda: alice.release(t["id"], ca.token)),
                         ("fail", lambda: alice.fail(t["id"], ca.token)),
                         ("renew", lambda: alice.renew(t["id"], ca.token)),
                         ("done", lambda: alice.done(t["id"], ca.token))):
        e = refused(Fenced, call)
        assert e.next == (READY,) and e.details["current"] == cb.token and e.details["holder"] == "bob"
        note = events_of(st, "@task/T-1", "task.fenced")[-1]
        assert note["agent"] == "alice"
        assert noted(note) == {"action": action, "token": ca.token, "error": "fenced", "reason": e.message[:500],
                                 "current": cb.token, "holder": "bob"}


def test_an_expired_token_is_told_to_claim_again(st: comity.Store, clock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    alice = board(st, "alice")
    ca = alice.claim(t["id"], ttl=10)
    clock.advance(10)
    again = Step("task_claim", {"id": "T-1"}, "claim it again: you get it back if nobody took it")
    for action, call in (("checkpoint", lambda: alice.checkpoint(t["id"], ca.token, "n")),
                         ("renew", lambda: alice.renew(t["id"], ca.token)),
                         ("release", lambda: alice.release(t["id"], ca.token)),
                         ("fail", lambda: alice.fail(t["id"], ca.token)),
                         ("done", lambda: alice.done(t["id"], ca.token)),
                         ("write", lambda: alice.write("notes/a", 1, task=t["id"], token=ca.token))):
        e = refused(LeaseExpired, call)
        assert e.next == (again,), action
        if action != "write":
            note = events_of(st, "@task/T-1", "task.fenced")[-1]
            assert noted(note) == {"action": action, "token": ca.token, "error": "lease_expired", "reason": e.message}
    assert len(events_of(st, "@task/T-1", "task.fenced")) == 5
    assert alice.claim(t["id"]).token == ca.token + 1  # nobody took it: claimed back


def test_release_reopens_with_the_marker_of_the_record(st: comity.Store) -> None:
    tri = board(st, "triage")
    tri.add("base")
    t = tri.add("x", deps=[], assignee="alice")
    a = board(st, "alice")
    c = a.claim(t["id"])
    r = a.release(t["id"], c.token)
    assert r["state"] == "open" and r["status"] == "open" and r["claimed_by"] is None and r["lease"] is None
    assert r["assignee"] == "alice" and r["attempts"] == 1
    assert st.session().get("@open/000000000002").values == [{"id": "T-2", "assignee": "alice", "deps": []}]
    assert ops_of(st, "@task/T-2")[-1] == "task.release"
    assert ops_of(st, "@lease/@task/T-2")[-1] == "release"
    req = Request("rel", "d")
    c2 = a.claim(t["id"])
    first = a.release(t["id"], c2.token, request=req)
    again = a.release(t["id"], c2.token, request=req)
    assert again["replayed"] is True and again["news"] == [] and again["state"] == "open"
    assert again["context"] == first["context"] and again["lease"] is None


def test_checkpoint_keeps_the_last_fifty_and_renews_for_the_claimed_length(st: comity.Store, clock: VirtualClock) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"], ttl=100)
    for i in range(51):
        clock.advance(1)
        cp = a.checkpoint(t["id"], c.token, f"n{i}")
    now = st.session().now()
    assert len(cp["checkpoints"]) == 50
    assert cp["checkpoints"][0]["note"] == "n1" and cp["checkpoints"][-1] == {"agent": "alice", "token": c.token, "note": "n50", "at": now}
    assert cp["state"] == "claimed" and cp["lease"] == {"holder": "alice", "token": c.token, "expires": now + 100}
    assert cp["news"] == []  # nobody else wrote
    assert ops_of(st, "@task/T-1")[-1] == "task.checkpoint"
    cp = a.checkpoint(t["id"], c.token, "longer", ttl=1000)
    assert cp["lease"]["expires"] == now + 1000
    req = Request("cp", "d")
    first = a.checkpoint(t["id"], c.token, "once", request=req)
    again = a.checkpoint(t["id"], c.token, "once", request=req)
    assert again["replayed"] is True and again["news"] == [] and again["checkpoints"][-1]["note"] == "once"
    assert again["lease"] == {"holder": "alice", "token": c.token, "expires": now + 1000}
    assert again["context"] == first["context"] and again["state"] == "claimed"
    assert [x["note"] for x in a.show(t["id"])["checkpoints"]].count("once") == 1


def test_fail_records_who_why_and_with_which_token(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    f = a.fail(t["id"], c.token)
    assert f["state"] == "failed" and f["result"] == "" and f["completed_by"] == "alice" and f["done_token"] == c.token
    assert f["lease"] is None and ops_of(st, "@task/T-1")[-1] == "task.fail"
    assert st.session().get("@open/000000000001").values == []


def test_renew_with_a_request_id_is_answered_from_its_record(st: comity.Store, clock: VirtualClock) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    req = Request("rn", "d")
    first = a.renew(t["id"], c.token, ttl=60, request=req)
    assert "replayed" not in first
    clock.advance(5)
    again = a.renew(t["id"], c.token, ttl=60, request=req)
    assert again == {**first, "replayed": True}
    assert ops_of(st, "@lease/@task/T-1").count("renew") == 1


# ------------------------------------------------------------------ done


def test_done_after_completion_says_whose_completion_it_was(st: comity.Store, clock: VirtualClock) -> None:
    t = board(st, "triage").add("x")
    alice, bob = board(st, "alice"), board(st, "bob")
    ca = alice.claim(t["id"], ttl=10)
    clock.advance(11)
    cb = bob.claim(t["id"])
    bob.done(t["id"], cb.token, result="fixed")
    e = refused(Fenced, lambda: alice.done(t["id"], ca.token))
    assert e.message == (f"token {ca.token} for task T-1 was superseded: bob completed it with token {cb.token};"
                         " stop, your work on it does not count")
    assert e.details == {"resource": "@task/T-1", "token": ca.token, "current": cb.token, "holder": "bob"}
    assert e.next == (READY,)
    e = refused(Fenced, lambda: alice.done(t["id"], cb.token))
    assert e.message == f"task T-1 was already completed by bob with token {cb.token}, which is bob's, not alice's"
    assert e.details == {"resource": "@task/T-1", "token": cb.token, "holder": "bob"} and e.next == ()
    e = refused(Fenced, lambda: bob.done(t["id"], cb.token + 5))
    assert e.message == (f"task T-1 was already completed by bob (token {cb.token});"
                         f" no lease on it was ever granted with token {cb.token + 5}")
    assert e.details == {"resource": "@task/T-1", "token": cb.token + 5, "current": cb.token} and e.next == ()
    notes = [noted(n) for n in events_of(st, "@task/T-1", "task.fenced")]
    assert notes[0] == {"action": "done", "token": ca.token, "error": "fenced", "reason": notes[0]["reason"],
                        "current": cb.token, "holder": "bob"}
    assert notes[1] == {"action": "done", "token": cb.token, "error": "fenced", "reason": notes[1]["reason"], "holder": "bob"}
    assert notes[2] == {"action": "done", "token": cb.token + 5, "error": "fenced", "reason": notes[2]["reason"],
                        "current": cb.token}
    shown = bob.done(t["id"], cb.token)
    assert shown["replayed"] is True and shown["result"] == "fixed" and shown["state"] == "done"


def test_done_writes_the_completion_and_releases_the_lease(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    d = a.done(t["id"], c.token, result="ok")
    assert d["state"] == "done" and d["status"] == "done" and d["result"] == "ok" and d["completed_by"] == "alice"
    assert d["done_token"] == c.token and d["lease"] is None and "changes" not in d
    assert ops_of(st, "@task/T-1")[-1] == "task.done" and ops_of(st, "@lease/@task/T-1")[-1] == "release"
    req = Request("dn", "d")
    u = a.add("y")
    cu = a.claim(u["id"])
    first = a.done(u["id"], cu.token, result="r", request=req)
    again = a.done(u["id"], cu.token, result="r", request=req)
    assert again["replayed"] is True and again["news"] == [] and again["state"] == "done"
    assert again["context"] == first["context"] and again["lease"] is None


def test_done_with_an_old_done_token_of_none_treats_it_as_zero(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    a.done(t["id"], c.token)
    e = refused(Fenced, lambda: board(st, "bob").done(t["id"], c.token + 1))
    assert e.details["current"] == c.token and "ever granted with token 2" in e.message


# ------------------------------------------------------------------ write


def test_write_under_a_claim_and_its_refusals(st: comity.Store, clock: VirtualClock) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    w = a.write("notes/a", {"v": 1}, task="1", token=c.token)
    assert (w.key, w.op, w.values) == ("notes/a", "put", [{"v": 1}]) and w.replayed is False
    w2 = a.write("notes/a", 2, task=t["id"], token=c.token, context=w.context)
    assert w2.values == [2]
    sib = a.write("notes/a", 3, task=t["id"], token=c.token, context=w.context, keep_both=True)
    assert sorted(sib.values) == [2, 3]
    e = refused(Invalid, lambda: a.write("notes/b", float("nan"), task=t["id"], token=c.token))
    assert e.field == "value" and e.details == {"field": "value"}  # the caller's argument, not the transaction's "ops[0].value"
    assert e.message == ("value: must be JSON (strings, numbers, booleans, null, lists, objects):"
                         " Out of range float values are not JSON compliant")
    assert refused(Invalid, lambda: a.write("@task/T-1", 1, task=t["id"], token=c.token)).field == "key"
    assert refused(Invalid, lambda: a.write("notes/b", 1, task="nope", token=c.token)).field == "task"
    req = Request("wr", "d")
    first = a.write("notes/r", 1, task=t["id"], token=c.token, request=req)
    again = a.write("notes/r", 1, task=t["id"], token=c.token, request=req)
    assert again.replayed is True and again.pos == first.pos
    e = refused(Fenced, lambda: board(st, "bob").write("notes/a", 9, task=t["id"], token=c.token))
    assert e.next == (READY,)
    assert sorted(st.session().get("notes/a").values) == [2, 3]


# ------------------------------------------------------------------ why


def test_why_of_a_task_merges_its_lease_history_in_log_order(st: comity.Store, clock: VirtualClock) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    a.renew(t["id"], c.token)
    a.done(t["id"], c.token)
    w = why(st.session(), "1")
    assert w["target"] == "1" and w["key"] == "@task/T-1"
    ops = [(h["op"], h["key"]) for h in w["history"]]
    assert ops == [("task.add", "@task/T-1"), ("acquire", "@lease/@task/T-1"), ("task.claim", "@task/T-1"),
                   ("renew", "@lease/@task/T-1"), ("task.done", "@task/T-1"), ("release", "@lease/@task/T-1")]
    assert [h["pos"] for h in w["history"]] == sorted(h["pos"] for h in w["history"])
    assert all("value" not in h and "session" not in h and "dot" not in h and "replica" not in h for h in w["history"])
    assert w["explanations"] == [] and w["changes"] == []
    # the limit is per log: the task's first two events and its lease's
    assert [h["op"] for h in why(st.session(), "T-1", limit=2)["history"]] == ["task.add", "acquire", "task.claim", "renew"]


def test_why_of_a_key_says_who_did_not_see_whom(st: comity.Store) -> None:
    s = st.session("carol")
    s.put("k", 1)
    base = s.get("k")
    st.session("dave").put("k", 2, context=base.context)
    st.session("erin").put("k", 3, context=base.context, keep_both=True)
    ctx = st.session().get("k").context
    st.session("carol").put("k", 4, context=ctx)
    w = why(st.session(), "k")
    assert w["key"] == "k" and "changes" not in w
    p = [h["pos"] for h in w["history"]]
    assert "did_not_see" not in w["history"][0] and "had_seen_up_to" not in w["history"][0]
    assert w["history"][1]["had_seen_up_to"] == p[0] and w["history"][1]["did_not_see"] == []
    assert w["history"][2]["did_not_see"] == [p[1]]
    assert w["history"][3]["did_not_see"] == [] and w["history"][3]["had_seen_up_to"] == p[2]
    assert w["explanations"] == [f"erin's put (pos {p[2]}) did not see dave's put (pos {p[1]}): they were concurrent"
                                 " (kept both as siblings)"]


def test_why_of_a_key_nobody_wrote_and_of_a_bad_target(st: comity.Store) -> None:
    e = refused(NotFound, lambda: why(st.session(), "T-9"))
    assert e.message == "nothing is known about 'T-9'" and e.details == {"target": "T-9"}
    e = refused(NotFound, lambda: why(st.session(), "notes/none"))
    assert e.message == "nothing is known about 'notes/none'"
    e = refused(Invalid, lambda: why(st.session(), ""))
    assert e.field == "target"
    st.session("alice").put("T-x", 1)  # not a task id: a key of that name
    assert why(st.session(), "T-x")["key"] == "T-x"
    st.session("alice").txn(ops=[comity.store.Put("@decision/d", 1)], system=True)
    assert why(st.session(), "@decision/d")["key"] == "@decision/d"  # a system key may be asked about


def test_why_judges_a_refused_claim_by_its_read_position(st: comity.Store) -> None:
    tri, bob = board(st, "triage"), board(st, "bob")
    t = tri.add("x")
    ctx = bob.show(t["id"])["context"]
    tri.assign(t["id"], "alice")
    with pytest.raises(StaleContext):
        bob.claim(t["id"], context=ctx)
    w = why(st.session(), t["id"])
    add, assign, note = w["history"]
    assert note["op"] == "task.claim-refused" and add["pos"] <= note["had_seen_up_to"] < assign["pos"]
    assert note["did_not_see"] == [assign["pos"]] and "did_not_see" not in assign
    assert w["explanations"] == [f"bob's claim-refused (pos {note['pos']}) did not see triage's assign (pos {assign['pos']}):"
                                 " they were concurrent (refused)"]


# ------------------------------------------------------------------ why across replicas


@pytest.fixture
def replicas(make_store: Callable[..., comity.Store], tmp_path: Any, clock: VirtualClock) -> Any:
    from sync_support import make_replica

    up = make_store("up.db", clock=clock)
    made: list[Any] = []

    def make(name: str) -> Any:
        r = make_replica(up, tmp_path / f"{name}.db", clock)
        made.append(r)
        return r

    yield up, make
    for r in made:
        r.store.close()


def test_why_judges_a_write_from_another_replica_by_its_dots(replicas: Any) -> None:
    up, make = replicas
    up.session("carol").put("notes/plan", "v0")
    a = make("a")
    ctx = a.session().get("notes/plan").context
    u = up.session("alice")
    u.put("notes/plan", "alice's", context=u.get("notes/plan").context)
    a.session("bob").put("notes/plan", "bob's", context=ctx)
    a.sync()
    here, there = up.replica_id, a.store.replica_id
    w = why(up.session(), "notes/plan")
    carol, alice, bob = w["history"]
    assert "replica" not in carol and "replica" not in alice and bob["replica"] == there
    assert alice["had_seen_up_to"] == carol["pos"] and "had_seen_up_to" not in bob  # its read position is another log's
    assert bob["did_not_see"] == [alice["pos"]] and alice["did_not_see"] == []
    assert w["explanations"] == [f"bob's put (pos {bob['pos']} on replica {there}) did not see alice's put"
                                 f" (pos {alice['pos']}): they were concurrent"]
    w = why(a.store.session(), "notes/plan")
    carol, bob, alice = w["history"]
    assert carol["replica"] == here and alice["replica"] == here and "replica" not in bob
    assert w["explanations"] == [f"alice's put (pos {alice['pos']} on replica {here}) did not see bob's put"
                                 f" (pos {bob['pos']}): they were concurrent"]


def test_why_tells_of_work_fenced_when_it_arrived(replicas: Any, clock: VirtualClock) -> None:
    up, make = replicas
    up.session("carol").put("files/app.py", "v0")
    sandbox = make("sandbox")
    alice = sandbox.session("alice", name="alice-work")
    t = Board(alice).add("fix the app")
    c = Board(alice).claim(t["id"], ttl=60)
    sandbox.wire.cut = True
    Board(alice).write("files/app.py", "alice's", task=t["id"], token=c.token, context=alice.get("files/app.py").context)
    clock.advance(120)
    take = Board(up.session("bob")).claim(t["id"])
    sandbox.wire.cut = False
    sandbox.sync()
    there = sandbox.store.replica_id
    for s in (up, sandbox.store):
        w = why(s.session(), t["id"])
        [fenced] = [h for h in w["history"] if h["op"] == "sync.fenced"]
        conflict = fenced["conflict"]
        assert conflict.startswith("@conflict/")
        assert w["explanations"] == [
            f"alice's write of files/app.py on replica {there} under token {c.token} was fenced when it arrived:"
            f" token {take.token} (bob) had superseded it; it is kept in {conflict} and was not applied"]
        w = why(s.session(), "files/app.py")
        assert w["explanations"] == [
            f"alice's write on replica {there} was fenced when it arrived: @task/T-1 token {c.token} was superseded by"
            f" token {take.token} (bob); it is kept in {conflict} and was not applied"]


def test_why_says_released_when_the_lease_that_fenced_a_write_was_released(replicas: Any, clock: VirtualClock) -> None:
    up, make = replicas
    sandbox = make("sandbox")
    alice = sandbox.session("alice", name="alice-work")
    t = Board(alice).add("fix")
    c = Board(alice).claim(t["id"], ttl=60)
    sandbox.wire.cut = True
    Board(alice).write("files/x.py", "alice's", task=t["id"], token=c.token)
    clock.advance(120)
    bob = Board(up.session("bob"))
    take = bob.claim(t["id"])
    bob.release(t["id"], take.token)
    sandbox.wire.cut = False
    sandbox.sync()
    lines = why(up.session(), t["id"])["explanations"]
    assert len(lines) == 1 and f"token {take.token} (released) had superseded it" in lines[0], lines
    lines = why(up.session(), "files/x.py")["explanations"]
    assert len(lines) == 1 and f"was superseded by token {take.token} (released);" in lines[0], lines


# ------------------------------------------------------------------ changes on the board, and why


def _diff(n: int) -> str:
    import hashlib

    return hashlib.sha256(str(n).encode()).hexdigest()


def test_completing_under_a_policy_submits_and_why_follows_the_changes(st: comity.Store) -> None:
    from comity.work.changes import Changes

    Changes(st.session("lead")).set_policy("default", attestations=0, reexecute=True)
    a, ch = board(st, "alice"), Changes(st.session("alice"))
    t = a.add("x")
    c = a.claim(t["id"])
    e = refused(NotFound, lambda: a.done(t["id"], c.token))  # no change submitted: the lease was renewed first
    assert e.message.startswith("task T-1 is under policy default") and e.details["field"] == "change"
    assert ops_of(st, "@lease/@task/T-1")[-1] == "renew"
    c1 = ch.submit(t["id"], diff=_diff(1), checks=["true"])
    c2 = ch.submit(t["id"], diff=_diff(2), checks=["true"], on=[c1["id"]])
    d = a.done(t["id"], c.token, result="see C-2")
    assert d["state"] == "submitted" and d["changes"] == ["C-1", "C-2"] and d["done_token"] == c.token and d["lease"] is None
    assert ops_of(st, "@task/T-1")[-1] == "task.submitted"
    e = refused(StaleContext, lambda: board(st, "bob").claim(t["id"]))
    assert e.message == "task T-1 was submitted for verification by alice"
    assert a.done(t["id"], c.token)["replayed"] is True  # the same completion, retried
    assert [x["id"] for x in a.tasks(status="submitted")] == ["T-1"]
    Changes(st.session("bob")).refute(c1["id"], "it breaks login")
    w = why(st.session(), t["id"])
    assert w["changes"] == [
        {"id": "C-1", "state": "refuted", "author": "alice", "commit": None, "built_on": [], "tainted_by": []},
        {"id": "C-2", "state": "tainted", "author": "alice", "commit": None, "built_on": ["C-1"], "tainted_by": ["C-1"]}]
    assert w["explanations"] == ["C-1 by alice was refuted by bob: it breaks login",
                                 "C-2 by alice is built on refuted work (C-1)"]
    w = why(st.session(), " C-2")
    assert w["target"] == " C-2" and w["key"] == "@change/C-2" and w["state"] == "tainted"
    assert [x["id"] for x in w["built_on"]] == ["C-1"] and w["built_upon_by"] == [] and w["commits"] == [] and w["keys"] == []
    assert w["explanations"] == ["C-2 is built on C-1 by alice, which is refuted"]
    w = why(st.session(), "C-1")
    assert w["explanations"] == [] and [x["id"] for x in w["built_upon_by"]] == ["C-2"] and "changes" not in w


def test_done_under_a_policy_with_a_superseded_or_refuted_change(st: comity.Store, clock: VirtualClock) -> None:
    from comity.work.changes import Changes

    Changes(st.session("lead")).set_policy("default", attestations=0, reexecute=True)
    t = board(st, "triage").add("x")
    alice, bob = board(st, "alice"), board(st, "bob")
    ca = alice.claim(t["id"], ttl=10)
    clock.advance(11)
    cb = bob.claim(t["id"])
    e = refused(Fenced, lambda: alice.done(t["id"], ca.token))  # the token is told first, not the missing change
    assert e.details["current"] == cb.token
    note = noted(events_of(st, "@task/T-1", "task.fenced")[-1])
    assert note == {"action": "done", "token": ca.token, "error": "fenced", "reason": e.message, "current": cb.token,
                    "holder": "bob"}
    c1 = Changes(st.session("bob")).submit(t["id"], diff=_diff(1), checks=["true"])
    Changes(st.session("lead")).refute(c1["id"], "wrong")
    e = refused(StaleContext, lambda: bob.done(t["id"], cb.token))
    assert e.message == "task T-1: your change C-1 was refuted: wrong; fix it and submit a new change"
    assert bob.show(t["id"])["state"] == "claimed"


class _Interfering(Board):
    """A board that lets another agent act once (or every time) just before its own write.

    A read inside one of the board's snapshots (``Session.snapshot``) cannot be interrupted by
    a write on the same store file: the action then waits until the board's next write."""

    def __init__(self, session: comity.Session, act: Callable[[str], Any], *, hook: str, times: int = 1) -> None:
        super().__init__(session)
        self.act, self.hook, self.times = act, hook, times
        self.deferred: list[str] = []
        write = session.txn

        def txn(*args: Any, **kw: Any) -> Any:
            while self.deferred:
                self.act(self.deferred.pop(0))
            return write(*args, **kw)

        session.txn = txn  # type: ignore[method-assign]

    def _fire(self, name: str, task_id: str) -> None:
        if name == self.hook and self.times > 0:
            self.times -= 1
            if self.session._snap is not None:
                self.deferred.append(task_id)
            else:
                self.act(task_id)

    def _lease(self, task_id: str) -> Any:
        got = super()._lease(task_id)
        self._fire("lease", task_id)
        return got

    def _read(self, task_id: str) -> Any:
        got = super()._read(task_id)
        self._fire("read", task_id)
        return got

    def _fenced(self, task_id: str, *args: Any, **kw: Any) -> Any:
        self._fire("fenced", task_id)
        return super()._fenced(task_id, *args, **kw)


def test_a_claim_that_loses_the_race_for_the_lease_names_the_winner(st: comity.Store) -> None:
    t = board(st, "triage").add("x")
    bob = _Interfering(st.session("bob"), lambda tid: board(st, "carol").claim(tid), hook="lease")
    e = refused(StaleContext, lambda: bob.claim(t["id"]))
    assert e.message == "task T-1 was just claimed by carol" and e.details["holder"] == "carol" and e.next == (READY,)
    [note] = events_of(st, "@task/T-1", "task.claim-refused")
    assert note["agent"] == "bob" and note["holder"] == "carol" and note["reason"] == e.message


def test_a_claim_whose_task_moved_between_read_and_write_looks_again(st: comity.Store) -> None:
    tri = board(st, "triage")
    t, u = tri.add("x"), tri.add("y")
    bob = _Interfering(st.session("bob"), lambda tid: tri.assign(tid, "bob"), hook="lease")
    c = bob.claim(t["id"])  # the first write is refused (the record moved), the second is made
    assert c.token == 1 and c.task["assignee"] == "bob" and c.task["attempts"] == 1
    bob = _Interfering(st.session("bob"), lambda tid: tri.assign(tid, "carol"), hook="lease")
    e = refused(StaleContext, lambda: bob.claim(u["id"]))
    assert e.message == "task T-2 is assigned to carol; only the assignee may claim it"
    assert st.session().leases("@task/T-2")[0] == []  # the refused first attempt took no lease
    v = tri.add("z")
    bob = _Interfering(st.session("bob"), lambda tid: tri.assign(tid, None), hook="lease", times=10**6)
    e = refused(StaleContext, lambda: bob.claim(v["id"]))
    assert e.message == "task T-3 kept changing under contention; retry" and e.key == "@task/T-3"
    assert bob.times == 10**6 - 64


def test_an_update_on_a_record_that_moved_is_recomputed_on_the_fresh_one(st: comity.Store) -> None:
    tri = board(st, "triage")
    t = tri.add("x")
    c = board(st, "alice").claim(t["id"])
    alice = _Interfering(st.session("alice"), lambda tid: tri.assign(tid, "alice"), hook="read")
    cp = alice.checkpoint(t["id"], c.token, "n")
    assert cp["assignee"] == "alice" and cp["checkpoints"][-1]["note"] == "n" and cp["state"] == "claimed"
    assert ops_of(st, "@task/T-1")[-2:] == ["task.assign", "task.checkpoint"]
    alice = _Interfering(st.session("alice"), lambda tid: tri.assign(tid, None), hook="read", times=10**6)
    e = refused(StaleContext, lambda: alice.checkpoint(t["id"], c.token, "m"))
    assert e.message == "task T-1 kept changing under contention; retry" and e.key == "@task/T-1"
    assert alice.times == 10**6 - 64


def test_claim_next_moves_on_from_lost_races_without_logging_them(st: comity.Store) -> None:
    tri = board(st, "triage")
    for i in range(3):
        tri.add(f"t{i}")
    carol = board(st, "carol")
    lost: list[str] = []

    def steal_first_two(tid: str) -> None:
        if len(lost) < 2:
            lost.append(tid)
            carol.claim(tid)

    bob = _Interfering(st.session("bob"), steal_first_two, hook="lease", times=10**6)
    c = bob.claim_next()
    assert c.task["claimed_by"] == "bob" and c.task["id"] not in lost and len(lost) == 2
    assert all(events_of(st, "@task/" + i, "task.claim-refused") == [] for i in ("T-1", "T-2", "T-3"))
    e = refused(NotFound, lambda: board(st, "dave").claim_next())
    assert e.message == "nothing is ready to claim"


def test_claim_next_gives_up_after_losing_every_race(st: comity.Store) -> None:
    tri = board(st, "triage")
    for i in range(70):
        tri.add(f"t{i}")
    carol = board(st, "carol")
    taken: list[str] = []

    def take(tid: str) -> None:
        taken.append(carol.claim(tid).task["id"])

    bob = _Interfering(st.session("bob"), take, hook="lease", times=10**6)
    e = refused(NotFound, lambda: bob.claim_next())
    assert e.message == "lost every race for a ready task; retry" and e.next == ()
    assert len(taken) == 64


def test_done_judges_again_when_a_change_it_relied_on_moved(st: comity.Store) -> None:
    from comity.work.changes import Changes

    Changes(st.session("lead")).set_policy("default", attestations=0, reexecute=True)
    t = board(st, "triage").add("x")
    c = board(st, "alice").claim(t["id"])
    c1 = Changes(st.session("alice")).submit(t["id"], diff=_diff(1), checks=["true"])
    alice = _Interfering(st.session("alice"), lambda tid: Changes(st.session("lead")).refute(c1["id"], "late news"), hook="fenced")
    e = refused(StaleContext, lambda: alice.done(t["id"], c.token))
    assert e.message == "task T-1: your change C-1 was refuted: late news; fix it and submit a new change"
    assert alice.show(t["id"])["state"] == "claimed"


def test_a_claim_without_recording_its_refusal_is_refused_alike(st: comity.Store) -> None:
    t = board(st, "triage").add("x")
    c = board(st, "carol").claim(t["id"], ttl=600)
    bob = board(st, "bob")
    e = refused(StaleContext, lambda: bob.claim(t["id"], record_refusal=False))
    assert e.message == f"task T-1 is claimed by carol (token {c.token}, 600s left)"
    assert e.key == "@task/T-1" and e.details["holder"] == "carol" and e.next == (READY,) and e.news == []
    assert events_of(st, "@task/T-1", "task.claim-refused") == []
    logged = refused(StaleContext, lambda: bob.claim(t["id"]))
    assert logged.to_json() == e.to_json()
    assert len(events_of(st, "@task/T-1", "task.claim-refused")) == 1


def test_a_replayed_claim_hands_off_the_checkpoints_it_was_made_with(st: comity.Store) -> None:
    a, b = board(st, "alice"), board(st, "bob")
    t = a.add("x")
    ca = a.claim(t["id"])
    a.checkpoint(t["id"], ca.token, "half")
    a.release(t["id"], ca.token)
    req = Request("hand", "d")
    first = b.claim(t["id"], request=req)
    again = b.claim(t["id"], request=req)
    assert [x["note"] for x in first.handoff] == ["half"] and again.handoff == first.handoff
    assert again.task["attempts"] == 2 and again.task["claimed_by"] == "bob" and again.task["checkpoints"] == first.handoff


def test_why_of_a_change_built_on_tainted_work_says_so(st: comity.Store) -> None:
    from comity.work.changes import Changes

    a = board(st, "alice")
    t = a.add("x")
    a.claim(t["id"])
    ch = Changes(st.session("alice"))
    c1 = ch.submit(t["id"], commit="a" * 40, checks=["true"])
    c2 = ch.submit(t["id"], diff=_diff(2), checks=["true"], on=[c1["id"]])
    c3 = ch.submit(t["id"], diff=_diff(3), checks=["true"], on=[c2["id"]])
    w = why(st.session(), c3["id"])
    assert w["explanations"] == [] and [x["id"] for x in w["built_on"]] == ["C-2", "C-1"]
    Changes(st.session("bob")).refute(c1["id"], "no")
    w = why(st.session(), c3["id"])
    assert w["state"] == "tainted"
    assert w["explanations"] == ["C-3 is built on C-2 by alice, which is tainted", "C-3 is built on C-1 by alice, which is refuted"]
    w = why(st.session(), t["id"])
    assert w["changes"][0] == {"id": "C-1", "state": "refuted", "author": "alice", "commit": "a" * 40, "built_on": [],
                               "tainted_by": []}
    assert w["explanations"] == ["C-1 by alice was refuted by bob: no", "C-2 by alice is built on refuted work (C-1)",
                                 "C-3 by alice is built on refuted work (C-1)"]


def test_a_write_made_cut_off_is_provisional_under_its_task_s_token(replicas: Any) -> None:
    up, make = replicas
    sandbox = make("sandbox")
    alice = Board(sandbox.session("alice"))
    t = alice.add("x")
    c = alice.claim(t["id"])
    sandbox.wire.cut = True
    w = alice.write("files/a.py", "offline", task=t["id"], token=c.token)
    assert w.provisional == [["@task/T-1", c.token]] and w.news_truncated is False and w.news == []
    sandbox.wire.cut = False
    assert alice.write("files/b.py", "online", task=t["id"], token=c.token).provisional is None


def test_why_counts_the_last_event_a_read_saw_as_seen(st: comity.Store) -> None:
    tri, alice, bob = board(st, "triage"), board(st, "alice"), board(st, "bob")
    t = tri.add("x")
    c = alice.claim(t["id"], ttl=600)
    alice.renew(t["id"], c.token)  # the renewal is the last event when bob reads
    ctx = bob.show(t["id"])["context"]
    renewed = ops_of(st, "@lease/@task/T-1")
    assert renewed[-1] == "renew"
    alice.release(t["id"], c.token)
    with pytest.raises(StaleContext):
        bob.claim(t["id"], context=ctx)
    w = why(st.session(), t["id"])
    by_op = {h["op"]: h for h in w["history"]}
    note = by_op["task.claim-refused"]
    assert note["had_seen_up_to"] == by_op["renew"]["pos"]
    assert note["did_not_see"] == [by_op["task.release"]["pos"], by_op["release"]["pos"]]


def test_done_without_a_result_records_an_empty_one(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    assert a.done(t["id"], a.claim(t["id"]).token)["result"] == ""
    assert a.show(t["id"])["result"] == ""


def test_a_retried_assign_is_answered_from_its_record_even_once_the_task_is_closed(st: comity.Store) -> None:
    tri, a = board(st, "triage"), board(st, "alice")
    t = tri.add("x")
    req = Request("as-2", "d")
    tri.assign(t["id"], "alice", request=req)
    a.done(t["id"], a.claim(t["id"]).token)
    again = tri.assign(t["id"], "alice", request=req)
    assert again["replayed"] is True and again["assignee"] == "alice" and again["status"] == "open"


def test_a_retried_fail_is_answered_from_its_record(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    req = Request("fl", "d")
    first = a.fail(t["id"], c.token, reason="no", request=req)
    head = st.session().head()
    again = a.fail(t["id"], c.token, reason="no", request=req)
    assert again["replayed"] is True and again["state"] == "failed" and again["context"] == first["context"]
    assert st.session().head() == head


def test_done_on_a_record_that_keeps_moving_gives_up_saying_so(st: comity.Store) -> None:
    tri = board(st, "triage")
    t = tri.add("x")
    c = board(st, "alice").claim(t["id"])
    alice = _Interfering(st.session("alice"), lambda tid: tri.assign(tid, None), hook="read", times=65)
    e = refused(StaleContext, lambda: alice.done(t["id"], c.token))
    assert e.message == "task T-1 kept changing under contention; retry" and e.key == "@task/T-1"
    assert alice.show(t["id"])["state"] == "claimed"


def _claimed_with_changes_added_at_each_done(st: comity.Store, times: int = 1) -> tuple[dict[str, Any], Any, _Interfering]:
    """T-1 claimed by alice under a policy that judges changes, one change submitted, and alice's
    board adding another change each time ``done`` reaches its fenced write (``times`` times)."""
    from comity.work.changes import Changes

    Changes(st.session("lead")).set_policy("default", attestations=0, reexecute=True)
    t = board(st, "triage").add("x")
    c = board(st, "alice").claim(t["id"])
    ch = Changes(st.session("alice"))
    ch.submit(t["id"], diff=_diff(1), checks=["true"])
    n = iter(range(2, 1000))
    alice = _Interfering(st.session("alice"), lambda tid: ch.submit(tid, diff=_diff(next(n)), checks=["true"]), hook="fenced",
                         times=times)  # fmt: skip
    return t, c, alice


def test_done_judges_again_when_a_change_was_added_meanwhile(st: comity.Store) -> None:
    t, c, alice = _claimed_with_changes_added_at_each_done(st)
    d = alice.done(t["id"], c.token)
    assert d["state"] == "submitted" and d["changes"] == ["C-1", "C-2"]
    assert len(events_of(st, "@task/T-1", "task.submitted")) == 1


def test_done_gives_up_when_its_changes_keep_changing(st: comity.Store) -> None:
    t, c, alice = _claimed_with_changes_added_at_each_done(st, times=10**6)
    e = refused(StaleContext, lambda: alice.done(t["id"], c.token))
    assert e.message == "task T-1: its changes kept changing; retry" and e.key == "@task/T-1"
    assert alice.times == 10**6 - 64 and alice.show(t["id"])["state"] == "claimed"


def test_why_reads_at_most_a_thousand_events_of_a_key_by_default(st: comity.Store) -> None:
    s = st.session("alice")
    ctx = None
    for i in range(1001):
        ctx = s.put("notes/busy", i, context=ctx).context
    w = why(st.session(), "notes/busy")
    assert len(w["history"]) == 1000 and w["history"][0]["pos"] == 1


def test_a_claim_on_an_old_read_is_not_refused_for_changes_to_other_tasks(st: comity.Store) -> None:
    tri, bob = board(st, "triage"), board(st, "bob")
    t, u = tri.add("x"), tri.add("y")
    ctx = bob.show(t["id"])["context"]
    board(st, "carol").claim(u["id"])
    tri.assign(u["id"], "carol")
    assert bob.claim(t["id"], context=ctx).task["claimed_by"] == "bob"


def test_every_refusal_of_a_claim_on_a_read_records_the_read_position(st: comity.Store) -> None:
    tri, a, bob = board(st, "triage"), board(st, "alice"), board(st, "bob")
    done_t = tri.add("d")
    a.done(done_t["id"], a.claim(done_t["id"]).token)
    assigned = tri.add("a", assignee="carol")
    waiting = tri.add("w", deps=[tri.add("base")["id"]])
    held = tri.add("h")
    a.claim(held["id"])
    for t in (done_t, assigned, waiting, held):
        ctx = bob.show(t["id"])["context"]
        seen = st.session().head()
        with pytest.raises(StaleContext):
            bob.claim(t["id"], context=ctx)
        [note] = events_of(st, "@task/" + t["id"], "task.claim-refused")
        assert note["seen"] == seen, t["id"]


def test_a_request_applied_by_a_racing_retry_is_answered_from_its_record(st: comity.Store) -> None:
    tri = board(st, "triage")
    t, u = tri.add("x"), tri.add("y")
    req = Request("race-as", "d")
    racing = _Interfering(st.session("triage"), lambda tid: tri.assign(tid, "alice", request=req), hook="read")
    got = racing.assign(t["id"], "alice", request=req)
    assert got["replayed"] is True and got["assignee"] == "alice" and got["news"] == []
    assert ops_of(st, "@task/T-1").count("task.assign") == 1
    creq = Request("race-cl", "d")
    alice = board(st, "alice")
    racing_claim = _Interfering(st.session("alice"), lambda tid: alice.claim(tid, request=creq), hook="lease")
    c = racing_claim.claim(u["id"], request=creq)
    assert c.replayed is True and c.task["claimed_by"] == "alice" and c.token == 1
    assert [n["op"] for n in c.news if n["request_id"] == "race-cl"] == ["task.claim", "task.claimed"]  # the racer's, as news
    assert ops_of(st, "@task/T-2").count("task.claim") == 1


def test_a_board_judges_suspicion_with_its_own_detector(st: comity.Store, clock: VirtualClock) -> None:
    from comity.coord.liveness import PhiAccrual

    t = board(st, "triage").add("x")
    ca = board(st, "alice").claim(t["id"], ttl=3600)
    clock.advance(400)  # silent past the default ttl, but with too few actions for the default detector
    e = refused(StaleContext, lambda: board(st, "bob").claim(t["id"], steal=True))
    assert "who is not suspected" in e.message
    eager = Board(st.session("bob"), detector=PhiAccrual(threshold=0.0, min_samples=0))
    cb = eager.claim(t["id"], steal=True)
    assert cb.token == ca.token + 1 and cb.task["claimed_by"] == "bob"


def test_the_listing_carries_each_task_s_context(st: comity.Store) -> None:
    a = board(st, "alice")
    a.add("x")
    a.add("y")
    assert [t["context"] for t in a.tasks()] == [a.show("T-1")["context"], a.show("T-2")["context"]]
    assert a.add("z")["body"] == ""  # no body given: an empty one


def test_ready_ignores_expired_leases_that_are_not_tasks(st: comity.Store, clock: VirtualClock) -> None:
    from comity.coord.leases import Leases

    Leases(st.session("alice")).acquire("build", ttl=1)
    tri = board(st, "triage")
    base = tri.add("base")
    top = tri.add("top", deps=[base["id"]])
    a = board(st, "alice")
    a.done(base["id"], a.claim(base["id"]).token)
    a.claim(top["id"], ttl=5)
    clock.advance(10)  # the build lease and the claim on T-2 (which waits on a done task) expired
    got = board(st, "bob").ready()
    assert [(t["id"], t["state"]) for t in got] == [("T-2", "orphaned")]


def test_an_add_retried_after_its_number_was_taken_gets_that_number(st: comity.Store) -> None:
    from comity.coord.sequences import next_number

    a = board(st, "alice")
    a.add("first")
    req = Request("add-crash", "dig")
    seq = req.derived("seq")
    # The first attempt took its number and stopped before writing the task (a crash, a timeout).
    assert next_number(st.session("alice"), "tasks", request_id=seq.id, digest=seq.digest) == 2
    t = a.add("second", request=req)
    assert t["id"] == "T-2" and "replayed" not in t
    assert a.add("third")["id"] == "T-3"
    assert a.add("second", request=req)["replayed"] is True


def test_claim_next_with_a_request_id_is_answered_from_its_record(st: comity.Store) -> None:
    a = board(st, "alice")
    for i in range(3):
        a.add(f"t{i}")
    req = Request("next-1", "d")
    first = a.claim_next(request=req)
    again = a.claim_next(request=req)
    assert again.replayed is True and (again.task["id"], again.token) == (first.task["id"], first.token)
    assert len(a.tasks(status="claimed")) == 1


def test_a_write_without_keep_both_is_refused_on_an_old_context(st: comity.Store) -> None:
    a = board(st, "alice")
    t = a.add("x")
    c = a.claim(t["id"])
    w = a.write("notes/a", 1, task=t["id"], token=c.token)
    assert w.pos == st.session().log("notes/a")[-1]["pos"]
    st.session("bob").put("notes/a", 2, context=w.context)
    with pytest.raises(StaleContext):
        a.write("notes/a", 3, task=t["id"], token=c.token, context=w.context)
    assert st.session().get("notes/a").values == [2]


def test_why_of_a_change_names_its_field_keeps_its_limit_and_lists_only_its_task_s_changes(st: comity.Store) -> None:
    from comity.work.changes import Changes

    a = board(st, "alice")
    t, u = a.add("x"), a.add("y")
    ch = Changes(st.session("alice"))
    c1 = ch.submit(t["id"], diff=_diff(1), checks=["true"])
    c2 = ch.submit(t["id"], diff=_diff(2), checks=["true"])
    ch.submit(u["id"], diff=_diff(3), checks=["true"])
    c4 = ch.submit(t["id"], diff=_diff(4), checks=["true"], on=[c1["id"], c2["id"]])
    bob = Changes(st.session("bob"))
    bob.refute(c1["id"], "one")
    bob.refute(c2["id"], "two")
    assert [c["id"] for c in why(st.session(), t["id"])["changes"]] == ["C-1", "C-2", "C-4"]
    assert "C-4 by alice is built on refuted work (C-1, C-2)" in why(st.session(), t["id"])["explanations"]
    assert [h["op"] for h in why(st.session(), c4["id"])["history"]] == ["change.submit", "change.taint", "change.taint"]
    assert [h["op"] for h in why(st.session(), c4["id"], limit=1)["history"]] == ["change.submit"]
    e = refused(Invalid, lambda: why(st.session(), "C-x"))
    assert e.field == "target"


def test_why_joins_every_lease_that_fenced_a_write(replicas: Any, clock: VirtualClock) -> None:
    from comity.store import Holds, Put

    up, make = replicas
    sandbox = make("sandbox")
    alice = sandbox.session("alice", name="alice-work")
    t1, t2 = Board(alice).add("a"), Board(alice).add("b")
    c1, c2 = Board(alice).claim(t1["id"], ttl=60), Board(alice).claim(t2["id"], ttl=60)
    sandbox.wire.cut = True
    alice.txn(guards=[Holds("@task/T-1", c1.token), Holds("@task/T-2", c2.token)], ops=[Put("files/both.py", "x")], system=True)
    clock.advance(120)
    bob = Board(up.session("bob"))
    k1, k2 = bob.claim(t1["id"]), bob.claim(t2["id"])
    sandbox.wire.cut = False
    sandbox.sync()
    [line] = why(up.session(), "files/both.py")["explanations"]
    assert (f"@task/T-1 token {c1.token} was superseded by token {k1.token} (bob); @task/T-2 token {c2.token} was"
            f" superseded by token {k2.token} (bob); it is kept in") in line, line


def test_why_judges_a_note_by_read_position_not_by_dots(st: comity.Store) -> None:
    """A note (a refused claim) takes no version of the key (its dot's counter is 0): a
    write on a read from before it did not see it, though the key's dots did not move."""
    t = board(st, "triage").add("x")
    c = board(st, "alice").claim(t["id"])

    def refused_claim(tid: str) -> None:
        with pytest.raises(StaleContext):
            board(st, "bob").claim(tid)

    alice = _Interfering(st.session("alice"), refused_claim, hook="fenced")
    alice.done(t["id"], c.token)  # its write rests on the read made before bob's refused claim
    w = why(st.session(), t["id"])
    by_op = {h["op"]: h for h in w["history"]}
    note, done = by_op["task.claim-refused"], by_op["task.done"]
    assert done["had_seen_up_to"] < note["pos"] < done["pos"] and done["did_not_see"] == [note["pos"]]
    assert f"alice's done (pos {done['pos']}) did not see bob's claim-refused (pos {note['pos']}): they were concurrent" in w[
        "explanations"]


def test_a_refused_steal_on_a_read_records_the_read_position(st: comity.Store) -> None:
    t = board(st, "triage").add("x")
    board(st, "alice").claim(t["id"], ttl=3600)
    bob = board(st, "bob")
    ctx = bob.show(t["id"])["context"]  # read after alice's claim: nothing moved since
    seen = st.session().head()
    e = refused(StaleContext, lambda: bob.claim(t["id"], context=ctx, steal=True))
    assert "who is not suspected" in e.message and e.news == []
    [note] = events_of(st, "@task/T-1", "task.claim-refused")
    assert note["seen"] == seen and note["holder"] == "alice"


def test_a_claim_on_a_read_that_loses_the_lease_race_records_the_read_position(st: comity.Store) -> None:
    t = board(st, "triage").add("x")
    ctx = board(st, "bob").show(t["id"])["context"]
    seen = st.session().head()
    bob = _Interfering(st.session("bob"), lambda tid: board(st, "carol").claim(tid), hook="lease")
    e = refused(StaleContext, lambda: bob.claim(t["id"], context=ctx))
    assert e.message == "task T-1 was just claimed by carol"
    [note] = events_of(st, "@task/T-1", "task.claim-refused")
    assert note["seen"] == seen and note["holder"] == "carol"


def test_why_does_not_judge_a_write_against_the_sync_layer_s_own_events(replicas: Any, clock: VirtualClock) -> None:
    up, make = replicas
    carol = up.session("carol")
    carol.put("files/app.py", "v0")
    sandbox = make("sandbox")
    alice = sandbox.session("alice", name="alice-work")
    t = Board(alice).add("fix")
    c = Board(alice).claim(t["id"], ttl=60)
    sandbox.wire.cut = True
    Board(alice).write("files/app.py", "alice's", task=t["id"], token=c.token, context=alice.get("files/app.py").context)
    clock.advance(120)
    Board(up.session("bob")).claim(t["id"])
    old = carol.get("files/app.py").context
    sandbox.wire.cut = False
    sandbox.sync()
    carol.put("files/app.py", "carol's", context=old, keep_both=True)
    w = why(up.session(), "files/app.py")
    ops = [h["op"] for h in w["history"]]
    assert ops[-2:] == ["sync.fence", "put"], ops
    fence, put = w["history"][-2:]
    assert put["did_not_see"] == [w["history"][1]["pos"]]  # alice's write (fenced), not the sync layer's fence note
    assert len(w["explanations"]) == 2 and "was fenced when it arrived" in w["explanations"][0]
    assert w["explanations"][1].startswith(f"carol's put (pos {put['pos']}) did not see alice's put")


def test_a_claim_and_a_completion_each_read_from_one_snapshot(st: comity.Store) -> None:
    """claim_next reads the ready list, the pick's record, marker and lease in one read
    transaction, then writes once; done reads the record and its gate in one, then writes once."""
    tri = board(st, "triage")
    for i in range(3):
        tri.add(f"t{i}")
    bob = board(st, "bob")
    begun = count_transactions(st)
    c = bob.claim_next()
    assert begun == [False, True]
    begun.clear()
    bob.done(c.task["id"], c.token)
    assert begun == [False, True]
    begun.clear()
    t = tri.add("t3")
    begun.clear()
    assert bob.claim(t["id"]).task["state"] == "claimed"
    assert begun == [False, True]
    u = tri.add("t4")
    ctx = bob.show(u["id"])["context"]
    begun.clear()  # a retry's record, what moved since the context, and the task: one read too
    assert bob.claim(u["id"], context=ctx, request=Request("r-claim", "d")).task["state"] == "claimed"
    assert begun == [False, True]
    begun.clear()
    assert bob.claim(u["id"], context=ctx, request=Request("r-claim", "d")).replayed  # the retry: one read
    assert begun == [False]


def test_a_ready_task_behind_many_assigned_to_others_is_found_and_claimed(st: comity.Store) -> None:
    """claim_next and the ready list page on past markers this agent may not claim (they
    looked at the first 16, or the first ``limit``, and said nothing was ready)."""
    tri = board(st, "triage")
    for i in range(40):
        tri.add(f"for bob {i}", assignee="bob")
    free = tri.add("for anyone")
    alice = board(st, "alice")
    assert [t["id"] for t in alice.ready(limit=5)] == [free["id"]]
    assert alice.claim_next().task["id"] == free["id"]
    assert [t["id"] for t in board(st, "bob").ready(limit=5)] == ["T-1", "T-2", "T-3", "T-4", "T-5"]
    e = refused(NotFound, lambda: alice.claim_next())
    assert e.message == "nothing is ready to claim"
