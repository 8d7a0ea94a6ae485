"""Replicas and anti-entropy, in one process: what merges, what is forwarded, what fails fast.

The upstream runs on every backend (``make_store``); replicas are store files cloned
from it.  Each replica reaches the upstream over a :class:`Wire` the test can cut (a
partition) and replay (duplicated, reordered, interrupted exchanges).  Time is the
virtual clock; nothing sleeps.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import pytest

import comity
import comity.sync
from comity import Invalid, StaleContext, Unavailable
from comity.store import Put, Unchanged
from comity.coord import next_number, reserve_block
from comity.render import news_line
from comity.runtime import VirtualClock
from comity.sync import CONFLICT_PREFIX, apply, state_hash
from comity.work import Board, why

from sync_support import Replica, make_replica, same_state, values

Factory = Callable[..., comity.Store]


@pytest.fixture
def upstream(make_store: Factory) -> comity.Store:
    return make_store("up.db")


@pytest.fixture
def replicas(upstream: comity.Store, tmp_path: Path, clock: VirtualClock) -> Any:
    made: list[Replica] = []

    def make(name: str) -> Replica:
        r = make_replica(upstream, tmp_path / f"{name}.db", clock)
        made.append(r)
        return r

    yield make
    for r in made:
        r.store.close()


# ------------------------------------------------------------------ replicas


def test_a_clone_is_a_new_replica_of_the_same_store_with_an_upstream(upstream: comity.Store, replicas: Any, tmp_path: Path) -> None:
    upstream.session("alice").put("notes/a", 1)
    a = replicas("a")
    assert a.store.store_id == upstream.store_id
    assert a.store.replica_id != upstream.replica_id
    assert a.store.upstream is not None
    assert values(a.store, "notes/a") == [1]
    # A context read upstream is good on the replica (the same store, the same seal).
    ctx = upstream.session().get("notes/a").context
    a.session("bob").put("notes/a", 2, context=ctx)
    with pytest.raises(Invalid) as e:
        comity.sync.clone(str(tmp_path / "up.db"), tmp_path / "a.db")
    assert e.value.field == "DEST"
    with pytest.raises(Invalid) as e:
        comity.sync.clone(str(tmp_path / "nothing.db"), tmp_path / "z.db")
    assert e.value.field == "SOURCE"


def test_concurrent_writes_become_siblings_on_every_replica_and_a_later_write_resolves_them(
    upstream: comity.Store, replicas: Any
) -> None:
    up = upstream.session("carol")
    up.put("plan", "v0")
    a, b = replicas("a"), replicas("b")
    ctx_a, ctx_b = a.session().get("plan").context, b.session().get("plan").context
    a.session("alice").put("plan", "alice's", context=ctx_a)
    b.session("bob").put("plan", "bob's", context=ctx_b)
    up.put("plan", "carol's", context=up.get("plan").context)
    for r in (a, b, a):
        assert r.sync().complete
    for s in (upstream, a.store, b.store):
        assert values(s, "plan") == ["alice's", "bob's", "carol's"]
    assert same_state(upstream, a.store, b.store)
    # Resolved by a write that saw all three, then the resolution reaches everyone.
    v = a.session("alice").get("plan")
    a.session("alice").put("plan", "merged", context=v.context)
    a.sync(), b.sync()
    assert values(b.store, "plan") == ["merged"] == values(upstream, "plan")
    assert same_state(upstream, a.store, b.store)


def test_crdt_keys_merge_and_tombstones_follow_the_same_rules(upstream: comity.Store, replicas: Any) -> None:
    up = upstream.session("carol")
    up.update("count", "inc", 1, type="pncounter")
    up.put("gone", "x")
    up.put("kept", "x")
    a = replicas("a")
    sa = a.session("alice")
    sa.update("count", "inc", 5)
    sa.update("tags", "add", "db", type="orset")
    up.update("count", "dec", 2)
    up.update("tags", "add", "api", type="orset")
    sa.delete("gone", context=sa.get("gone").context)  # nobody else touched it: it goes everywhere
    sa.delete("kept", context=sa.get("kept").context)
    up.put("kept", "y", context=up.get("kept").context)  # concurrent with the delete: the write stays
    a.sync()
    for s in (upstream, a.store):
        assert values(s, "count") == [4]
        assert values(s, "tags") == [sorted(["api", "db"])] or sorted(values(s, "tags")[0]) == ["api", "db"]
        assert values(s, "gone") == []
        assert values(s, "kept") == ["y"]
    assert "gone" not in upstream.session().keys("") and "gone" in upstream.session().keys("", deleted=True)
    assert same_state(upstream, a.store)
    sa.update("count", "inc", 1)  # the next update merges the siblings for good
    assert values(a.store, "count") == [5]


def test_events_keep_their_dot_agent_and_time_and_news_comes_once(upstream: comity.Store, replicas: Any) -> None:
    a = replicas("a")
    watcher = a.session("watcher", name="watch")
    watcher.news()
    w = upstream.session("alice").put("notes/x", "hello")
    theirs = [e for e in upstream.session().log("notes/x") if e["pos"] == w.pos][0]
    a.sync()
    mine = [e for e in a.session().log("notes/x") if e.get("origin_pos") == w.pos]
    assert len(mine) == 1
    for field in ("dot", "agent", "hlc", "session", "op", "value"):
        assert mine[0][field] == theirs[field]
    news = watcher.news().events
    assert [(n["agent"], n["key"]) for n in news] == [("alice", "notes/x")]
    a.sync()  # nothing new: nothing twice
    assert a.sync().received == 0
    assert watcher.news().events == []


def test_notes_on_a_key_with_no_row_arriving_in_one_batch_are_all_in_its_log(upstream: comity.Store, replicas: Any) -> None:
    """Refusals (``@refused``) and heartbeats (``@agent/NAME``) are notes on keys that never
    get a row.  Arriving several in one batch, each starts no chain, as written locally: a
    keyed read of the log shows every one (chained to each other, it showed only the first)."""
    from comity.coord import heartbeat
    from comity.store._txn import Note

    a = replicas("a")
    r = a.session("alice")
    for n in (1, 2, 3):
        r.txn(ops=[Note("@refused", "refused", {"n": n})], system=True)
    a.sync()
    assert [e["n"] for e in a.session().log("@refused")] == [1, 2, 3]
    assert [e["n"] for e in upstream.session().log("@refused")] == [1, 2, 3]
    bob = upstream.session("bob")
    beats = [heartbeat(bob) for _ in range(3)]
    a.sync()
    assert len(upstream.session().log("@agent/bob")) == len(beats)
    assert len(a.session().log("@agent/bob")) == len(beats)
    # and a key that gets a row keeps its whole history, first events included
    up = upstream.session("carol")
    w = up.create("fresh", 1)
    up.put("fresh", 2, context=w.context)
    a.sync()
    assert [e["value"] for e in a.session().log("fresh")] == [1, 2]


def test_why_spans_replicas(upstream: comity.Store, replicas: Any) -> None:
    upstream.session("alice").put("notes/plan", "v0")
    a = replicas("sandbox")
    ctx = a.session().get("notes/plan").context
    up = upstream.session("alice")
    up.put("notes/plan", "alice's", context=up.get("notes/plan").context)
    a.session("bob").put("notes/plan", "bob's", context=ctx)
    a.sync()
    for store in (upstream, a.store):
        lines = why(store.session(), "notes/plan")["explanations"]
        assert any("bob's put" in x and "alice's put" in x and "concurrent" in x and "on replica" in x for x in lines), lines


# ------------------------------------------------------------------ exchanges that go wrong


def test_sync_is_idempotent_and_survives_duplicated_reordered_and_interrupted_exchanges(upstream: comity.Store, replicas: Any) -> None:
    up = upstream.session("carol")
    a = replicas("a")
    sa = a.session("alice")
    for i in range(40):
        up.put(f"up/{i}", i)
        sa.put(f"a/{i}", i)
        if i % 3 == 0:
            up.update("n", "inc", 1, type="gcounter")
            sa.update("n", "inc", 2, type="gcounter")
    # Batches of at most 7 events, pulled and pushed by hand so they can be replayed.
    me, sid = a.store.replica_id, a.store.store_id
    pulls = []
    have = comity.sync.sync(a.store, a.link(), push=False, pull=False).vector
    while True:
        answer = a.link().call({"type": "pull", "store": sid, "have": have})
        pulls.append(answer["batch"])
        have = {**have, **{o: r[1] for o, r in answer["batch"]["ranges"].items()}}
        if answer["batch"]["complete"]:
            break
        a.wire.endpoint.max_events = 7
    random.Random(5).shuffle(pulls)
    for batch in pulls + pulls:  # reordered and duplicated: later batches wait for earlier ones
        apply(a.store, batch)
    for batch in pulls:
        apply(a.store, batch)
    # An exchange cut off after two messages, then finished by the next one.
    a.wire.fail_after = 2
    with pytest.raises(Unavailable):
        a.sync(max_events=5)
    a.wire.fail_after = None
    assert a.sync().in_sync
    before = state_hash(a.store)
    for message in list(a.wire.log):  # every message of every exchange again, in a scrambled order
        if message["type"] == "push":
            a.wire.endpoint.handle(message)
    random.Random(7).shuffle(pulls)
    for batch in pulls:
        apply(a.store, batch)
    assert state_hash(a.store) == before
    assert same_state(upstream, a.store)
    assert a.sync().in_sync
    assert values(upstream, "n") == [14 * 3] == values(a.store, "n")
    assert len(upstream.session().keys("up/")) == 40 == len(upstream.session().keys("a/"))
    # No event twice in either log.
    for store in (upstream, a.store):
        seen = [(e["dot"][0], e.get("origin_pos", e["pos"]), e["key"]) for e in store.session().log(limit=10_000)]
        assert len(seen) == len(set(seen))
    assert me in a.sync().vector


def test_the_cost_of_a_sync_follows_what_differs_not_the_store(upstream: comity.Store, replicas: Any) -> None:
    up = upstream.session("carol")
    for i in range(2000):
        up.put(f"k/{i:05d}", {"i": i, "pad": "x" * 40})
    a = replicas("a")
    first = a.sync()
    assert first.received == 0  # the clone holds everything already
    full = a.link()
    a.sync()
    for i in range(0, 2000, 200):
        up.put(f"k/{i:05d}", {"i": -i}, context=up.get(f"k/{i:05d}").context)
    res = a.sync()
    assert res.received == 10 and res.keys_received == 10
    everything = sum(len(json.dumps(v.values)) + len(k) for k, v in ((f"k/{i:05d}", a.session().get(f"k/{i:05d}")) for i in range(2000)))
    assert res.bytes < everything / 20, (res.bytes, everything)
    quiet = a.sync()
    assert quiet.received == quiet.sent == 0 and quiet.bytes < 1000 and full.bytes == 0


# ------------------------------------------------------------------ the authority


def test_what_needs_the_authority_is_forwarded_while_connected(upstream: comity.Store, replicas: Any) -> None:
    a, b = replicas("a"), replicas("b")
    w = a.session("alice").create("files/db/0267.sql", "alice's")
    assert w.values == ["alice's"]
    assert values(upstream, "files/db/0267.sql") == ["alice's"]  # it happened upstream, at once
    with pytest.raises(StaleContext) as e:
        b.session("bob").create("files/db/0267.sql", "bob's")
    assert "alice" in e.value.message
    assert json.dumps(e.value.to_json())  # the authority's refusal, with its next steps, is this replica's error
    assert values(b.store, "files/db/0267.sql") == ["alice's"]  # the refusal brought the key back
    numbers = [next_number(a.session("alice"), "mig"), next_number(b.session("bob"), "mig"), next_number(upstream.session("carol"), "mig")]
    assert numbers == [1, 2, 3]
    board_a, board_b = Board(a.session("alice")), Board(b.session("bob"))
    t = board_a.add("fix the parser")
    claim = board_a.claim(t["id"])
    with pytest.raises(comity.NotFound):
        board_b.claim(t["id"])  # b reads its own copy, which has not heard of the task yet
    b.sync()
    with pytest.raises(StaleContext):
        board_b.claim(t["id"])
    board_a.done(t["id"], claim.token, result="done")
    assert Board(upstream.session()).show(t["id"])["state"] == "done"
    assert a.store.session().get(f"@task/{t['id']}").values[0]["status"] == "done"


def test_a_cut_off_replica_works_alone_and_fails_fast_on_what_needs_the_authority(upstream: comity.Store, replicas: Any, clock: VirtualClock) -> None:
    a = replicas("a")
    a.sync()
    clock.advance(600)
    a.wire.cut = True
    sa = a.session("alice")
    sa.put("notes/offline", "still works")
    sa.update("hits", "inc", 3, type="gcounter")
    assert values(a.store, "notes/offline") == ["still works"]
    for attempt in (
        lambda: sa.create("files/0268.sql", "x"),
        lambda: next_number(sa, "mig"),
        lambda: Board(sa).add("a task"),
        lambda: comity.coord.reserve(sa, ["src/**"]),
    ):
        with pytest.raises(Unavailable) as e:
            attempt()
        assert e.value.details["upstream"] == a.store.upstream
        assert e.value.details["last_reached"] == pytest.approx(clock.now() - 600)
        assert "last reached" in e.value.message and "10 min ago" in e.value.message
    a.wire.cut = False
    res = a.sync()
    assert res.sent >= 2
    assert values(upstream, "notes/offline") == ["still works"] and values(upstream, "hits") == [3]


def test_escrowed_sequence_numbers_are_spent_offline_and_never_issued_twice(upstream: comity.Store, replicas: Any) -> None:
    a, b = replicas("a"), replicas("b")
    with pytest.raises(Invalid):
        reserve_block(upstream.session("carol"), "mig", 5)
    got = reserve_block(a.session("alice"), "mig", 5)
    assert (got["first"], got["last"], got["escrowed"]) == (1, 5, 5)
    reserve_block(b.session("bob"), "mig", 3)
    a.wire.cut = b.wire.cut = True
    issued = [next_number(a.session("alice"), "mig") for _ in range(5)]
    issued += [next_number(b.session("bob"), "mig") for _ in range(3)]
    issued += [next_number(upstream.session("carol"), "mig") for _ in range(2)]
    with pytest.raises(Unavailable):
        next_number(a.session("alice"), "mig")  # the block is spent and the authority is away
    a.wire.cut = b.wire.cut = False
    issued.append(next_number(a.session("alice"), "mig"))
    assert sorted(issued) == list(range(1, 12))
    a.sync(), b.sync()
    assert comity.sync.status(a.store)["escrow"] == []


def test_a_bounded_counter_never_goes_below_its_bound_across_a_partition(upstream: comity.Store, replicas: Any) -> None:
    up = upstream.session("carol")
    up.update("budget", "inc", 10, type="bcounter")
    a, b = replicas("a"), replicas("b")
    a.session("alice").update("budget", "escrow", 4)
    b.session("bob").update("budget", "escrow", 3)
    a.wire.cut = b.wire.cut = True
    spent = {"a": 0, "b": 0, "up": 0}
    for who, session in (("a", a.session("alice")), ("b", b.session("bob")), ("up", up)):
        while True:
            try:
                session.update("budget", "dec", 1)
                spent[who] += 1
            except (Unavailable, StaleContext):
                break
    assert spent == {"a": 4, "b": 3, "up": 3}
    a.wire.cut = b.wire.cut = False
    for r in (a, b, a):
        r.sync()
    for s in (upstream, a.store, b.store):
        assert values(s, "budget") == [0]
    with pytest.raises(StaleContext):
        up.update("budget", "dec", 1)


# ------------------------------------------------------------------ fencing on sync


def test_work_under_a_lease_taken_over_while_cut_off_is_fenced_when_it_arrives(
    upstream: comity.Store, replicas: Any, clock: VirtualClock
) -> None:
    up = upstream.session("carol")
    up.put("files/app.py", "v0")
    up.put("files/other.py", "o0")
    sandbox = replicas("sandbox")
    alice = sandbox.session("alice", name="alice-work")
    task = Board(alice).add("fix the app")
    claim = Board(alice).claim(task["id"], ttl=60)
    sandbox.wire.cut = True
    # Offline, alice keeps working under her lease: kept here, marked with her token.
    for key in ("files/app.py", "files/other.py"):
        Board(alice).write(key, f"alice's {key}", task=task["id"], token=claim.token, context=alice.get(key).context)
        assert [e for e in alice.log(key) if e["agent"] == "alice"][-1]["provisional"] == [[f"@task/{task['id']}", claim.token]]
    alice.news()
    # Upstream the lease runs out, bob takes the task over and rewrites app.py.
    clock.advance(120)
    bob = upstream.session("bob")
    take = Board(bob).claim(task["id"])
    assert take.token > claim.token
    Board(bob).write("files/app.py", "bob's", task=task["id"], token=take.token, context=bob.get("files/app.py").context)
    sandbox.wire.cut = False
    res = sandbox.sync()
    assert {f["key"] for f in res.fenced} == {"files/app.py", "files/other.py"}
    for s in (upstream, sandbox.store):
        assert values(s, "files/app.py") == ["bob's"]  # never applied over the successor's
        assert values(s, "files/other.py") == ["o0"]  # what it replaced comes back
        conflicts = s.session().keys(CONFLICT_PREFIX)
        assert len(conflicts) == 2
        kept = {s.session().get(k).values[0]["key"]: s.session().get(k).values[0] for k in conflicts}
        assert kept["files/app.py"]["value"] == "alice's files/app.py" and kept["files/app.py"]["agent"] == "alice"
        lines = why(s.session(), task["id"])["history"]
        assert any(h["op"] == "sync.fenced" and h["key"] == f"@task/{task['id']}" for h in lines)
        explained = why(s.session(), "files/app.py")["explanations"]
        assert any("fenced" in x and "alice" in x and "superseded" in x for x in explained), explained
    news = alice.news().events
    assert any(n["op"] == "sync.fence" and n["key"] == "files/app.py" for n in news), news
    assert same_state(upstream, sandbox.store)


def test_offline_work_under_a_lease_nobody_took_is_applied(upstream: comity.Store, replicas: Any, clock: VirtualClock) -> None:
    sandbox = replicas("sandbox")
    alice = sandbox.session("alice")
    task = Board(alice).add("slow work")
    claim = Board(alice).claim(task["id"], ttl=60)
    sandbox.wire.cut = True
    Board(alice).write("files/slow.py", "done slowly", task=task["id"], token=claim.token)
    clock.advance(600)  # expired, but nobody took it over
    sandbox.wire.cut = False
    assert sandbox.sync().fenced == []
    assert values(upstream, "files/slow.py") == ["done slowly"]
    assert upstream.session().keys(CONFLICT_PREFIX) == []


# ------------------------------------------------------------------ repair


def test_repair_by_digest_finds_what_the_logs_cannot(upstream: comity.Store, replicas: Any) -> None:
    a = replicas("a")
    for i in range(50):
        upstream.session("carol").put(f"k/{i}", i)
    a.sync()
    # A state changed behind the log's back (as a lost or compacted log would leave it).
    from comity.causal import DVVSet
    from comity.store import KeyRow

    with a.store.backend.transaction(write=True) as tx:
        row = tx.load("k/7")
        assert row is not None
        clock = DVVSet.from_stored_json(json.loads(row.clock)).event(DVVSet.from_stored_json(json.loads(row.clock)).join(), ["patched"], "rZ")
        tx.save("k/7", KeyRow(json.dumps(clock.to_json(), separators=(",", ":")), row.hlc, row.pos, True), row)
    assert not same_state(upstream, a.store)
    assert a.sync().received == 0  # the digests agree: nothing to send by the logs
    done = comity.sync.repair(a.store, a.link())
    assert done["differing"] == 1 and done["keys_sent"] == 1
    assert values(upstream, "k/7") == ["patched"] and same_state(upstream, a.store)


def test_a_provisional_delete_under_a_lease_is_a_tombstone_here_and_there(upstream: comity.Store, replicas: Any) -> None:
    from comity.store import Acquire, Delete, Holds

    sandbox = replicas("sandbox")
    alice = sandbox.session("alice")
    alice.put("files/old.py", "x")
    token = alice.txn(ops=[Acquire("files", 60)]).results[0]["token"]  # at the authority, while connected
    sandbox.wire.cut = True
    done = alice.txn(guards=[Holds("files", token)], ops=[Delete("files/old.py", alice.get("files/old.py").context)])
    assert done.results[0]["provisional"] == [["files", token]]
    assert alice.get("files/old.py").values == []  # a tombstone here already, marked with the token
    assert alice.keys("files/") == [] and alice.keys("files/", deleted=True) == ["files/old.py"]
    sandbox.wire.cut = False
    assert sandbox.sync().fenced == []
    assert values(upstream, "files/old.py") == []


# ------------------------------------------------------------ stale refusals on a replica


def test_a_stale_refusal_on_a_replica_names_no_event_that_did_not_write_the_value(upstream: comity.Store, replicas: Any) -> None:
    """A write with no context over a key whose state reached the replica without its events
    (a forwarded create brought the key back, the pull that follows was lost) names nobody
    here: not the key's oldest event, a note made before the key had a row."""
    from comity.store._txn import Note

    a = replicas("a")
    upstream.session("carol").txn(ops=[Note("k", "review", {"n": 1})], system=True)
    a.sync()  # the replica holds carol's note on k, a key with no row yet
    w = upstream.session("alice").create("k", 1)
    upstream.session("bob").put("k", 2, context=w.context)
    a.wire.fail_after = 1  # the forwarded create is answered; the link breaks before the pull
    with pytest.raises(StaleContext) as e:
        a.session("dave").create("k", 9)
    assert "bob" in e.value.message  # the authority's refusal
    assert values(a.store, "k") == [2]  # the key came back, its events did not
    a.wire.fail_after, a.wire.cut = None, True
    for write in (lambda s: s.put("k", 9), lambda s: s.txn(guards=[Unchanged("k", None)], ops=[Put("other", 1)])):
        with pytest.raises(StaleContext) as e:
            write(a.session("dave"))
        assert "carol" not in e.value.message and "review" not in e.value.message
        assert "written by another writer" in e.value.message
        assert e.value.news == []
    a.wire.cut = False
    a.sync()  # the events arrive: the key's last write is named
    with pytest.raises(StaleContext) as e:
        a.session("dave").put("k", 9)
    assert [(n["agent"], n["op"]) for n in e.value.news] == [("bob", "put")]
    assert "written by bob (put at pos" in e.value.message


