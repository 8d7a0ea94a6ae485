"""`comity mcp` driven as a subprocess by the official MCP client over stdio, as an agent host would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="the MCP SDK 2.x is not installed (pip install -e '.[dev]')")

from conftest import COMITY, clean_env  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.types import CallToolResult  # noqa: E402

from comity.mcp import CONTRACT  # noqa: E402

MIGRATION = "files/db/migrations/0267_add_index.sql"


@asynccontextmanager
async def connect(store: Path, agent: str | None, *extra: str, env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    args = [*COMITY[1:], "mcp", *(["--agent", agent] if agent else []), *extra]
    # Started outside any repository (the store is given): no worktree names the agent.
    params = StdioServerParameters(command=COMITY[0], args=args, env=clean_env(COMITY_STORE=str(store), **(env or {})), cwd=str(store.parent))
    async with Client(params, read_timeout_seconds=30) as client:
        yield client


def body(r: CallToolResult) -> dict[str, Any]:
    assert not r.is_error, r.content
    assert r.structured_content is not None
    assert json.loads(r.content[0].text) == r.structured_content  # type: ignore[union-attr]
    return r.structured_content


def error_text(r: CallToolResult) -> str:
    assert r.is_error, r.structured_content
    return str(r.content[0].text)  # type: ignore[union-attr]


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        with anyio.fail_after(60):
            await fn()

    anyio.run(guarded)


async def race(a: Client, b: Client, tool: str, args_a: dict[str, Any], args_b: dict[str, Any]) -> tuple[CallToolResult, CallToolResult]:
    out: dict[str, CallToolResult] = {}

    async def one(name: str, c: Client, args: dict[str, Any]) -> None:
        out[name] = await c.call_tool(tool, args)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a", a, args_a)
        tg.start_soon(one, "b", b, args_b)
    return out["a"], out["b"]


def test_two_agents_race_for_a_migration_and_a_task_and_exactly_one_wins_each(tmp_path: Path) -> None:
    store = tmp_path / "s.db"

    async def main() -> None:
        async with connect(store, "alice") as alice, connect(store, "bob") as bob:
            agents = {"alice": alice, "bob": bob}

            # 1. Both take migration 0267 at once: create-if-absent admits exactly one.
            ra, rb = await race(alice, bob, "create", {"key": MIGRATION, "value": {"by": "alice"}}, {"key": MIGRATION, "value": {"by": "bob"}})
            assert [ra.is_error, rb.is_error].count(True) == 1
            winner, loser = ("alice", "bob") if not ra.is_error else ("bob", "alice")
            text = error_text(rb if winner == "alice" else ra)
            assert "already exists" in text and winner in text and 'read(key="' in text and "`comity" not in text
            assert f'"by": "{loser}"' in text  # the rejected value comes back: nothing is lost
            nxt = body(await agents[loser].call_tool("whoami", {}))
            assert any(n["key"] == MIGRATION and n["agent"] == winner and n["op"] == "create" for n in nxt["news"])
            # The news is delivered once.
            assert body(await agents[loser].call_tool("whoami", {}))["news"] == []
            got = body(await agents[loser].call_tool("read", {"key": MIGRATION}))
            assert got["values"] == [{"by": winner}]

            # 2. Both claim one task at once, having read the ready queue: one token is issued.
            task = body(await alice.call_tool("task_add", {"title": "Add the index", "labels": ["db"]}))
            assert task["id"].startswith("T-") and task["news"] == [] and task["stale"] == []
            for c in (alice, bob):
                ready = body(await c.call_tool("task_ready", {}))
                assert [t["id"] for t in ready["tasks"]] == [task["id"]]
            ra, rb = await race(alice, bob, "task_claim", {"id": task["id"]}, {"id": task["id"]})
            assert [ra.is_error, rb.is_error].count(True) == 1
            winner, loser = ("alice", "bob") if not ra.is_error else ("bob", "alice")
            claim = body(ra if winner == "alice" else rb)
            assert set(claim) >= {"task", "token", "expires", "handoff", "news", "stale"}
            text = error_text(rb if winner == "alice" else ra)
            assert task["id"] in text and winner in text and "task_ready()" in text
            nxt = body(await agents[loser].call_tool("whoami", {}))
            assert any(n["agent"] == winner and n["op"] == "task.claim" and n["key"] == f"@task/{task['id']}" for n in nxt["news"])
            assert body(await agents[loser].call_tool("task_ready", {}))["tasks"] == []

            # 3. The winner completes with its token; the loser's stale token is refused.
            done = body(await agents[winner].call_tool("task_complete", {"id": task["id"], "token": claim["token"], "result": "ok"}))
            assert done["state"] == "done"
            refused = error_text(await agents[loser].call_tool("task_complete", {"id": task["id"], "token": claim["token"]}))
            assert "already completed" in refused or "held by" in refused or "fenced" in refused

    run(main)


def test_every_answer_carries_news_and_stale_and_a_stale_write_is_refused_with_the_news(tmp_path: Path) -> None:
    store = tmp_path / "s.db"

    async def main() -> None:
        async with connect(store, "alice", "--heartbeat", "0.2") as alice, connect(store, "bob") as bob:
            first = body(await alice.call_tool("read", {"key": "notes/plan"}))
            assert first["values"] == [] and first["context"]
            body(await bob.call_tool("write", {"key": "notes/plan", "value": "bob's plan"}))
            # Alice's heartbeats run meanwhile; the news they fetched is not lost but carried here.
            await anyio.sleep(0.6)
            w = await alice.call_tool("write", {"key": "notes/plan", "value": "alice's plan"})
            text = error_text(w)
            assert "bob" in text and "keep_both=true" in text and "alice's plan" in text
            seen = body(await alice.call_tool("whoami", {}))
            assert any(n["key"] == "notes/plan" and n["agent"] == "bob" for n in seen["news"])
            assert seen["stale"] == ["notes/plan"]
            # Keep both: siblings, which a read shows and a write over that read resolves.
            both = body(await alice.call_tool("write", {"key": "notes/plan", "value": "alice's plan", "keep_both": True}))
            assert sorted(both["values"]) == ["alice's plan", "bob's plan"]
            again = body(await alice.call_tool("read", {"key": "notes/plan"}))
            assert len(again["values"]) == 2 and again["stale"] == []
            merged = body(await alice.call_tool("write", {"key": "notes/plan", "value": "merged"}))
            assert merged["values"] == ["merged"]
            # The heartbeat is visible to others.
            seen_by_bob = body(await bob.call_tool("agents", {}))
            alice_row = next(a for a in seen_by_bob["agents"] if a["agent"] == "alice")
            assert alice_row["last_heartbeat"] is not None

    run(main)


def test_tools_match_the_contract_and_each_says_how_to_call_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with connect(tmp_path / "s.db", "alice") as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(CONTRACT) <= set(tools)
            assert "noop" not in tools  # only for `comity bench mcp`
            for name, params in CONTRACT.items():
                schema = tools[name].input_schema
                assert list(schema.get("properties", {}))[: len(params)] == params, name
            for name, t in tools.items():
                assert t.description and "Example:" in t.description and f"{name}(" in t.description, name
                for p, spec in t.input_schema.get("properties", {}).items():
                    assert spec.get("description"), f"{name}.{p} has no description"
            required = {n: sorted(t.input_schema.get("required", [])) for n, t in tools.items() if n in CONTRACT}
            assert required["write"] == ["key", "value"]
            assert required["task_claim"] == ["id"]
            assert required["task_add"] == ["title"]
            assert required["reserve_paths"] == ["paths"]

    run(main)


def test_bad_arguments_are_tool_errors_and_the_server_stays_up(tmp_path: Path) -> None:
    async def main() -> None:
        async with connect(tmp_path / "s.db", "alice") as c:
            cases: list[tuple[str, dict[str, Any], str]] = [
                ("read", {}, "key"),
                ("read", {"key": ""}, "must not be empty"),
                ("write", {"key": "@task/T-1", "value": 1}, "comity's own"),
                ("reserve_paths", {"paths": "src/x.py"}, "paths"),
                ("task_complete", {"id": "T-1", "token": "seven"}, "token"),
                ("task_claim", {"id": "not a task"}, "not a task id"),
                ("task_show", {"id": "T-404"}, "no task T-404"),
                ("no_such_tool", {}, "no_such_tool"),
            ]
            for tool, args, needle in cases:
                r = await c.call_tool(tool, args)
                assert needle in error_text(r), (tool, args, error_text(r))
                assert "`comity get" not in error_text(r) and "--keep-both" not in error_text(r)  # tool calls, not CLI syntax
                assert "Error executing tool" not in error_text(r) or ":" in error_text(r).split("Error executing tool", 1)[1]
            assert body(await c.call_tool("seq_next", {"name": "migrations"}))["value"] == 1
            assert body(await c.call_tool("seq_next", {"name": "migrations"}))["value"] == 2

    run(main)


def test_without_an_agent_reads_work_and_writes_say_how_to_name_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with connect(tmp_path / "s.db", None) as c:
            assert body(await c.call_tool("read", {"key": "a"}))["values"] == []
            text = error_text(await c.call_tool("create", {"key": "a", "value": 1}))
            assert "comity mcp --agent NAME" in text

    run(main)


def test_noop_tool_only_under_the_bench_variable(tmp_path: Path) -> None:
    async def main() -> None:
        async with connect(tmp_path / "s.db", "alice", env={"COMITY_MCP_BENCH": "1"}) as c:
            assert body(await c.call_tool("noop", {})) == {}

    run(main)


def test_bench_mcp_measures_every_tool_against_both_no_ops(tmp_path: Path) -> None:
    """`comity bench mcp` runs the real server and a stock SDK server side by side: every
    tool is measured, and each ratio is the one its name says, from the same run."""
    import subprocess

    args = ["bench", "mcp", "--json", "--calls", "10", "--tasks", "10", "--log-events", "0", "--dir", str(tmp_path)]
    p = subprocess.run([*COMITY, *args], capture_output=True, text=True, timeout=300, env=clean_env())
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    for t in ("noop", "read", "write", "task_claim", "sdk_noop"):
        assert out[f"{t}_p50_ms"] > 0 and out[f"{t}_p99_ms"] >= out[f"{t}_p50_ms"]
    for t in ("read", "write", "task_claim"):
        assert out[f"{t}_with_news"] == 1.0  # another session wrote before every call
        assert out[f"{t}_over_noop_p50"] == round(out[f"{t}_p50_ms"] / out["noop_p50_ms"], 2)
    for t in ("noop", "read", "write", "task_claim"):
        assert out[f"{t}_over_sdk_noop_p50"] == round(out[f"{t}_p50_ms"] / out["sdk_noop_p50_ms"], 2)
    assert out["calls"] == 10 and out["mcp"]


def test_install_writes_mcp_json_keeping_other_servers_idempotently(
    tmp_path: Path, comity_cli: Callable[..., Any]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    other = {"mcpServers": {"github": {"command": "gh-mcp", "args": []}}, "extra": True}
    (repo / ".mcp.json").write_text(json.dumps(other))
    r = comity_cli("mcp", "install", "--agent", "alice", "--dir", str(repo), store=None)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((repo / ".mcp.json").read_text())
    assert cfg["extra"] is True and cfg["mcpServers"]["github"] == other["mcpServers"]["github"]
    block = cfg["mcpServers"]["comity"]
    assert block["args"][-3:] == ["mcp", "--agent", "alice"] and block["type"] == "stdio"
    assert "[mcp_servers.comity]" in r.stdout and '"--agent", "alice"' in r.stdout
    before = (repo / ".mcp.json").read_text()
    again = comity_cli("mcp", "install", "--agent", "alice", "--dir", str(repo), "--json", store=None)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False
    assert (repo / ".mcp.json").read_text() == before
    # A broken file is reported, not clobbered.
    (repo / ".mcp.json").write_text("{not json")
    bad = comity_cli("mcp", "install", "--agent", "alice", "--dir", str(repo), store=None)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    assert (repo / ".mcp.json").read_text() == "{not json"


def test_streamable_http_serves_each_agent_by_its_own_token(tmp_path: Path) -> None:
    auth = pytest.importorskip("comity.server.auth", reason="agent tokens need comity.server")
    import subprocess

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    import comity

    store_path = tmp_path / "s.db"
    with comity.open(store_path) as s:
        tokens = {name: auth.issue_token(s.session("ops"), name)["auth_token"] for name in ("alice", "bob")}
    proc = subprocess.Popen(
        [*COMITY, "mcp", "--http", "--port", "0", "--heartbeat", "0"],
        env=clean_env(COMITY_STORE=str(store_path)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = line.split("serving ", 1)[1].split(";", 1)[0]

        async def main() -> None:
            async with httpx2.AsyncClient() as h:
                r = await h.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
                assert r.status_code == 401 and "agent token" in r.json()["message"]
            clients = {
                name: Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers={"Authorization": f"Bearer {tok}"}, timeout=30)))
                for name, tok in tokens.items()
            }
            async with clients["alice"] as alice, clients["bob"] as bob:
                assert body(await alice.call_tool("whoami", {}))["agent"] == "alice"
                assert body(await bob.call_tool("whoami", {}))["agent"] == "bob"
                ra, rb = await race(alice, bob, "create", {"key": MIGRATION, "value": "a"}, {"key": MIGRATION, "value": "b"})
                assert [ra.is_error, rb.is_error].count(True) == 1
                winner = "alice" if not ra.is_error else "bob"
                assert winner in error_text(rb if winner == "alice" else ra)

        run(main)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_public_surface_is_pinned() -> None:
    import comity.integrations.langgraph as lg
    import comity.mcp

    assert sorted(comity.mcp.__all__) == ["CONTRACT", "McpSession", "build_server", "refusal_text"]
    assert sorted(lg.__all__) == ["ComityItem", "ComityStore", "SIBLINGS"]


def test_the_token_cache_is_bounded_and_forgets_a_token_after_its_ttl() -> None:
    """``comity mcp --http`` remembers who a token is for a few seconds, for a bounded number
    of tokens: a stream of forged tokens costs a lookup each, never memory, and a rotated
    token stops working once its entry is older than the ttl."""
    from comity.mcp.http import TokenCache

    now = [0.0]
    issued = {"good": "alice"}
    asked: list[str] = []

    def identify(token: str) -> str | None:
        asked.append(token)
        return issued.get(token)

    cache = TokenCache(identify, ttl=5.0, limit=3, now=lambda: now[0])
    assert cache("good") == "alice" and cache("good") == "alice"
    assert asked == ["good"]  # the second was remembered
    for i in range(100):
        assert cache(f"forged-{i}") is None
    assert len(cache) == 3  # never more than the limit, rejected tokens included
    assert len(asked) == 101  # each forged token was looked up: none is believed from memory
    assert cache("good") == "alice" and asked[-1] == "good"  # dropped as least recently used, looked up again
    del issued["good"]  # rotated
    now[0] = 4.9
    assert cache("good") == "alice"  # within the ttl
    now[0] = 5.1
    assert cache("good") is None
