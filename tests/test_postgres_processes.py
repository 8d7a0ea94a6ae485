"""Real OS processes sharing one PostgreSQL store: a create race, sequences, a task drain.

Each worker is a ``python`` process that opens the store by URL (the database's clock),
says ``ready``, and starts when the test writes ``go`` to every worker's stdin.
Skipped without ``COMITY_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import comity
from comity.work import Board

pytestmark = pytest.mark.slow

N = 8

WORKER = textwrap.dedent(
    """
    import json, sys
    import comity
    from comity import ComityError, NotFound, StaleContext
    from comity.coord import next_number
    from comity.work import Board
    mode, url, agent = sys.argv[1:4]
    store = comity.open(url)
    s = store.session(agent)
    s.get("warm-up")  # connected and ready
    print("ready", flush=True)
    sys.stdin.readline()
    out = {}
    if mode == "create":
        try:
            out["won"] = s.create("deploy/lock", agent).pos
        except StaleContext as e:
            out["lost"] = e.message
    elif mode == "next":
        out["numbers"] = [next_number(s, "migrations") for _ in range(int(sys.argv[4]))]
    else:
        board, done = Board(s), []
        while True:
            try:
                c = board.claim_next()
            except NotFound:
                break
            board.done(c.task["id"], c.token, result=agent)
            done.append(c.task["id"])
        out["done"] = done
    store.close()
    print(json.dumps(out), flush=True)
    """
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}


def race(tmp_path: Path, argvs: list[list[str]], timeout: float = 60) -> list[dict[str, object]]:
    """Start a worker per argv, release them together once all are ready, return their outputs."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen([sys.executable, str(script), *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
        for argv in argvs
    ]
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
            assert p.returncode == 0 and "Traceback" not in err, (p.returncode, out, err)
            outs.append(json.loads(out.strip().splitlines()[-1]))
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_eight_processes_race_to_create_one_key_exactly_one_wins(tmp_path: Path, postgres_url: str) -> None:
    comity.open(postgres_url).close()
    outs = race(tmp_path, [["create", postgres_url, f"agent-{i}"] for i in range(N)])
    winners = [i for i, o in enumerate(outs) if "won" in o]
    assert len(winners) == 1, outs
    winner = f"agent-{winners[0]}"
    assert all(winner in str(o["lost"]) for o in outs if "lost" in o), "each loser is told who has it"
    with comity.open(postgres_url) as store:
        s = store.session()
        assert s.get("deploy/lock").values == [winner]
        assert [e["op"] for e in s.log("deploy/lock")] == ["create"]


def test_eight_processes_take_four_hundred_distinct_increasing_numbers(tmp_path: Path, postgres_url: str) -> None:
    comity.open(postgres_url).close()
    outs = race(tmp_path, [["next", postgres_url, f"agent-{i}", "50"] for i in range(N)])
    per_process = [o["numbers"] for o in outs]
    for numbers in per_process:
        assert isinstance(numbers, list) and numbers == sorted(numbers) and len(numbers) == 50
    everything = [n for numbers in per_process for n in numbers]  # type: ignore[attr-defined]
    assert sorted(everything) == list(range(1, N * 50 + 1))


def test_eight_processes_drain_a_board_every_task_done_once(tmp_path: Path, postgres_url: str) -> None:
    n_tasks = 80
    with comity.open(postgres_url) as store:
        board = Board(store.session("triage"))
        ids = [board.add(f"task {i}")["id"] for i in range(n_tasks)]
    outs = race(tmp_path, [["drain", postgres_url, f"w{i}"] for i in range(N)])
    completed = [tid for o in outs for tid in o["done"]]  # type: ignore[attr-defined]
    assert Counter(completed) == Counter(ids), "every task completed by exactly one worker"
    with comity.open(postgres_url) as store:
        s = store.session()
        events = s.log(limit=10_000)
        dones = Counter(e["key"] for e in events if e["op"] == "task.done")
        assert dones == Counter(f"@task/{tid}" for tid in ids), "exactly one task.done event per task"
        assert Board(s).ready() == []
