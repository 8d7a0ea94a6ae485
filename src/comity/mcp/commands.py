"""``comity mcp`` (serve) and ``comity mcp install`` (configure hosts).

Registered by :mod:`comity.cli` through :func:`register`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..clikit import Ctx, command, err, fail, out
from ..clikit import print_json as _print_json
from ..errors import ComityError, Invalid

if TYPE_CHECKING:
    from .server import McpSession

__all__ = ["register", "open_session", "server_block", "codex_block", "install"]

SERVER_NAME = "comity"


def identity(obj: Ctx, source: str | None) -> tuple[str | None, dict[str, Any]]:
    """Who this server acts as, and how that was chosen: ``--agent``, ``COMITY_AGENT``, else
    the worktree it runs in (its directory's name), so one ``.mcp.json`` committed to the
    repository starts a differently named agent in every worktree.  Against a comity
    server the token says who acts."""
    if obj.agent_name is not None:
        return obj.agent_name, {"agent_from": source or "--agent"}
    if obj.remote:
        return None, {"agent_from": "the agent token (COMITY_AUTH)"}
    from ..repo._git import Repo
    from ..repo.worktree import agent_from_worktree

    try:
        repo = Repo.find()
    except Invalid:
        return None, {"agent_from": "nothing: no --agent, no COMITY_AGENT, and not in a git worktree (writes are refused)"}
    name = agent_from_worktree(repo)
    return name, {"agent_from": f"the worktree {repo.top} (its directory's name; set COMITY_AGENT to choose another)"}


def where_store(obj: Ctx) -> dict[str, Any]:
    """Where the store of this server is and why, with a warning when it is shared by nobody
    else: outside a git repository, with no ``--store``, it is ``./.comity`` of wherever the
    host happened to start the server."""
    if obj.remote:
        return {"store_from": "--store (a comity server)"}
    from ..store import locate

    where, why = locate(obj.store_location)
    if why == "given":
        given = "COMITY_STORE" if obj.store_location is None or obj.store_location == os.environ.get("COMITY_STORE") else "--store"
        return {"store_from": given}
    if why.startswith("git common directory"):
        return {"store_from": f"the {why}: shared by every worktree of this repository"}
    return {
        "store_from": f"no git repository in {Path.cwd()} and no --store: ./.comity there",
        "warning": (
            f"THIS SERVER IS NOT IN A GIT REPOSITORY AND WAS GIVEN NO --store: its store is {where}, which only "
            f"processes started in {Path.cwd()} share; agents in your repository's worktrees will not see your work. "
            "Start it inside the repository, or give --store (or COMITY_STORE)."
        ),
    }


def about_text(agent: str | None, about: dict[str, Any], store: str) -> str:
    """The opening of the server's instructions: who the agent is and where the store is."""
    lines = []
    if about.get("warning"):
        lines.append(f"WARNING: {about['warning']}")
    who = f"You are agent {agent!r}" if agent else "You have no agent name (reads only)"
    lines.append(f"{who}: from {about.get('agent_from')}.")
    lines.append(f"The store is {store} ({about.get('store_from')}).")
    return "\n".join(lines)


def open_session(obj: Ctx, agent: str | None, about: dict[str, Any] | None = None) -> McpSession:
    """The agent facade this process serves: the embedded store opened directly, or a comity
    server when ``--store`` is an ``http://`` URL."""
    from ..repo.worktree import Worktrees
    from ..store import open as open_store
    from ..work import Agent
    from .server import McpSession

    worktrees = Worktrees.here(served="this MCP server")
    if obj.remote:
        from ..remote import RemoteAgent

        remote = RemoteAgent(obj.store_location or "", auth=obj.auth, agent=agent, worktrees=worktrees)  # one connection: one session
        me = remote.call("whoami")  # fails fast on a bad token or an unreachable server
        return McpSession(remote, agent or me.get("agent"), close=remote.close, session_id=me.get("session"))
    store = open_store(obj.store_location)
    return McpSession(Agent(store.session(agent), worktrees=worktrees, about=about), agent, close=store.close)


def _need_sdk() -> None:
    import importlib.util

    if importlib.util.find_spec("mcp") is None or importlib.util.find_spec("mcp.server.mcpserver") is None:
        raise Invalid("mcp", "`comity mcp` needs the MCP SDK 2.x: pip install 'comity[mcp]'")


# ----------------------------------------------------------------- install


def _comity_command() -> list[str]:
    """How a host should start comity: by absolute path, so that it starts whether or not
    the virtual environment is on the host's PATH (a host started from a desktop or another
    shell has its own PATH)."""
    beside = Path(sys.executable).with_name("comity")
    if beside.exists():
        return [str(beside.absolute())]
    found = shutil.which("comity")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "comity.cli"]


