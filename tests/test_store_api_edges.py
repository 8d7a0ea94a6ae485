"""The store's Python API at its edges, written for the mutants of ``comity.store._api`` and
the SQLite engine that the conformance suite let through (docs/mutation.md): the reads
the layers above use (scan, leases, expired leases, acted), the shapes of answers, agent
names, and the refusals of a store's options.  Real stores on the virtual clock; nothing
sleeps, nothing is mocked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import comity
from comity.errors import Invalid
from comity.runtime import SeededRng, VirtualClock
from comity.store import Acquire, Release, Store
from comity.store._api import News, check_agent
from conftest import count_transactions


def _acquire(s: comity.Session, resource: str, ttl: float) -> int:
    return int(s.txn(ops=[Acquire(resource, ttl)]).results[0]["token"])


# ----------------------------------------------------------------------- reads


def test_scan_reads_the_live_keys_under_a_prefix_in_order_with_contexts_that_write(store: Store) -> None:
    s = store.session("alice")
    s.put("a/2", 2)
    s.put("a/1", 1)
    gone = s.put("a/3", 3)
    s.delete("a/3", context=gone.context)
    s.put("a0", 0)  # after every "a/…" key, not under the prefix
    s.put("b/1", 1)
    got = s.scan("a/")
    assert [(v.key, v.values) for v in got] == [("a/1", [1]), ("a/2", [2])]
    assert [v.key for v in s.scan("a/", limit=1)] == ["a/1"]
    assert [v.key for v in s.scan("")] == ["a/1", "a/2", "a0", "b/1"]
    w = s.put("a/1", 10, context=got[0].context)  # the context covers what was there
    assert w.values == [10]


def test_expired_leases_are_the_held_ones_past_their_expiry_oldest_first(store: Store, clock: VirtualClock) -> None:
    s = store.session("alice")
    _acquire(s, "jobs/late", 20)
    _acquire(s, "jobs/early", 10)
    _acquire(s, "jobs/running", 1000)
    t = _acquire(s, "jobs/released", 5)
    s.txn(ops=[Release("jobs/released", t)])
    _acquire(s, "other/x", 5)
    assert s.expired_leases() == ([], clock.now())
    clock.advance(10)  # "jobs/early" expires at exactly now: expired
    rows, now = s.expired_leases("jobs/")
    assert now == clock.now()
    assert [(r.resource, r.holder, r.token) for r in rows] == [("jobs/early", "alice", 1)]
    clock.advance(15)
    rows, _ = s.expired_leases("jobs/")
    assert [r.resource for r in rows] == ["jobs/early", "jobs/late"]
    assert [r.resource for r in s.expired_leases("jobs/", limit=1)[0]] == ["jobs/early"]
    assert [r.resource for r in s.expired_leases()[0]] == ["other/x", "jobs/early", "jobs/late"]


def test_leases_lists_every_lease_under_a_prefix_released_ones_too(store: Store, clock: VirtualClock) -> None:
    s = store.session("alice")
    _acquire(s, "q/b", 10)
    t = _acquire(s, "q/a", 10)
    s.txn(ops=[Release("q/a", t)])
    _acquire(s, "z", 10)
    rows, now = s.leases("q/")
    assert now == clock.now()
    assert [(r.resource, r.holder, r.token, r.expires) for r in rows] == [
        ("q/a", None, 1, clock.now()),
        ("q/b", "alice", 1, clock.now() + 10),
    ]
    assert [r.resource for r in s.leases("q/", limit=1)[0]] == ["q/a"]
    assert [r.resource for r in s.leases()[0]] == ["q/a", "q/b", "z"]


def test_acted_says_whether_an_agent_has_an_event_here(store: Store) -> None:
    s = store.session("alice")
    assert not s.acted("alice")
    s.put("k", 1)
    assert s.acted("alice") and not s.acted("bob")
    assert s.acted("ａｌｉｃｅ")  # the name as normalized
    with pytest.raises(Invalid) as e:
        s.acted("not a name")
    assert e.value.field == "agent"


def test_head_and_now_are_the_logs_position_and_the_authoritys_clock(store: Store, clock: VirtualClock) -> None:
    s = store.session("alice")
    assert s.head() == 0 and s.now() == clock.now()
    w = s.put("k", 1)
    clock.advance(7)
    assert s.head() == w.pos == 1 and s.now() == clock.now()
    info = store.info()
    assert info["head"] == 1 and info["store_id"] == store.store_id and info["replica_id"] == store.replica_id
    assert info["upstream"] is None and info["max_value_bytes"] == store.max_value_bytes
    assert info["location"] == store.location and info["schema_version"] == store.meta.schema_version


# ----------------------------------------------------------- shapes of answers


def test_a_single_value_is_read_as_value_and_siblings_are_not(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    assert alice.put("k", 1).values == [1]
    assert alice.get("k").value == 1
    with pytest.raises(ValueError) as e:
        alice.get("absent").value
    assert str(e.value) == "'absent' has 0 values; read .values"
    bob.put("k", 2, keep_both=True)
    with pytest.raises(ValueError) as e:
        alice.get("k").value
    assert str(e.value) == "'k' has 2 values; read .values"


def test_answers_as_json_carry_their_flags_only_when_set(store: Store) -> None:
    alice, bob, carol = store.session("alice"), store.session("bob"), store.session("carol")
    bob.get("k")
    w = alice.put("k", 1, request_id="q1")
    assert w.to_json() == {"key": "k", "op": "put", "values": [1], "context": w.context, "pos": w.pos, "news": []}
    again = alice.put("k", 1, request_id="q1")
    assert again.replayed and again.to_json()["replayed"] is True and "news_truncated" not in again.to_json()
    t = alice.txn(ops=[comity.store.Put("k2", 1)])
    assert t.to_json() == {"pos": t.pos, "results": t.results, "news": []}
    t2 = alice.txn(ops=[comity.store.Put("k3", 1)], request_id="q2")
    assert alice.txn(ops=[comity.store.Put("k3", 1)], request_id="q2").to_json()["replayed"] is True
    assert "replayed" not in t2.to_json()
    store.news_limit = 1
    alice.put("k", 2, context=alice.get("k").context)  # bob has not seen 1 nor 2 of "k"
    v = bob.get("k")
    assert v.news_truncated and v.to_json()["news_truncated"] is True and len(v.news) == 1
    n = carol.news()  # five events since carol began, one shown
    assert isinstance(n, News) and n.truncated and len(n.events) == 1
    assert n.to_json() == {"events": n.events, "truncated": True, "position": n.position}
    assert n.position == n.events[-1]["pos"] == 1
    store.news_limit = 50
    n = carol.news()
    assert not n.truncated and n.position == store.session().head() and n.to_json()["truncated"] is False


# ------------------------------------------------------------------ agent names


def test_agent_names_are_normalized_and_refused_when_they_could_look_alike() -> None:
    assert check_agent("ａｌｉｃｅ") == "alice"  # fullwidth: NFKC
    assert check_agent("a_b.c-d@e+f:g") == "a_b.c-d@e+f:g"
    with pytest.raises(Invalid) as e:
        check_agent("аlice")  # Cyrillic а
    assert e.value.field == "agent"
    assert e.value.message == (
        "agent: 'аlice' has characters agent names may not use (U+0430 CYRILLIC SMALL LETTER A); names are ASCII"
        " letters, digits and _ . - @ + : (a letter from another script can look like a Latin one)"
    )
    with pytest.raises(Invalid) as e:
        check_agent("аеор")  # four Cyrillic letters: the first three are named
    assert "(U+0430 CYRILLIC SMALL LETTER A, U+0435 CYRILLIC SMALL LETTER IE, U+043E CYRILLIC SMALL LETTER O)" in e.value.message
    with pytest.raises(Invalid) as e:
        check_agent("a\ue000")  # a private-use character: Unicode gives it no name
    assert "(U+E000 unnamed)" in e.value.message
    long = "а" + "b" * 49
    with pytest.raises(Invalid) as e:
        check_agent(long)
    assert e.value.message.startswith(f"agent: {long[:40]!r} has characters")
    with pytest.raises(Invalid) as e:
        check_agent("")
    assert e.value.message == "agent: writes need an agent name"
    with pytest.raises(Invalid) as e:
        check_agent(None, "session")
    assert (e.value.field, e.value.message) == ("session", "session: must be an agent name, got None")
    assert check_agent("a" * 128) == "a" * 128
    with pytest.raises(Invalid) as e:
        check_agent("a" * 129)
    assert e.value.message == f"agent: {'a' * 40!r} is not a valid name: use up to 128 letters, digits and _ . - @ + :"
    with pytest.raises(Invalid) as e:
        check_agent("a" * 512)  # short enough to be normalized and judged by its letters
    assert e.value.message == f"agent: {'a' * 40!r} is not a valid name: use up to 128 letters, digits and _ . - @ + :"
    with pytest.raises(Invalid) as e:
        check_agent("a" * 513)
    assert e.value.message == "agent: is 513 characters; names are at most 128"
    with pytest.raises(Invalid) as e:
        check_agent("ﬁ" * 100)  # 100 characters, 200 once normalized: too long
    assert "is not a valid name" in e.value.message
    with pytest.raises(Invalid) as e:
        check_agent("a b")
    assert e.value.message == "agent: 'a b' is not a valid name: use up to 128 letters, digits and _ . - @ + :"


# ------------------------------------------------------------- a store's options


def test_a_stores_options_are_refused_when_out_of_range(
    make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    backend = store.backend
    for kw, field, message in (
        ({"max_value_bytes": 0}, "max_value_bytes", "must be at least 1"),
        ({"session_save_interval": -1.0}, "session_save_interval", "must be a number of seconds >= 0"),
        ({"session_save_interval": float("nan")}, "session_save_interval", "must be a number of seconds >= 0"),
        ({"session_retention": 0.0}, "session_retention", "must be a number of seconds > 0"),
        ({"request_retention": 0.0}, "request_retention", "must be a number of seconds > 0"),
    ):
        with pytest.raises(Invalid) as e:
            Store(backend, clock=store.clock, **kw)
        assert (e.value.field, e.value.message) == (field, f"{field}: {message}")
    kept = Store(backend, clock=store.clock, max_value_bytes=1, session_save_interval=0, request_retention=0.5)
    assert (kept.max_value_bytes, kept.session_save_interval, kept.request_retention) == (1, 0.0, 0.5)
    assert Store(backend, clock=store.clock, session_retention=0.5).session_retention == 0.5
    assert kept.session_retention == 30 * 24 * 3600.0
    monkeypatch.setenv("COMITY_REQUEST_RETENTION_S", "90")
    assert Store(backend, clock=store.clock).request_retention == 90.0
    monkeypatch.setenv("COMITY_REQUEST_RETENTION_S", "a day")
    with pytest.raises(Invalid) as e:
        Store(backend, clock=store.clock)
    assert e.value.message == "COMITY_REQUEST_RETENTION_S: must be a number of seconds, got 'a day'"
    monkeypatch.setenv("COMITY_REQUEST_RETENTION_S", "")
    assert Store(backend, clock=store.clock).request_retention == 24 * 3600.0
    monkeypatch.setenv("COMITY_MAX_VALUE_BYTES", "lots")
    with pytest.raises(Invalid) as e:
        Store(backend, clock=store.clock)
    assert e.value.message == "COMITY_MAX_VALUE_BYTES: must be a number of bytes, got 'lots'"
    monkeypatch.setenv("COMITY_MAX_VALUE_BYTES", "")
    assert Store(backend, clock=store.clock).max_value_bytes == 1 << 20


# -------------------------------------------------------------- refused writes


def test_a_refused_write_is_noted_with_who_what_and_what_it_missed(store: Store, clock: VirtualClock) -> None:
    from comity.errors import Fenced, StaleContext
    from comity.store import Create, Holds, Put, Unchanged

    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    read = bob.get("k")
    alice.put("k", 2, context=alice.get("k").context)
    w3 = alice.put("k", 3, context=alice.get("k").context)
    with pytest.raises(StaleContext):
        bob.put("k", "b", context=read.context, request_id="r-put")
    note = bob.log("@refused")[-1]
    assert note["op"] == "write.refused" and note["agent"] == "bob" and note["request_id"] == "r-put.refused"
    assert (note["target"], note["error"], note["write"], note["seen"]) == ("k", "stale_context", "put", 1)
    assert note["missed"] == [2, w3.pos] and note["writers"] == ["alice"]
    assert note["reason"].startswith("'k' changed since your read")
    assert "token" not in note and "value" not in note

    with pytest.raises(StaleContext):
        bob.txn(guards=[Unchanged("k", read.context)], ops=[Put("other", 1)])
    note = bob.log("@refused")[-1]
    assert (note["write"], note["seen"]) == ("guard", 1)

    with pytest.raises(StaleContext):
        bob.txn(ops=[Create("k", 0)])
    note = bob.log("@refused")[-1]
    assert (note["write"], note["missed"]) == ("create", [w3.pos])
    assert "seen" not in note

    t1 = bob.txn(ops=[comity.store.Acquire("r", 10)]).results[0]["token"]
    t2 = alice.txn(ops=[comity.store.Acquire("r", 10, True)]).results[0]["token"]
    with pytest.raises(Fenced):
        bob.txn(guards=[Holds("r", t1)], ops=[Put("out", 1)])
    note = bob.log("@refused")[-1]
    assert (note["target"], note["error"], note["write"]) == ("r", "fenced", "write")
    assert (note["token"], note["current"], note["holder"]) == (t1, t2, "alice")

    bob.txn(ops=[Create("@task/T-1", 0)], system=True)
    with pytest.raises(StaleContext):  # comity's own layers note their refusals themselves
        bob.txn(ops=[Create("@task/T-1", 0)], system=True)
    assert bob.log("@refused")[-1] == note

    long_id = "q" * 128
    with pytest.raises(StaleContext):
        bob.put("k", "b", context=read.context, request_id=long_id)
    assert bob.log("@refused")[-1]["request_id"] == long_id  # cut to the longest id there is


# ------------------------------------------------------------- secrets and the log


def test_keys_holding_secrets_are_never_shown_but_to_comitys_own_layers(store: Store) -> None:
    from comity.store import Put

    s = store.session("alice")
    s.txn(ops=[Put("@auth/alice", "hash")], system=True)
    s.txn(ops=[Put("@seq/x", 1)], system=True)
    s.put("k", 1)
    with pytest.raises(Invalid) as e:
        s.get("@auth/alice")
    assert (e.value.field, e.value.message) == (
        "key", "key: '@auth/alice' holds secrets (an agent's token hash); comity never shows it"
    )
    long = "@auth/" + "a" * 100
    with pytest.raises(Invalid) as e:
        s.get(long)
    assert e.value.message == f"key: {long[:80]!r} holds secrets (an agent's token hash); comity never shows it"
    with pytest.raises(Invalid):
        s.get_many(["k", "@auth/alice"])
    assert s.get("@auth/alice", secrets=True).values == ["hash"]
    assert [v.values for v in s.get_many(["k", "@auth/alice"], secrets=True)] == [[1], ["hash"]]
    assert s.keys("@") == ["@seq/x"] and s.keys("@a") == [] and s.keys("@auth/") == []
    assert s.keys("@", limit=1) == ["@seq/x"]
    assert s.keys("@", secrets=True) == ["@auth/alice", "@seq/x"]
    assert s.keys("@", secrets=True, limit=1) == ["@auth/alice"]
    event = s.log("@auth/alice")[0]
    assert event["op"] == "put" and "value" not in event
    assert [e.get("value") for e in s.log()] == [None, 1, 1]
    assert all("value" not in e for e in s.log(values=False))
    assert [e["key"] for e in s.log(after=1, limit=1)] == ["@seq/x"]
    for after in (-1, True, "1"):
        with pytest.raises(Invalid) as e:
            s.log(after=after)  # type: ignore[arg-type]
        assert e.value.message == f"after: must be a log position (an integer >= 0), got {after!r}"
    for limit in (0, 10_001, True):
        with pytest.raises(Invalid) as e:
            s.log(limit=limit)
        assert e.value.message == f"limit: must be an integer in [1, 10000], got {limit!r}"
    assert len(s.log(limit=10_000)) == 3
    with pytest.raises(Invalid) as e:
        s.keys("x" * 514)
    assert e.value.message == "prefix: is 514 characters; keys are at most 512"
    assert s.keys("k" + "x" * 512) == []


def test_request_ids_are_one_to_128_characters(store: Store) -> None:
    s = store.session("alice")
    for bad in ("", "q" * 129, 7):
        with pytest.raises(Invalid) as e:
            s.put("k", 1, request_id=bad)  # type: ignore[arg-type]
        assert e.value.message == "request_id: must be a string of 1 to 128 characters"
        with pytest.raises(Invalid) as e:
            s.recorded(bad)  # type: ignore[arg-type]
        assert e.value.message == "request_id: must be a string of 1 to 128 characters"
    w = s.put("k", 1, request_id="q" * 128)
    got = s.recorded("q" * 128)
    assert got is not None and got[1]["pos"] == w.pos and len(got[0]) == 64
    assert s.recorded("never") is None and s.recorded("q") is None  # one character is enough
    with pytest.raises(Invalid) as e:
        store.session().put("k", 1)
    assert e.value.message == "agent: writes need an agent name"


# --------------------------------------------------------------- news and keys


def test_a_guarded_key_is_a_key_of_interest_whose_news_comes_with_the_next_answer(store: Store) -> None:
    from comity.store import Put, Unchanged

    alice, bob = store.session("alice"), store.session("bob")
    alice.put("g", 1)
    seen = store.session("carol").get("g").context  # bob guards on "g" without reading it himself
    bob.txn(guards=[Unchanged("g", seen)], ops=[Put("b", 1)])
    assert "g" in bob.interest
    alice.put("g", 2, context=alice.get("g").context)
    assert [(n["key"], n["agent"]) for n in bob.get("b").news] == [("g", "alice")]


def test_answers_of_a_write_say_when_their_news_was_capped(store: Store) -> None:
    from comity.store import Put

    alice, bob = store.session("alice"), store.session("bob")
    bob.get("k")
    store.news_limit = 1
    for i in range(3):
        alice.put("k", i, context=alice.get("k").context)
    w = bob.put("k", "b", keep_both=True)
    assert w.news_truncated and w.to_json()["news_truncated"] is True and len(w.news) == 1
    for i in range(3):
        alice.put("k", i, context=alice.get("k").context)
    t = bob.txn(ops=[Put("k", "c", keep_both=True)])
    assert t.news_truncated and t.to_json()["news_truncated"] is True


def test_a_listing_shows_a_thousand_keys_unless_asked_for_more(store: Store) -> None:
    from comity.store import Put

    s = store.session("alice")
    s.txn(ops=[Put(f"k/{i:04}", 0) for i in range(1001)])
    assert len(s.keys()) == 1000 and s.keys()[-1] == "k/0999"
    assert len(s.keys(limit=1001)) == 1001


# ------------------------------------------------------------------ compaction


def test_compaction_stops_at_a_named_sessions_position_and_adds_up_what_it_deleted(
    make_store: Callable[..., Store], clock: VirtualClock
) -> None:
    store = make_store()
    s = store.session("alice")

    def rewrite(offset: int) -> None:
        for i in range(10):
            s.put(f"k{i}", i + offset, context=s.get(f"k{i}").context)

    rewrite(0)  # positions 1-10
    reader = store.session("bob", name="reader")  # kept at position 10
    rewrite(10)  # 11-20: each key's first event is now deletable
    s.put("q", 1, request_id="recorded")
    report = store.compact(keep=1, reclaim=False)
    assert (report["horizon"], report["held_back_by_sessions"], report["deleted"]) == (11, True, 10)
    assert s.put("q", 1, request_id="recorded").replayed  # an outcome within its window is kept
    reader.news()
    reader.save()  # now at the head, 21
    rewrite(20)  # 22-31
    report = store.compact(keep=1, reclaim=False)
    assert (report["horizon"], report["deleted"], report["compacted_before"]) == (22, 10, 10)
    again = store.compact(keep=1, dry_run=True)
    assert again["compacted_before"] == 20 and again["events_to_delete"] == 0
    with store.backend.transaction(write=False) as tx:
        done = json.loads(tx.setting("compacted") or "{}")
    assert done["deleted"] == 20 and done["horizon"] == 22 and done["origins"] == {store.replica_id: 20}


def test_a_keyed_answer_reads_the_log_past_its_first_page(store: Store) -> None:
    from comity.store import Put

    alice, bob = store.session("alice"), store.session("bob")
    bob.get("x")
    alice.txn(ops=[Put(f"other/{i}", i) for i in range(300)])  # more than a page of the log
    w = alice.put("x", 1)
    assert [(n["key"], n["pos"]) for n in bob.get("x").news] == [("x", w.pos)]


def test_a_key_read_for_the_first_time_brings_its_news_from_the_sessions_position(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    k = alice.put("k", 1)  # position 1: bob has not looked at "k" yet
    alice.put("z", 1)
    assert bob.get("a").news == []  # runs ahead of bob's position on "a" alone
    assert [n["pos"] for n in bob.get("k").news] == [k.pos]


def test_a_provisional_write_says_so_in_its_json() -> None:
    from comity.store._api import Written

    w = Written("k", "put", [1], "ctx", 3, provisional=[["files", 2]])
    assert w.to_json()["provisional"] == [["files", 2]]
    assert "provisional" not in Written("k", "put", [1], "ctx", 3).to_json()


def test_compaction_reports_where_and_keeps_its_greatest_horizon_and_forgets_old_outcomes(
    make_store: Callable[..., Store], clock: VirtualClock
) -> None:
    store = make_store(request_retention=100.0)
    s = store.session("alice")
    s.put("q", 0, request_id="old")
    for i in range(20):
        s.put("k", i, context=s.get("k").context)
    clock.advance(150)  # "old" is past its window
    first = store.compact(keep=1, reclaim=False)
    assert first["location"] == store.location and first["horizon"] == 21 and not first["held_back_by_sessions"]
    assert s.recorded("old") is None
    store.session("bob", name="late")  # kept at 21
    s.put("k", 99, context=s.get("k").context)  # 22
    s.put("k", 100, context=s.get("k").context)  # 23
    second = store.compact(keep=1, reclaim=False)  # the horizon would be 23: held at 22 by "late"
    assert (second["horizon"], second["held_back_by_sessions"]) == (22, True)
    third = store.compact(keep=5, reclaim=False)  # a smaller horizon: the recorded one stays the greatest
    assert third["horizon"] == 19
    with store.backend.transaction(write=False) as tx:
        assert json.loads(tx.setting("compacted") or "{}")["horizon"] == 22


def test_a_store_run_that_records_nothing_keeps_no_outcome(store: Store) -> None:
    from comity.store import Put
    from comity.store._txn import Caller

    outcome, replayed = store.run(Caller("alice", "s1"), "req-1", [], [Put("k", 1)], record=False, system=False)
    assert not replayed and outcome["results"][0]["values"] == [1]
    assert store.session().recorded("req-1") is None
    store.run(Caller("alice", "s1"), "req-2", [], [Put("k2", 1)], record=True, system=False)
    assert store.session().recorded("req-2") is not None


def test_get_many_carries_the_news_and_its_cap_on_the_first_answer(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    bob.get("a")
    store.news_limit = 1
    alice.put("a", 1)
    alice.put("a", 2, context=alice.get("a").context)
    first, second = bob.get_many(["a", "b"])
    assert first.news_truncated and len(first.news) == 1 and not second.news_truncated and second.news == []


def test_a_refusal_note_is_about_the_refused_key_alone_and_records_no_outcome(store: Store) -> None:
    from comity.errors import StaleContext
    from comity.store import Put, Unchanged

    alice, bob = store.session("alice"), store.session("bob")
    alice.put("g", 1)
    alice.put("k", 1)
    guard_ctx, stale = bob.get("g").context, bob.get("k").context
    alice.put("k", 2, context=alice.get("k").context)
    with pytest.raises(StaleContext):
        bob.txn(guards=[Unchanged("g", guard_ctx)], ops=[Put("k", 3, context=stale)], request_id="r-9")
    note = bob.log("@refused")[-1]
    assert (note["target"], note["write"], note["seen"]) == ("k", "put", 2)
    assert bob.recorded("r-9.refused") is None and bob.recorded("r-9") is None


def test_a_write_logs_its_siblings_only_when_there_are_several(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("k", 1)
    bob.put("k", 2, keep_both=True)
    log = alice.log("k")
    assert "siblings" not in log[0] and log[1]["siblings"] == 2


def test_compaction_records_the_greatest_horizon_it_ever_reached(store: Store) -> None:
    s = store.session("alice")
    s.put("x", 0)  # 1
    for i in range(10):
        s.put("y", i, context=s.get("y").context)  # 2-11
    assert store.compact(keep=1, reclaim=False)["horizon"] == 11  # x's only event stays
    s.put("x", 1, context=s.get("x").context)  # 12: x's first event can go now
    later = store.compact(keep=5, reclaim=False)  # a smaller horizon that still deletes
    assert (later["horizon"], later["deleted"]) == (8, 1)
    with store.backend.transaction(write=False) as tx:
        assert json.loads(tx.setting("compacted") or "{}")["horizon"] == 11


# ------------------------------------------------ the whole run of _api's mutants


def test_an_update_with_a_request_id_is_applied_once_and_its_retry_replayed(store: Store) -> None:
    s = store.session("alice")
    first = s.update("hits", "inc", 2, type="gcounter", request_id="u-1")
    again = s.update("hits", "inc", 2, type="gcounter", request_id="u-1")
    assert not first.replayed and again.replayed and again.results == first.results
    assert s.get("hits").values == [2]
    assert s.recorded("u-1") is not None


def test_a_store_draws_its_ids_from_the_rng_it_is_given(tmp_path: Path, clock: VirtualClock) -> None:
    drawn = []
    for name in ("a.db", "b.db"):  # the same seed, the same ids: a replay is byte for byte
        with comity.open(tmp_path / name, clock=clock, rng=SeededRng(7)) as st:
            s = st.session("alice")
            s.put("k", 1)
            event = s.log("k")[0]
            drawn.append((s.id, event["session"], event["request_id"], st.session().id))
    assert drawn[0] == drawn[1]


def test_compaction_reports_the_head_and_its_progress_and_records_canonical_json(store: Store) -> None:
    s = store.session("alice")
    for i in range(5):
        s.put("k", i, context=s.get("k").context)  # 1-5: the first four can go
    calls: list[tuple[int, int]] = []
    report = store.compact(keep=1, reclaim=False, progress=lambda done, total: calls.append((done, total)))
    assert (report["head"], report["horizon"], report["deleted"]) == (5, 5, 4)
    assert calls == [(4, 4)]
    with store.backend.transaction(write=False) as tx:
        raw = tx.setting("compacted")
    assert raw == '{"deleted":4,"horizon":5,"origins":{"%s":4}}' % store.replica_id


def test_a_scanned_context_remembers_the_head_it_was_read_at(store: Store) -> None:
    from comity.errors import StaleContext

    alice, bob = store.session("alice"), store.session("bob")
    alice.put("a/k", 1)
    alice.put("b", 1)  # 2: the head when bob scans
    ctx = bob.scan("a/")[0].context
    alice.put("a/k", 2, context=alice.get("a/k").context)
    with pytest.raises(StaleContext):
        bob.put("a/k", 3, context=ctx)
    note = bob.log("@refused")[-1]
    assert (note["target"], note["seen"], note["missed"]) == ("a/k", 2, [3])


def test_news_held_for_a_face_waits_for_it_from_get_many_too(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    bob.holds_news = True  # as the agent facade sets it
    bob.get_many(["a", "b"])
    alice.put("a", 1)
    alice.put("b", 1)
    first = bob.get_many(["b"])[0]
    assert [n["pos"] for n in first.news] == [1, 2]
    assert bob.take_news() == (first.news, False)  # what get_many showed waits for the face
    assert bob.take_news() == ([], False)  # taken once


def test_news_held_past_500_after_a_take_goes_back_to_what_was_taken(store: Store) -> None:
    from comity.store import Put

    alice, carol = store.session("alice"), store.session("carol")
    carol.holds_news = True
    keys = [f"k/{i:03}" for i in range(501)]
    carol.get_many(keys)
    alice.put("k/000", 0)  # 1
    assert [n["pos"] for n in carol.get("k/000").news] == [1]
    assert [n["pos"] for n in carol.take_news()[0]] == [1]  # delivered up to 1
    alice.txn(ops=[Put(k, 1, keep_both=True) for k in keys])  # 2-502
    store.news_limit = 1000
    assert len(carol.get("k/000").news) == 501  # more than 500 waiting: back to what was taken
    assert carol.take_news() == ([], True)
    store.news_limit = 50
    assert [n["pos"] for n in carol.get("k/000").news] == list(range(2, 52))


def test_news_held_past_500_is_forgotten_then_collected_again_in_order(store: Store) -> None:
    from comity.store import Put

    alice, carol = store.session("alice"), store.session("carol")  # unnamed, and nothing taken yet
    carol.holds_news = True
    keys = [f"k/{i:03}" for i in range(501)]
    carol.get_many(keys)
    alice.txn(ops=[Put(k, 0) for k in keys])  # 1-501
    store.news_limit = 1000
    assert len(carol.get("k/000").news) == 501  # more than 500 waiting: forgotten, to be collected again
    assert carol.take_news() == ([], True)
    store.news_limit = 50
    again = carol.get("k/000").news
    assert [n["pos"] for n in again] == list(range(1, 51))  # collected again, in order, capped
    news, truncated = carol.take_news()
    assert news == again and truncated is True


def test_news_never_shows_a_sessions_own_events(store: Store) -> None:
    from comity.store import Acquire

    alice, bob = store.session("alice"), store.session("bob")
    alice.put("x", 1)
    bob.txn(ops=[Acquire("r", 10)])  # a lease is no key of interest: bob's position stays behind "x"
    assert [e["key"] for e in bob.news().events] == ["x"]


def test_news_capped_at_a_page_boundary_says_so_and_skips_nothing(store: Store) -> None:
    from comity.store import Put

    alice, bob = store.session("alice"), store.session("bob")
    keys = [f"k/{i:03}" for i in range(255)]
    bob.get_many(keys)
    alice.put("z/0", 0)  # 1
    alice.txn(ops=[Put(k, 0) for k in keys])  # 2-256
    alice.put("z/1", 1)  # 257
    alice.put("z/2", 2)  # 258
    store.news_limit = 1000
    assert len(bob.get("k/000").news) == 255  # shown by a keyed answer; bob's position stays at 0
    first = bob.news(limit=1)  # the log's first page holds one piece of news in 256 events
    assert [e["key"] for e in first.events] == ["z/0"] and first.truncated and first.position == 1
    rest = bob.news()
    assert [e["key"] for e in rest.events] == ["z/1", "z/2"] and not rest.truncated


def test_a_resumed_named_session_shows_each_keys_news_once(make_store: Callable[..., Store]) -> None:
    store = make_store()
    alice = store.session("alice")
    reader = store.session("bob", name="reader")
    alice.put("z", 0)  # 1: news() is never called, so the reader's position stays at 0
    alice.put("k", 1)  # 2
    alice.put("j", 1)  # 3
    assert [n["pos"] for n in reader.get_many(["k", "j"])[0].news] == [2, 3]
    reader.close()  # kept: position 0, "k" and "j" shown up to 3
    alice.put("k", 2, context=alice.get("k").context)  # 4
    alice.put("j", 2, context=alice.get("j").context)  # 5
    resumed = store.session("bob", name="reader")
    assert [(n["key"], n["pos"]) for n in resumed.get("k").news] == [("k", 4), ("j", 5)]
    assert [e["pos"] for e in resumed.news().events] == [1]


def test_a_replica_opened_where_replication_is_loaded_forwards_to_its_upstream_with_news(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock
) -> None:
    import comity.sync
    from comity.store import Create

    upstream = make_store("up.db")
    comity.sync.clone(upstream.location, tmp_path / "a.db", clock=clock, rng=SeededRng(70))
    with comity.open(tmp_path / "a.db", clock=clock, rng=SeededRng(71)) as replica:
        assert replica.authority is not None and upstream.authority is None
        alice, bob = replica.session("alice"), replica.session("bob")
        alice.get("notes/a")
        bob.put("notes/a", 1)  # kept here: a put needs no authority
        bob.put("notes/a", 2, keep_both=True)
        replica.news_limit = 1
        t = alice.txn(ops=[Create("files/1", "x")])  # only the authority may decide a create
        assert upstream.session().get("files/1").values == ["x"]
        assert [n["key"] for n in t.news] == ["notes/a"] and t.news_truncated is True and t.replayed is False
        replica.news_limit = 50
        first = alice.txn(ops=[Create("files/2", "y")], request_id="c-2")
        again = alice.txn(ops=[Create("files/2", "y")], request_id="c-2")
        assert not first.replayed and again.replayed is True and again.news_truncated is False
        assert upstream.session().recorded("c-2") is not None


def test_a_replica_opened_where_replication_is_not_loaded_says_so_for_what_needs_its_authority(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import comity.sync
    from comity.errors import Unavailable
    from comity.store import Create, _api
    from comity.store._txn import Caller

    upstream = make_store("up.db")
    comity.sync.clone(upstream.location, tmp_path / "a.db", clock=clock, rng=SeededRng(72))
    monkeypatch.setattr(_api, "_authority_factory", None)  # a process that never imported comity.sync
    with comity.open(tmp_path / "a.db", clock=clock, rng=SeededRng(73)) as replica:
        assert replica.authority is None
        s = replica.session("alice")
        s.put("notes/a", 1)  # a replica works alone
        with pytest.raises(Unavailable) as e:
            s.create("files/1", "x")
        assert e.value.details["upstream"] == replica.upstream == upstream.location
        assert e.value.message.endswith("replication (comity.sync) is not loaded in this process")
        assert "only its authority may do this" in e.value.message
        with pytest.raises(Unavailable) as e:  # a replica's forwarded request, run here
            replica.run(Caller("bob", "s-2"), "r-1", [], [Create("files/2", "y")], record=False, system=False)
        assert e.value.message == (
            f"this store is a replica of {upstream.location} and only its authority may do this (create);"
            " replication (comity.sync) is not loaded in this process"
        )
        with pytest.raises(Invalid) as c:
            replica.compact()
        assert (c.value.field, c.value.message) == (
            "store",
            f"store: this store is a replica of {upstream.location}: its log is what it has not yet sent there;"
            " compact the authority instead",
        )


def test_a_store_run_keeps_a_local_read_position_not_another_replicas_and_matches_retries_by_digest(store: Store) -> None:
    from comity.store import Put
    from comity.store._txn import Caller

    s, bob = store.session("alice"), Caller("bob", "s-2")
    s.put("k", 1)
    ctx = s.get("k").context  # read at position 1
    s.put("x", 0)  # 2
    store.run(bob, "r-1", [], [Put("k", 2, context=ctx)], record=False, system=False)
    assert s.log("k")[-1]["seen"] == 1  # a local caller's read position is kept with its write
    store.run(bob, "r-2", [], [Put("k", 3, context=s.get("k").context)], record=False, system=False, foreign=True)
    assert "seen" not in s.log("k")[-1]  # another replica's read position means nothing here
    first, _ = store.run(bob, "r-3", [], [Put("d", 1)], record=True, system=False, digest="same")
    again, replayed = store.run(bob, "r-3", [], [Put("d", 2)], record=True, system=False, digest="same")
    assert replayed and again == first and s.get("d").values == [1]  # the digest says what "the same" is


def test_a_replica_runs_what_only_its_authority_may_decide_at_the_authority(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock
) -> None:
    import comity.sync
    from comity.store import Create
    from comity.store._txn import Caller

    upstream = make_store("up.db")
    comity.sync.clone(upstream.location, tmp_path / "a.db", clock=clock, rng=SeededRng(74))
    with comity.open(tmp_path / "a.db", clock=clock, rng=SeededRng(75)) as replica:
        alice = Caller("alice", "s-1")
        out, replayed = replica.run(alice, "r-1", [], [Create("@seq/x", 1)], record=True, system=True, digest="d-1")
        assert not replayed and out["results"][0]["values"] == [1]
        event = upstream.session().log("@seq/x")[-1]
        assert (event["agent"], event["session"], event["request_id"]) == ("alice", "s-1", "r-1")
        again, replayed = replica.run(alice, "r-1", [], [Create("@seq/x", 2)], record=True, system=True, digest="d-1")
        assert replayed and upstream.session().get("@seq/x").values == [1]


def test_a_replicas_write_run_at_its_authority_answers_at_the_replicas_head_with_news_of_its_keys_once(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock
) -> None:
    """What a caller of a replica's write that only the authority may decide observes: the
    answer's position is this replica's head once the authority's events are here, its results
    are the authority's in this log's terms, its news is of the session's keys only (each event
    once, in order), news() shows the rest once, and the session's position moves only when the
    write succeeds."""
    import comity.sync
    from comity.errors import StaleContext
    from comity.store import Create

    upstream = make_store("up.db")
    comity.sync.clone(upstream.location, tmp_path / "a.db", clock=clock, rng=SeededRng(76))
    with comity.open(tmp_path / "a.db", clock=clock, rng=SeededRng(77)) as replica:
        alice, bob = replica.session("alice"), replica.session("bob")
        alice.get("notes/a")  # followed
        bob.put("notes/a", 1)  # 1: kept here
        bob.put("other/x", 1)  # 2: a key alice does not follow
        bob.put("notes/a", 2, keep_both=True)  # 3
        assert alice.position == 0
        t = alice.txn(ops=[Create("files/1", "x")])  # only the authority may decide a create
        head = replica.session().head()
        created = replica.session().log("files/1")[-1]
        assert created["pos"] == head == 4  # the authority's event, here at this log's next position
        assert t.pos == head and t.replayed is False and t.news_truncated is False
        assert [(r["key"], r["op"], r["values"], r["pos"]) for r in t.results] == [("files/1", "create", ["x"], 4)]
        assert replica.session().get("files/1").context == t.results[0]["context"]  # sealed at this head
        assert [(n["key"], n["pos"]) for n in t.news] == [("notes/a", 1), ("notes/a", 3)]
        assert alice.position == 1  # other/x (2) is not shown yet: news() shows it, once
        got = alice.news()
        assert [(e["key"], e["pos"]) for e in got.events] == [("other/x", 2)] and got.position == 4
        assert alice.news().events == []
        # Refused at the authority: nothing is shown, the position stays, and the next answer
        # carries what was missed, once.
        bob.put("other/y", 1)  # 5
        with pytest.raises(StaleContext):
            alice.txn(ops=[Create("files/1", "again")])
        assert alice.position == 4
        assert [(e["key"], e["pos"]) for e in alice.news().events] == [("other/y", 5)]


def test_a_session_holding_news_for_a_face_keeps_the_news_of_a_write_run_at_its_authority(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock
) -> None:
    """A session whose news a face delivers (``holds_news``, as an agent's) writing through its
    replica's authority keeps that write's news, and whether it was capped, for the face."""
    import comity.sync
    from comity.store import Create

    upstream = make_store("up.db")
    comity.sync.clone(upstream.location, tmp_path / "a.db", clock=clock, rng=SeededRng(78))
    with comity.open(tmp_path / "a.db", clock=clock, rng=SeededRng(79)) as replica:
        alice, bob = replica.session("alice"), replica.session("bob")
        alice.holds_news = True
        alice.get("notes/a")
        bob.put("notes/a", 1)  # 1
        bob.put("notes/a", 2, keep_both=True)  # 2
        replica.news_limit = 1
        t = alice.txn(ops=[Create("files/1", "x")])
        assert [n["pos"] for n in t.news] == [1] and t.news_truncated is True
        news, truncated = alice.take_news()
        assert [n["pos"] for n in news] == [1] and truncated is True
        replica.news_limit = 50
        t = alice.txn(ops=[Create("files/2", "y")])  # the capped rest comes with the next write
        assert [n["pos"] for n in t.news] == [2] and t.news_truncated is False
        assert [n["pos"] for n in alice.take_news()[0]] == [2] and alice.take_news() == ([], False)


def test_a_replicas_retry_at_its_authority_is_matched_by_the_callers_digest(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock
) -> None:
    """The digest a caller gives a replica's write is the authority's too: a retry with the
    same digest and other operations is answered from the record, one with another digest is
    refused as a reused request id."""
    import comity.sync
    from comity.store import Create

    upstream = make_store("up.db")
    comity.sync.clone(upstream.location, tmp_path / "a.db", clock=clock, rng=SeededRng(80))
    with comity.open(tmp_path / "a.db", clock=clock, rng=SeededRng(81)) as replica:
        s = replica.session("alice")
        first = s.txn(ops=[Create("files/1", "x")], request_id="r-1", digest="make files/1")
        again = s.txn(ops=[Create("files/1", "x, again")], request_id="r-1", digest="make files/1")
        assert not first.replayed and again.replayed is True
        assert again.results[0]["values"] == ["x"] and again.results[0]["pos"] == first.results[0]["pos"]
        with pytest.raises(Invalid) as e:
            s.txn(ops=[Create("files/1", "x")], request_id="r-1", digest="make files/2")
        assert e.value.field == "request_id"
        assert upstream.session().get("files/1").values == ["x"] == s.get("files/1").values


def test_idle_named_sessions_are_forgotten_by_a_save_once_an_hour_has_passed(
    make_store: Callable[..., Store], clock: VirtualClock
) -> None:
    store = make_store()
    store.session_retention = 10.0
    store.session("bob", name="old")  # kept at position 0; its save forgets idle sessions (none yet)
    store.session("alice").put("k", 1)
    clock.advance(3599)
    store.session("carol", name="early")  # within the hour: nothing is forgotten
    assert store.session("bob", name="old").position == 0
    clock.advance(1)  # an hour since the last forgetting
    store.session("dave", name="late")
    assert store.session("bob", name="old").position == 1  # forgotten: it starts again at the head


def test_news_read_across_pages_shows_each_event_once_and_is_capped_only_past_its_limit(store: Store) -> None:
    from comity.store import Put

    alice, bob = store.session("alice"), store.session("bob")
    keys = [f"k/{i:03}" for i in range(254)]
    bob.get_many(keys)
    alice.txn(ops=[Put(k, 0) for k in keys[:2]])  # 1-2
    alice.put("z/0", 0)  # 3
    alice.txn(ops=[Put(k, 0) for k in keys[2:]])  # 4-255
    for i in (1, 2, 3):
        alice.put(f"z/{i}", i)  # 256 (the first page's last event), 257, 258
    store.news_limit = 1000
    assert len(bob.get("k/000").news) == 254  # shown already: bob's position stays at 0
    n = bob.news(limit=4)
    assert [e["key"] for e in n.events] == ["z/0", "z/1", "z/2", "z/3"]
    assert not n.truncated and n.position == 258


def test_get_many_answers_each_key_with_its_crdt_type(store: Store) -> None:
    s = store.session("alice")
    s.update("hits", "inc", 1, type="gcounter")
    s.put("plain", 1)
    got = s.get_many(["hits", "plain", "absent"])
    assert [(v.key, v.type, v.values) for v in got] == [("hits", "gcounter", [1]), ("plain", None, [1]), ("absent", None, [])]


def test_compaction_reports_what_it_was_asked_and_what_holds_it_back(make_store: Callable[..., Store]) -> None:
    store = make_store()
    s = store.session("alice")
    with pytest.raises(Invalid) as e:
        store.compact(keep=0)
    assert e.value.message == "keep: must be a number of events >= 1 to keep, got 0"
    s.put("k", 1)  # 1
    s.put("k", 2, context=s.get("k").context)  # 2
    report = store.compact(keep=5, reclaim=False)  # the whole log is within the latest 5
    assert (report["horizon"], report["events_to_delete"], report["deleted"]) == (1, 0, 0)
    assert (report["keep"], report["compacted_before"], report["kept_before_horizon"]) == (5, 0, 0)
    s.put("j", 1)  # 3
    store.session("bob", name="reader")  # kept at 3
    s.put("k", 3, context=s.get("k").context)  # 4
    s.put("j", 2, context=s.get("j").context)  # 5
    report = store.compact(keep=2, dry_run=True)  # horizon 4: the reader, at 3, holds nothing back
    assert (report["horizon"], report["held_back_by_sessions"]) == (4, False)
    assert (report["events_to_delete"], report["kept_before_horizon"]) == (3, 0)  # k's 1 and 2 and j's 3 go
    report = store.compact(keep=1, dry_run=True)  # horizon 5, held back to 4 by the reader
    assert (report["horizon"], report["held_back_by_sessions"]) == (4, True)


def test_compaction_keeps_each_replicas_greatest_deleted_origin_across_compactions(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock
) -> None:
    from sync_support import make_replica

    upstream = make_store("up.db")
    a = make_replica(upstream, tmp_path / "a.db", clock)

    def origins() -> dict[str, int]:
        with upstream.backend.transaction(write=False) as tx:
            return dict(json.loads(tx.setting("compacted") or "{}")["origins"])

    try:
        sa, s = a.session("alice"), upstream.session("bob")
        sa.put("x", 1)  # a's 1: x's only event for now
        sa.put("r", 1)  # a's 2
        sa.put("r", 2, context=sa.get("r").context)  # a's 3
        a.sync()
        s.put("r", 3, context=s.get("r").context)
        upstream.compact(keep=1, reclaim=False)  # a's r events go; its x stays
        assert origins() == {a.store.replica_id: 3}
        s.put("u", 1)
        s.put("u", 2, context=s.get("u").context)
        a.sync()  # a has every event the next compaction deletes
        upstream.compact(keep=1, reclaim=False)  # only the upstream's own go
        assert origins() == {a.store.replica_id: 3, upstream.replica_id: 5}
        sa.put("x", 2, context=sa.get("x").context)
        a.sync()
        upstream.compact(keep=1, reclaim=False)  # a's x at its 1 goes: a is still deleted up to its 3
        assert origins() == {a.store.replica_id: 3, upstream.replica_id: 5}
    finally:
        a.store.close()


def test_a_delete_with_a_request_id_is_applied_once_and_its_retry_replayed(store: Store) -> None:
    s = store.session("alice")
    w = s.put("k", 1)
    first = s.delete("k", context=w.context, request_id="d-1")
    again = s.delete("k", context=w.context, request_id="d-1")
    assert not first.replayed and again.replayed and again.pos == first.pos
    assert [e["op"] for e in s.log("k")] == ["put", "delete"]


def test_a_refusal_note_keeps_the_first_500_characters_of_its_reason(store: Store) -> None:
    from comity.errors import StaleContext

    alice, bob = store.session("alice"), store.session("bob")
    read = bob.get("k")
    for i in range(25):
        alice.put("k", i, context=alice.get("k").context)
    with pytest.raises(StaleContext) as e:
        bob.put("k", "b", context=read.context)
    assert len(e.value.message) > 500
    note = bob.log("@refused")[-1]
    assert note["reason"] == e.value.message[:500] and len(note["missed"]) == 20


def test_the_log_shows_a_hundred_events_unless_asked_for_more(store: Store) -> None:
    from comity.store import Put

    s = store.session("alice")
    s.txn(ops=[Put(f"k/{i:03}", 0) for i in range(101)])
    assert len(s.log()) == 100 and s.log()[-1]["pos"] == 100
    assert len(s.log(limit=101)) == 101


def _resumed_with_k_shown_ahead(make_store: Callable[..., Store]) -> comity.Session:
    """A named session resumed at position 0 with "k" shown up to 4 (events 1 "z", 2 "y",
    3 and 4 "k")."""
    store = make_store()
    alice = store.session("alice")
    reader = store.session("bob", name="reader")
    alice.put("z", 0)  # 1
    alice.put("y", 0)  # 2
    alice.put("k", 1)  # 3
    alice.put("k", 2, context=alice.get("k").context)  # 4
    assert [n["pos"] for n in reader.get("k").news] == [3, 4]
    reader.close()  # kept: position 0, "k" shown up to 4
    resumed = store.session("bob", name="reader")
    return resumed


def test_news_capped_before_a_resumed_sessions_keys_keeps_how_far_they_were_shown(
    make_store: Callable[..., Store],
) -> None:
    """A resumed named session keeps, per key, how far it was shown; ``news()`` capped before
    those points moves the position without forgetting them: the keys' events are not shown
    again by the next ``news()``."""
    resumed = _resumed_with_k_shown_ahead(make_store)
    first = resumed.news(limit=1)
    assert [e["pos"] for e in first.events] == [1] and first.truncated
    assert [e["pos"] for e in resumed.news().events] == [2]


def test_a_key_no_longer_followed_keeps_how_far_a_keyed_answer_showed_it(store: Store) -> None:
    """A key dropped from a session's interest keeps the point its last keyed answer showed
    it up to: ``news()`` does not show those events again."""
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("z", 0)  # 1: news() is not called yet, so bob's position stays at 0
    alice.put("k", 1)  # 2
    alice.put("j", 1)  # 3
    assert [n["pos"] for n in bob.get_many(["k", "j"])[0].news] == [2, 3]
    bob.interest.discard("j")  # "j" is no longer followed
    alice.put("k", 2, context=alice.get("k").context)  # 4
    assert [n["pos"] for n in bob.get("k").news] == [4]
    assert [e["pos"] for e in bob.news().events] == [1]


def test_a_keyed_answer_capped_before_the_keys_followed_keeps_how_far_they_were_shown(store: Store) -> None:
    """A keyed answer capped before the point the session's other keys were shown up to
    keeps that point: neither the next keyed answer nor ``news()`` shows their events again,
    and the capped key's remaining news comes once, in order."""
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("z", 0)  # 1: bob's position stays at 0
    alice.put("m", 1)  # 2
    alice.put("m", 2, context=alice.get("m").context)  # 3
    alice.put("k", 1)  # 4
    assert [n["pos"] for n in bob.get("k").news] == [4]  # "k" shown up to 4
    store.news_limit = 1
    capped = bob.get("m")
    assert [n["pos"] for n in capped.news] == [2] and capped.news_truncated
    store.news_limit = 1000
    assert [n["pos"] for n in bob.get("k").news] == [3]
    assert [e["pos"] for e in bob.news().events] == [1]


def _resumed_after_a_capped_answer(store: Store) -> tuple[comity.Session, comity.Session]:
    """Alice and bob's resumed named session "reader": "k" and "j" shown up to 5 before it was
    kept, then a capped answer (news_limit 1) on "m", a key it begins to follow, showed 2."""
    alice = store.session("alice")
    reader = store.session("bob", name="reader")
    alice.put("z", 0)  # 1: news() is not called, so the reader's position stays at 0
    alice.put("m", 1)  # 2
    alice.put("m", 2, context=alice.get("m").context)  # 3
    alice.put("k", 1)  # 4
    alice.put("j", 1)  # 5
    assert [n["pos"] for n in reader.get_many(["k", "j"])[0].news] == [4, 5]
    reader.close()  # kept: position 0, "k" and "j" shown up to 5
    resumed = store.session("bob", name="reader")
    store.news_limit = 1
    capped = resumed.get("m")
    assert [n["pos"] for n in capped.news] == [2] and capped.news_truncated
    store.news_limit = 1000
    return alice, resumed


def test_a_resumed_session_capped_on_a_new_key_then_no_longer_following_it_shows_each_event_once(
    make_store: Callable[..., Store],
) -> None:
    """A resumed named session's keys run ahead of a capped answer on a key it begins to
    follow; once that key is no longer followed, the next keyed answer reads from where the
    others were shown and ``news()`` shows the rest, each event once."""
    store = make_store()
    alice, resumed = _resumed_after_a_capped_answer(store)
    resumed.interest.discard("m")  # "m" is no longer followed
    alice.put("k", 2, context=alice.get("k").context)  # 6
    assert [n["pos"] for n in resumed.get("k").news] == [6]
    assert [e["pos"] for e in resumed.news().events] == [1, 3]


def test_a_resumed_session_capped_on_a_new_key_then_following_more_keys_shows_their_news_once(
    make_store: Callable[..., Store],
) -> None:
    """After a capped answer on a key it begins to follow, a resumed named session's keys are
    shown up to three points (its position, the capped answer's, and where the resumed keys
    were shown); keys it then begins to follow are read from its position: none of their
    news is skipped, and none is shown twice."""
    store = make_store()
    _, resumed = _resumed_after_a_capped_answer(store)
    got = resumed.get_many(["z", "n/1", "n/2", "n/3"])[0].news  # four keys begun at position 0
    assert [n["pos"] for n in got] == [1, 3]
    assert resumed.news().events == []


def test_a_retry_is_matched_by_its_digest_when_one_is_given(make_store: Callable[..., Store]) -> None:
    """A caller that names what "the same request" is (``digest``) has a retry with the same
    digest answered from the record though its operations differ (a board verb's retry fills
    in a fresh context), and one with another digest refused as a reused request id."""
    from comity.store import Put

    s = make_store().session("alice")
    first = s.txn(ops=[Put("k", 1)], request_id="r-1", digest="claim T-1")
    again = s.txn(ops=[Put("k", 2)], request_id="r-1", digest="claim T-1")
    assert again.replayed and again.pos == first.pos
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Put("k", 1)], request_id="r-1", digest="claim T-2")
    assert e.value.field == "request_id"
    assert s.get("k").values == [1]


