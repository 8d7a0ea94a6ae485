"""Request ids on every mutating verb: a retry after a lost answer is answered with the
recorded outcome instead of acting twice, board verbs included; outcomes are kept for a
window (``request_retention``) and pruned after it.  On both backends, through the agent
facade (the faces' conformance suite runs the same through every face)."""

from __future__ import annotations

from typing import Any

import pytest

from comity.errors import Invalid
from comity.runtime import VirtualClock
from comity.work import Agent


@pytest.fixture
def two(make_store: Any) -> tuple[Agent, Agent]:
    store = make_store()
    return Agent(store.session("alice")), Agent(store.session("bob"))


def test_a_retried_claim_returns_the_recorded_claim_not_a_refusal(two: tuple[Agent, Agent]) -> None:
    alice, bob = two
    tid = alice.task_add("fix it", request_id="add-1")["id"]
    assert alice.task_add("fix it", request_id="add-1")["id"] == tid  # the same task, not a second one
    assert [t["id"] for t in alice.task_list()["tasks"]] == [tid]
    first = alice.task_claim(tid, request_id="claim-1")
    again = alice.task_claim(tid, request_id="claim-1")
    assert again["replayed"] and again["token"] == first["token"] and again["task"]["lease"]["holder"] == "alice"
    with pytest.raises(Invalid) as e:  # the same id for another request
        alice.task_claim(tid, ttl=30, request_id="claim-1")
    assert e.value.field == "request_id"
    token = first["token"]
    cp = alice.task_checkpoint(tid, token, "half done", request_id="cp-1")
    assert alice.task_checkpoint(tid, token, "half done", request_id="cp-1")["replayed"]
    assert len(alice.task_show(tid)["checkpoints"]) == len(cp["checkpoints"]) == 1  # not twice
    done = alice.task_complete(tid, token, request_id="done-1")
    assert done["state"] == "done"
    again_done = alice.task_complete(tid, token, request_id="done-1")
    assert again_done["replayed"] and again_done["state"] == "done"
    assert [e["op"] for e in alice.log("@task/" + tid)["events"]].count("task.done") == 1


def test_claim_next_seq_next_and_reservations_retry_to_the_recorded_outcome(two: tuple[Agent, Agent]) -> None:
    alice, bob = two
    for i in range(3):
        alice.task_add(f"t{i}")
    c = bob.task_claim_next(request_id="next-1")
    assert bob.task_claim_next(request_id="next-1")["task"]["id"] == c["task"]["id"]
    assert len([t for t in bob.task_list(state="claimed")["tasks"]]) == 1
    n = alice.seq_next("migrations", request_id="seq-1")["value"]
    assert alice.seq_next("migrations", request_id="seq-1")["value"] == n
    assert alice.seq_next("migrations")["value"] == n + 1  # never reissued
    r = alice.reserve_paths(["src/**"], request_id="res-1")["reservations"]
    assert alice.reserve_paths(["src/**"], request_id="res-1")["reservations"] == r
    assert alice.release_paths(["src/**"], request_id="rel-1")["released"] == ["src/**"]
    assert alice.release_paths(["src/**"], request_id="rel-1")["released"] == ["src/**"]  # not "holds none"


def test_a_retried_write_without_a_context_is_the_same_request(two: tuple[Agent, Agent]) -> None:
    # The session fills in the context it remembers; the write moves it.  The retry is
    # still the same request (its arguments as given), answered with the recorded outcome.
    alice, _ = two
    alice.create("notes/a", 1)
    alice.read("notes/a")
    w = alice.write("notes/a", 2, request_id="w-1")
    again = alice.write("notes/a", 2, request_id="w-1")
    assert again["replayed"] and again["pos"] == w["pos"]


def test_outcomes_are_kept_for_the_window_then_pruned(make_store: Any, clock: VirtualClock) -> None:
    store = make_store(request_retention=600)
    alice = Agent(store.session("alice"))
    first = alice.create("notes/once", 1, request_id="once")
    clock.advance(300)
    assert alice.create("notes/once", 1, request_id="once")["replayed"]  # within the window
    clock.advance(400)
    alice.create("notes/later", 1, request_id="later")  # a write that records prunes (once a minute)
    assert store.session("alice").recorded("once") is None
    assert store.session("alice").recorded("later") is not None
    # past the window the id is new again: the key exists, so the create is refused, not replayed
    from comity.errors import StaleContext

    with pytest.raises(StaleContext):
        alice.create("notes/once", 1, request_id="once")
    assert first["pos"] > 0


def test_bench_store_measures_recording_and_pruning_outcomes(tmp_path: Any) -> None:
    from comity.bench.store import bench_store

    r = bench_store(ops=100, log_events=0, directory=str(tmp_path), followed=300)
    assert r["followed_keys"] == 300 and r["followed_growth_ratio"] > 0 and r["followed_many_put_p50_ms"] > 0
    assert r["followed_claim_growth_ratio"] > 0 and r["followed_claim_many_p50_ms"] > 0
    assert r["request_put_ratio"] > 0 and r["request_put_p50_ms"] > 0 and r["plain_put_p50_ms"] > 0
    assert r["put_behind_ratio"] > 0 and r["put_behind_p50_ms"] > 0
    assert r["outcomes_pruned"] == 200  # the warm-up's and the measured puts' outcomes, every one
    assert r["prune_write_ms"] > 0 and r["prune_write_over_put_p50"] > 0
