"""`make demo`: two agents in two git worktrees race on migration 267.

Each agent is a separate OS process running the real `comity` CLI, in its own
worktree of one repository; the store lives in the repository's git common
directory, so both worktrees share it with no server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

con = Console(highlight=False)
COMITY = [sys.executable, "-m", "comity.cli"]


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def comity(agent: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_")}
    env["COMITY_AGENT"] = agent
    return sh([*COMITY, *args], cwd, env)


def show(agent: str, what: str, r: subprocess.CompletedProcess[str]) -> None:
    colour = "green" if r.returncode == 0 else "yellow"
    con.print(f"[bold]{agent}[/]$ comity {what}  [{colour}](exit {r.returncode})[/]")
    for line in (r.stdout + r.stderr).rstrip().splitlines():
        if not line.startswith("context:"):
            con.print(f"    {line}", markup=False)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="comity-demo-"))
    try:
        run(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path) -> None:
    repo, wt = root / "app", root / "app-bob"
    repo.mkdir()
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "-c", "user.email=d@x", "-c", "user.name=demo", "commit", "-q", "--allow-empty", "-m", "init"],
        ["git", "worktree", "add", "-q", str(wt), "-b", "bob"],
    ):
        r = sh(cmd, repo)
        if r.returncode != 0:
            sys.exit(f"demo needs git: {' '.join(cmd)} failed: {r.stderr.strip()}")

    con.print(Panel("Two agents, two git worktrees, one repository.\n"
                    f"alice works in {repo}\nbob   works in {wt}", title="comity demo: migration 267"))
    a = comity("alice", repo, "init")
    b = comity("bob", wt, "init")
    show("alice", "init", a)
    show("bob", "init", b)

    con.rule("1. both want the next migration number, 0267")
    con.print("Without coordination, both write db/migrations/0267_*.sql and one silently wins at merge time.")
    con.print("With comity each claims the number with a create, which succeeds only if nobody has it.\n")
    procs = {
        name: subprocess.Popen(
            [*COMITY, "--agent", name, "create", "migrations/0267", json.dumps(f"0267_{table}.sql")],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, cwd, table in (("alice", repo, "add_users"), ("bob", wt, "add_orders"))
    }
    results = {}
    for name, p in procs.items():
        out, err = p.communicate()
        results[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        show(name, f"create migrations/0267 '\"0267_...\"'", results[name])
    loser = next((n for n, r in results.items() if r.returncode != 0), None)
    if loser is None:
        sys.exit("both creates succeeded: that is a bug in comity")
    cwd = wt if loser == "bob" else repo
    con.print(f"\n{loser} was refused (exit 3) and told who holds 0267; it takes 0268 instead:")
    show(loser, "create migrations/0268 ...", comity(loser, cwd, "create", "migrations/0268", json.dumps("0268_next.sql")))

    con.rule("2. a write based on a stale read")
    show("alice", "put notes/schema '\"users: id, email\"'", comity("alice", repo, "put", "notes/schema", json.dumps("users: id, email")))
    ctx = json.loads(comity("bob", wt, "get", "notes/schema", "--json").stdout)["context"]
    con.print("bob reads notes/schema and goes off to think; meanwhile alice edits it again.")
    actx = json.loads(comity("alice", repo, "get", "notes/schema", "--json").stdout)["context"]
    show("alice", "put notes/schema ... --context CTX", comity("alice", repo, "put", "notes/schema", json.dumps("users: id, email, name"), "--context", actx))
    con.print("bob writes with the context of his old read:")
    show("bob", "put notes/schema ... --context OLD", comity("bob", wt, "put", "notes/schema", json.dumps("users: id, email, created_at"), "--context", ctx))
    con.print("\nRefused with the news. If both edits matter, bob keeps both as siblings:")
    show("bob", "put notes/schema ... --context OLD --keep-both", comity("bob", wt, "put", "notes/schema", json.dumps("users: id, email, created_at"), "--context", ctx, "--keep-both"))
    got = json.loads(comity("alice", repo, "get", "notes/schema", "--json").stdout)
    con.print(f"get notes/schema -> {len(got['values'])} values: {got['values']}")
    show("alice", "put notes/schema (merged) --context CTX", comity("alice", repo, "put", "notes/schema", json.dumps("users: id, email, name, created_at"), "--context", got["context"]))

    con.rule("3. the log: who did what, in order")
    show("alice", "log", comity("alice", repo, "log"))
    con.print("\nNothing was silently lost: every refusal named the writer, and the log keeps every value.")


if __name__ == "__main__":
    main()
