"""Real OS processes against one store file: draining a task board, a zombie worker
fenced after its lease expired, and sequences taken from many processes at once.

Workers are small Python scripts written to ``tmp_path``; they open the store with
``comity.open(path)`` (the system clock: these tests are about real processes) and wait
on stdin after opening it, so the test can start them all at once.  Some workers drive
the real ``comity`` binary instead of the API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import comity
from comity.work import Board

pytestmark = pytest.mark.slow

_BIN = Path(sys.executable).with_name("comity")
COMITY = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "comity.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}


def cli(db: Path, *args: str, agent: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    pre = ["--store", str(db)] + (["--agent", agent] if agent else [])
    return subprocess.run([*COMITY, *pre, *args], capture_output=True, text=True, env=_env(), timeout=timeout,
                          check=False)


def spawn(script: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=script.parent)


def run_together(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[tuple[int, str, str]]:
    """Wait until every worker has opened the store, release them at once, collect them."""
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", (line, p.stderr.read() if p.stderr else "")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + timeout
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append((p.returncode, out, err))
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def all_events(store: comity.Store) -> list[dict[str, Any]]:
    s = store.session()
    out: list[dict[str, Any]] = []
    while True:
        page = s.log(after=out[-1]["pos"] if out else 0, limit=10_000)
        if not page:
            return out
        out += page


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "s.db"
    comity.open(path).close()
    yield path


# ----------------------------------------------------------------- draining a board

_DRAIN_API = textwrap.dedent(
    """
    import json, sys, traceback
    import comity
    from comity import ComityError, NotFound
    from comity.work import Board
    path, agent = sys.argv[1], sys.argv[2]
    store = comity.open(path)
    board = Board(store.session(agent))
    print("ready", flush=True)
    sys.stdin.readline()
    done = []
    try:
        while True:
            try:
                c = board.claim_next()
            except NotFound:
                break
            board.done(c.task["id"], c.token, result=agent)
            done.append(c.task["id"])
    except ComityError as e:
        print(json.dumps({"done": done, "error": e.to_json()}), flush=True)
        sys.exit(e.exit_code)
    print(json.dumps({"done": done}), flush=True)
    """
)


def test_sixteen_processes_drain_two_hundred_tasks_each_done_once(db: Path, tmp_path: Path) -> None:
    n_tasks, n_workers = 200, 16
    store = comity.open(db)
    try:
        b = Board(store.session("triage"))
        ids = [b.add(f"task {i}")["id"] for i in range(n_tasks)]
    finally:
        store.close()
    script = tmp_path / "drain.py"
    script.write_text(_DRAIN_API)

    t0 = time.monotonic()
    outs = run_together([spawn(script, str(db), f"w{k}") for k in range(n_workers)], timeout=60)
    elapsed = time.monotonic() - t0

    per_worker: dict[str, list[str]] = {}
    for k, (rc, out, err) in enumerate(outs):
        assert rc == 0, f"w{k} exited {rc}: {out}\n{err}"
        assert "Traceback" not in err, err
        per_worker[f"w{k}"] = json.loads(out.strip().splitlines()[-1])["done"]
    completed = [tid for done in per_worker.values() for tid in done]
    assert Counter(completed) == Counter(ids), "every task completed by exactly one worker"
    assert sum(1 for d in per_worker.values() if d) > 1, "the work was shared"

    store = comity.open(db)
    try:
        events = all_events(store)
        dones = Counter(e["key"] for e in events if e["op"] == "task.done")
        assert dones == Counter(f"@task/{tid}" for tid in ids), "exactly one task.done event per task"
        by_event = {e["key"][len("@task/"):]: e["agent"] for e in events if e["op"] == "task.done"}
        assert by_event == {tid: w for w, d in per_worker.items() for tid in d}
        assert Board(store.session()).ready() == []
    finally:
        store.close()

    listed = cli(db, "task", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    tasks = json.loads(listed.stdout)
    assert len(tasks) == n_tasks and all(t["state"] == "done" for t in tasks)
    assert {t["id"]: t["completed_by"] for t in tasks} == by_event
    nothing = cli(db, "task", "claim", "--next", "--json", agent="late")
    assert nothing.returncode == 4 and json.loads(nothing.stdout)["error"] == "not_found"
    assert elapsed < 60


_DRAIN_CLI = textwrap.dedent(
    """
    import json, subprocess, sys
    comity, path, agent = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    print("ready", flush=True)
    sys.stdin.readline()
    done, codes = [], []
    def run(*args):
        r = subprocess.run([*comity, "--store", path, "--agent", agent, *args], capture_output=True, text=True)
        codes.append(r.returncode)
        if r.returncode == 1 or "internal error" in r.stderr:
            print(json.dumps({"done": done, "codes": codes, "internal": r.stderr}), flush=True)
            sys.exit(1)
        return r
    while True:
        r = run("task", "claim", "--next", "--json")
        if r.returncode == 4:
            break
        if r.returncode != 0:
            continue  # refused or busy: look again
        c = json.loads(r.stdout)
        d = run("task", "done", c["task"]["id"], "--token", str(c["token"]), "--json")
        if d.returncode == 0:
            done.append(c["task"]["id"])
    print(json.dumps({"done": done, "codes": codes}), flush=True)
    """
)


def test_processes_drain_a_board_through_the_cli(db: Path, tmp_path: Path) -> None:
    n_tasks, n_workers = 12, 4
    store = comity.open(db)
    try:
        b = Board(store.session("triage"))
        for i in range(n_tasks):
            b.add(f"task {i}")
    finally:
        store.close()
    script = tmp_path / "drain_cli.py"
    script.write_text(_DRAIN_CLI)
    outs = run_together([spawn(script, json.dumps(COMITY), str(db), f"c{k}") for k in range(n_workers)], timeout=60)
    completed: list[str] = []
    for rc, out, err in outs:
        assert rc == 0, (out, err)
        r = json.loads(out.strip().splitlines()[-1])
        assert 1 not in r["codes"]
        completed += r["done"]
    assert Counter(completed) == Counter(f"T-{i}" for i in range(1, n_tasks + 1))
    store = comity.open(db)
    try:
        dones = Counter(e["key"] for e in all_events(store) if e["op"] == "task.done")
    finally:
        store.close()
    assert dones == Counter(f"@task/T-{i}" for i in range(1, n_tasks + 1))
    tasks = json.loads(cli(db, "task", "list", "--json").stdout)
    assert [t["state"] for t in tasks] == ["done"] * n_tasks


# --------------------------------------------------------------------- the zombie

# Every process of the zombie test opens the store on one clock the test sets: the time is
# a number in a file.  A lease expires when the test moves that number past it, never because
# the machine was slow, and nobody sleeps (the processes, the file and the store are real).
_FILE_CLOCK = textwrap.dedent(
    """
    class FileClock:
        def __init__(self, path):
            self.path = path

        def now(self):
            with open(self.path) as f:
                return float(f.read())

        monotonic = now
    """
)

_ZOMBIE = _FILE_CLOCK + textwrap.dedent(
    """
    import json, sys
    import comity
    from comity import ComityError
    from comity.work import Board
    path, clock, agent, task_id, ttl = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    board = Board(comity.open(path, clock=FileClock(clock)).session(agent))
    c = board.claim(task_id, ttl=ttl)
    board.checkpoint(task_id, c.token, "A: parsed the input; next: write the output", ttl=ttl)
    print(json.dumps({"token": c.token, "expires": board.show(task_id)["lease"]["expires"]}), flush=True)
    sys.stdin.readline()  # ... working; paused here by SIGSTOP, woken by SIGCONT ...
    try:
        board.done(task_id, c.token, result="A's result")
        print(json.dumps({"done": True}), flush=True)
    except ComityError as e:
        print(json.dumps({"done": False, "error": e.code, "exit_code": e.exit_code}), flush=True)
    """
)

# Another agent's claim, in a process of its own on the test's clock: the answer, or the refusal.
_CLAIM = _FILE_CLOCK + textwrap.dedent(
    """
    import json, sys
    import comity
    from comity import ComityError
    from comity.work import Board
    path, clock, agent, task_id, ttl = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    board = Board(comity.open(path, clock=FileClock(clock)).session(agent))
    try:
        c = board.claim(task_id, ttl=ttl)
        print(json.dumps({"token": c.token, "handoff": c.handoff}, default=str), flush=True)
    except ComityError as e:
        print(json.dumps(e.to_json()), flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP/SIGCONT")
def test_a_paused_zombie_is_fenced_after_its_lease_expires_and_the_successor_finishes(db: Path, tmp_path: Path) -> None:
    ttl = 30.0
    clock = tmp_path / "clock"
    start = time.time()  # the story begins now, so the CLI's own clock (at the end) agrees with it
    clock.write_text(repr(start))
    assert cli(db, "task", "add", "write the report", agent="triage").returncode == 0
    (tmp_path / "zombie.py").write_text(_ZOMBIE)
    (tmp_path / "claim.py").write_text(_CLAIM)

    def claim_as_b() -> dict[str, Any]:
        r = subprocess.run([sys.executable, str(tmp_path / "claim.py"), str(db), str(clock), "B", "T-1", "3600"],
                           capture_output=True, text=True, env=_env(), timeout=60, check=False)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))

    a = subprocess.Popen([sys.executable, str(tmp_path / "zombie.py"), str(db), str(clock), "A", "T-1", str(ttl)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert a.stdout is not None and a.stdin is not None
        line = a.stdout.readline()
        assert line, a.stderr.read() if a.stderr else ""
        claim_a = json.loads(line)
        token_a, expires_a = claim_a["token"], claim_a["expires"]
        assert expires_a == start + ttl  # the lease runs on the test's clock

        # A second before expiry: B is refused, naming A.
        clock.write_text(repr(expires_a - 1))
        early = claim_as_b()
        assert early["error"] == "stale_context" and early["holder"] == "A", early

        # A stalls (a stopped process holds nothing but its token) past its expiry.
        os.kill(a.pid, signal.SIGSTOP)
        clock.write_text(repr(expires_a + 1))

        claim_b = claim_as_b()
        assert claim_b.get("token", 0) > token_a, claim_b
        assert any(h["agent"] == "A" and "next: write the output" in h["note"] for h in claim_b["handoff"])

        # A wakes and tries to finish with its old token: fenced.
        os.kill(a.pid, signal.SIGCONT)
        a.stdin.write("go\n")
        a.stdin.flush()
        out, err = a.communicate(timeout=30)
        assert a.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"done": False, "error": "fenced", "exit_code": 3}
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait()

    # The same through the CLI (the system clock; B's lease runs an hour from the story's
    # start): A's done with its old token exits 3 (fenced).
    zombie = cli(db, "task", "done", "T-1", "--token", str(token_a), "--json", agent="A")
    assert zombie.returncode == 3 and json.loads(zombie.stdout)["error"] == "fenced"

    fin = cli(db, "task", "done", "T-1", "--token", str(claim_b["token"]), "--result", "B's result", "--json", agent="B")
    assert fin.returncode == 0, fin.stderr
    shown = json.loads(cli(db, "task", "show", "T-1", "--json").stdout)
    assert shown["state"] == "done" and shown["completed_by"] == "B" and shown["result"] == "B's result"
    log = json.loads(cli(db, "log", "@task/T-1", "--json", "--limit", "1000").stdout)
    assert [(e["agent"]) for e in log if e["op"] == "task.done"] == ["B"]
    # a late retry by A after B finished is still refused
    assert cli(db, "task", "done", "T-1", "--token", str(token_a), agent="A").returncode == 3


# ---------------------------------------------------------------------- sequences

_SEQ = textwrap.dedent(
    """
    import json, sys
    import comity
    from comity.coord import next_number
    path, agent, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    session = comity.open(path).session(agent)
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps([next_number(session, "migrations") for _ in range(n)]), flush=True)
    """
)

_SEQ_CLI = textwrap.dedent(
    """
    import json, subprocess, sys
    comity, path, agent, n = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    print("ready", flush=True)
    sys.stdin.readline()
    got = []
    for _ in range(n):
        r = subprocess.run([*comity, "--store", path, "--agent", agent, "seq", "next", "migrations", "--json"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(json.dumps({"rc": r.returncode, "stderr": r.stderr}), flush=True)
            sys.exit(1)
        got.append(json.loads(r.stdout)["value"])
    print(json.dumps(got), flush=True)
    """
)


def test_eight_processes_take_four_hundred_distinct_increasing_numbers(db: Path, tmp_path: Path) -> None:
    script = tmp_path / "seq.py"
    script.write_text(_SEQ)
    outs = run_together([spawn(script, str(db), f"s{k}", "50") for k in range(8)])
    per: list[list[int]] = []
    for rc, out, err in outs:
        assert rc == 0, err
        nums = json.loads(out.strip().splitlines()[-1])
        assert len(nums) == 50
        assert all(x < y for x, y in zip(nums, nums[1:])), "increasing within each process"
        per.append(nums)
    everything = [n for nums in per for n in nums]
    assert len(set(everything)) == 400
    assert all(isinstance(n, int) and n >= 1 for n in everything)

    # The CLI continues the same sequence from several processes: never reissued, still increasing.
    cli_script = tmp_path / "seq_cli.py"
    cli_script.write_text(_SEQ_CLI)
    outs = run_together([spawn(cli_script, json.dumps(COMITY), str(db), f"c{k}", "4") for k in range(3)])
    later: list[int] = []
    for rc, out, err in outs:
        assert rc == 0, (out, err)
        nums = json.loads(out.strip().splitlines()[-1])
        assert all(x < y for x, y in zip(nums, nums[1:]))
        later += nums
    assert len(set(later)) == 12 and min(later) > max(everything)
    bare = cli(db, "seq", "next", "migrations", agent="c9")
    assert bare.returncode == 0 and int(bare.stdout.strip()) > max(later)
    assert cli(db, "seq", "next", "migrations").returncode == 2  # no agent
