"""`make demo`, part one: the migration-267 story through agent hosts.

Two agents, alice and bob, each an MCP host (the official MCP client, as Claude Code
or Codex would be) that starts `comity mcp` from one committed `.mcp.json` in its own
git worktree of one repository whose last migration is 0266.  The store lives in the
repository's git common directory, so both worktrees share it with no server.  They
race for the next migration number, commit through comity's git hooks, edit a note
one of them read a while ago, and race for one task.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

try:
    from mcp import Client, StdioServerParameters
    from mcp.types import CallToolResult
except ImportError:  # pragma: no cover - the demo's venv has it (pip install -e '.[dev]')
    sys.exit("the demo needs the MCP SDK: pip install -e '.[mcp]'")

con = Console(highlight=False, width=min(Console().width, 80))
COMITY = [sys.executable, "-m", "comity.cli"]
MIGRATIONS = "db/migrations"
NOTE = "notes/schema"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a host gives its server: no COMITY_* of the caller, no global git config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}
    env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", **extra)
    return env


def sh(cmd: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=clean_env(**extra), capture_output=True, text=True, check=False, timeout=120)


def must(cmd: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    p = sh(cmd, cwd, **extra)
    if p.returncode != 0:
        sys.exit(f"demo: {' '.join(cmd)} failed in {cwd}: {(p.stderr or p.stdout).strip()}")
    return p


def say(who: str, text: str, style: str = "") -> None:
    """One line of the story: who, then what; wrapped under itself."""
    lines = textwrap.wrap(f"{who} {text}", width=con.width, subsequent_indent="  ")
    con.print(Text.assemble((who, "bold"), (lines[0][len(who):], style)))
    for line in lines[1:]:
        con.print(Text(line, style=style))


def indent(text: str) -> None:
    """What a tool, a hook or git answered, indented and wrapped under itself."""
    for line in text.rstrip().splitlines():
        for part in textwrap.wrap(line, width=con.width, initial_indent="    ", subsequent_indent="      ") or [""]:
            con.print(Text(part, style="dim"))


def setup(root: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A repository with migrations up to 0266, comity's hooks and one committed .mcp.json;
    alice works in it, bob in a second worktree (branch bob)."""
    repo, bob = root / "app", root / "bob"
    must(["git", "init", "-q", "-b", "main", str(repo)], root)
    for k, v in (("user.name", "demo"), ("user.email", "demo@example.com"), ("commit.gpgsign", "false")):
        must(["git", "config", k, v], repo)
    d = repo / MIGRATIONS
    d.mkdir(parents=True)
    for n, slug in ((265, "add_sessions"), (266, "add_audit")):
        (d / f"{n:04d}_{slug}.sql").write_text(f"-- migration {n}\n")
    must(["git", "add", "-A"], repo)
    must(["git", "commit", "-q", "-m", "migrations up to 0266"], repo)
    must([*COMITY, "init"], repo)
    must([*COMITY, "hooks", "install"], repo)  # pre-commit and commit-msg, shared by every worktree
    must([*COMITY, "hooks", "install", "--claude"], repo)  # .claude/settings.json
    must([*COMITY, "mcp", "install"], repo)  # .mcp.json: no agent name in it
    must(["git", "add", ".mcp.json", ".claude/settings.json"], repo)
    must(["git", "commit", "-q", "-m", "comity for every agent host"], repo)
    must(["git", "worktree", "add", "-q", "-b", "bob", str(bob)], repo)
    server = json.loads((repo / ".mcp.json").read_text())["mcpServers"]["comity"]
    return repo, bob, server


@asynccontextmanager
async def host(server: dict[str, Any], cwd: Path, **extra: str) -> AsyncIterator[Client]:
    """What an MCP host does with the committed .mcp.json: start its command in the worktree."""
    params = StdioServerParameters(command=server["command"], args=[*server["args"], "--heartbeat", "0"], env=clean_env(**extra), cwd=str(cwd))
    async with Client(params, read_timeout_seconds=60) as client:
        yield client