def server_block(agent: str | None, store: str | None, remote: bool = False) -> dict[str, Any]:
    """The ``mcpServers`` entry for Claude Code's ``.mcp.json``."""
    command = _comity_command()
    args = command[1:] + ["mcp"]
    if agent:
        args += ["--agent", agent]
    if store:
        if not remote:
            store = str(Path(store).expanduser().absolute())
        args += ["--store", store]
    block: dict[str, Any] = {"type": "stdio", "command": command[0], "args": args}
    if remote:
        # The token stays in the host's environment, never in a file checked into the repository.
        block["env"] = {"COMITY_AUTH": "${COMITY_AUTH}"}
    return block


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def codex_block(block: dict[str, Any]) -> str:
    """The same server as a ``[mcp_servers.comity]`` table for Codex's ``~/.codex/config.toml``."""
    lines = [
        f"[mcp_servers.{SERVER_NAME}]",
        f"command = {_toml_str(block['command'])}",
        "args = [" + ", ".join(_toml_str(a) for a in block["args"]) + "]",
    ]
    if "env" in block:
        lines.append('env_vars = ["COMITY_AUTH"]')
    return "\n".join(lines) + "\n"


def _repository(directory: str | None) -> Path:
    if directory is not None:
        return Path(directory)
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return Path.cwd()
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else Path.cwd()


def install(repository: Path, block: dict[str, Any]) -> tuple[Path, bool]:
    """Write or update ``.mcp.json`` in ``repository``, keeping the other servers there.
    Returns the file and whether it changed (running it twice changes nothing)."""
    path = repository / ".mcp.json"
    config: dict[str, Any] = {}
    if path.exists():
        try:
            config = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as e:
            raise Invalid(str(path), f"is not valid JSON ({e}); fix or remove it, then run `comity mcp install` again") from None
        if not isinstance(config, dict) or not isinstance(config.get("mcpServers", {}), dict):
            raise Invalid(str(path), "must be a JSON object whose mcpServers is an object")
    servers = config.setdefault("mcpServers", {})
    if servers.get(SERVER_NAME) == block:
        return path, False
    servers[SERVER_NAME] = block
    tmp = path.with_name(".mcp.json.comity-tmp")
    tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path, True


def committed_elsewhere(repository: Path, name: str = ".mcp.json") -> str | None:
    """A local branch that has ``name`` committed with comity in it, when this worktree's
    branch does not track it: writing it here would leave an untracked file that makes
    ``git merge`` of that branch fail ("untracked working tree files would be overwritten")."""
    from ..repo._git import Repo, read_objects

    try:
        repo = Repo.find(repository)
    except ComityError:
        return None
    if repo.git("ls-files", "--", name, check=False).strip():
        return None  # tracked here: updating it is an ordinary change
    here = repo.branch()
    refs = [(b, oid) for b, oid in repo.branches() if b != here]
    objs = read_objects(repo, [f"{oid}:{name}" for _, oid in refs])
    for b, oid in refs:
        obj = objs.get(f"{oid}:{name}")
        if obj is not None and obj[1] == "blob" and f'"{SERVER_NAME}"' in obj[2].decode(errors="replace"):
            return b
    return None


def store_for(repository: Path, given: str | None) -> str:
    """Which store a server started in ``repository`` will use, in words."""
    if given:
        return f"{given} (--store)"
    from ..store._discovery import discover

    where, why = discover(repository)
    if why.startswith("git common directory"):
        return f"{where}, in the git common directory: shared by every worktree of the repository"
    return f"{where} (not a git repository: shared only by servers started in {repository})"


# ---------------------------------------------------------------- commands


