"""The embedded store shared by real OS processes: races, crashes, retries.

Every process is a real ``python`` running the ``comity`` CLI's ``main`` (or the Python
API) against one store file.  Racers import everything first, say they are ready, and
start together when a barrier file appears.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import comity
from comity import Unavailable

pytestmark = pytest.mark.slow

N = 8

RACER = r"""
import os, sys, time
from comity.cli import main
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
t = time.monotonic()
while not os.path.exists(go):
    if time.monotonic() - t > 60:
        sys.exit(99)
    time.sleep(0.0005)
main(sys.argv[3:])
"""

ACQUIRER = r"""
import os, sys, time
import comity
from comity.store import Acquire
ready, go, path, agent = sys.argv[1:5]
store = comity.open(path)
s = store.session(agent)
open(ready, "w").close()
t = time.monotonic()
while not os.path.exists(go):
    if time.monotonic() - t > 60:
        sys.exit(99)
    time.sleep(0.0005)
print(s.txn(ops=[Acquire("deploy", 60, steal=True)]).results[0]["token"])
"""

WRITER = r"""
import sys
import comity
store = comity.open(sys.argv[1])
s = store.session("writer")
keys = ["k0", "k1", "k2", "k3"]
ctx = {k: s.get(k).context for k in keys}
n = int(sys.argv[2])
while True:
    k = keys[n % len(keys)]
    ctx[k] = s.put(k, n, context=ctx[k]).context
    print(k, n, flush=True)  # acknowledged: durable before put returned
    n += 1
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


def together(tmp_path: Path, env: dict[str, str], script: str, argvs: list[list[str]]) -> list[tuple[int, str, str]]:
    """Start one process per argv, wait until all are ready, release them at once;
    returns (exit code, stdout, stderr) of each, in order."""
    go = tmp_path / f"go-{time.monotonic_ns()}"
    ready = [tmp_path / f"{go.name}-ready-{i}" for i in range(len(argvs))]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(r), str(go), *argv], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r, argv in zip(ready, argvs)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline, "racers never got ready"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.005)
        go.touch()
        out = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=60)
            out.append((p.returncode, stdout, stderr))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def get_json(comity_cli: Run, store: Path, key: str) -> dict[str, Any]:
    r = comity_cli("get", key, "--json", store=str(store))
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def log_json(comity_cli: Run, store: Path, key: str | None = None) -> list[dict[str, Any]]:
    r = comity_cli("log", *([key] if key else []), "--json", store=str(store))
    assert r.returncode == 0, r.stderr
    out: list[dict[str, Any]] = json.loads(r.stdout)
    return out


@pytest.fixture
def db(tmp_path: Path, comity_cli: Run) -> Path:
    path = tmp_path / "store.db"
    assert comity_cli("init", store=str(path)).returncode == 0
    return path


def test_racing_creates_one_wins_the_rest_are_refused_naming_it(
    tmp_path: Path, comity_cli: Run, cli_env: Callable[..., dict[str, str]]
) -> None:
    db = tmp_path / "fresh.db"  # nobody has opened it yet: the racers set it up too
    results = together(tmp_path, cli_env(), RACER,
                       [["--store", str(db), "--agent", f"p{i}", "create", "K", json.dumps({"by": i})] for i in range(N)])
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0] + [3] * (N - 1), results
    winner = codes.index(0)
    for i, (code, stdout, stderr) in enumerate(results):
        if i != winner:
            assert f"p{winner}" in stderr and "'K'" in stderr, stderr
            assert stdout == ""
    assert get_json(comity_cli, db, "K")["values"] == [{"by": winner}]
    assert [(e["agent"], e["op"]) for e in log_json(comity_cli, db, "K")] == [(f"p{winner}", "create")]


def test_racing_puts_with_one_context_one_wins(
    tmp_path: Path, db: Path, comity_cli: Run, cli_env: Callable[..., dict[str, str]]
) -> None:
    assert comity_cli("--agent", "setup", "create", "K", "0", store=str(db)).returncode == 0
    ctx = get_json(comity_cli, db, "K")["context"]
    results = together(tmp_path, cli_env(), RACER,
                       [["--store", str(db), "--agent", f"p{i}", "put", "K", str(i + 1), "--context", ctx] for i in range(N)])
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0] + [3] * (N - 1), results
    winner = codes.index(0)
    for i, (_, _, stderr) in enumerate(results):
        if i != winner:
            assert f"p{winner}" in stderr and "'K'" in stderr, stderr
    assert get_json(comity_cli, db, "K")["values"] == [winner + 1]
    assert [e["agent"] for e in log_json(comity_cli, db, "K")] == ["setup", f"p{winner}"]