def answer(r: CallToolResult) -> dict[str, Any]:
    if r.is_error or r.structured_content is None:
        sys.exit(f"demo: a tool failed that should not have: {r.content}")
    return dict(r.structured_content)


def refusal(r: CallToolResult) -> str:
    if not r.is_error:
        sys.exit(f"demo: a call went through that comity should have refused: {r.structured_content}")
    return str(getattr(r.content[0], "text", r.content[0]))


async def together(calls: dict[str, Awaitable[CallToolResult]]) -> dict[str, CallToolResult]:
    out: dict[str, CallToolResult] = {}

    async def one(name: str, call: Awaitable[CallToolResult]) -> None:
        out[name] = await call

    async with anyio.create_task_group() as tg:
        for name, call in calls.items():
            tg.start_soon(one, name, call)
    return out


def pre_tool_use(worktree: Path, agent: str, path: Path) -> dict[str, Any] | None:
    """Claude Code's PreToolUse event for a Write of ``path``, piped to the hook installed in
    .claude/settings.json, as Claude Code runs it."""
    settings = json.loads((worktree / ".claude" / "settings.json").read_text())
    event = {"session_id": "demo", "transcript_path": str(worktree / ".transcript.jsonl"), "cwd": str(worktree),
             "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": "Write",
             "tool_input": {"file_path": str(path), "content": "CREATE TABLE orders (id int);\n"}}  # fmt: skip
    for group in settings["hooks"]["PreToolUse"]:
        if "Write" not in group.get("matcher", "").split("|"):
            continue
        for h in group["hooks"]:
            p = subprocess.run(["sh", "-c", h["command"]], input=json.dumps(event), cwd=worktree, capture_output=True, text=True,
                               env=clean_env(CLAUDE_PROJECT_DIR=str(worktree), COMITY_AGENT=agent), timeout=60, check=False)  # fmt: skip
            if p.stdout.strip():
                return dict(json.loads(p.stdout))
    return None


