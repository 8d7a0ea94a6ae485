"""``comity bench mcp``: tool-call latency through ``comity mcp`` over stdio, as a host sees it.

The official MCP client starts ``comity mcp`` as a subprocess on a store with a board
of ``tasks`` tasks and a log of ``log_events`` events (seeded in bulk).  Before every
measured call another session writes a key the bench agent read, so every store call
answers with news, as it would on a busy team; each ``task_claim`` takes another task.
The baseline is a no-op tool of the same SDK in the same server process and run
(``COMITY_MCP_BENCH=1`` registers it): what is left above it is comity's own cost.  A
second baseline, ``sdk_noop``, is a no-op tool of a stock SDK server over the SDK's own
stdio transport (``comity.bench._sdk_noop``), called in the same blocks: comity's server
reads and writes stdio itself (``comity.mcp._stdio``), which makes its own ``noop``
cheaper too, so ``*_over_sdk_noop_p50`` is the ratio to compare across versions of comity.

Each store call is also made directly, in the bench's process, with ``Agent.call`` (what
the MCP server runs for a tool), alternating with the MCP calls: on a second store seeded
the same way, with its own other session writing before every call, so neither session's
news carries the other's work.  ``*_over_direct_p50`` is what MCP adds to the same call
(the SDK, stdio, the face), a ratio the load of the machine moves less than the times.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio

from ..mcp.server import BENCH_ENV
from .store import _open, _pct, _seed_log
from ..store import Store
from ..work import Agent, Board

__all__ = ["bench_mcp"]

POOL = 32  # keys the bench agent reads and another session keeps writing
TOOLS = ["noop", "read", "write", "task_claim"]
MEASURED = [*TOOLS, "sdk_noop"]  # sdk_noop: the stock SDK server's no-op (the baseline across versions)
WARMUP = 20
ROUNDS = 5  # blocks of MCP calls alternating with blocks of direct ones


def _comity() -> list[str]:
    beside = Path(sys.executable).with_name("comity")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "comity.cli"]


async def _drive(path: Path, other: Agent, direct: Agent, direct_other: Agent, calls: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    command = _comity()
    params = StdioServerParameters(
        command=command[0],
        args=[*command[1:], "mcp", "--agent", "bench"],
        env={"COMITY_STORE": str(path), BENCH_ENV: "1"},
    )
    sdk = StdioServerParameters(command=sys.executable, args=["-m", "comity.bench._sdk_noop"], env={})
    lat: dict[str, list[float]] = {t: [] for t in MEASURED}
    direct_lat: dict[str, list[float]] = {t: [] for t in TOOLS[1:]}
    with_news: dict[str, int] = {t: 0 for t in TOOLS}
    async with Client(params, read_timeout_seconds=60) as c, Client(sdk, read_timeout_seconds=60) as stock:
        for j in range(POOL):
            await c.call_tool("read", {"key": f"bench/shared/{j}"})
        ready = await c.call_tool("task_ready", {})  # as an agent would: claims then carry the contexts read here
        assert not ready.is_error, ready.content
        for j in range(POOL):
            direct.call("read", {"key": f"bench/shared/{j}"})
        direct.call("task_ready")
        writes = direct_writes = 0

        def args(tool: str, i: int) -> dict[str, Any]:
            if tool == "read":
                return {"key": f"bench/shared/{i % POOL}"}
            if tool == "write":
                return {"key": f"bench/own/{i % POOL}", "value": {"n": i, "note": "x" * 100}}
            if tool == "task_claim":
                return {"id": f"T-{i + 1}"}
            return {}

        async def one(tool: str, i: int, measure: bool) -> None:
            nonlocal writes
            writes += 1
            other.write(f"bench/shared/{writes % POOL}", {"n": writes})
            t = time.perf_counter()
            r = await (stock.call_tool("noop", {}) if tool == "sdk_noop" else c.call_tool(tool, args(tool, i)))
            dt = time.perf_counter() - t
            if r.is_error:
                raise RuntimeError(f"bench: {tool} failed: {r.content}")
            if measure:
                lat[tool].append(dt)
                if (r.structured_content or {}).get("news"):
                    with_news[tool] += 1

        def direct_one(tool: str, i: int, measure: bool) -> None:
            # The same call made directly, on the second store, after the same kind of write there.
            nonlocal direct_writes
            direct_writes += 1
            direct_other.write(f"bench/shared/{direct_writes % POOL}", {"n": direct_writes})
            a = args(tool, i)
            t = time.perf_counter()
            direct.call(tool, a)
            dt = time.perf_counter() - t
            if measure:
                direct_lat[tool].append(dt)

        for i in range(WARMUP):
            for tool in ("noop", "read", "write", "sdk_noop"):
                await one(tool, calls + i, False)
        for i in range(WARMUP):
            for tool in ("read", "write"):
                direct_one(tool, calls + i, False)
        progress(f"bench: {calls} calls of each of {', '.join(TOOLS)} through `comity mcp` over stdio (and of a stock SDK server's noop), and directly")
        # Blocks of MCP calls alternate with blocks of the same calls made directly, so drift
        # hits both; within a block the calls follow one another as they always did.
        bounds = [calls * r // ROUNDS for r in range(ROUNDS + 1)]
        for lo, hi in zip(bounds, bounds[1:]):
            for i in range(lo, hi):
                # Rotate the order so no tool always follows the same one.
                for k in range(len(MEASURED)):
                    await one(MEASURED[(i + k) % len(MEASURED)], i, True)
            for i in range(lo, hi):
                for k in range(len(TOOLS)):
                    tool = TOOLS[(i + k) % len(TOOLS)]
                    if tool != "noop":
                        direct_one(tool, i, True)
    out: dict[str, Any] = {}
    for t in MEASURED:
        out[f"{t}_p50_ms"] = _pct(lat[t], 0.50)
        out[f"{t}_p99_ms"] = _pct(lat[t], 0.99)
    for t in TOOLS[1:]:
        out[f"{t}_with_news"] = round(with_news[t] / calls, 3)
    for t in TOOLS[1:]:
        out[f"direct_{t}_p50_ms"] = _pct(direct_lat[t], 0.50)
        out[f"direct_{t}_p99_ms"] = _pct(direct_lat[t], 0.99)
    for t in TOOLS[1:]:
        out[f"{t}_over_noop_p50"] = round(out[f"{t}_p50_ms"] / out["noop_p50_ms"], 2)
    for t in TOOLS:
        out[f"{t}_over_sdk_noop_p50"] = round(out[f"{t}_p50_ms"] / out["sdk_noop_p50_ms"], 2)
    for t in TOOLS[1:]:
        out[f"{t}_over_direct_p50"] = round(out[f"{t}_p50_ms"] / out[f"direct_{t}_p50_ms"], 2)
    return out


def _seeded(path: Path, tasks: int, log_events: int) -> tuple[Store, Agent]:
    """A store with ``log_events`` events in its log, a board of ``tasks`` tasks and the keys
    the bench agent reads, written first by the other session it returns."""
    store = _open(path)
    try:
        _seed_log(store, log_events)
        board = Board(store.session("lead"))
        for i in range(tasks):
            board.add(f"task {i}", body="bench")
        other = Agent(store.session("other"))
        for j in range(POOL):
            other.create(f"bench/shared/{j}", {"n": 0})
    except BaseException:
        store.close()
        raise
    return store, other


def bench_mcp(
    *,
    tasks: int = 1000,
    log_events: int = 100_000,
    calls: int = 300,
    directory: str | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """p50/p99 of ``read``, ``write``, ``task_claim`` and a no-op tool, in milliseconds, and of
    the same store calls made directly."""
    if calls > tasks:
        raise ValueError(f"calls ({calls}) must not exceed tasks ({tasks}): each claim takes another task")
    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-mcp-") as tmp:
        path = Path(tmp) / "mcp.db"
        progress(f"bench: seeding {log_events} log events and {tasks} tasks, twice (MCP and direct)")
        store, other = _seeded(path, tasks, log_events)
        try:
            direct_store, direct_other = _seeded(Path(tmp) / "direct.db", tasks, log_events)
            try:
                direct = Agent(direct_store.session("bench"))
                result = anyio.run(_drive, path, other, direct, direct_other, calls, progress)
            finally:
                direct_store.close()
            head = store.session().head()
        finally:
            store.close()
    return {
        **result,
        "calls": calls,
        "tasks": tasks,
        "log_events": log_events,
        "log_head": head,
        "mcp": version("mcp"),
        "python": platform.python_version(),
    }