def test_racing_puts_keeping_both_lose_nothing(
    tmp_path: Path, db: Path, comity_cli: Run, cli_env: Callable[..., dict[str, str]]
) -> None:
    assert comity_cli("--agent", "setup", "create", "K", "0", store=str(db)).returncode == 0
    ctx = get_json(comity_cli, db, "K")["context"]
    results = together(
        tmp_path, cli_env(), RACER,
        [["--store", str(db), "--agent", f"p{i}", "put", "K", str(i + 1), "--context", ctx, "--keep-both"] for i in range(N)],
    )
    assert [code for code, _, _ in results] == [0] * N, results
    v = get_json(comity_cli, db, "K")
    assert sorted(v["values"]) == list(range(1, N + 1))
    events = log_json(comity_cli, db, "K")
    assert len(events) == N + 1
    times = [e["hlc"] for e in events]  # one key's events are in HLC order across processes
    assert times == sorted(set(times))
    # one write whose context covers all the siblings resolves them
    r = comity_cli("--agent", "setup", "put", "K", '"resolved"', "--context", v["context"], store=str(db))
    assert r.returncode == 0, r.stderr
    assert get_json(comity_cli, db, "K")["values"] == ["resolved"]


def test_racing_retries_of_one_request_apply_it_once(
    tmp_path: Path, db: Path, comity_cli: Run, cli_env: Callable[..., dict[str, str]]
) -> None:
    results = together(tmp_path, cli_env(), RACER,
                       [["--store", str(db), "--agent", "a", "create", "K", "1", "--request-id", "req-7", "--json"]
                        for _ in range(4)])
    assert [code for code, _, _ in results] == [0] * 4, results
    outcomes = [json.loads(stdout) for _, stdout, _ in results]
    assert sum(1 for o in outcomes if not o.get("replayed")) == 1
    strip = [{k: o[k] for k in ("key", "op", "values", "context", "pos")} for o in outcomes]
    assert all(s == strip[0] for s in strip)
    assert len(log_json(comity_cli, db, "K")) == 1


def test_a_retried_cli_mutation_is_applied_once_and_prints_the_same_result(db: Path, comity_cli: Run) -> None:
    args = ("--agent", "a", "put", "K", '{"v": 1}', "--request-id", "retry-1")
    first = comity_cli(*args, "--json", store=str(db))
    again = comity_cli(*args, "--json", store=str(db))
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert "replayed" not in a and b["replayed"] is True
    assert {k: a[k] for k in ("key", "op", "values", "context", "pos")} == {k: b[k] for k in ("key", "op", "values", "context", "pos")}
    plain = comity_cli(*args, store=str(db))
    assert plain.returncode == 0 and f"put K at pos {a['pos']}" in plain.stdout
    assert len(log_json(comity_cli, db, "K")) == 1
    # the id names that request only
    other = comity_cli("--agent", "a", "put", "K", '{"v": 2}', "--request-id", "retry-1", store=str(db))
    assert other.returncode == 2 and "request_id" in other.stderr
    assert len(log_json(comity_cli, db, "K")) == 1


def test_racing_acquires_never_share_a_fencing_token(
    tmp_path: Path, db: Path, cli_env: Callable[..., dict[str, str]]
) -> None:
    results = together(tmp_path, cli_env(), ACQUIRER, [[str(db), f"p{i}"] for i in range(N)])
    assert [code for code, _, _ in results] == [0] * N, results
    assert sorted(int(out) for _, out, _ in results) == list(range(1, N + 1))


def test_a_writer_killed_mid_loop_loses_no_acknowledged_write(
    tmp_path: Path, db: Path, cli_env: Callable[..., dict[str, str]]
) -> None:
    acked: list[tuple[str, int]] = []
    for round_ in range(3):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(round_ * 1_000_000)], env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None
        lines = 0
        try:
            while lines < 150 + 41 * round_:  # then kill it, most likely inside a put
                line = p.stdout.readline()
                assert line, p.stderr.read() if p.stderr else ""
                k, n = line.split()
                acked.append((k, int(n)))
                lines += 1
            os.kill(p.pid, signal.SIGKILL)
            rest, _ = p.communicate(timeout=30)  # printed before the kill: acknowledged too
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == -signal.SIGKILL
        # A line the kill cut short (no newline yet) was never printed whole: not counted.
        acked += [(k, int(n)) for k, n in (line.split() for line in rest.splitlines(keepends=True) if line.endswith("\n") and line.strip())]

        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with comity.open(db) as store:
            s = store.session()
            for key in ("k0", "k1", "k2", "k3"):
                mine = [n for k, n in acked if k == key]
                (current,) = s.get(key).values  # the writer's own context: never siblings
                assert current >= max(mine), (key, current, max(mine))
                logged = {e["value"] for e in s.log(key, limit=10_000)}
                assert set(mine) <= logged, set(mine) - logged


def test_opening_a_store_waits_for_a_process_holding_its_write_lock(tmp_path: Path) -> None:
    """N agents starting at once on a new repository: a store is built under a temporary name
    and linked into place whole (test_store_files races six processes creating one), so
    nobody sees one half set up; a process that opens it while another holds the write lock
    waits for it.  (Regression: the switch to WAL got SQLITE_BUSY at once, with no busy
    wait, and opening failed.)"""
    path = tmp_path / "fresh.db"
    comity.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        with comity.open(path, busy_timeout=10) as store:
            assert store.session("a").create("k", 1).values == [1]
    except Unavailable as e:
        pytest.fail(f"opening gave up instead of waiting: {e}")
    finally:
        release.join()
        holder.close()


def test_the_sqlite_store_commits_durably(db: Path) -> None:
    """What "durable before acknowledged" rests on (a SIGKILL cannot show a lost fsync)."""
    with comity.open(db) as store:
        conn = store.backend.db  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