def test_a_stale_refusal_on_a_replica_names_only_writes_the_writer_had_not_seen(upstream: comity.Store, replicas: Any) -> None:
    """Log positions differ between replicas: a context read upstream carries the upstream's,
    and a write whose state came back first (a forwarded write) has its event appended after
    reads that saw it.  The refusal names the writes the writer's context had not seen."""
    a = replicas("a")
    for i in range(5):
        a.session("dave").put(f"x/{i}", i)  # the replica's log runs ahead of the upstream's
    upstream.session("alice").put("k", 1)
    ctx = upstream.session("bob").get("k").context  # read upstream: seen alice's write
    upstream.session("carol").put("k", 2, context=ctx)
    a.sync()
    for write in (lambda s: s.put("k", 3, context=ctx), lambda s: s.txn(guards=[Unchanged("k", ctx)], ops=[Put("other", 1)])):
        with pytest.raises(StaleContext) as e:
            write(a.session("bob"))
        assert [(n["agent"], n["op"]) for n in e.value.news] == [("carol", "put")], e.value.news
        assert "alice" not in e.value.message

    # A state that comes back before its events: bob reads it here, its event arrives after.
    w = upstream.session("alice").create("j", 1)
    a.wire.fail_after = 1
    with pytest.raises(StaleContext):
        a.session("dave").create("j", 9)  # brings j back (alice's create), not its event
    a.wire.fail_after = None
    here = a.session("bob").get("j").context  # seen alice's create
    upstream.session("carol").put("j", 2, context=w.context)
    a.sync()  # alice's create and carol's put arrive, both after bob's read
    with pytest.raises(StaleContext) as e:
        a.session("bob").put("j", 3, context=here)
    assert [(n["agent"], n["op"]) for n in e.value.news] == [("carol", "put")], e.value.news
    assert "alice" not in e.value.message