def test_a_resumed_session_reading_a_new_key_with_one_shown_ahead_shows_only_the_new(
    make_store: Callable[..., Store],
) -> None:
    """A key shown ahead of the session's position and a key it never read, asked together:
    the log read from the earlier point holds the first key's events already shown, and they
    are not shown again."""
    resumed = _resumed_with_k_shown_ahead(make_store)
    assert [n["pos"] for n in resumed.get_many(["k", "y"])[0].news] == [2]
    assert [e["pos"] for e in resumed.news().events] == [1]


def test_scan_values_lists_live_values_without_contexts(store: Store) -> None:
    """The ready queue's read of its markers: every live key under the prefix with all its
    values (siblings too), in key order, up to the limit; deleted keys and keys elsewhere left
    out; the same values a scan with contexts gives."""
    a, b = store.session("a"), store.session("b")
    a.put("m/1", {"n": 1})
    a.put("m/2", "x")
    b.put("m/2", "y", keep_both=True)
    a.put("m/3", 3)
    a.delete("m/3", context=a.get("m/3").context)
    a.put("n/1", 1)
    got = a.scan_values("m/")
    assert [k for k, _ in got] == ["m/1", "m/2"]
    assert got[0][1] == [{"n": 1}] and sorted(got[1][1]) == ["x", "y"]
    assert got == [(v.key, v.values) for v in a.scan("m/")]
    assert a.scan_values("m/", limit=1) == got[:1]
    assert a.scan_values("zz/") == []


