"""Clients nobody here wrote: the seed's scenario (two agents in two git worktrees, one
migration number each, a stale note refused and redone, one claim winning) through the
official TypeScript SDK client over stdio and streamable HTTP, MCP Inspector's CLI (with
``--strict``), and two Python agent frameworks' own MCP clients driven by their scripted
test models (pydantic-ai's FunctionModel, an OpenAI Agents SDK Model from a script).

They need ``make interop-deps`` (npm and PyPI; `.ci/run` runs it), which installs them
into ``build/interop``; where a registry could not be reached the tests skip saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import COMITY
from hosts_support import MIGRATIONS, NOTE, Scene, check_migrations, commit_both, scene
from test_repo_support import env, ok, run

ROOT = Path(__file__).resolve().parents[1]
INTEROP = Path(os.environ.get("COMITY_INTEROP_DIR", ROOT / "build" / "interop"))
HERE = Path(__file__).resolve().parent / "interop"
NODE = INTEROP / "node_modules" / "node" / "bin" / "node"
INSPECTOR = INTEROP / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
SDK = INTEROP / "node_modules" / "@modelcontextprotocol" / "sdk"
PYTHON = INTEROP / "venv" / "bin" / "python"


def _need(*paths: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if not missing:
        return
    why = (INTEROP / "UNAVAILABLE").read_text().strip() if (INTEROP / "UNAVAILABLE").exists() else ""
    if why:
        pytest.skip(f"interop clients unavailable: {why}")
    pytest.skip(f"interop clients not installed ({missing[0].relative_to(INTEROP) if missing[0].is_relative_to(INTEROP) else missing[0]}): run `make interop-deps` (needs npm and PyPI)")


def stdio_config(s: Scene) -> dict[str, Any]:
    """Each agent's server started the way a host starts it from the committed .mcp.json: in
    its own worktree, alice named by COMITY_AGENT, bob by his worktree."""
    agents = {}
    for name, where in (("alice", s.alice), ("bob", s.bob)):
        e = env(**({"COMITY_AGENT": "alice"} if name == "alice" else {}))
        agents[name] = {"command": COMITY[0], "args": [*COMITY[1:], "mcp", "--heartbeat", "0"], "cwd": str(where), "env": e}
    return {"transport": "stdio", "agents": agents}


class HttpServer:
    """`comity mcp --http` run in the repository (its store in the git common directory),
    each agent with its own token; each call names its worktree."""

    def __init__(self, s: Scene) -> None:
        self.tokens = {n: json.loads(ok(run(s.alice, "agent", "add", n, "--json")).stdout)["auth_token"] for n in ("alice", "bob")}
        self.proc = subprocess.Popen([*COMITY, "mcp", "--http", "--port", "0", "--heartbeat", "0"], cwd=s.alice, env=env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert "serving " in line, line
        self.url = line.split("serving ", 1)[1].split(";", 1)[0]
        self.config = {"transport": "http", "url": self.url, "agents": {
            "alice": {"token": self.tokens["alice"], "worktree": str(s.alice)},
            "bob": {"token": self.tokens["bob"], "worktree": str(s.bob)},
        }}  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def judge(s: Scene, out: dict[str, Any], *, names: dict[str, str]) -> None:
    """What every client must have seen, and what must be on disk and in git afterwards."""
    assert out["whoami"]["alice"]["agent"] == names["alice"] and out["whoami"]["bob"]["agent"] == names["bob"]
    check_migrations(s, out["migrations"])
    commit_both(s, out["migrations"], names)
    assert out["stale"]["isError"] is True, out["stale"]
    assert "stale_context" in out["stale"]["text"] and names["alice"] in out["stale"]["text"], out["stale"]
    assert out["reread"]["values"] == ["users: id, email, name"]
    assert out["redone"]["values"] == ["users: id, email, name, created_at"]
    claims = out["claims"]
    assert [c["isError"] for c in claims.values()].count(True) == 1, claims
    winner = next(n for n, c in claims.items() if not c["isError"])
    loser = "bob" if winner == "alice" else "alice"
    assert names[winner] in claims[loser]["text"] and out["task"] in claims[loser]["text"], claims


def node_scenario(config: dict[str, Any]) -> dict[str, Any]:
    script = INTEROP / "scenario.mjs"  # beside node_modules, where Node resolves the SDK
    shutil.copyfile(HERE / "scenario.mjs", script)
    p = subprocess.run([str(NODE), str(script), json.dumps(config)], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-4000:])
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def test_typescript_sdk_client_over_stdio(tmp_path: Path) -> None:
    _need(NODE, SDK)
    s = scene(tmp_path)
    judge(s, node_scenario(stdio_config(s)), names={"alice": "alice", "bob": "bob"})


def test_typescript_sdk_client_over_streamable_http(tmp_path: Path) -> None:
    _need(NODE, SDK)
    s = scene(tmp_path)
    server = HttpServer(s)
    try:
        judge(s, node_scenario(server.config), names={"alice": "alice", "bob": "bob"})
    finally:
        server.stop()


@pytest.mark.parametrize("framework", ["pydantic-ai", "openai-agents"])
def test_python_agent_frameworks_own_mcp_clients(tmp_path: Path, framework: str) -> None:
    _need(PYTHON)
    s = scene(tmp_path)
    p = subprocess.run([str(PYTHON), str(HERE / "frameworks.py"), framework, json.dumps(stdio_config(s))],
                       capture_output=True, text=True, timeout=300, check=False, env=env())  # fmt: skip
    if p.returncode != 0 and "No module named" in p.stderr:
        pytest.skip(f"{framework} is not installed in {INTEROP / 'venv'}: run `make interop-deps`")
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-4000:])
    judge(s, json.loads(p.stdout.strip().splitlines()[-1]), names={"alice": "alice", "bob": "bob"})


class Inspector:
    """MCP Inspector's CLI: one process per call, each starting the agent's server in its worktree."""

    def __init__(self, s: Scene) -> None:
        self.where = {"alice": s.alice, "bob": s.bob}

    def argv(self, agent: str, *args: str) -> list[str]:
        extra = ["-e", "COMITY_AGENT=alice"] if agent == "alice" else []
        return [str(NODE), str(INSPECTOR), "--cli", *args, "--connect-timeout", "120000", "--cwd", str(self.where[agent]), *extra, "--", *COMITY, "mcp", "--heartbeat", "0"]

    def start(self, agent: str, tool: str, **args: Any) -> subprocess.Popen[str]:
        pairs = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
        cmd = self.argv(agent, "--method", "tools/call", "--tool-name", tool, *(["--tool-arg", *pairs] if pairs else []))
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())

    @staticmethod
    def result(p: subprocess.Popen[str]) -> tuple[bool, Any]:
        out, err = p.communicate(timeout=180)
        assert p.returncode in (0, 5), (p.returncode, out[-2000:], err[-2000:])  # 5: the tool answered isError
        end = out.rfind("\n{")
        doc = json.loads(out[: end + 1] if end > 0 and out.rstrip().endswith("}") and '"error"' in out[end:] else out)
        if p.returncode == 5:
            return True, doc["content"][0]["text"]
        return False, doc["structuredContent"]

    def call(self, agent: str, tool: str, **args: Any) -> tuple[bool, Any]:
        return self.result(self.start(agent, tool, **args))


def test_mcp_inspector_cli_strict_and_the_scenario(tmp_path: Path) -> None:
    _need(NODE, INSPECTOR)
    s = scene(tmp_path)
    i = Inspector(s)
    p = subprocess.run(i.argv("bob", "--strict", "--method", "tools/list"), capture_output=True, text=True, timeout=180, env=env())
    assert p.returncode == 0, (p.stdout[-1000:], p.stderr[-3000:])
    tools = {t["name"] for t in json.loads(p.stdout)["tools"]}
    assert {"migration_new", "migration_check", "read", "write", "task_claim"} <= tools
    assert "error" not in p.stderr.lower(), p.stderr
    out: dict[str, Any] = {}
    # Each Inspector call is a session of its own: the stale write carries its read's context.
    procs = {"alice": i.start("alice", "migration_new", slug="add_users", dir=MIGRATIONS),
             "bob": i.start("bob", "migration_new", slug="add_orders", dir=MIGRATIONS)}  # fmt: skip
    out["migrations"] = {}
    for n, proc in procs.items():
        error, answer = i.result(proc)
        assert not error, answer
        out["migrations"][n] = answer
    out["whoami"] = {n: {"agent": out["migrations"][n]["agent"]} for n in ("alice", "bob")}  # who took each number
    assert not i.call("alice", "create", key=NOTE, value="users: id, email")[0]
    old = i.call("bob", "read", key=NOTE)[1]["context"]
    ctx = i.call("alice", "read", key=NOTE)[1]["context"]
    assert not i.call("alice", "write", key=NOTE, value="users: id, email, name", context=ctx)[0]
    error, text = i.call("bob", "write", key=NOTE, value="users: id, email, created_at", context=old)
    out["stale"] = {"isError": error, "text": text}
    out["reread"] = i.call("bob", "read", key=NOTE)[1]
    out["redone"] = i.call("bob", "write", key=NOTE, value="users: id, email, name, created_at", context=out["reread"]["context"])[1]
    out["task"] = i.call("alice", "task_add", title="Add the users table")[1]["id"]
    claims = {n: i.start(n, "task_claim", id=out["task"]) for n in ("alice", "bob")}
    out["claims"] = {}
    for n, proc in claims.items():
        error, answer = i.result(proc)
        out["claims"][n] = {"isError": error, "text": answer if isinstance(answer, str) else json.dumps(answer)}
    judge(s, out, names={"alice": "alice", "bob": "bob"})