def test_a_refusal_forwarded_from_the_authority_names_positions_of_this_replicas_log(upstream: comity.Store, replicas: Any) -> None:
    """A create refused by the authority names the writes it found there; on the replica each
    is named at its position in the replica's log (matched by its dot and origin position),
    or, when the replica does not hold it yet, without a position: never at the authority's."""
    a, b = replicas("a"), replicas("b")
    for i in range(5):
        a.session("dave").put(f"x/{i}", i)  # the replica's log runs ahead of the upstream's
    upstream.session("alice").create("k", 1)
    up_put = upstream.session("bob").put("k", 2, context=upstream.session().get("k").context)

    with pytest.raises(StaleContext) as e:
        a.session("dave").create("k", 9)  # refused upstream; its pull brings bob's put here
    mine = [x for x in a.session().log("k") if x["agent"] == "bob"]
    assert len(mine) == 1 and mine[0]["pos"] != up_put.pos
    assert e.value.message.startswith(f"'k' already exists: written by bob (put at pos {mine[0]['pos']});")
    assert e.value.news == [{k: v for k, v in mine[0].items() if k != "value"}]
    assert e.value.key == "k" and [s.verb for s in e.value.next] == ["read"]

    # An event the replica does not hold: its dot and origin position, no position here.
    up_put2 = upstream.session("carol").put("j", 1)
    a.wire.fail_after = 1  # the forwarded create is answered; the link breaks before the pull
    with pytest.raises(StaleContext) as e:
        a.session("dave").create("j", 9)
    a.wire.fail_after = None
    assert "at pos" not in e.value.message
    assert "written by carol (put, not in this log yet);" in e.value.message
    [n] = e.value.news
    assert "pos" not in n and (n["dot"][0], n["origin_pos"]) == (upstream.replica_id, up_put2.pos)
    assert news_line(n) == "carol put j (not in this log yet)"  # as the CLI and MCP show the error's news
    a.sync()
    with pytest.raises(StaleContext) as e:
        a.session("dave").create("j", 9)
    assert [(n["agent"], n["pos"]) for n in e.value.news] == [(x["agent"], x["pos"]) for x in a.session().log("j")]

    # Writes made on replicas: one of this replica (its own position), one of another.
    a.session("erin").put("m", 1)
    b.session("fred").put("n", 1)
    a.sync(), b.sync()
    for key, writer in (("m", "erin"), ("n", "fred")):
        with pytest.raises(StaleContext) as e:
            a.session("dave").create(key, 9)
        [here] = a.session().log(key)
        assert e.value.message.startswith(f"'{key}' already exists: written by {writer} (put at pos {here['pos']});")
        assert e.value.news == [{k: v for k, v in here.items() if k != "value"}]