async def story(repo: Path, bob_tree: Path, server: dict[str, Any]) -> None:
    trees = {"alice": repo, "bob": bob_tree}
    async with AsyncExitStack() as stack:
        with con.status("starting two MCP hosts, each with `comity mcp` in its worktree…"):
            alice = await stack.enter_async_context(host(server, repo, COMITY_AGENT="alice"))
            bob = await stack.enter_async_context(host(server, bob_tree))
            hosts = {"alice": alice, "bob": bob}
            who = {name: answer(await c.call_tool("whoami", {})) for name, c in hosts.items()}
        for name, me in who.items():
            say(name, f"whoami: agent {me['agent']!r} ({me['agent_from']})")
        indent(f"both use the store in {who['bob']['store_from']}")

        con.rule("1. both want the next migration")
        con.print("Without coordination both write db/migrations/0267_*.sql and one silently wins at"
                  " merge time. Here each host calls migration_new at the same moment:")
        got = await together({
            "alice": alice.call_tool("migration_new", {"slug": "add_users", "dir": MIGRATIONS}),
            "bob": bob.call_tool("migration_new", {"slug": "add_orders", "dir": MIGRATIONS}),
        })  # fmt: skip
        taken = {name: answer(r) for name, r in got.items()}
        for name, a in taken.items():
            say(name, f"migration_new -> number {a['number']}, {a['file']} (in {trees[name].name}/)")
        numbers = sorted(a["number"] for a in taken.values())
        if numbers != [267, 268]:
            sys.exit(f"demo: expected 0267 and 0268, got {numbers}: that is a bug in comity")

        late = next(n for n, a in taken.items() if a["number"] == 268)
        con.print(f"\n{late}'s model, had it written 0267 by hand, would have been stopped by the Claude Code hook:")
        out = pre_tool_use(trees[late], late, trees[late] / MIGRATIONS / "0267_by_hand.sql")
        decision = (out or {}).get("hookSpecificOutput", {})
        if decision.get("permissionDecision") != "deny":
            sys.exit(f"demo: the PreToolUse hook let a colliding migration through: {out}")
        say("hook", f"PreToolUse Write {MIGRATIONS}/0267_by_hand.sql: deny", "yellow")
        indent(decision["permissionDecisionReason"])

        con.print("\nEach writes its SQL into the file it was given and commits; comity's git hooks check the numbers:")
        with con.status("committing in both worktrees through the hooks…"):
            commits = {}
            for name, a in taken.items():
                Path(a["path"]).write_text(f"-- {name}'s migration\nCREATE TABLE {name}_t (id int);\n")
                sh(["git", "add", a["file"]], trees[name])
                commits[name] = sh(["git", "commit", "-q", "-m", f"{name}: migration {a['number']}"], trees[name], COMITY_AGENT=name)
        for name, p in commits.items():
            ok = p.returncode == 0
            say(name, f"git commit {taken[name]['file']}: {'accepted' if ok else 'refused'}", "green" if ok else "red")
            if not ok:
                indent(p.stderr or p.stdout)
                sys.exit("demo: a commit of a number taken through comity was refused: that is a bug")

        con.rule("2. a write based on a stale read")
        answer(await alice.call_tool("write", {"key": NOTE, "value": "users: id, email"}))
        answer(await bob.call_tool("read", {"key": NOTE}))
        con.print(f"bob reads {NOTE} and goes off to think; meanwhile alice edits it again.")
        answer(await alice.call_tool("read", {"key": NOTE}))
        answer(await alice.call_tool("write", {"key": NOTE, "value": "users: id, email, name"}))
        say("alice", f'write {NOTE} = "users: id, email, name"', "green")
        text = refusal(await bob.call_tool("write", {"key": NOTE, "value": "users: id, email, created_at"}))
        say("bob", f'write {NOTE} = "users: id, email, created_at": refused', "yellow")
        indent(text)
        fresh = answer(await bob.call_tool("read", {"key": NOTE}))
        say("bob", f"read {NOTE} -> {fresh['values']}")
        answer(await bob.call_tool("write", {"key": NOTE, "value": "users: id, email, name, created_at"}))
        say("bob", f'write {NOTE} = "users: id, email, name, created_at": accepted (both edits kept)', "green")

        con.rule("3. one task, two claims at once")
        task = answer(await alice.call_tool("task_add", {"title": "Add the users table"}))
        say("alice", f"task_add -> {task['id']}; both see it in task_ready and claim it at once")
        got = await together({name: c.call_tool("task_claim", {"id": task["id"]}) for name, c in hosts.items()})
        winners = [n for n, r in got.items() if not r.is_error]
        if len(winners) != 1:
            sys.exit(f"demo: {len(winners)} claims of one task succeeded: that is a bug in comity")
        for name, r in got.items():
            if r.is_error:
                say(name, "task_claim: refused", "yellow")
                indent(refusal(r))
            else:
                say(name, f"task_claim: won (fencing token {answer(r).get('token')})", "green")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="comity-demo-"))
    try:
        with con.status("setting up a repository (migrations up to 0266) and a second worktree…"):
            repo, bob, server = setup(root)
        con.print(Panel(
            "Two agent hosts, two git worktrees, one repository whose last migration is 0266.\n"
            f"alice works in {repo}\nbob   works in {bob}\n"
            f"both start `{Path(server['command']).name} {' '.join(server['args'])}` from the committed .mcp.json",
            title="comity demo: migration 267 through MCP",
        ))  # fmt: skip
        anyio.run(story, repo, bob, server)
        con.rule("4. merging bob's branch")
        with con.status("git merge bob…"):
            must(["git", "merge", "-q", "--no-edit", "bob"], repo, COMITY_AGENT="alice")
        on_disk = sorted(p.name for p in (repo / MIGRATIONS).iterdir())
        con.print(f"{MIGRATIONS}/: " + ", ".join(on_disk))
        if [n[:4] for n in on_disk] != ["0265", "0266", "0267", "0268"]:
            sys.exit("demo: the merged migrations are not 0265 to 0268: that is a bug in comity")
        con.print("\nNothing was silently lost: each agent got its own number, both commits went in,"
                  " the stale write was refused with the news, and one claim won.")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
