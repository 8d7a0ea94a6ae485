"""A team's afternoon in a real store, for the dashboard's screenshots, tests and demo.

Every step goes through the real verbs (the agent facade, decisions, reservations,
migrations in a real git repository), on a clock that starts an hour ago and is moved
forward instead of slept on, then set to now for the leases still held: a triage race
(a claim refused for not having seen the assignment), a crash and a zombie's fenced
completion, a stale write refused, siblings kept side by side, migration numbers taken
from two worktrees, a decision, reservations, changes submitted, refuted and tainted,
and one agent that went quiet and is suspected.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Any

from ...errors import ComityError
from ...runtime import VirtualClock
from ...store import Store
from ...store import open as open_store
from ...work import Agent, decide

__all__ = ["populate", "TRIAGE_TASK"]

TRIAGE_TASK = "T-1"
TITLES = [
    "login fails when the email has a plus sign",
    "parser drops trailing comments",
    "add created_at to users",
    "backfill created_at for old rows",
    "rate-limit the password reset endpoint",
    "flaky test: test_session_expiry",
    "document the retry policy",
    "upgrade the HTTP client",
    "cache the feature flags",
    "paginate the audit log API",
    "fix the CSV export encoding",
    "remove the legacy v1 endpoints",
]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _repo(where: Path) -> Path:
    top = where / "repo"
    top.mkdir(parents=True, exist_ok=True)
    _git(top, "init", "-q", "-b", "main")
    _git(top, "config", "user.email", "demo@example.com")
    _git(top, "config", "user.name", "demo")
    (top / "db" / "migrations").mkdir(parents=True, exist_ok=True)
    for n, slug in ((265, "create_users"), (266, "add_email_index")):
        (top / "db" / "migrations" / f"{n:04d}_{slug}.sql").write_text(f"-- {slug}\n")
    (top / "src").mkdir(exist_ok=True)
    (top / "src" / "client.py").write_text("def call(api):\n    for attempt in range(3):\n        return api()\n")
    _git(top, "add", "-A")
    _git(top, "commit", "-q", "-m", "start")
    _git(top, "worktree", "add", "-q", "-b", "bob-work", str(where / "wt-bob"))
    return top


def populate(path: str | Path, *, workdir: str | Path | None = None, extra_tasks: int = 0) -> dict[str, Any]:
    """Fill the store at ``path`` with the afternoon above; ``workdir`` holds the git
    repository the migrations are taken in (default: beside the store).  Returns the
    names of what it made, for tests."""
    start = time.time() - 3600  # noqa: the demo's story ends now, on the wall clock
    clock = VirtualClock(start)
    store: Store = open_store(path, clock=clock)
    try:
        return _story(store, clock, Path(workdir) if workdir is not None else Path(path).parent, extra_tasks)
    finally:
        store.close()


def _story(store: Store, clock: VirtualClock, workdir: Path, extra_tasks: int) -> dict[str, Any]:
    def agent(name: str) -> Agent:
        return Agent(store.session(name, name=f"{name}-1"))

    triage, alice, bob, carol, dave, erin = (agent(n) for n in ("triage", "alice", "bob", "carol", "dave", "erin"))
    step = clock.advance
    ids = []
    for i, title in enumerate(TITLES):
        deps = ["T-3"] if i == 3 else []
        ids.append(triage.task_add(title, body="", deps=deps, labels=["backend"] if i % 3 == 0 else [])["id"])
        step(5)
    for i in range(extra_tasks):
        triage.task_add(f"chore {i + 1}", body="")

    # dave works steadily for a while, then goes quiet (suspected later).
    for n in range(7):
        dave.write(f"notes/dave/{n}", {"progress": n})
        step(60)

    # The triage race: bob reads T-1, triage assigns it to alice, alice claims it, bob claims on his old read.
    seen_by_bob = bob.task_show("T-1")["context"]
    step(20)
    triage.task_assign("T-1", "alice")
    step(10)
    alice.task_claim("T-1", ttl=3600)
    step(15)
    try:
        bob.task_claim("T-1", context=seen_by_bob)
    except ComityError:
        pass  # refused, with the news; kept in the log for `why` and the conflicts view

    # A crash and a zombie: carol claims T-2, checkpoints, goes silent past her lease; bob takes over.
    c = carol.task_claim("T-2", ttl=300)
    step(60)
    carol.task_checkpoint("T-2", c["token"], "parser keeps comments now; lexer next (see tests/test_lexer.py)")
    step(400)
    b = bob.task_claim("T-2", ttl=600)
    step(30)
    try:
        carol.task_complete("T-2", c["token"], result="done (from a stale lease)")
    except ComityError:
        pass  # fenced: her token was superseded
    step(30)
    bob.task_complete("T-2", b["token"], result="fixed in 3f2a1c9")

    # A stale write: alice read the schema notes before erin changed them.
    dave_note = alice.create("notes/schema", "users: id, email")
    old = alice.read("notes/schema")["context"]
    step(10)
    erin.write("notes/schema", "users: id, email, created_at", context=erin.read("notes/schema")["context"])
    step(10)
    try:
        alice.write("notes/schema", "users: id, email, name", context=old)
    except ComityError:
        pass
    del dave_note
    # Siblings: two notes on the API design kept side by side.
    base = erin.create("notes/api-design", "REST, JSON bodies")["context"]
    step(5)
    erin.write("notes/api-design", "REST + cursor pagination", context=base)
    alice.write("notes/api-design", "gRPC for internal calls", context=base, keep_both=True)
    step(10)

    # Work gets done: claims, checkpoints, completions.
    for tid, who in (("T-3", carol), ("T-7", erin), ("T-9", alice)):
        got = who.task_claim(tid, ttl=900)
        step(40)
        who.task_checkpoint(tid, got["token"], "halfway: tests written")
        step(60)
        who.task_complete(tid, got["token"], result="merged")
        step(20)

    # Changes: alice's work on T-5 is built on; carol finds it wrong and refutes it.
    got = alice.task_claim("T-5", ttl=900)
    c1 = alice.changes.submit("T-5", diff=hashlib.sha256(b"rate limit v1").hexdigest(), checks=["pytest -q tests/test_reset.py"])
    alice.task_complete("T-5", got["token"], result="rate limited")
    got = erin.task_claim("T-6", ttl=900)
    erin.changes.submit("T-6", diff=hashlib.sha256(b"retry flaky").hexdigest(), checks=["pytest -q tests/test_session.py"], on=[c1["id"]])
    erin.task_complete("T-6", got["token"], result="stabilised")
    step(60)
    carol.changes.refute(c1["id"], "resets are still unlimited per IP: the limit keys on the email only")
    step(30)

    # The repository: migration numbers from two worktrees, a decision, reservations.
    from ...repo import Repo, new_migration

    top = _repo(workdir)
    new_migration(alice.session, Repo.find(top), "db/migrations", "add_created_at", task="T-3")
    step(5)
    new_migration(bob.session, Repo.find(workdir / "wt-bob"), "db/migrations", "backfill_created_at", task="T-4")
    decide(carol.session, "keep the retry loop in the client: the payments API drops about 1% of calls", ["src/client.py"])
    step(5)

    # Now: the leases still held are live, dave is silent, the others keep working.
    clock.set(max(clock.now(), time.time()))
    alice.reserve_paths(["src/auth/**"], ttl=3600)
    bob.reserve_paths(["docs/**"], ttl=3600, shared=True)
    live = bob.task_claim("T-8", ttl=1800)
    bob.task_checkpoint("T-8", live["token"], "client upgraded; 3 call sites left")
    erin.task_claim("T-10", ttl=900)
    triage.heartbeat()
    return {"tasks": ids, "triage_task": TRIAGE_TASK, "claimed": {"T-8": live["token"]}, "repo": str(top)}
