"""The checkers on hand-built histories: each anomaly is found, with the operations
that show it, and a clean history yields nothing."""

from __future__ import annotations

from typing import Any

from comity.chaos.checkers import (
    allocation,
    check,
    duplicate_work,
    durability,
    elle_cycle,
    fencing_violation,
    lease_overlap,
    lease_renewal,
    lost_update,
    orphaned_task,
    sequence,
    stale_action,
    token_order,
)
from comity.chaos.history import History
from comity.chaos.strategies import FinalState, FinalTask


class Builder:
    """Write histories as (process, f, value, outcome, result) steps, one time unit each
    (``at`` moves the clock to a time first)."""

    def __init__(self) -> None:
        self.h = History()
        self.t = 0.0

    def op(self, process: str, f: str, value: dict[str, Any], outcome: str = "ok", *, at: float | None = None, **result: Any) -> int:
        self.t = self.t + 1 if at is None else at
        i = self.h.invoke(process, f, value, self.t)
        self.t += 1
        return self.h.complete(i, outcome, result, self.t)

    def restart(self, at: float) -> int:
        self.t = at
        return self.h.note("store", "restart", {}, at)


def final(files: dict[str, Any] | None = None, tasks: dict[str, str] | None = None) -> FinalState:
    return FinalState(
        {tid: FinalTask(tid, tid.lower(), status, None, None, {}) for tid, status in (tasks or {}).items()},
        files or {},
    )


def test_lost_update_traces_the_overwrite_by_a_writer_who_had_not_seen_it() -> None:
    b = Builder()
    w1 = b.op("a#1", "create", {"key": "m/0267", "wid": "a.1", "basis": None})
    w2 = b.op("b#1", "create", {"key": "m/0267", "wid": "b.1", "basis": None})
    found = lost_update(b.h, final({"m/0267": {"wid": "b.1"}}))
    assert [a.kind for a in found] == ["overwritten"]
    assert found[0].ops == [w1, w2]
    # A writer who read the earlier value and wrote over it lost nothing.
    b2 = Builder()
    b2.op("a#1", "commit", {"key": "k", "wid": "a.1", "basis": None, "id": "T-1", "token": 1})
    b2.op("b#1", "commit", {"key": "k", "wid": "b.1", "basis": "a.1", "id": "T-1", "token": 2})
    assert lost_update(b2.h, final({"k": {"wid": "b.1"}})) == []


def test_lost_append_names_the_write_that_dropped_it() -> None:
    b = Builder()
    a = b.op("a#1", "append", {"key": "n", "item": "x", "read": []})
    c = b.op("b#1", "append", {"key": "n", "item": "y", "read": []})
    found = lost_update(b.h, final({"n": ["y"]}))
    assert len(found) == 1 and found[0].kind == "lost-append" and found[0].ops == [a, c]


def test_elle_finds_a_g_single_cycle_when_appends_miss_each_other() -> None:
    # Both read [], both append; the list keeps both (a pool of messages): T2 did not see x.
    b = Builder()
    t1 = b.op("a#1", "append", {"key": "n", "item": "x", "read": []})
    t2 = b.op("b#1", "append", {"key": "n", "item": "y", "read": []})
    found = elle_cycle(b.h, final({"n": ["x", "y"]}))
    assert [a.kind for a in found] == ["G-single"]
    assert sorted(found[0].ops) == sorted([t1, t2])


def test_elle_flags_reads_that_are_not_a_prefix_and_duplicates() -> None:
    b = Builder()
    b.op("a#1", "append", {"key": "n", "item": "x", "read": []})
    r = b.op("b#1", "read", {"key": "n"}, items=["z"])
    b.op("c#1", "append", {"key": "n", "item": "y", "read": ["x"]})
    kinds = sorted(a.kind for a in elle_cycle(b.h, final({"n": ["x", "y", "y"]})))
    assert kinds == ["duplicate-element", "incompatible-order"]
    assert any(a.ops == [r] for a in elle_cycle(b.h, final({"n": ["x", "y", "y"]})))


