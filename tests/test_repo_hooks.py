"""The installed hooks, through real ``git commit``s: an existing hook keeps running,
reservations, decisions and task leases refuse what they should and nothing else."""

from __future__ import annotations

import json
import stat
import subprocess
import time
import sys
from pathlib import Path

from test_repo_support import commit, git, make_repo, ok, open_store, run, worktree

import comity
from comity.coord import reserve
from comity.repo import Repo
from comity.repo.hooks import check_task
from comity.runtime import VirtualClock
from comity.work import Agent, Board, decide

CLIENT = """\
import time


def fetch(url):
    return get(url)
"""

DECIDED = """\
import time


def fetch(url):
    for attempt in range(3):
        try:
            return get(url)
        except TimeoutError:
            time.sleep(2 ** attempt)
    raise TimeoutError(url)
"""


def _hook(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_an_existing_hook_still_runs_and_install_is_idempotent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    hooks = repo / ".git" / "hooks"
    _hook(hooks / "pre-commit", f'echo ran >> "{tmp_path}/ran"\nif [ -e "{tmp_path}/block" ]; then echo "blocked by the old hook" >&2; exit 1; fi\n')
    first = json.loads(ok(run(repo, "hooks", "install", "--json")).stdout)
    again = json.loads(ok(run(repo, "hooks", "install", "--json")).stdout)
    assert first["hooks"][0]["chained"] == str(hooks / "pre-commit.pre-comity")
    assert again["hooks"][0]["chained"] == first["hooks"][0]["chained"]  # not chained to itself
    assert "comity-hook" in (hooks / "pre-commit").read_text()
    assert "echo ran" in (hooks / "pre-commit.pre-comity").read_text()
    (repo / "a.txt").write_text("a\n")
    assert commit(repo, "a").returncode == 0
    assert (tmp_path / "ran").read_text() == "ran\n"
    # The old hook still decides: when it refuses, the commit is refused.
    (tmp_path / "block").write_text("")
    (repo / "b.txt").write_text("b\n")
    r = commit(repo, "b")
    assert r.returncode != 0 and "blocked by the old hook" in r.stderr
    (tmp_path / "block").unlink()
    # comity's own checks run after it: a reservation refuses.
    with open_store(repo) as store:
        reserve(store.session("bob"), ["b.txt"])
    r = commit(repo, "b", agent="alice")
    assert r.returncode != 0 and "bob's exclusive reservation" in r.stderr
    assert (tmp_path / "ran").read_text() == "ran\n" * 3
    # Uninstalling puts the old hook back.
    ok(run(repo, "hooks", "uninstall"))
    assert "comity-hook" not in (hooks / "pre-commit").read_text() and not (hooks / "pre-commit.pre-comity").exists()
    assert commit(repo, "b", agent="alice").returncode == 0


def test_core_hooks_path_is_honoured(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    git(repo, "config", "core.hooksPath", ".githooks")
    _hook(repo / ".githooks" / "pre-commit", f'echo ran > "{tmp_path}/ran"\n')
    r = json.loads(ok(run(repo, "hooks", "install", "--json")).stdout)
    assert r["dir"] == str(repo / ".githooks")
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    with open_store(repo) as store:
        reserve(store.session("bob"), ["src/**"])
    (repo / "src").mkdir()
    (repo / "src" / "x.py").write_text("x = 1\n")
    r2 = commit(repo, "x", agent="alice")
    assert r2.returncode != 0 and "src/x.py" in r2.stderr and "'src/**'" in r2.stderr
    assert (tmp_path / "ran").exists()
    assert commit(repo, "x", agent="bob").returncode == 0  # the holder commits


def test_a_commit_that_undoes_a_decision_is_refused_until_acknowledged(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "src").mkdir()
    (repo / "src" / "client.py").write_text(CLIENT)
    assert commit(repo, "client").returncode == 0
    (repo / "src" / "client.py").write_text(DECIDED)
    assert commit(repo, "retry with backoff", agent="alice").returncode == 0
    d = json.loads(ok(run(repo, "decide", "keep the retry: the API drops 1% of calls", "--paths", "src/client.py", "--json", agent="alice")).stdout)
    assert d["id"] == "D-1" and d["paths"] == ["src/client.py"]
    assert "            return get(url)" in d["changes"]["src/client.py"]["added"]
    assert "    return get(url)" in d["changes"]["src/client.py"]["removed"]
    listed = json.loads(ok(run(repo, "decisions", "src/client.py", "--json")).stdout)
    assert [x["id"] for x in listed] == ["D-1"]
    assert json.loads(ok(run(repo, "decisions", "README", "--json")).stdout) == []

    bob = worktree(repo, "wt-bob")
    client = bob / "src" / "client.py"
    # An unrelated edit of a file under the decision goes through (and tells bob of it).
    client.write_text(DECIDED + "\n\ndef post(url, body):\n    return put(url, body)\n")
    r = commit(bob, "post", agent="bob")
    assert r.returncode == 0, r.stderr
    assert "D-1" in r.stderr and "keep the retry" in r.stderr
    # Reverting the decided lines is refused, naming the decision and its author.
    client.write_text(CLIENT + "\n\ndef post(url, body):\n    return put(url, body)\n")
    r = commit(bob, "simplify fetch", agent="bob")
    assert r.returncode != 0 and "undoes" in r.stderr
    assert "D-1" in r.stderr and "alice" in r.stderr and "keep the retry" in r.stderr
    assert "comity decide ack D-1" in r.stderr
    # Restoring only a line the decision removed is refused too.
    git(bob, "checkout", "--", "src/client.py")
    git(bob, "reset", "-q")
    client.write_text(DECIDED.replace("    raise TimeoutError(url)\n", "    raise TimeoutError(url)\n    return get(url)\n"))
    r = commit(bob, "fallback", agent="bob")
    assert r.returncode != 0 and "restores" in r.stderr
    # After acknowledging, bob's revert goes through; carol is still refused.
    client.write_text(CLIENT)
    carol = commit(bob, "simplify fetch", agent="carol")
    assert carol.returncode != 0 and "D-1" in carol.stderr and "comity decide ack D-1" in carol.stderr
    ok(run(bob, "decide", "ack", "D-1", agent="bob"))
    assert commit(bob, "simplify fetch", agent="bob").returncode == 0
    acks = json.loads(ok(run(repo, "decisions", "--json")).stdout)[0]["acks"]
    assert acks == ["bob"]
    # The decider's own commits are never refused by their own decision.
    (repo / "src" / "client.py").write_text(CLIENT)
    assert commit(repo, "alice changes her mind", agent="alice").returncode == 0


def test_a_commit_under_a_task_whose_lease_was_taken_over_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    # Alice's lease expires and bob takes the task over on a virtual clock that starts now,
    # so the hooks (on the real clock) see bob's lease live and alice's token superseded.
    clock = VirtualClock(time.time())
    with comity.open(Repo.find(repo).store_path, clock=clock) as store:
        alice = Board(store.session("alice"))
        t = alice.add("fix the parser")
        mine = alice.claim(t["id"], ttl=1)
        clock.advance(2)
        bobs = Board(store.session("bob")).claim(t["id"], ttl=3600)
    assert bobs.token > mine.token
    (repo / "parser.py").write_text("x = 1\n")
    task = {"COMITY_TASK": t["id"], "COMITY_TOKEN": str(mine.token)}
    r = commit(repo, "parser", agent="alice", **task)
    assert r.returncode != 0 and "bob" in r.stderr and t["id"] in r.stderr and "no longer holds" in r.stderr
    # The trailer is checked by the commit-msg hook.
    r = commit(repo, f"parser\n\nComity-Task: {t['id']}", agent="alice")
    assert r.returncode != 0 and "Comity-Task trailer" in r.stderr
    # The new holder commits, with the env or the trailer.
    assert commit(repo, "parser", agent="bob", COMITY_TASK=t["id"], COMITY_TOKEN=str(bobs.token)).returncode == 0
    (repo / "parser.py").write_text("x = 2\n")
    assert commit(repo, f"parser 2\n\nComity-Task: {t['id']}\nComity-Token: {bobs.token}", agent="bob").returncode == 0
    # A stale token of the right agent is refused as well.
    (repo / "parser.py").write_text("x = 3\n")
    r = commit(repo, "parser 3", agent="bob", COMITY_TASK=t["id"], COMITY_TOKEN=str(mine.token))
    assert r.returncode != 0 and "superseded" in r.stderr
    # --no-verify is a person's escape.
    assert commit(repo, "parser 3", agent="alice", no_verify=True, **task).returncode == 0


def test_check_task_refuses_every_lease_the_agent_no_longer_holds(tmp_path: Path) -> None:
    """The rule the hooks apply to a commit made under a task, at the layer that owns it,
    on a virtual clock: each refusal says why."""
    clock = VirtualClock()
    with comity.open(tmp_path / "s.db", clock=clock) as store:
        s = store.session()
        alice, bob = Board(store.session("alice")), Board(store.session("bob"))
        t = alice.add("fix the parser")
        tid = t["id"]
        mine = alice.claim(tid, ttl=60)
        assert check_task(s, "alice", tid, str(mine.token), "COMITY_TASK") == []
        assert check_task(s, "alice", tid, None, "COMITY_TASK") == []
        clock.advance(61)
        # Expired, and nobody took it over: still refused (the work may be taken any moment).
        [p] = check_task(s, "alice", tid, str(mine.token), "COMITY_TASK")
        assert p.kind == "task" and f"alice's lease on task {tid} expired 1s ago" in p.message and "renew" in p.fix
        [p] = check_task(s, "alice", tid, None, "Comity-Task trailer")
        assert "expired" in p.message and "Comity-Task trailer" in p.message
        # Taken over: the old holder is told who holds it now.
        bobs = bob.claim(tid, ttl=60)
        [p] = check_task(s, "alice", tid, str(mine.token), "COMITY_TASK")
        assert f"alice no longer holds task {tid}" in p.message and f"now held by bob (token {bobs.token})" in p.message
        # The successor with its own token commits; with the old token it is told it is superseded.
        assert check_task(s, "bob", tid, str(bobs.token), "COMITY_TASK") == []
        [p] = check_task(s, "bob", tid, str(mine.token), "COMITY_TASK")
        assert f"token {mine.token} for task {tid} was superseded by token {bobs.token}" in p.message
        bob.release(tid, bobs.token)
        [p] = check_task(s, "bob", tid, str(bobs.token), "COMITY_TASK")
        assert "released or expired" in p.message
        never = alice.add("never claimed")["id"]
        [p] = check_task(s, "alice", never, None, "COMITY_TASK")
        assert "nobody ever claimed" in p.message
        [p] = check_task(s, None, tid, None, "COMITY_TASK")
        assert "COMITY_AGENT is not set" in p.message
        [p] = check_task(s, "alice", tid, "seven", "COMITY_TASK")
        assert "'seven' is not a number" in p.message


def test_agents_hear_of_decisions_on_paths_they_reserve(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    with open_store(repo) as store:
        decide(store.session("alice"), "keep the cache", ["src/cache.py"])
        bob = Agent(store.session("bob"))
        r = bob.reserve_paths(["src/**"])
        assert [d["id"] for d in r["decisions"]] == ["D-1"]
        assert bob.reserve_paths(["docs/**"])["decisions"] == []
        decide(store.session("alice"), "no ORM here", ["src/db.py"])
        news = bob.whoami()["news"]
        assert any(n["key"] == "@decisions" and n.get("id") == "D-2" for n in news)


def test_the_hook_module_loads_no_cli(tmp_path: Path) -> None:
    code = "import sys, comity.repo.hook; print(sorted(m for m in ('click', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
