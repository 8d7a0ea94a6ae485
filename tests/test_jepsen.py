"""Jepsen-style workloads, short: several OS processes per workload against the real
store, with SIGKILL, SIGSTOP past a lease and (PostgreSQL) pg_terminate_backend of every
connection the run opened; histories checked offline.  ``python -m comity.jepsen`` (and
``make jepsen``) runs the long versions (README: "Jepsen-style workloads").

The checkers are trusted because each catches a bug: the second half feeds them
histories and logs of a lost update, a double create, a reissued number, a zombie's
accepted completion, a lost CRDT update, and news skipped and repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS, PG_URL

from comity.jepsen import WORKLOADS, Config, Op, run
from comity.jepsen.workloads import Final

SHORT_S = 2.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_a_short_run_of_each_workload_under_faults_is_valid(workload: str, backend: str, tmp_path: Path) -> None:
    location = str(tmp_path / "store.db") if backend == "sqlite" else str(PG_URL)
    r = run(Config(workload, location, processes=3, seconds=SHORT_S, faults=("kill", "stop", "terminate"), seed=7,
                   interval=0.4))  # fmt: skip
    assert r["valid"], r["anomalies"]
    assert r["ops"]["ok"] > 0 and sum(r["faults"].values()) > 0, r
    if workload.startswith("news"):
        assert r["sessions"] >= 1 and r["skipped"] == 0
        if workload == "news":
            assert r["duplicates"] == 0


# ------------------------------------------------------------- the checkers catch bugs


def ops(*rows: tuple[Any, ...]) -> list[Op]:
    """(process, index, type, f, value[, error]) rows, timed in the order given."""
    out = []
    for t, row in enumerate(rows):
        p, i, typ, f, value, *err = row
        out.append(Op(p, i, typ, f, value, t, err[0] if err else None))
    return out


def event(pos: int, key: str, op: str = "put", session: str = "x", **extra: Any) -> dict[str, Any]:
    return {"pos": pos, "key": key, "op": op, "session": session, "agent": session, "request_id": f"r{pos}", **extra}


def check(workload: str, history: list[Op], final: Final) -> dict[str, Any]:
    return WORKLOADS[workload].check(history, final)


def test_register_checker_catches_a_lost_update_and_a_stale_read() -> None:
    k = "jepsen/r0"
    log = [event(1, k, value=1, request_id="a"), event(2, k, value=2, request_id="b"), event(3, k, value=2, request_id="c")]
    h = ops(
        (1, 0, "invoke", "cas", {"key": k, "from": 0, "to": 1, "rid": "a"}), (1, 0, "ok", "cas", 1),
        (2, 0, "invoke", "cas", {"key": k, "from": 1, "to": 2, "rid": "b"}), (2, 0, "ok", "cas", 2),
        (3, 0, "invoke", "cas", {"key": k, "from": 1, "to": 2, "rid": "c"}), (3, 0, "ok", "cas", 3),
        (4, 0, "invoke", "read", {"key": k}), (4, 0, "ok", "read", 1),
    )  # fmt: skip
    r = check("register", h, Final(log, {k: [2]}))
    assert not r["valid"]
    assert any("not consecutive" in a for a in r["anomalies"])
    assert any("stale read" in a for a in r["anomalies"])
    good = check("register", h[:4], Final(log[:2], {k: [2]}))
    assert good["valid"], good


def test_create_checker_catches_two_acknowledged_creates() -> None:
    k = "jepsen/c/1"
    h = ops((1, 0, "invoke", "create", {"key": k, "rid": "a", "by": 1}), (1, 0, "ok", "create", 1),
            (2, 0, "invoke", "create", {"key": k, "rid": "b", "by": 2}), (2, 0, "ok", "create", 2))  # fmt: skip
    r = check("create", h, Final([event(1, k, "create"), event(2, k, "create")], {k: [2]}))
    assert not r["valid"] and any("2 creates acknowledged" in a for a in r["anomalies"])
    assert any("2 creates in the log" in a for a in r["anomalies"])


def test_sequence_checker_catches_a_number_handed_out_twice() -> None:
    log = [event(1, "@seq/jepsen", "next", value=1), event(2, "@seq/jepsen", "next", value=2)]
    h = ops((1, 0, "invoke", "next", None), (1, 0, "ok", "next", 2), (2, 0, "invoke", "next", None), (2, 0, "ok", "next", 2))
    r = check("sequence", h, Final(log))
    assert not r["valid"] and any("twice" in a for a in r["anomalies"])


def test_board_checker_catches_a_zombies_accepted_completion() -> None:
    log = [
        event(1, "@lease/@task/T-1", "acquire", "p1", token=1),
        event(2, "@lease/@task/T-1", "acquire", "p2", token=2),
        event(3, "@task/T-1", "task.done", "p1", value={"done_token": 1}),
    ]
    h = ops((1, 0, "invoke", "done", {"task": "T-1", "token": 1}), (1, 0, "ok", "done", "done"))
    r = check("board", h, Final(log, tasks={"T-1": {"done_token": 1, "completed_by": "p1"}}))
    assert not r["valid"] and any("while token 2 was current" in a for a in r["anomalies"])
    twice = log[:2] + [event(3, "@task/T-1", "task.done", "p2", value={"done_token": 2}),
                       event(4, "@task/T-1", "task.done", "p1", value={"done_token": 2})]  # fmt: skip
    r = check("board", [], Final(twice))
    assert any("completed 2 times" in a for a in r["anomalies"])


def test_crdt_checker_catches_a_lost_increment_and_a_lost_add() -> None:
    h = ops((1, 0, "invoke", "inc", {"rid": "a"}), (1, 0, "ok", "inc", 1), (1, 1, "invoke", "inc", {"rid": "b"}), (1, 1, "ok", "inc", 2),
            (1, 2, "invoke", "add", {"rid": "c", "item": "p1-0"}), (1, 2, "ok", "add", 3))  # fmt: skip
    r = check("crdt", h, Final([], {"jepsen/count": [1], "jepsen/set": [[]]}))
    assert not r["valid"]
    assert any("counter is 1" in a for a in r["anomalies"]) and any("missing from the set" in a for a in r["anomalies"])


def test_news_checker_catches_skipped_and_repeated_news() -> None:
    log = [event(p, f"k{p}", session="w1") for p in range(1, 6)]
    start = (1, 0, "invoke", "start", {"session": "obs0"})
    started = (1, 0, "ok", "start", {"session": "obs0", "position": 0})
    end = [(1, 9, "invoke", "end", {"session": "obs0"}), (1, 9, "ok", "end", {"session": "obs0", "head": 5})]
    skipped = ops(start, started, (1, 1, "invoke", "news", {}), (1, 1, "ok", "news", {"session": "obs0", "news": [1, 2, 4, 5], "truncated": False}), *end)
    r = check("news", skipped, Final(log))
    assert not r["valid"] and r["skipped"] == 1 and any("never delivered" in a for a in r["anomalies"])
    repeated = ops(start, started, (1, 1, "invoke", "read", {}), (1, 1, "ok", "read", {"session": "obs0", "news": [1, 2]}),
                   (1, 2, "invoke", "news", {}), (1, 2, "ok", "news", {"session": "obs0", "news": [2, 3, 4, 5], "truncated": False}), *end)  # fmt: skip
    r = check("news", repeated, Final(log))
    assert not r["valid"] and r["duplicates"] == 1
    assert check("news-restart", repeated, Final(log))["valid"]  # a restart may repeat, never skip
    assert not check("news-restart", skipped, Final(log))["valid"]
    unordered = ops(start, started, (1, 1, "invoke", "news", {}), (1, 1, "ok", "news", {"session": "obs0", "news": [2, 1, 3, 4, 5]}), *end)
    assert any("out of log order" in a for a in check("news", unordered, Final(log))["anomalies"])
