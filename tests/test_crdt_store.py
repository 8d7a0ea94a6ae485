"""Typed CRDT keys in the store: update never goes stale, concurrent processes lose nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import comity
from comity.runtime import SeededRng, VirtualClock

WORKER = """
import os, sys, time, comity
path, agent, n, ready, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
s = comity.open(path).session(agent)
open(ready, "w").close()
while not os.path.exists(go):  # a barrier: the workers start updating together
    time.sleep(0.001)
for i in range(n):
    s.update("labels/T-12", "add", f"{agent}-{i}", type="orset")
    s.update("attempts/T-12", "inc", 1, type="pncounter")
"""


def test_processes_updating_one_orset_and_one_counter_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    comity.open(path).close()  # set the store up once; the workers race on updates, not on creation
    procs, n = 6, 25
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{p}" for p in range(procs)]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, path, f"w{p}", str(n), str(ready[p]), str(go)], stderr=subprocess.PIPE, text=True)
        for p in range(procs)
    ]
    while not all(r.exists() for r in ready):
        assert all(w.poll() is None for w in workers), "a worker died before the barrier"
        time.sleep(0.005)
    go.touch()
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    s = comity.open(path).session()
    labels = s.get("labels/T-12")
    assert labels.type == "orset"
    assert sorted(labels.values[0]) == sorted(f"w{p}-{i}" for p in range(procs) for i in range(n))
    attempts = s.get("attempts/T-12")
    assert attempts.type == "pncounter" and attempts.values == [procs * n]


@pytest.fixture
def session(tmp_path: Path) -> comity.Session:
    return comity.open(tmp_path / "s.db", clock=VirtualClock(), rng=SeededRng(3)).session("a")


def test_update_needs_no_context_and_reads_back_the_value(session: comity.Session) -> None:
    r = session.update("flags/deploy", "enable", type="flag").results[0]
    assert r["type"] == "flag" and r["value"] is True
    v = session.get("flags/deploy")
    assert v.values == [True] and v.type == "flag"
    assert session.update("flags/deploy", "disable").results[0]["value"] is False


def test_wrong_type_unknown_type_and_plain_writes_are_invalid(session: comity.Session) -> None:
    session.update("c", "inc", 2, type="gcounter")
    before = session.log()
    for call, field in [
        (lambda: session.update("c", "inc", 1, type="orset"), "type"),
        (lambda: session.update("c", "add", "x"), "op"),
        (lambda: session.update("new", "inc", 1), "type"),
        (lambda: session.update("new", "inc", 1, type="nope"), "type"),
        (lambda: session.put("c", 5, context=session.get("c").context), "key"),
    ]:
        with pytest.raises(comity.Invalid) as ei:
            call()
        assert ei.value.field.endswith(field), (ei.value.field, field)
    session.put("plain", 1)
    with pytest.raises(comity.Invalid):
        session.update("plain", "inc", 1, type="gcounter")
    assert session.log()[: len(before)] == before and session.get("c").values == [2]


def test_a_deleted_crdt_key_can_start_again(session: comity.Session) -> None:
    session.update("s", "add", "x", type="orset")
    session.delete("s", context=session.get("s").context)
    assert session.get("s").values == []
    session.update("s", "inc", 1, type="pncounter")
    assert session.get("s").values == [1]