def test_news_carries_no_values(store: Store) -> None:
    """News says what changed, not to what: no piece of it carries the value written, from a
    keyed answer, from news() or in a refusal (a key holding secrets is news too)."""
    a, b = store.session("a"), store.session("b")
    a.put("k", 0)
    seen = a.get("k").context
    b.put("k", 1, context=b.get("k").context)
    b.put("x", "x")
    b.put("y", "y")
    with pytest.raises(comity.errors.StaleContext) as refused:
        a.put("k", 2, context=seen)
    got = a.get("x").news
    later = a.news().events
    assert [n["key"] for n in refused.value.news] == ["k"] and "x" in [n["key"] for n in got]
    assert [n["key"] for n in later] == ["y"]
    assert all("value" not in n for n in [*refused.value.news, *got, *later])



def test_a_capped_answer_keeps_the_point_of_a_key_followed_again(store: Store) -> None:
    """A key dropped and followed again keeps how far it was shown when an answer capped
    before that point shows another key: its events are not shown twice."""
    a, b = store.session("a"), store.session("b")
    a.put("k", 0)
    b.put("elsewhere", 1)  # a's position stays behind this
    y1, y2 = b.put("y", 1), b.put("y", 2, keep_both=True)
    x = b.put("x", 1)
    assert [n["pos"] for n in a.get("x").news] == [x.pos]
    a.interest.discard("x")
    assert a.put("k", 1, keep_both=True).news == []  # "x" keeps its point
    a.interest.add("x")
    store.news_limit = 1
    assert [n["pos"] for n in a.get("y").news] == [y1.pos]  # capped before "x"'s point
    store.news_limit = 100
    assert [n["pos"] for n in a.get("y").news] == [y2.pos]


