"""The migration-267 story through agent hosts: two official MCP clients, each with a
`comity mcp` started in its own git worktree from one configuration (the agent named by
COMITY_AGENT, or by the worktree), and the same story through a comity server."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="the MCP SDK 2.x is not installed (pip install -e '.[dev]')")

from conftest import COMITY  # noqa: E402
from hosts_support import MIGRATIONS, NOTE, Scene, check_migrations, commit_both, scene  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.types import CallToolResult  # noqa: E402
from test_repo_support import env, git, ok, run  # noqa: E402


@asynccontextmanager
async def host(cwd: Path, **extra: str) -> AsyncIterator[Client]:
    """What Claude Code does with the committed .mcp.json: start `comity mcp` in the worktree."""
    params = StdioServerParameters(command=COMITY[0], args=[*COMITY[1:], "mcp", "--heartbeat", "0"], env=env(**extra), cwd=str(cwd))
    async with Client(params, read_timeout_seconds=60) as client:
        yield client


def body(r: CallToolResult) -> dict[str, Any]:
    assert not r.is_error, r.content
    assert r.structured_content is not None
    return r.structured_content


def error_text(r: CallToolResult) -> str:
    assert r.is_error, r.structured_content
    return str(r.content[0].text)  # type: ignore[union-attr]


async def both(calls: dict[str, Any]) -> dict[str, CallToolResult]:
    out: dict[str, CallToolResult] = {}

    async def one(name: str, call: Any) -> None:
        out[name] = await call

    async with anyio.create_task_group() as tg:
        for name, call in calls.items():
            tg.start_soon(one, name, call)
    return out


def test_two_hosts_in_two_worktrees_replay_the_story(tmp_path: Path) -> None:
    s = scene(tmp_path)

    async def main() -> None:
        async with host(s.alice, COMITY_AGENT="alice") as alice, host(s.bob) as bob:
            me = body(await bob.call_tool("whoami", {}))
            assert me["agent"] == "bob" and "worktree" in me["agent_from"] and str(s.bob) in me["agent_from"]
            assert "git common directory" in me["store_from"] and "warning" not in me
            assert body(await alice.call_tool("whoami", {}))["agent_from"] == "COMITY_AGENT"
            names = {"alice": "alice", "bob": "bob"}

            # 1. Both take the next migration at once, each in its own worktree.
            got = await both({
                "alice": alice.call_tool("migration_new", {"slug": "add_users", "dir": MIGRATIONS}),
                "bob": bob.call_tool("migration_new", {"slug": "add_orders", "dir": MIGRATIONS}),
            })  # fmt: skip
            answers = {k: body(v) for k, v in got.items()}
            check_migrations(s, answers)
            for a in answers.values():
                text = json.dumps(a)
                other = {267, 268} - {a["number"]}
                assert f'"number": {other.pop()}' not in text  # nothing shown of a number that is not this file's
            commit_both(s, answers, names)
            check = body(await bob.call_tool("migration_check", {}))
            assert check["ok"] is True and check["problems"] == []

            # 2. A note read by both, changed by alice: bob's write is refused with the news, then redone.
            body(await alice.call_tool("write", {"key": NOTE, "value": "users: id, email"}))
            body(await bob.call_tool("read", {"key": NOTE}))
            body(await alice.call_tool("read", {"key": NOTE}))
            body(await alice.call_tool("write", {"key": NOTE, "value": "users: id, email, name"}))
            refused = error_text(await bob.call_tool("write", {"key": NOTE, "value": "users: id, email, created_at"}))
            assert "stale_context" in refused and "alice" in refused and "users: id, email, created_at" in refused
            fresh = body(await bob.call_tool("read", {"key": NOTE}))
            assert fresh["values"] == ["users: id, email, name"]
            assert fresh["stale"] == []  # the answer that carries the fresh value does not call it stale
            body(await bob.call_tool("write", {"key": NOTE, "value": "users: id, email, name, created_at"}))

            # 3. One task, both claim it at once: one wins, the other is told who.
            task = body(await alice.call_tool("task_add", {"title": "Add the users table"}))
            for c in (alice, bob):
                assert [t["id"] for t in body(await c.call_tool("task_ready", {}))["tasks"]] == [task["id"]]
            got = await both({"alice": alice.call_tool("task_claim", {"id": task["id"]}), "bob": bob.call_tool("task_claim", {"id": task["id"]})})
            assert [r.is_error for r in got.values()].count(True) == 1
            winner = next(k for k, r in got.items() if not r.is_error)
            loser = "bob" if winner == "alice" else "alice"
            assert winner in error_text(got[loser]) and "task_ready()" in error_text(got[loser])

    async def guarded() -> None:
        with anyio.fail_after(180):
            await main()

    anyio.run(guarded)
    # Both worktrees' commits are in; merging bob's branch brings 0267 and 0268 together.
    git(s.alice, "merge", "-q", "--no-edit", "bob")
    names = sorted(p.name for p in (s.alice / MIGRATIONS).iterdir())
    assert names[-2:] == sorted(names[-2:]) and [n[:4] for n in names] == ["0265", "0266", "0267", "0268"]


def test_a_server_takes_the_number_and_the_client_creates_the_file_in_its_worktree(tmp_path: Path) -> None:
    from server_support import agent_token, serve

    from comity.errors import Invalid
    from comity.remote import RemoteAgent
    from comity.repo.worktree import Worktrees

    s = scene(tmp_path)
    store = tmp_path / "server.db"
    token = agent_token(store, "carol")
    served = serve(store)
    try:
        carol = RemoteAgent(served.url, auth=token, worktrees=Worktrees.here(s.bob))
        a = carol.migration_new("add_invoices", dir=MIGRATIONS)
        assert a["number"] == 267 and Path(a["path"]) == s.bob / MIGRATIONS / "0267_add_invoices.sql" and Path(a["path"]).is_file()
        assert a["agent"] == "carol" and a["worktree"] == str(s.bob) and a["branch"] == "bob"
        assert set(a) >= {"news", "stale"}
        b = carol.migration_new("add_refunds", dir=MIGRATIONS)
        assert b["number"] == 268
        assert carol.migration_check()["ok"] is True
        # Called directly, the server says why it cannot create the file, and what to do.
        req = urllib.request.Request(f"{served.url}/v1/migration_new", data=json.dumps({"slug": "x"}).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError("the server created a file it cannot reach")
        except urllib.error.HTTPError as e:
            err = json.loads(e.read())
            assert e.code == 422 and err["field"] == "worktree" and "your git worktree" in err["message"]
            assert err["next"][0]["verb"] == "migration_take"
        with pytest.raises(Invalid, match="worktree"):
            RemoteAgent(served.url, auth=token, worktrees=Worktrees.here(tmp_path)).migration_new("nowhere", dir=MIGRATIONS)
        carol.close()
    finally:
        served.stop()


def test_the_cli_takes_numbers_after_every_face(tmp_path: Path) -> None:
    s = scene(tmp_path)
    first = json.loads(ok(run(s.bob, "migrations", "new", "add_users", "--dir", MIGRATIONS, "--json", agent="bob")).stdout)
    assert first["number"] == 267 and first["path"] == str(s.bob / MIGRATIONS / "0267_add_users.sql")
    # No directory given: the only one known.
    second = json.loads(ok(run(s.alice, "migrations", "new", "add_orders", "--json", agent="alice")).stdout)
    assert second["number"] == 268 and second["dir"] == MIGRATIONS
    refused = run(s.alice, "migrations", "new", "add_more", "--json")
    assert refused.returncode == 2 and "--agent" in refused.stderr


def test_one_committed_mcp_json_serves_every_worktree_by_its_own_name(tmp_path: Path) -> None:
    s = scene(tmp_path)
    r = ok(run(s.alice, "mcp", "install", "--json"))
    out = json.loads(r.stdout)
    block = out["claude_code"]
    # An absolute command (starts without the virtual environment on PATH), no agent baked in.
    assert Path(block["command"]).is_absolute() and Path(block["command"]).exists()
    assert "--agent" not in block["args"] and "--store" not in block["args"]
    assert "git common directory" in out["store"] and str(s.alice / ".git") in out["store"]
    git(s.alice, "add", ".mcp.json")
    git(s.alice, "commit", "-q", "-m", "comity for every worktree")
    # In bob's worktree, install does not leave an untracked copy that would break the merge.
    r = ok(run(s.bob, "mcp", "install"))
    assert "not written" in r.stderr and "git merge main" in r.stderr and not (s.bob / ".mcp.json").exists()
    git(s.bob, "merge", "-q", "main")
    cfg = json.loads((s.bob / ".mcp.json").read_text())["mcpServers"]["comity"]

    async def whoami(cwd: Path, **extra: str) -> dict[str, Any]:
        # The host's own PATH, without the virtual environment: the command is absolute.
        params = StdioServerParameters(command=cfg["command"], args=cfg["args"], env=env(PATH="/usr/bin:/bin", **extra), cwd=str(cwd))
        async with Client(params, read_timeout_seconds=60) as c:
            me = body(await c.call_tool("whoami", {}))
            me["_instructions"] = c.instructions or ""
            return me

    async def main() -> None:
        bob = await whoami(s.bob)
        assert bob["agent"] == "bob" and str(s.bob) in bob["agent_from"]
        alice = await whoami(s.alice, COMITY_AGENT="alice")
        assert alice["agent"] == "alice" and alice["agent_from"] == "COMITY_AGENT"
        assert bob["store"] == alice["store"]
        # Outside any repository and with no --store, the server says loudly where its store is.
        lost = tmp_path / "elsewhere"
        lost.mkdir()
        stray = await whoami(lost, COMITY_AGENT="carol")
        assert "NOT IN A GIT REPOSITORY" in stray["warning"] and str(lost) in stray["warning"]
        assert stray["_instructions"].startswith("WARNING: THIS SERVER IS NOT IN A GIT REPOSITORY")
        assert "You are agent 'bob'" in bob["_instructions"] and "migration_new" in bob["_instructions"]

    anyio.run(main)


def test_mcp_over_http_has_no_oauth_discovery_and_a_401_says_how_to_get_a_token(tmp_path: Path) -> None:
    import subprocess
    import urllib.error

    from conftest import clean_env
    from server_support import agent_token

    store = tmp_path / "s.db"
    token = agent_token(store, "alice")
    proc = subprocess.Popen([*COMITY, "mcp", "--http", "--port", "0", "--heartbeat", "0"], cwd=tmp_path,
                            env=clean_env(COMITY_STORE=str(store)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        url = proc.stderr.readline().split("serving ", 1)[1].split(";", 1)[0]
        base = url.rsplit("/mcp", 1)[0]

        def get(path: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
            req = urllib.request.Request(base + path, data=data, headers=headers or {})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, dict(r.headers), {}
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), json.loads(e.read() or b"{}")

        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp",
                     "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):  # fmt: skip
            status, _, body_ = get(path)
            assert status == 404 and "does not use OAuth" in body_["message"] and "comity agent add" in body_["message"], path
            assert get(path, {"Authorization": f"Bearer {token}"})[0] == 404
        rpc = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
        status, headers, body_ = get("/mcp", {"Content-Type": "application/json"}, rpc)
        assert status == 401 and "no Authorization header" in body_["message"] and "comity agent add NAME" in body_["message"]
        assert headers["www-authenticate"].startswith('Bearer realm="comity"') and "comity agent add" in headers["www-authenticate"]
        status, _, body_ = get("/mcp", {"Content-Type": "application/json", "Authorization": "Bearer alice.forged"}, rpc)
        assert status == 401 and "not an agent token" in body_["message"]
    finally:
        proc.terminate()
        proc.wait(10)
