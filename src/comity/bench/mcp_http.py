"""``comity bench mcp-http``: what a client in its default mode pays per call against
``comity mcp --http``, beside the same client in legacy mode, in one run.

The official MCP client (Python SDK 2.x) in its default mode (``auto``: the stateless
protocol, each call one POST answered with JSON) and in ``legacy`` mode (an initialized
session, answers as server-sent events) calls ``whoami``, ``read`` and the SDK's own no-op
tool against one ``comity mcp --http`` on a scratch store.  ``auto_over_legacy_p50`` is
the ratio of their ``read`` medians: about 1 when neither mode pays for the other's
transport (an answer written in two pieces used to wait ~40 ms for the client's delayed
ACK in default mode; the listening socket now sets TCP_NODELAY).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio

from ..mcp.server import BENCH_ENV
from .store import _pct

__all__ = ["bench_mcp_http"]

TOOLS = ("noop", "whoami", "read")
MODES = ("auto", "legacy")
WARMUP = 10


async def _drive(url: str, token: str, mode: str, calls: int) -> dict[str, list[float]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    lat: dict[str, list[float]] = {t: [] for t in TOOLS}
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
        for i in range(WARMUP + calls):
            for k in range(len(TOOLS)):
                tool = TOOLS[(i + k) % len(TOOLS)]
                args = {"key": f"bench/{i % 16}"} if tool == "read" else {}
                t = time.perf_counter()
                r = await c.call_tool(tool, args)
                dt = time.perf_counter() - t
                if r.is_error:
                    raise RuntimeError(f"bench: {tool} failed in {mode} mode: {r.content}")
                if i >= WARMUP:
                    lat[tool].append(dt)
    return lat


def bench_mcp_http(*, calls: int = 200, directory: str | None = None, progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """p50/p99 of each tool in each client mode, in milliseconds, and the ratio of the modes."""
    import comity
    from comity.server.auth import issue_token

    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-mcp-http-") as tmp:
        path = Path(tmp) / "mcp.db"
        with comity.open(path) as store:
            token = str(issue_token(store.session("ops"), "bench")["auth_token"])
        beside = Path(sys.executable).with_name("comity")
        command = [str(beside)] if beside.exists() else [sys.executable, "-m", "comity.cli"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_")}
        env.update({"COMITY_STORE": str(path), BENCH_ENV: "1"})
        proc = subprocess.Popen([*command, "mcp", "--http", "--port", "0", "--heartbeat", "0"], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            if "serving " not in line:
                raise RuntimeError(f"bench: comity mcp --http did not start: {line.strip()}")
            url = line.split("serving ", 1)[1].split(";", 1)[0]
            out: dict[str, Any] = {}
            for mode in MODES:
                progress(f"bench: {calls} calls of each of {', '.join(TOOLS)} in the client's {mode} mode")
                lat = anyio.run(_drive, url, token, mode, calls)
                for t in TOOLS:
                    out[f"{mode}_{t}_p50_ms"] = _pct(lat[t], 0.50)
                    out[f"{mode}_{t}_p99_ms"] = _pct(lat[t], 0.99)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    out["auto_over_legacy_p50"] = round(out["auto_read_p50_ms"] / out["legacy_read_p50_ms"], 2)
    return {**out, "calls": calls, "mcp": version("mcp"), "python": platform.python_version()}
