"""Several `comity serve` processes over one PostgreSQL database, agents spread over them.

16 agent processes drain 300 tasks through two servers; one server is killed mid-run and
its agents carry on through the other; a paused agent's late completion is fenced; a
counter updated with context-checked writes loses no increment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import comity
from comity.server.auth import issue_token
from comity.work import Board

from server_support import COMITY, Served, _ready, clean_env

WORKER = r"""
import json, sys, time
from comity.remote import RemoteAgent
from comity.errors import NotFound, StaleContext, Unavailable, Fenced, LeaseExpired
urls, token, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
a = RemoteAgent(urls, auth=token, timeout=30)
done, incs, deadline = [], 0, time.monotonic() + 150
def retry(fn):
    # A request that died with its server has an unknown outcome: completion is idempotent
    # for the same token, and context-checked writes carry a request id, so ask again.
    for _ in range(20):
        try:
            return fn()
        except Unavailable:
            time.sleep(0.1)
    raise SystemExit("no server answered")
while time.monotonic() < deadline:
    try:
        c = a.task_claim_next(ttl=4)
    except NotFound:
        left = [t for t in retry(lambda: a.task_list())["tasks"] if t["state"] != "done"]
        if not left:
            break
        time.sleep(0.3)  # others hold the rest; an orphan comes back when its lease expires
        continue
    except (StaleContext, Unavailable):
        continue
    tid, token_ = c["task"]["id"], c["token"]
    try:
        retry(lambda: a.task_complete(tid, token_))
        done.append(tid)
    except (Fenced, LeaseExpired, StaleContext):
        continue  # our lease ran out while the server was dying: someone else finishes it
    if len(done) % 5 == 0:
        while True:
            v = retry(lambda: a.read("shared/counter"))["values"][0]
            try:
                retry(lambda: a.write("shared/counter", v + 1))
                incs += 1
                break
            except StaleContext:
                continue
json.dump({"done": done, "incs": incs}, open(out, "w"))
"""

ZOMBIE = r"""
import json, sys
from comity.remote import RemoteAgent
from comity.errors import ComityError
urls, token = sys.argv[1].split(","), sys.argv[2]
a = RemoteAgent(urls, auth=token, timeout=30)
c = a.task_claim("T-1", ttl=2)
print(json.dumps({"token": c["token"]}), flush=True)
sys.stdin.readline()  # paused here (SIGSTOP) past its lease, then woken
try:
    a.task_complete("T-1", c["token"])
    print(json.dumps({"late_done": "accepted"}), flush=True)
except ComityError as e:
    print(json.dumps({"late_done": e.code}), flush=True)
"""


def _serve(url: str, log: Path) -> Served:
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*COMITY, "--store", url, "serve", "--port", "0", "--json"], stdout=subprocess.PIPE, stderr=err, text=True, env=clean_env()
        )
    return _ready(proc, log, 60)


def test_two_servers_over_one_database_sixteen_agents_one_server_killed(postgres_url: str, tmp_path: Path) -> None:
    tasks = 300
    with comity.open(postgres_url) as store:
        s = store.session("triage")
        board = Board(s)
        for i in range(tasks):
            board.add(f"task {i}")
        s.create("shared/counter", 0)
        tokens = {name: issue_token(s, name)["auth_token"] for name in [f"w{i}" for i in range(16)] + ["zombie"]}

    a, b = _serve(postgres_url, tmp_path / "a.log"), _serve(postgres_url, tmp_path / "b.log")
    workers: list[subprocess.Popen[str]] = []
    try:
        zombie = subprocess.Popen(
            [sys.executable, "-c", ZOMBIE, f"{a.url},{b.url}", tokens["zombie"]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        )  # fmt: skip
        assert zombie.stdout is not None and zombie.stdin is not None
        zombie_token = json.loads(zombie.stdout.readline())["token"]
        zombie.send_signal(signal.SIGSTOP)  # presumed dead: it holds T-1 and says nothing

        outs = [tmp_path / f"w{i}.json" for i in range(16)]
        for i in range(16):
            urls = f"{a.url},{b.url}" if i % 2 == 0 else f"{b.url},{a.url}"
            workers.append(
                subprocess.Popen([sys.executable, "-c", WORKER, urls, tokens[f"w{i}"], str(outs[i])], env=clean_env(), stderr=subprocess.PIPE, text=True)
            )
        # Kill the first server once the agents are well into the work.
        with comity.open(postgres_url) as store:
            watcher = store.session()
            deadline = time.monotonic() + 90
            while sum(1 for e in watcher.log(limit=10_000) if e["op"] == "task.done") < 60 and time.monotonic() < deadline:
                time.sleep(0.2)
        a.kill()

        for w in workers:
            _, err = w.communicate(timeout=240)
            assert w.returncode == 0, err[-2000:]

        zombie.send_signal(signal.SIGCONT)
        late, _ = zombie.communicate("go\n", timeout=60)
        assert json.loads(late.strip().splitlines()[-1]) == {"late_done": "fenced"}, late

        results = [json.loads(o.read_text()) for o in outs]
        with comity.open(postgres_url) as store:
            s = store.session()
            done_events: dict[str, list[str]] = {}
            after = 0
            while True:
                events = s.log(after=after, limit=10_000)
                if not events:
                    break
                for e in events:
                    if e["op"] == "task.done":
                        done_events.setdefault(e["key"], []).append(e["agent"])
                after = events[-1]["pos"]
            assert len(done_events) == tasks, f"{tasks - len(done_events)} tasks never completed"
            assert all(len(v) == 1 for v in done_events.values()), {k: v for k, v in done_events.items() if len(v) > 1}
            assert done_events["@task/T-1"] != ["zombie"], "the paused agent's late completion counted"
            assert Board(s).show("T-1")["done_token"] > zombie_token
            assert s.get("shared/counter").values == [sum(r["incs"] for r in results)], "an increment was lost"
        assert sorted(t for r in results for t in r["done"]) == sorted(k.split("/")[1] for k in done_events)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        a.stop()
        b.stop()
