"""The writers' queue across processes (comity.store._queue): who writes next, and that a
writer leaving the queue, whatever the way, never stops the others.

Every writer here is a real OS process driven line by line over its stdin; a writer waiting
its turn is seen by the ticket it has taken (the queue file's counter), not by sleeping.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import comity
from comity.store._queue import QUEUE_SUFFIX, WriterQueue
from comity.work import Board

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the queue uses Linux's open-file-description locks")

WRITER = r"""
import json, sys
from comity.store._queue import WriterQueue
q = WriterQueue(sys.argv[1])
q.join()
slot = -1
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "enter":
        slot = q.enter(float(arg[0]))
        print(json.dumps({"slot": slot, **q.stats}), flush=True)
    elif cmd == "leave":
        q.leave(slot)
        slot = -1
        print("{}", flush=True)
"""


class Writer:
    """A process holding a WriterQueue on one store path, told what to do line by line."""

    def __init__(self, store: Path) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", WRITER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def answer(self, within: float = 30.0) -> dict[str, Any]:
        assert self.p.stdout is not None
        ready, _, _ = select.select([self.p.stdout], [], [], within)
        assert ready, "no answer"
        got: dict[str, Any] = json.loads(self.p.stdout.readline())
        return got

    def answered(self, within: float) -> bool:
        assert self.p.stdout is not None
        return bool(select.select([self.p.stdout], [], [], within)[0])

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def tickets(store: Path) -> int:
    try:
        return int.from_bytes(Path(f"{store}{QUEUE_SUFFIX}").read_bytes()[:8].ljust(8, b"\0"), "little")
    except FileNotFoundError:
        return 0


def until_tickets(store: Path, n: int) -> None:
    """Wait until ``n`` tickets have been taken (a writer takes its ticket, then waits)."""
    deadline = time.monotonic() + 30
    while tickets(store) < n:
        assert time.monotonic() < deadline, f"{tickets(store)} tickets taken, expected {n}"
        time.sleep(0.005)


@pytest.fixture
def writers(tmp_path: Path) -> Any:
    started: list[Writer] = []

    def start(n: int) -> list[Writer]:
        new = [Writer(tmp_path / "store.db") for _ in range(n)]
        started.extend(new)
        return new

    yield start
    for w in started:
        try:
            os.kill(w.p.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        w.close()


def test_writers_go_in_the_order_they_took_their_tickets(tmp_path: Path, writers: Any) -> None:
    store = tmp_path / "store.db"
    a, b, c, d = writers(4)
    a.send("enter 30")
    assert a.answer() | {} and tickets(store) == 1
    for n, w in enumerate((b, c, d), start=2):
        w.send("enter 30")
        until_tickets(store, n)
    assert not b.answered(0.2)  # the first still writes: nobody behind it goes
    a.send("leave")
    a.answer()
    got = b.answer()
    assert (got["waited"], got["gave_up"]) == (1, 0)  # woken when the one before let go
    assert not c.answered(0.2) and not d.answered(0)  # only the next one
    b.send("leave")
    b.answer()
    got = c.answer()
    assert (got["waited"], got["gave_up"]) == (1, 0)
    assert not d.answered(0.2)
    c.send("leave")
    c.answer()
    assert d.answer()["gave_up"] == 0


def test_a_writer_alone_in_the_queue_does_not_wait(tmp_path: Path, writers: Any) -> None:
    (a,) = writers(1)
    for _ in range(3):
        a.send("enter 30")
        got = a.answer()
        assert got["slot"] >= 0
        a.send("leave")
        a.answer()
    assert got["entered"] == 3 and got["waited"] == 0


def test_a_writer_stopped_while_it_waited_holds_up_the_next_only_until_its_wait_ends(tmp_path: Path, writers: Any) -> None:
    store = tmp_path / "store.db"
    a, b, c = writers(3)
    a.send("enter 30")
    a.answer()
    b.send("enter 30")
    until_tickets(store, 2)
    os.kill(b.p.pid, signal.SIGSTOP)  # stopped (^Z, a debugger) while its place is held
    c.send("enter 0.3")
    until_tickets(store, 3)
    a.send("leave")
    a.answer()
    got = c.answer()  # it writes anyway, through SQLite's busy handler, once its wait ends
    assert got["slot"] >= 0 and got["gave_up"] == 1
    os.kill(b.p.pid, signal.SIGCONT)
    assert b.answer()["gave_up"] == 0  # b goes on when it runs again: a's place is free


def test_a_writer_killed_in_its_turn_lets_the_next_go(tmp_path: Path, writers: Any) -> None:
    store = tmp_path / "store.db"
    a, b = writers(2)
    a.send("enter 30")
    a.answer()
    b.send("enter 30")
    until_tickets(store, 2)
    a.p.kill()  # the kernel lets go of a dead process's locks
    a.p.wait()
    got = b.answer()
    assert (got["waited"], got["gave_up"]) == (1, 0)


def test_a_forked_child_takes_a_place_of_its_own(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    q = WriterQueue(str(store))
    q.join()
    slot = q.enter(5)
    assert slot >= 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its parent's descriptor shares the parent's locks; it must not use it
        try:
            os.close(r)
            got = q.enter(0.3)
            os.write(w, json.dumps({"slot": got, **q.stats}).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.waitpid(pid, 0)
    child = json.loads(out)
    # the child took the next ticket and waited for the parent's place (its wait ended unanswered)
    assert child["slot"] >= 0 and child["waited"] == 1 and child["gave_up"] == 1
    q.leave(slot)
    q.close()


def test_no_queue_where_its_file_cannot_be_made(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    q = WriterQueue(str(not_a_dir / "store.db"))
    q.join()
    assert q.enter(1) == -1 and not q.usable and not q.joined
    assert not q.take_turn()


def test_a_write_inside_a_turn_takes_no_place_of_its_own(tmp_path: Path) -> None:
    store = comity.open(tmp_path / "store.db")
    try:
        s = store.session("alice")
        queue = store.backend._gate.queue  # type: ignore[attr-defined]
        queue.join()
        with store.writers_turn():
            s.put("k", 1, context=s.get("k").context)
            with store.writers_turn():  # a turn inside a turn is the same turn
                s.put("k", 2, context=s.get("k").context)
        assert queue.stats["entered"] == 1
        s.put("k", 3, context=s.get("k").context)  # outside a turn: a place of its own
        assert queue.stats["entered"] == 2 and queue.stats["waited"] == 0
        assert s.get("k").values == [3]
    finally:
        store.close()


DRAINER = r"""
import json, sys
import comity
from comity.errors import ComityError, NotFound
from comity.work import Board
store = comity.open(sys.argv[1])
queue = store.backend._gate.queue
queue.join()
import comity.store._queue as q
q.CALM_TO_LEAVE = 10**9  # stay in the queue, contended or not
board = Board(store.session(sys.argv[2]))
done, errors = [], 0
while True:
    try:
        c = board.claim_next(ttl=600)
    except NotFound:
        break
    except ComityError:
        errors += 1
        continue
    board.done(c.task["id"], c.token)
    done.append(c.task["id"])
print(json.dumps({"done": done, "errors": errors, **queue.stats}))
"""


@pytest.mark.slow
def test_agents_in_the_queue_complete_every_task_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = comity.open(path)
    board = Board(store.session("lead"))
    ids = [board.add(f"task {i}")["id"] for i in range(120)]
    store.close()
    procs = [subprocess.Popen([sys.executable, "-c", DRAINER, str(path), f"agent{i}"], stdout=subprocess.PIPE, text=True) for i in range(4)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    done = [t for o in outs for t in o["done"]]
    assert sorted(done) == sorted(ids)  # every task completed, none twice
    assert all(o["errors"] == 0 for o in outs)
    assert all(o["entered"] > 0 for o in outs)  # their writes went through the queue
    assert Path(f"{path}{QUEUE_SUFFIX}").exists()
