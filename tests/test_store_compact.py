"""Log compaction (Store.compact, `comity compact`): history that does not grow forever.

Before the horizon only each key's and lease's last event stays; what the store needs
after it (writes over old contexts, leases, news of named sessions, `comity check`,
replication's refusal of a replica it can no longer bring up to date) still works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import comity
from comity import Invalid, StaleContext, Unavailable
from comity.store import Acquire, Renew, check
from comity.work import Board

from conftest import Factory


def _history(store: comity.Store) -> dict[str, str]:
    """Several writes per key, a lease renewed, a task claimed and done; returns latest contexts."""
    s = store.session("writer")
    ctx: dict[str, str] = {}
    for i in range(30):
        for key in ("a", "b", "c"):
            ctx[key] = s.put(key, i, context=ctx.get(key)).context
    token = s.txn(ops=[Acquire("deploy", 60)]).results[0]["token"]
    s.txn(ops=[Renew("deploy", token, 120)])
    board = Board(s)
    board.add("write the report")
    c = board.claim("T-1", ttl=60)
    board.done("T-1", c.token, result="ok")
    return ctx


def test_compaction_keeps_what_the_store_needs(make_store: Factory) -> None:
    store = make_store()
    old = store.session("writer").get("a").context  # absent: a context that sees nothing
    ctx = _history(store)
    head = store.session().head()
    dry = store.compact(keep=5, dry_run=True)
    assert dry["dry_run"] and dry["deleted"] == 0 and dry["events_to_delete"] > 80
    assert len(store.session().log(after=0, limit=10_000)) == head  # nothing deleted by a dry run

    done = store.compact(keep=5)
    assert done["deleted"] == dry["events_to_delete"]
    s = store.session("reader")
    log = s.log(after=0, limit=10_000)
    assert log[-1]["pos"] == head and len(log) == head - done["deleted"]
    assert {e["pos"] for e in log} >= set(range(head - 4, head + 1))  # the latest `keep` events stay
    # Each key's last event stays: its next write chains to it, and `why` starts from it.
    for key in ("a", "b", "c"):
        assert s.get(key).value == 29
        assert s.log(key, limit=100)[-1]["value"] == 29
        ctx[key] = store.session("writer").put(key, 30, context=ctx[key]).context
    with pytest.raises(StaleContext):
        store.session("late").put("a", "stale", context=old)
    # A lease keeps its length (read from its last event) and its token.
    lease = store.session("writer").txn(ops=[Renew("deploy", 1)]).results[0]
    assert lease["ttl"] == 120 and lease["token"] == 1
    assert Board(store.session("lead")).show("T-1")["status"] == "done"
    # Nothing is left to compact at the same horizon; the store reports the deletion.
    again = store.compact(keep=10_000, dry_run=True)
    assert again["events_to_delete"] == 0 and again["compacted_before"] == done["deleted"]


def test_a_compacted_sqlite_store_is_whole_and_smaller(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = comity.open(db)
    try:
        s = store.session("w")
        context = None
        for i in range(3000):
            context = s.put("big", {"n": i, "pad": "x" * 500}, context=context).context
        before = store.size()
        report = store.compact(keep=10)
        assert report["size_after_bytes"] < before / 2
        assert store.size() == report["size_after_bytes"]
    finally:
        store.close()
    result = check(db)
    assert result.ok, [p.what for p in result.problems]
    assert result.facts["compacted"] == report["deleted"]


def test_compaction_stops_at_a_named_sessions_position(make_store: Factory) -> None:
    store = make_store()
    behind = store.session("bob", name="bob-1")
    behind.get("a")
    behind.save()
    ctx = _history(store)
    report = store.compact(keep=1)
    assert report["held_back_by_sessions"] and report["deleted"] == 0
    # Its news is whole: every write to the key it read, after its position.
    news = behind.news(limit=1000)
    assert len([e for e in news.events if e["key"] == "a"]) == 30 and not news.truncated
    assert ctx["a"]


def test_keep_must_be_a_positive_number_of_events(make_store: Factory) -> None:
    store = make_store()
    for bad in (0, -1, True, "10"):
        with pytest.raises(Invalid) as e:
            store.compact(keep=bad)  # type: ignore[arg-type]
        assert e.value.field == "keep"


def test_a_compaction_with_nothing_to_delete_reports_the_size_it_leaves(make_store: Factory) -> None:
    # Every event is its key's last: nothing goes, and the report still says the size after
    # (`comity bench store` read it and failed with KeyError on a store grown below its keyspace).
    store = make_store()
    s = store.session("writer")
    for key in ("a", "b", "c"):
        s.create(key, 1)
    report = store.compact(keep=1)
    assert report["events_to_delete"] == 0 and report["deleted"] == 0
    assert report["size_after_bytes"] == report["size_bytes"] > 0
    assert "size_after_bytes" not in store.compact(keep=1, dry_run=True)  # a dry run changes nothing: no "after"


def test_sync_refuses_a_replica_that_lacks_compacted_events(tmp_path: Path) -> None:
    from comity.sync._exchange import collect

    store = comity.open(tmp_path / "s.db")
    try:
        _history(store)
        store.compact(keep=3)
        with store.backend.transaction(write=False) as tx:
            with pytest.raises(Unavailable) as e:
                collect(tx, store.replica_id, {})
            assert e.value.details["problem"] == "compacted"
            head = tx.head()
            assert collect(tx, store.replica_id, {store.replica_id: head})["events"] == []
    finally:
        store.close()


def test_compact_cli_dry_run_and_init_reports_the_size(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = comity.open(db)
    _history(store)
    store.close()
    run = [sys.executable, "-m", "comity.cli", "--store", str(db)]
    dry = subprocess.run([*run, "compact", "--keep", "3", "--dry-run", "--json"], capture_output=True, text=True, check=True)
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["events_to_delete"] > 0 and report["deleted"] == 0
    done = subprocess.run([*run, "compact", "--keep", "3"], capture_output=True, text=True, check=True)
    assert f"deleted {report['events_to_delete']} of the events" in done.stdout
    init = subprocess.run([*run, "init", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(init.stdout)["size_bytes"] > 0
    text = subprocess.run([*run, "init"], capture_output=True, text=True, check=True)
    assert "on disk" in text.stdout


def test_bench_store_keeps_its_grown_store_where_asked_and_never_overwrites(tmp_path: Path) -> None:
    # `comity bench store --grown-store PATH`: the grown, compacted store is kept for the faces'
    # conformance suite (COMITY_CONFORMANCE_STORE); an existing file is refused, untouched.
    kept = tmp_path / "grown.db"
    bench = [sys.executable, "-m", "comity.cli", "bench", "store", "--ops", "100", "--concurrent", "0", "--followed", "0", "--json"]
    r = subprocess.run([*bench, "--log-events", "300", "--compact-keep", "100", "--grown-store", str(kept)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["grown_store"] == str(kept)
    from comity.bench.store import VALUE
    from comity.store import check as check_file

    report = check_file(kept)
    assert report.ok, report.to_json()
    store = comity.open(kept)
    try:
        assert store.session().get("seed/7").values == [VALUE]  # a seeded key, as the bench left it
    finally:
        store.close()
    before = kept.read_bytes()
    again = subprocess.run([*bench, "--log-events", "300", "--grown-store", str(kept)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "grown_store" in again.stderr and "exists" in again.stderr
    assert kept.read_bytes() == before
    no_log = subprocess.run([*bench, "--log-events", "0", "--grown-store", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=60)
    assert no_log.returncode == 2 and "--log-events" in no_log.stderr