def test_elle_on_a_serial_history_finds_nothing() -> None:
    b = Builder()
    b.op("a#1", "append", {"key": "n", "item": "x", "read": []})
    b.op("r#1", "read", {"key": "n"}, items=["x"])
    b.op("b#1", "append", {"key": "n", "item": "y", "read": ["x"]})
    b.op("c#1", "append", {"key": "n", "item": "z", "read": ["x", "y"]}, "fail", error="stale_context")
    assert check(b.h, final({"n": ["x", "y"]})) == []


def test_duplicate_work_and_two_completions() -> None:
    b = Builder()
    c1 = b.op("a#1", "complete", {"id": "T-1", "title": "t", "token": 1})
    c2 = b.op("b#1", "complete", {"id": "T-1", "title": "t", "token": 2})
    b.op("a#1", "complete", {"id": "T-2", "title": "u", "token": 1}, replayed=True)
    assert [a.ops for a in duplicate_work(b.h, final())] == [[c1, c2]]
    assert [a.kind for a in fencing_violation(b.h, final())] == ["completed-twice"]


def test_fencing_violation_is_an_action_under_a_superseded_claim() -> None:
    b = Builder()
    g = b.op("a#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=1)
    s = b.op("b#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=2)
    z = b.op("a#1", "commit", {"id": "T-1", "title": "t", "token": 1, "key": "w", "wid": "a.1", "basis": None})
    b.op("a#1", "complete", {"id": "T-1", "title": "t", "token": 1}, "fail", error="fenced")
    found = fencing_violation(b.h, final())
    assert [a.ops for a in found] == [[g, s, z]]


def test_stale_action_is_a_claim_acting_on_a_read_that_missed_a_change() -> None:
    b = Builder()
    r = b.op("b#1", "board", {}, n=1)
    done = b.op("a#1", "complete", {"id": "T-1", "title": "bug", "token": 1})
    claim = b.op("b#1", "claim", {"id": "T-1", "title": "bug", "basis": r}, token=2)
    found = stale_action(b.h, final())
    assert [a.ops for a in found] == [[r, done, claim]]
    # Assigned to the claimant itself: not stale.
    b2 = Builder()
    r2 = b2.op("b#1", "board", {}, n=1)
    b2.op("t#1", "assign", {"id": "T-1", "title": "bug", "to": "b", "basis": -1})
    b2.op("b#1", "claim", {"id": "T-1", "title": "bug", "basis": r2}, token=1)
    assert stale_action(b2.h, final()) == []


def test_orphaned_task_is_still_claimed_at_the_end() -> None:
    b = Builder()
    c = b.op("a#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=1)
    found = orphaned_task(b.h, final(tasks={"T-1": "claimed", "T-2": "done", "T-3": "open"}))
    assert [(a.kind, a.ops) for a in found] == [("never-finished", [c])]


# ------------------------------------------------------------------ primitives


def test_sequence_a_number_for_two_units_and_one_that_goes_back() -> None:
    b = Builder()
    a = b.op("a#1", "next", {"seq": "m", "unit": "f1"}, n=267)
    again = b.op("a#2", "next", {"seq": "m", "unit": "f1"}, n=267)  # the same unit asking again: its number
    c = b.op("b#1", "next", {"seq": "m", "unit": "f2"}, n=267)
    found = sequence(b.h, final())
    assert [(x.kind, x.ops) for x in found] == [("issued-twice", [a, c])]
    assert again not in found[0].ops
    b2 = Builder()
    x = b2.op("a#1", "next", {"seq": "m", "unit": "f1"}, n=5)
    y = b2.op("b#1", "next", {"seq": "m", "unit": "f2"}, n=4)
    assert [(f.kind, f.ops) for f in sequence(b2.h, final())] == [("not-increasing", [x, y])]
    b3 = Builder()
    b3.op("r#1", "add", {"title": "bug-1"}, id="T-1")
    b3.op("r#1", "add", {"title": "bug-2"}, id="T-1")
    assert [f.kind for f in sequence(b3.h, final())] == ["id-issued-twice"]


def test_lease_overlap_judges_what_a_correct_lease_must_hold() -> None:
    b = Builder()
    g1 = b.op("a#1", "claim", {"id": "T-1", "title": "t", "ttl": 300.0, "basis": -1}, at=0, token=1, expires=300.0)
    b.op("a#1", "checkpoint", {"id": "T-1", "title": "t", "token": 1, "ttl": 300.0, "note": "step 1"}, at=200, expires=500.0)
    # The reply says 300 would be enough, but a renewal invoked at 200 holds the lease until 500.
    g2 = b.op("b#1", "claim", {"id": "T-1", "title": "t", "ttl": 300.0, "basis": -1}, at=400, token=2, expires=700.0)
    assert [(x.kind, x.ops) for x in lease_overlap(b.h, final())] == [("two-holders", [g1, g2])]
    # After the certain end, a takeover is what leases are for; a steal is explicit.
    b2 = Builder()
    b2.op("a#1", "claim", {"id": "T-1", "title": "t", "ttl": 300.0, "basis": -1}, at=0, token=1)
    b2.op("b#1", "claim", {"id": "T-1", "title": "t", "ttl": 300.0, "basis": -1}, at=301, token=2)
    b2.op("c#1", "claim", {"id": "T-1", "title": "t", "ttl": 300.0, "basis": -1, "steal": True}, at=350, token=3)
    assert lease_overlap(b2.h, final()) == []
    # A claim with no lease is held until it is released.
    b3 = Builder()
    b3.op("a#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, at=0, token=1)
    b3.op("b#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, at=5000, token=2)
    assert len(lease_overlap(b3.h, final())) == 1
    b3.op("a#1", "complete", {"id": "T-1", "title": "t", "token": 1}, at=10)
    assert lease_overlap(b3.h, final()) == []  # released (at 10) before the second grant (at 5000)


def test_lease_renewal_short_reply_and_a_lease_that_ended_early() -> None:
    b = Builder()
    b.op("a#1", "claim", {"id": "T-1", "title": "t", "ttl": 300.0, "basis": -1}, at=0, token=1, expires=300.0)
    r = b.op("a#1", "checkpoint", {"id": "T-1", "title": "t", "token": 1, "ttl": 300.0, "note": "s"}, at=100, expires=300.0)
    late = b.op("a#1", "checkpoint", {"id": "T-1", "title": "t", "token": 1, "ttl": 300.0, "note": "s"}, "fail", at=350, error="lease_expired")
    kinds = [(x.kind, x.ops[-1]) for x in lease_renewal(b.h, final())]
    assert kinds == [("not-extended", r), ("ended-early", late)]


def test_token_order_reuse_and_regress() -> None:
    b = Builder()
    a = b.op("a#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=1)
    c = b.op("b#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=1)
    assert [(x.kind, x.ops) for x in token_order(b.h, final())] == [("token-reused", [a, c])]
    b2 = Builder()
    x = b2.op("a#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=3)
    y = b2.op("b#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=2)
    assert [(f.kind, f.ops) for f in token_order(b2.h, final())] == [("not-increasing", [x, y])]


def test_allocation_one_feature_two_numbers() -> None:
    b = Builder()
    c1 = b.op("a#1", "create", {"key": "migrations/0267", "wid": "a.1", "basis": None})
    b.op("a#2", "create", {"key": "migrations/0268", "wid": "a.2", "basis": None})
    files = {"migrations/0266": {"unit": "old", "by": "history"}, "migrations/0267": {"unit": "f1"}, "migrations/0268": {"unit": "f1"},
             "migrations/0269": {"unit": "f2"}}  # fmt: skip
    found = allocation(b.h, final(files))
    assert [x.kind for x in found] == ["two-numbers"] and c1 in found[0].ops and "f1" in found[0].explanation


def test_durability_after_a_restart() -> None:
    b = Builder()
    n = b.op("a#1", "next", {"seq": "m", "unit": "f1"}, n=7)
    w = b.op("a#1", "create", {"key": "k", "wid": "a.1", "basis": None})
    t = b.op("a#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=4)
    r = b.restart(at=100)
    n2 = b.op("b#1", "next", {"seq": "m", "unit": "f2"}, at=110, n=7)
    rd = b.op("b#1", "read", {"key": "k"}, wid=None)
    t2 = b.op("b#1", "claim", {"id": "T-1", "title": "t", "basis": -1}, token=4)
    found = {x.kind: x.ops for x in durability(b.h, final())}
    assert found == {"number-reissued": [n, r, n2], "token-reissued": [t, r, t2], "write-lost": [w, r, rd]}
    assert durability(Builder().h, final()) == []