def test_a_capped_answer_at_the_first_position_of_the_log_shows_it_once(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A capped answer whose point is the log's first position, read by key (the position
    does not move): that event is not shown again."""
    monkeypatch.setattr(comity.store._api, "_KEY_ROWS", 0)  # a key lookup costs nothing: read by key
    a, b = store.session("a"), store.session("b")
    assert a.position == 0
    first = b.put("e", 1)
    a.put("k", 0)  # "k" is shown ahead of "e"'s event
    second = b.put("e", 2, keep_both=True)
    a.interest.add("e")
    store.news_limit = 1
    assert [n["pos"] for n in a.get("k").news] == [first.pos]
    store.news_limit = 100
    assert [n["pos"] for n in a.get("k").news] == [second.pos]


def test_a_resumed_session_holding_news_past_500_collects_it_again_in_order(store: Store) -> None:
    """A named session resumed by a face that holds news: past 500 waiting, it goes back to
    what it was resumed at (nothing taken yet), and collects the news again, in order."""
    from comity.store import Put

    alice = store.session("alice")
    keys = [f"k/{i:03}" for i in range(501)]
    first = store.session("carol", name="reader")
    first.get_many(keys)
    first.save()  # the keys it follows, kept: resumed below
    carol = store.session("carol", name="reader")
    carol.holds_news = True
    last = alice.txn(ops=[Put(k, 0) for k in keys]).pos
    store.news_limit = 1000
    assert len(carol.get("k/000").news) == 501  # more than 500 waiting: forgotten, to be collected again
    assert carol.take_news() == ([], True)
    store.news_limit = 50
    assert [n["pos"] for n in carol.get("k/000").news] == list(range(last - 500, last - 450))


def test_a_key_no_longer_followed_is_not_news_of_a_keyed_answer(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dropped key keeps how far it was shown, but its later events are left to news(): a
    keyed answer that reads by key from before that point does not carry them."""
    monkeypatch.setattr(comity.store._api, "_KEY_ROWS", 0)  # a key lookup costs nothing: read by key
    a, b = store.session("a"), store.session("b")
    a.put("k", 0)
    elsewhere = b.put("elsewhere", 1)  # a's position stays behind this
    x = b.put("x", 1)
    assert [n["pos"] for n in a.get("x").news] == [x.pos]
    a.interest.discard("x")
    assert a.put("k", 1, keep_both=True).news == []  # "x" keeps its point
    later = b.put("x", 2, keep_both=True)
    theirs = b.put("k", 2, keep_both=True)
    assert [n["pos"] for n in a.get("k").news] == [theirs.pos]
    assert [n["pos"] for n in a.news().events] == [elsewhere.pos, later.pos]