# ------------------------------------------------------------ a key's log when its state came alone


def test_a_keys_log_shows_its_notes_when_its_state_came_without_its_events(upstream: comity.Store, replicas: Any) -> None:
    """A key whose state reached a replica without its events (a forwarded create brought it
    back, the pull that follows was lost) has a row at no position of this log; its log still
    shows the notes the replica holds on it, and then the events as they arrive."""
    from comity.store._txn import Note

    a = replicas("a")
    upstream.session("carol").txn(ops=[Note("k", "review", {"n": 1})], system=True)
    a.sync()  # the replica holds carol's note on k, a key with no row yet
    assert [e["op"] for e in a.session().log("k")] == ["review"]
    upstream.session("alice").create("k", 1)
    a.wire.fail_after = 1  # the forwarded create is answered; the link breaks before the pull
    with pytest.raises(StaleContext):
        a.session("dave").create("k", 9)
    assert values(a.store, "k") == [1]  # the key came back, its events did not
    assert [(e["agent"], e["op"]) for e in a.session().log("k")] == [("carol", "review")]
    a.wire.fail_after = None
    a.sync()
    assert [(e["agent"], e["op"]) for e in a.session().log("k")] == [("carol", "review"), ("alice", "create")]


def test_a_keys_log_shows_its_notes_when_a_pushed_state_came_without_its_events(upstream: comity.Store, replicas: Any) -> None:
    """The same on the upstream, on either engine: a key's state pushed from a replica without
    its events (a batch that does not start within what the upstream holds brings its states
    only) leaves the notes on that key in its log."""
    from comity.store._txn import Note
    from comity.sync._wire import state_out

    a = replicas("a")
    upstream.session("carol").txn(ops=[Note("k", "review", {"n": 1})], system=True)
    a.session("dave").put("k", 1)
    with a.store.backend.transaction(write=False) as tx:
        row = tx.load("k")
    assert row is not None
    apply(upstream, {"events": [], "ranges": {}, "states": {"k": state_out(row)}, "leases": []})
    assert values(upstream, "k") == [1]
    assert [(e["agent"], e["op"]) for e in upstream.session().log("k")] == [("carol", "review")]
    a.sync()  # dave's put arrives: it follows the note
    assert [(e["agent"], e["op"]) for e in upstream.session().log("k")] == [("carol", "review"), ("dave", "put")]