def register(cli: click.Group) -> None:
    from ..server.limits import limit_options, limits_from

    @cli.group("mcp", invoke_without_command=True)
    @click.option("--agent", "mcp_agent", metavar="NAME", help="Who this server acts as (default: the global --agent / COMITY_AGENT).")
    @click.option("--http", is_flag=True, help="Serve streamable HTTP at /mcp instead of stdio; each agent authenticates with its own bearer token.")
    @click.option("--host", default="127.0.0.1", show_default=True, help="With --http: the address to listen on.")
    @click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True, help="With --http: the port (0: any free port, printed).")
    @click.option("--heartbeat", type=click.FloatRange(0), default=30.0, show_default=True, envvar="COMITY_MCP_HEARTBEAT",
                  help="Seconds between liveness heartbeats (0: none) [env COMITY_MCP_HEARTBEAT].")
    @limit_options
    @click.pass_context
    def mcp_group(ctx: click.Context, /, mcp_agent: str | None, http: bool, host: str, port: int, heartbeat: float, **options: Any) -> None:
        """Serve comity to an agent over MCP (stdio; --http for streamable HTTP).

        One connection is one session: its news position and the contexts of what it
        read live in this process, which sends a heartbeat every --heartbeat seconds.
        Configure a host with `comity mcp install`.
        """
        obj: Ctx = ctx.obj
        source = None
        if mcp_agent is not None:
            obj.agent_name, source = mcp_agent, "--agent"
        elif obj.agent_name is not None and obj.agent_name == os.environ.get("COMITY_AGENT"):
            source = "COMITY_AGENT"
        if ctx.invoked_subcommand is not None:
            return
        try:
            _need_sdk()
            if http:
                from .http import serve

                serve(obj, host=host, port=port, heartbeat=heartbeat, limits=limits_from(options))
                return
            from .server import serve_stdio

            agent, about = identity(obj, source)
            about.update(where_store(obj))
            obj.agent_name = agent
            session = open_session(obj, agent, about)
            store = obj.store_location or "" if obj.remote else str(session.facade.session.store.location)  # type: ignore[attr-defined]
        except ComityError as e:
            fail(e, False)
        if agent is None and not obj.remote:
            err.print("comity mcp: no agent name (no --agent, no COMITY_AGENT, not in a git worktree): reads work, writes will be refused", markup=False)
        if about.get("warning"):
            err.print(f"comity mcp: WARNING: {about['warning']}", markup=False)
        serve_stdio(session, heartbeat=heartbeat, about=about_text(agent, about, store))

    @command(mcp_group, "install")
    @click.option("--agent", "agent", metavar="NAME",
                  help="Write this agent name into .mcp.json. Leave it out: each worktree's server is then named by "
                       "COMITY_AGENT, else by its worktree, and one committed .mcp.json serves them all.")  # fmt: skip
    @click.option("--dir", "directory", type=click.Path(file_okay=False, exists=True), default=None,
                  help="The repository (default: the git top level of the current directory).")
    @click.option("--force", is_flag=True, help="Write .mcp.json even though another branch has it committed.")
    def install_cmd(obj: Ctx, agent: str | None, directory: str | None, force: bool, *, as_json: bool) -> None:
        """Write comity into the repository's .mcp.json (Claude Code) and print Codex's config.toml block."""
        repository = _repository(directory)
        block = server_block(agent, obj.store_location, remote=obj.remote)
        codex = codex_block(block)
        store = f"{obj.store_location} (a comity server)" if obj.remote else store_for(repository, obj.store_location)
        branch = None if force else committed_elsewhere(repository)
        if branch is not None:
            path, changed = repository / ".mcp.json", False
        else:
            path, changed = install(repository, block)
        if as_json:
            _print_json({"path": str(path), "changed": changed, "server": SERVER_NAME, "claude_code": block, "codex_toml": codex,
                         "store": store, "committed_on": branch})  # fmt: skip
            return
        if branch is not None:
            err.print(f"not written: branch {branch} already has .mcp.json with comity; `git merge {branch}` brings it here "
                      "(an untracked copy would make that merge fail); --force writes it anyway", markup=False)  # fmt: skip
        else:
            err.print(f"{'wrote' if changed else 'unchanged:'} {path} (server {SERVER_NAME!r} for Claude Code): "
                      f"the host starts {' '.join([block['command'], *block['args']])}", markup=False)  # fmt: skip
            err.print("commit it: one .mcp.json serves every worktree", markup=False)
        err.print(f"the server will use the store {store}", markup=False)
        if agent:
            err.print(f"every worktree using this .mcp.json acts as {agent!r}; leave --agent out to name each worktree's agent "
                      "after it (or by COMITY_AGENT)", markup=False)  # fmt: skip
        else:
            err.print("the agent is COMITY_AGENT from the host's environment, else the worktree's directory name", markup=False)
        err.print("for Codex, add this to ~/.codex/config.toml:", markup=False)
        out.print(codex, markup=False, end="")
