"""Group commit (comity.store._group): transactions that arrive together share one commit.

Each keeps its own all-or-nothing (a savepoint), a failed one affects only itself, and
nothing is acknowledged before the commit: checked in one process with the batch made
deterministic, and with a real process killed (SIGKILL) while its sessions write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import comity
from comity import StaleContext
from comity.store import Create, Put, Store

WAIT_S = 60.0


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.001)


class _Batch:
    """Holds the group's current writer inside its transaction until ``release``, so that
    the writes started meanwhile queue and are committed together, as the next batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.inside = threading.Event()
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._hold)
        self.thread.start()
        assert self.inside.wait(WAIT_S)

    def _hold(self) -> None:
        def work(tx: Any) -> None:
            self.inside.set()
            assert self.go.wait(WAIT_S)

        self.store.writes.run(work)

    def release_when_queued(self, n: int) -> None:
        _until(lambda: len(self.store.writes._queue) >= n, f"{n} writes queued")
        self.go.set()
        self.thread.join(WAIT_S)


def _run_all(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def one(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as e:  # noqa: BLE001 - kept for the assertions
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    return [threads, results]


def test_transactions_that_arrive_together_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    store = comity.open(tmp_path / "s.db")
    try:
        base = store.session("setup").put("shared", 1)
        store.session("setup2").put("shared", 2, context=base.context)  # base.context is stale now
        store.session("setup").create("taken", "first")
        sessions = [store.session(f"a{i}") for i in range(4)]
        commits_before = store.writes.commits
        hold = _Batch(store)
        threads, results = _run_all(
            [
                lambda: sessions[0].txn(ops=[Create("k/0", 0), Create("k/0b", 0)]),
                lambda: sessions[1].put("shared", 3, context=base.context),  # stale: refused alone
                lambda: sessions[2].txn(ops=[Create("k/2", 2), Create("k/2b", 2)]),
                lambda: sessions[3].create("taken", "again"),  # exists: refused alone
            ]
        )
        hold.release_when_queued(4)
        for t in threads:
            t.join(WAIT_S)
        assert store.writes.largest == 4  # the four were committed together
        # The held one, the four together, then the refusals' own notes in the log (one or two commits).
        assert store.writes.commits - commits_before in (3, 4)
        assert isinstance(results[1], StaleContext)
        assert isinstance(results[3], StaleContext)
        s = store.session()
        assert s.get("shared").value == 2
        assert [s.get(k).value for k in ("k/0", "k/0b", "k/2", "k/2b")] == [0, 0, 2, 2]
        assert s.get("taken").value == "first"
        # Each transaction's events are together in the log, in the order the batch ran them.
        puts = [e["key"] for e in s.log(after=0, limit=1000) if e["key"].startswith("k/")]
        assert puts in (["k/0", "k/0b", "k/2", "k/2b"], ["k/2", "k/2b", "k/0", "k/0b"])
    finally:
        store.close()


def test_a_failure_of_the_batch_itself_fails_every_transaction_in_it(tmp_path: Path) -> None:
    """An engine error inside one transaction of a batch leaves the whole database transaction
    unusable: nothing of the batch is applied, and every caller hears it."""
    import sqlite3

    store = comity.open(tmp_path / "s.db")
    try:
        sessions = [store.session(f"a{i}") for i in range(3)]
        hold = _Batch(store)

        def broken(tx: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        threads, results = _run_all(
            [
                lambda: sessions[0].create("x/0", 0),
                lambda: store.writes.run(broken),
                lambda: sessions[2].create("x/2", 2),
            ]
        )
        hold.release_when_queued(3)
        for t in threads:
            t.join(WAIT_S)
        assert all(isinstance(r, Exception) for r in results), results
        s = store.session()
        assert s.get("x/0").values == [] and s.get("x/2").values == []
        assert sessions[0].create("x/0", 0).values == [0]  # the store goes on
    finally:
        store.close()


def test_news_stays_exactly_once_across_a_batch(tmp_path: Path) -> None:
    """A session whose write ran after another's in the same batch is told of it (the fast
    path that skips news when positions are contiguous must not hide it)."""
    store = comity.open(tmp_path / "s.db")
    try:
        a, b = store.session("a"), store.session("b")
        wa = a.put("doc", "a1")
        b.get("doc")
        hold = _Batch(store)
        threads, results = _run_all([lambda: a.put("doc", "a2", context=wa.context), lambda: b.put("other", "b1")])
        hold.release_when_queued(2)
        for t in threads:
            t.join(WAIT_S)
        assert not any(isinstance(r, Exception) for r in results), results
        seen = [e["key"] for e in results[1].news] + [e["key"] for e in b.news().events]
        first_a = results[0].pos < results[1].pos
        assert seen.count("doc") == 1  # shown once: with b's write if a's ran first, else by news()
        assert ("doc" in [e["key"] for e in results[1].news]) == first_a
    finally:
        store.close()


# ------------------------------------------------------------- SIGKILL during batches

_WRITERS = r"""
import json, sys, threading
import comity
from comity.store import Create
path, threads, round_ = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = comity.open(path)
out = threading.Lock()
def run(k):
    s = store.session(f"w{k}")
    i = 0
    while True:
        s.txn(ops=[Create(f"t/{round_}/{k}/{i}/a", i), Create(f"t/{round_}/{k}/{i}/b", i)])
        with out:
            print(json.dumps([k, i, store.writes.largest]), flush=True)
        i += 1
for k in range(threads):
    threading.Thread(target=run, args=(k,), daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_batches_loses_nothing_acknowledged_and_half_applies_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    comity.open(db).close()
    script = tmp_path / "writers.py"
    script.write_text(_WRITERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_")}
    acked: set[tuple[int, int, int]] = set()
    batched = 0
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(db), "8", str(round_)], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        seen = 0
        try:
            for line in proc.stdout:
                k, i, largest = json.loads(line)
                acked.add((round_, k, i))
                batched = max(batched, largest)
                seen += 1
                if seen >= 150 + 37 * round_ and largest > 1:
                    break
                if seen > 20_000:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(WAIT_S)
            proc.stdout.close()
        store = comity.open(db)
        try:
            s = store.session("checker")
            keys = s.keys("t/", limit=1_000_000)
            pairs: dict[str, set[str]] = {}
            for key in keys:
                _, r, k, i, side = key.split("/")
                pairs.setdefault(f"{r}/{k}/{i}", set()).add(side)
            half = [p for p, sides in pairs.items() if sides != {"a", "b"}]
            assert not half, f"half-applied transactions after SIGKILL: {half[:5]}"
            present = set(keys)
            lost = [f"t/{r}/{k}/{i}/{side}" for (r, k, i) in acked for side in ("a", "b") if f"t/{r}/{k}/{i}/{side}" not in present]
            assert not lost, f"acknowledged writes lost after SIGKILL: {lost[:5]}"
            assert all(s.get(f"t/{r}/{k}/{i}/a").values == [i] for (r, k, i) in sorted(acked)[:50])
        finally:
            store.close()
    assert batched > 1, "the writers' transactions were never committed together"


# ------------------------------------------------------------------- writers of several processes

_HOLDER = r"""
import sys, threading
import comity
store = comity.open(sys.argv[1])
with store.backend.transaction(write=True) as tx:
    print("inside", flush=True)
    threading.Event().wait()
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_writer_killed_inside_its_transaction_holds_up_nobody(tmp_path: Path) -> None:
    """A writer killed inside its transaction (holding SQLite's write lock) lets go with its
    process: the next writer, already waiting, goes on."""
    db = tmp_path / "s.db"
    comity.open(db).close()
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_")}
    holder = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True, env=env)
    store = comity.open(db)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "inside"
        done: list[Any] = []
        writer = threading.Thread(target=lambda: done.append(store.session("after").create("k", 1)))
        writer.start()
        holder.send_signal(signal.SIGKILL)
        holder.wait(WAIT_S)
        writer.join(WAIT_S)
        assert done and done[0].values == [1]
    finally:
        holder.kill()
        holder.wait(WAIT_S)
        if holder.stdout:
            holder.stdout.close()
        store.close()
