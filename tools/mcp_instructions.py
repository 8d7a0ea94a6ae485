"""Instructions per MCP tool call over stdio, client and server, counted by callgrind.

A loaded machine moves ``comity bench mcp``'s milliseconds more than a change does; the
instructions a call executes do not move with the load.  This runs the official MCP client
under callgrind, and the ``comity mcp`` server it starts under callgrind too, on a store
of 2,000 seeded events and a board, with another session writing a key the client read
before every call (as ``comity bench mcp`` does); each tool's block of calls is bracketed
by ``callgrind_control`` on both processes (zeroed, then dumped).  The other session's
writes run in the client's process, so they are counted in a block of their own and
taken off.  To compare two versions, run it with each one's own Python (its venv: the
server is the ``comity`` beside it):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=OUT/client.out.%p \\
        .venv/bin/python tools/mcp_instructions.py 30 OUT
    valgrind ... /elsewhere/.venv/bin/python tools/mcp_instructions.py 30 OUT2

It prints, per tool, the client's and the server's instructions per call.  Needs
valgrind; takes a few minutes (imports under callgrind are slow).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

POOL = 32
TOOLS = ["noop", "read", "write", "task_claim"]


def _control(pid: str, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, pid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def _child(parent: str) -> str:
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = open(stat).read()
        except OSError:
            continue
        if text[text.rindex(")") + 2 :].split()[1] == parent:
            return stat.split("/")[2]
    raise SystemExit("no server process found")


async def _drive(path: Path, other: Any, n: int, out: str) -> None:
    from mcp import Client, StdioServerParameters

    me = str(os.getpid())
    env = {"COMITY_STORE": str(path), "COMITY_MCP_BENCH": "1", "PATH": os.environ["PATH"], "PYTHONHASHSEED": "0"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    comity = str(Path(sys.executable).with_name("comity"))
    server = ["--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/server.out.%p", comity, "mcp", "--agent", "bench", "--heartbeat", "0"]
    async with Client(StdioServerParameters(command="valgrind", args=server, env=env), read_timeout_seconds=1200) as c:
        spid = _child(me)
        for j in range(POOL):
            await c.call_tool("read", {"key": f"bench/shared/{j}"})
        await c.call_tool("task_ready", {})
        writes = claims = 0

        def args(tool: str, i: int) -> dict[str, Any]:
            nonlocal claims
            if tool == "read":
                return {"key": f"bench/shared/{i % POOL}"}
            if tool == "write":
                return {"key": f"bench/own/{i % POOL}", "value": {"n": i, "note": "x" * 100}}
            if tool == "task_claim":
                claims += 1
                return {"id": f"T-{claims}"}
            return {}

        def write() -> None:
            nonlocal writes
            writes += 1
            other.write(f"bench/shared/{writes % POOL}", {"n": writes})

        for i in range(10):
            for t in TOOLS:
                write()
                await c.call_tool(t, args(t, i))
        _control(me, "-i", "on")
        _control(spid, "-i", "on")
        for t in TOOLS:
            _control(me, "-z")
            for _ in range(n):
                write()
            _control(me, "-d", f"W_{t}")
            _control(me, "-z")
            _control(spid, "-z")
            for i in range(n):
                write()
                r = await c.call_tool(t, args(t, i))
                assert not r.is_error, r.content
            _control(me, "-d", f"C_{t}")
            _control(spid, "-d", f"S_{t}")
        _control(me, "-i", "off")
        _control(spid, "-i", "off")


def _report(out: str, n: int) -> None:
    totals: dict[str, int] = {}
    for f in glob.glob(f"{out}/*.out*"):
        head = open(f, errors="replace").read(4000)
        m = re.search(r"^desc: Trigger: .*?\b([WCS]_\w+)", head, re.M)
        s = re.search(r"^summary: (\d+)", head, re.M)
        if m and s:
            totals[m.group(1)] = int(s.group(1))
    for t in TOOLS:
        if {f"C_{t}", f"W_{t}", f"S_{t}"} <= totals.keys():
            client = (totals[f"C_{t}"] - totals[f"W_{t}"]) // n
            server = totals[f"S_{t}"] // n
            print(f"{t:11s} client {client:>10,}  server {server:>10,}  total {client + server:>10,}")


def main() -> None:
    import anyio

    try:
        from comity.bench.store import _open, _seed_log
    except ImportError:  # comity before its benchmarks were one package (b68eec0)
        from comity.bench import _open, _seed_log  # type: ignore[attr-defined,no-redef]
    from comity.work import Agent, Board

    n, out = int(sys.argv[1]), sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="comity-instructions-") as tmp:
        store = _open(Path(tmp) / "mcp.db")
        try:
            _seed_log(store, 2000)
            board = Board(store.session("lead"))
            for i in range(n + 60):
                board.add(f"task {i}", body="bench")
            other = Agent(store.session("other"))
            for j in range(POOL):
                other.create(f"bench/shared/{j}", {"n": 0})
            anyio.run(_drive, Path(tmp) / "mcp.db", other, n, out)
        finally:
            store.close()
    _report(out, n)


if __name__ == "__main__":
    main()