def test_a_resumed_session_capped_then_read_from_its_furthest_key_shows_the_others_by_key(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed session whose keys were shown to different points, capped once: the next
    answer reads the log from the furthest point, and asks by key for the keys kept together
    at the capped point; none of their events is missed."""
    monkeypatch.setattr(comity.store._api, "_KEY_ROWS", 0)  # a key lookup costs nothing: read by key
    b = store.session("b")
    first = store.session("r", name="reader")
    first.get_many(["k", "y"])
    elsewhere = b.put("elsewhere", 0)  # the reader's position stays behind this
    k1 = b.put("k", 1)
    assert [n["pos"] for n in first.get("y").news] == [k1.pos]
    first.interest.discard("k")
    k2, k3 = b.put("k", 2, keep_both=True), b.put("k", 3, keep_both=True)
    y1 = b.put("y", 1)
    assert [n["pos"] for n in first.get("y").news] == [y1.pos]  # "k" stays at its point, "y" runs ahead
    first.save()
    reader = store.session("r", name="reader")
    reader.interest.add("k")
    store.news_limit = 1
    assert [n["pos"] for n in reader.get("y").news] == [k2.pos]  # capped before "y"'s point
    store.news_limit = 100
    assert [n["pos"] for n in reader.get("y").news] == [k3.pos]
    assert [e["pos"] for e in reader.news().events] == [elsewhere.pos]


def test_a_keyed_answer_with_exactly_the_cap_of_news_is_not_capped(store: Store) -> None:
    """As many pieces of news as the cap: all of them, and the answer says nothing was left."""
    a, b = store.session("a"), store.session("b")
    a.get("k")
    theirs = [b.put("k", i, keep_both=True).pos for i in range(2)]
    store.news_limit = 2
    got = a.get("k")
    assert ([n["pos"] for n in got.news], got.news_truncated) == (theirs, False)
    assert a.get("k").news == []


def test_keys_asked_by_key_past_the_cap_are_capped_and_come_next(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys just followed, asked by key, with more news than a cap of 100: the answer is capped
    at 100 and the rest comes with the next one."""
    from comity.store import Put

    monkeypatch.setattr(comity.store._api, "_KEY_ROWS", 0)  # a key lookup costs nothing: read by key
    a, b = store.session("a"), store.session("b")
    a.put("y", 0)
    b.put("elsewhere", 0)  # a's position stays behind this
    keys = [f"k/{i:03}" for i in range(101)]
    last = b.txn(ops=[Put(k, 1) for k in keys]).pos
    assert a.put("y", 1, keep_both=True).news == []  # "y" shown ahead, past the keys' events
    a.interest.update(keys)
    store.news_limit = 100
    first = a.get("y")
    assert ([n["pos"] for n in first.news], first.news_truncated) == (list(range(last - 100, last)), True)
    assert [n["pos"] for n in a.get("y").news] == [last]


@pytest.mark.parametrize("notes", [1, 2])
def test_keys_asked_by_key_read_past_notes_that_are_never_news(store: Store, monkeypatch: pytest.MonkeyPatch, notes: int) -> None:
    """A key asked by key whose first page holds events that are never news (a refused claim's
    note): the read goes on past them, each piece of news comes once, in order, capped."""
    from comity.store import Note, Put

    monkeypatch.setattr(comity.store._api, "_KEY_ROWS", 0)  # a key lookup costs nothing: read by key
    a, b = store.session("a"), store.session("b")
    a.put("y", 0)
    b.put("elsewhere", 0)  # a's position stays behind this
    for _ in range(notes):
        b.txn(ops=[Note("@t", "task.claim-refused", {"reason": "stale"})], system=True)
    theirs = [b.txn(ops=[Put("@t", i, keep_both=True)], system=True).pos for i in range(3)]
    assert a.put("y", 1, keep_both=True).news == []  # "y" shown ahead, past "@t"'s events
    a.interest.add("@t")
    store.news_limit = 2
    first = a.get("y")
    assert ([n["pos"] for n in first.news], first.news_truncated) == (theirs[:2], True)
    assert [n["pos"] for n in a.get("y").news] == theirs[2:]



def test_a_write_without_a_request_id_records_no_outcome(store: Store) -> None:
    """Only a caller's request id is kept for retries: the id a session makes up for a write
    without one is in the log, and no outcome is recorded under it."""
    a = store.session("a")
    a.put("k", 1)
    made_up = a.log("k")[-1]["request_id"]
    assert made_up and a.recorded(made_up) is None
    a.put("k", 2, keep_both=True, request_id="mine")
    assert a.recorded("mine") is not None


# ------------------------------------------------ the survivors of the whole run of 1 December


def test_reads_wait_for_no_writer(tmp_path: Path, clock: VirtualClock) -> None:
    """Every read, a session's and the store's, runs in a read transaction: another process
    holding the store's write lock does not hold it up (with a busy timeout of 50 ms, a read
    that waited for the lock would be told the store is busy)."""
    import sqlite3

    from comity.store import Put

    store = comity.open(tmp_path / "s.db", clock=clock, rng=SeededRng(91), busy_timeout=0.05)
    alice = store.session("alice")
    store.session("bob", name="reader").close()  # kept in the store
    w = alice.put("k", 1, request_id="r-1")
    lease = alice.txn(ops=[Acquire("r", 10)])
    clock.advance(20)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        assert store.session("bob", name="reader").name == "reader"  # resumed: read, nothing to write
        bob = store.session("bob")
        assert [v.values for v in bob.get_many(["k"])] == [[1]]
        assert bob.catch_up() == ([], False)
        assert [e["pos"] for e in bob.log()] == [w.pos, lease.pos]
        assert bob.keys() == ["k"]
        assert [(v.key, v.values) for v in bob.scan("")] == [("k", [1])]
        assert bob.scan_values("") == [("k", [1])]
        expired, now = bob.expired_leases()
        assert [r.resource for r in expired] == ["r"] and now == clock.now()
        assert [r.resource for r in bob.leases()[0]] == ["r"]
        assert bob.now() == clock.now() and bob.head() == lease.pos
        assert bob.acted("alice") and not bob.acted("bob")
        recorded = bob.recorded("r-1")
        assert recorded is not None and recorded[1]["pos"] == w.pos
        assert store.info()["head"] == lease.pos
        assert store.compact(keep=1, dry_run=True)["events_to_delete"] == 0  # each event is its key's last
    finally:
        other.execute("ROLLBACK")
        other.close()
    alice.txn(ops=[Put("k", 2, keep_both=True)])  # the lock is free: writes go through again
    store.close()


def test_each_transaction_without_a_request_id_is_logged_under_an_id_of_its_own(store: Store) -> None:
    """A session makes up an id for each transaction it is given none for: one id for a
    transaction's events, another for the next (liveness counts one action per request id)."""
    from comity.store import Put

    a = store.session("a")
    a.put("k", 1)
    a.txn(ops=[Put("j", 1), Put("i", 1)])
    a.put("k", 2, keep_both=True)
    store.session("b").put("k", 3, keep_both=True)  # another session's first transaction
    ids = [e["request_id"] for e in a.log()]
    assert ids[1] == ids[2]
    assert len({ids[0], ids[1], ids[3], ids[4]}) == 4


def test_a_resumed_session_capped_on_a_new_key_then_following_as_many_keys_as_it_holds_ahead_shows_their_news(
    make_store: Callable[..., Store],
) -> None:
    """As the test above with four keys, with two: as many keys begun at the session's position
    as keys shown ahead of the capped answer ("k" and "j"). The keys at the position are still
    counted, and read: the event of "z" before the capped point comes, once."""
    store = make_store()
    _, resumed = _resumed_after_a_capped_answer(store)
    got = resumed.get_many(["z", "n/1"])[0].news
    assert [n["pos"] for n in got] == [1, 3]
    assert resumed.news().events == []


def test_a_refusal_note_says_nothing_seen_for_a_context_that_cannot_be_opened(store: Store) -> None:
    """A write refused by a guard before its operations were looked at may carry, on the
    refused key, something that is not a context (an operation's or a later guard's): the
    store never opened it, and its refusal note says nothing of what was seen."""
    from comity.errors import StaleContext
    from comity.store import Absent, Put, Unchanged

    alice, bob = store.session("alice"), store.session("bob")
    alice.create("k", 1)
    with pytest.raises(StaleContext):
        bob.txn(guards=[Absent("k")], ops=[Put("k", 2, context="not a context")])
    note = bob.log("@refused")[-1]
    assert (note["target"], note["write"], note["error"]) == ("k", "put", "stale_context")
    assert "seen" not in note
    with pytest.raises(StaleContext):
        bob.txn(guards=[Absent("k"), Unchanged("k", "not a context")], ops=[Put("other", 1)])
    note = bob.log("@refused")[-1]
    assert (note["target"], note["write"], note["error"]) == ("k", "guard", "stale_context")
    assert "seen" not in note


def test_a_cut_off_replicas_provisional_write_is_recorded_under_the_callers_request_id_and_digest(
    make_store: Callable[..., Store], tmp_path: Path, clock: VirtualClock
) -> None:
    """Cut off from its authority, a replica keeps a write guarded by a lease provisionally:
    its outcome is recorded only under a request id the caller gave, a retry with it and the
    same digest is answered from the record (other operations or not), and nothing is written twice."""
    from comity.store import Holds, Put

    from sync_support import make_replica

    upstream = make_store("up.db")
    replica = make_replica(upstream, tmp_path / "a.db", clock)
    alice = replica.session("alice")
    token = _acquire(alice, "files", 60)  # at the authority, heard here
    replica.wire.cut = True

    def write(value: int, **kw: str) -> comity.store.TxnResult:
        return alice.txn(guards=[Holds("files", token)], ops=[Put("files/a", value, keep_both=True)], **kw)

    first = write(1)
    assert first.results[0]["provisional"] == [["files", token]]
    assert alice.recorded(alice.log("files/a")[-1]["request_id"]) is None  # no id given: no outcome kept
    once = write(2, request_id="r-1", digest="d-1")
    again = write(3, request_id="r-1", digest="d-1")
    assert not once.replayed and again.replayed and again.results == once.results
    assert sorted(alice.get("files/a").values) == [1, 2]
    replica.store.close()


def test_expired_leases_lists_a_thousand_unless_asked_for_more(store: Store, clock: VirtualClock) -> None:
    s = store.session("alice")
    s.txn(ops=[Acquire(f"jobs/{i:04}", 10) for i in range(1001)])
    clock.advance(10)
    assert len(s.expired_leases()[0]) == 1000
    assert len(s.expired_leases(limit=1001)[0]) == 1001


def test_news_held_for_a_face_says_it_was_capped_when_any_answer_that_collected_it_was(store: Store) -> None:
    """A session holding news for a face: an answer capped, then one that collects the rest,
    before the face takes it. What the face takes says an answer was capped."""
    a, b = store.session("a"), store.session("b")
    a.holds_news = True
    a.get("k")
    theirs = [b.put("k", i, keep_both=True).pos for i in range(3)]
    store.news_limit = 2
    assert a.get("k").news_truncated
    store.news_limit = 50
    assert not a.get("k").news_truncated
    news, truncated = a.take_news()
    assert [n["pos"] for n in news] == theirs and truncated


# ------------------------------------------------------------------- snapshots


def test_reads_inside_a_snapshot_see_one_moment_and_share_one_transaction(make_store: Callable[..., Store]) -> None:
    st, other = make_store(), make_store()  # the same store, opened twice: two connections
    a, b = st.session("alice"), other.session("bob")
    a.put("x", 1)
    a.put("y", 1)
    x, y = b.get("x"), b.get("y")
    begun = count_transactions(st)
    with a.snapshot():
        seen = [a.get("x").values]
        b.put("x", 2, context=x.context)  # committed meanwhile, through the other connection
        b.put("y", 2, context=y.context)
        seen += [a.get("y").values, a.get("x").values, [v for v in a.get_many(["x", "y"])[1].values]]
        a.leases("")
        a.scan_values("")
    assert seen == [[1], [1], [1], [1]]  # as of the moment the snapshot began
    assert begun == [False]  # one read transaction for all of them
    after = a.get("x")
    assert after.values == [2]
    assert sorted(n["key"] for n in after.news) == ["x", "y"]  # news of both, once the snapshot is over
    assert a.get("y").news == []


def test_nothing_is_written_inside_a_snapshot_by_this_thread_and_the_snapshot_goes_on(store: Store) -> None:
    import threading

    a, c = store.session("alice"), store.session("carol")
    x = a.put("x", 1)
    head = a.head()
    written: list[int] = []
    with a.snapshot():
        with pytest.raises(RuntimeError, match=r"inside Session.snapshot\(\)"):
            a.put("x", 2, context=x.context)
        with pytest.raises(RuntimeError, match="snapshot"):  # any session of the store, in this thread
            c.put("z", 1)
        assert a.get("x").values == [1]  # the snapshot goes on
        # another thread's write is not refused (on SQLite it waits for the snapshot to end)
        t = threading.Thread(target=lambda: written.append(c.put("w", 1).pos))
        t.start()
    t.join(30)
    assert written and a.get("w").values == [1]
    assert [e["key"] for e in a.log(after=head)] == ["w"]  # nothing of the refused writes
    assert a.put("x", 3, context=x.context).values == [3]  # after it, writes go


def test_a_snapshot_nests_and_ends_with_an_exception(store: Store) -> None:
    a = store.session("alice")
    x = a.put("x", 1)
    begun = count_transactions(store)
    with a.snapshot():
        with a.snapshot():
            a.get("x")
        a.get("x")
    assert begun == [False]
    with pytest.raises(KeyError):
        with a.snapshot():
            a.get("x")
            raise KeyError("x")
    assert a.put("x", 2, context=x.context).values == [2]  # the snapshot ended with it


def test_a_skim_of_the_log_is_its_events_positions_keys_and_ops_and_events_at_reads_them_whole(store: Store) -> None:
    a, b = store.session("alice"), store.session("bob")
    for i in range(300):
        a.put(f"a/{i}", i)
        b.put(f"b/{i}", i)
    with store.backend.transaction(write=False) as tx:
        every = tx.events(0, limit=1000)
        skim = tx.skim(0, limit=1000)
        not_bobs = tx.skim(0, exclude_session=b.id, limit=1000)
        assert [(e.pos, e.key, e.op) for e in every] == [tuple(k) for k in skim] and len(skim) == 600
        assert [k.key for k in not_bobs] == [f"a/{i}" for i in range(300)]
        assert [k.pos for k in tx.skim(every[10].pos, limit=3)] == [e.pos for e in every[11:14]]
        wanted = [e.pos for e in reversed(every)][:550]  # more than one statement's worth on SQLite, out of order
        assert tx.events_at(wanted) == every[50:]
        assert tx.events_at([every[0].pos, 10**9]) == every[:1]  # a position not in the log: not there
