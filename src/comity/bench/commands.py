"""``comity bench store|claims|mcp|hooks|dashboard|chaos``: the benchmarks' commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..clikit import Ctx, command, err, out, print_json
from ..errors import Invalid

__all__ = ["register"]


def _say(message: str) -> None:
    err.print(message, markup=False)


def _show(result: dict[str, Any], as_json: bool, width: int = 22) -> None:
    if as_json:
        print_json(result)
        return
    for k, v in result.items():
        out.print(f"{k:>{width}}: {v}", markup=False)


def register(cli: click.Group) -> None:
    """Add ``comity bench`` and its benchmarks to the CLI."""

    @cli.group("bench")
    def bench_group() -> None:
        """Benchmarks: JSON figures with a ratio against a baseline measured in the same run."""

    @command(bench_group, "store")
    @click.option("--ops", type=click.IntRange(100, 10_000_000), default=5000, show_default=True, help="Operations per measurement.")
    @click.option("--log-events", type=click.IntRange(0, 100_000_000), default=1_000_000, show_default=True, help="Events seeded in bulk for growth_ratio (0 skips it).")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch stores go (default: a temporary directory).")
    @click.option("--store-url", metavar="URL", default=None, help="Benchmark a PostgreSQL store (postgresql://…) instead of SQLite; scratch schemas are dropped after.")
    @click.option("--concurrent", type=click.IntRange(0, 256), default=8, show_default=True, help="Sessions writing at once through one server (SQLite; 0 skips it).")
    @click.option("--compact-keep", type=click.IntRange(0, 100_000_000), default=100_000, show_default=True,
                  help="Then compact the grown store to its latest N events and put again (0 skips it).")
    @click.option("--followed", type=click.IntRange(0, 1_000_000), default=10_000, show_default=True,
                  help="New keys written by a session following this many keys against one following 100, another "
                       "session writing between (followed_growth_ratio, and followed_claim_growth_ratio for a board's claims; 0 skips it).")  # fmt: skip
    @click.option("--grown-store", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="Keep the grown (and compacted) SQLite store at this new path, e.g. for the faces' conformance "
                       "suite (COMITY_CONFORMANCE_STORE=PATH pytest tests/test_faces_conformance*.py).")  # fmt: skip
    def bench_store_cmd(obj: Ctx, ops: int, log_events: int, directory: str | None, store_url: str | None, concurrent: int,
                        compact_keep: int, followed: int, grown_store: str | None, *, as_json: bool) -> None:  # fmt: skip
        """Put, get and create throughput and latency against a plain upsert on the same engine."""
        from .store import bench_store

        if grown_store is not None:
            if store_url is not None:
                raise Invalid("grown_store", "keeps a SQLite store file; leave out --store-url, or --grown-store")
            if not log_events:
                raise Invalid("grown_store", "there is no grown store with --log-events 0; give a number of events to grow it to")
            if Path(grown_store).exists():
                raise Invalid("grown_store", f"{grown_store} exists; name a new file (nothing is overwritten)")
        _show(bench_store(ops=ops, log_events=log_events, directory=directory, store_url=store_url, concurrent=concurrent,
                          compact_keep=compact_keep, followed=followed, grown_store=grown_store, progress=_say), as_json, 30)  # fmt: skip

    @command(bench_group, "claims")
    @click.option("--agents", type=click.IntRange(1, 256), default=8, show_default=True, help="Agent processes.")
    @click.option("--tasks", type=click.IntRange(1, 1_000_000), default=500, show_default=True, help="Tasks to drain.")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch stores go.")
    @click.option("--store-url", metavar="URL", default=None, help="Benchmark a PostgreSQL store (postgresql://…) instead of SQLite.")
    @click.option("--server", is_flag=True, help="The agents go through one `comity serve` (HTTP) instead of opening the store.")
    def bench_claims_cmd(obj: Ctx, agents: int, tasks: int, directory: str | None, store_url: str | None, server: bool, *, as_json: bool) -> None:
        """N processes drain M tasks (claim, complete) against a plain UPDATE queue on the same engine."""
        from .store import bench_claims

        _show(bench_claims(agents=agents, tasks=tasks, directory=directory, store_url=store_url, server=server, progress=_say), as_json)

    @command(bench_group, "mcp")
    @click.option("--tasks", type=click.IntRange(10, 1_000_000), default=1000, show_default=True, help="Tasks on the board.")
    @click.option("--log-events", type=click.IntRange(0, 100_000_000), default=100_000, show_default=True, help="Events seeded in the log.")
    @click.option("--calls", type=click.IntRange(10, 1_000_000), default=300, show_default=True, help="Measured calls per tool (each claim takes another task).")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch store goes.")
    def bench_mcp_cmd(obj: Ctx, tasks: int, log_events: int, calls: int, directory: str | None, *, as_json: bool) -> None:
        """Tool-call latency through `comity mcp` over stdio (official MCP client) against the SDK's own no-op tool."""
        from ..errors import Invalid

        try:
            from .mcp import bench_mcp
        except ImportError:
            raise Invalid("mcp", "`comity bench mcp` needs the MCP SDK 2.x: pip install 'comity[mcp]'") from None
        _show(bench_mcp(tasks=tasks, log_events=log_events, calls=calls, directory=directory, progress=_say), as_json, 20)

    @command(bench_group, "mcp-http")
    @click.option("--calls", type=click.IntRange(10, 1_000_000), default=200, show_default=True, help="Measured calls per tool and mode.")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch store goes.")
    def bench_mcp_http_cmd(obj: Ctx, calls: int, directory: str | None, *, as_json: bool) -> None:
        """Per-call latency against `comity mcp --http` of the official client in its default mode beside legacy mode."""
        from ..errors import Invalid

        try:
            from .mcp_http import bench_mcp_http
        except ImportError:
            raise Invalid("mcp", "`comity bench mcp-http` needs the MCP SDK 2.x and comity[server]") from None
        _show(bench_mcp_http(calls=calls, directory=directory, progress=_say), as_json, 20)

    @command(bench_group, "hooks")
    @click.option("--files", type=click.IntRange(1, 1_000_000), default=1000, show_default=True, help="Files in the repository.")
    @click.option("--migrations", type=click.IntRange(1, 100_000), default=500, show_default=True, help="Migrations in db/migrations.")
    @click.option("--worktrees", type=click.IntRange(0, 256), default=8, show_default=True, help="Extra worktrees.")
    @click.option("--branches", type=click.IntRange(0, 10_000), default=50, show_default=True, help="Extra local branches.")
    @click.option("--commits", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Commits measured with and without the hook.")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch repository goes.")
    def bench_hooks_cmd(obj: Ctx, files: int, migrations: int, worktrees: int, branches: int, commits: int, directory: str | None, *, as_json: bool) -> None:
        """Time commits with the pre-commit hook against the same commits without it."""
        from .hooks import bench_hooks

        r = bench_hooks(files=files, migrations=migrations, worktrees=worktrees, branches=branches, commits=commits,
                        directory=directory, progress=_say)  # fmt: skip
        _show(r, as_json, 20)

    @command(bench_group, "news")
    @click.option("--ops", type=click.IntRange(20, 1_000_000), default=2000, show_default=True, help="Reads and writes measured per side.")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch store goes.")
    @click.option("--store-url", metavar="URL", default=None, help="Benchmark a PostgreSQL store (postgresql://…) instead of SQLite.")
    def bench_news_cmd(obj: Ctx, ops: int, directory: str | None, store_url: str | None, *, as_json: bool) -> None:
        """A named session (its news position kept in the store) against an unnamed one: reads and writes, same run."""
        from .news import bench_news

        _show(bench_news(ops=ops, directory=directory, store_url=store_url, progress=_say), as_json, 28)

    @command(bench_group, "sync")
    @click.option("--keys", "sizes", type=click.IntRange(10, 100_000_000), multiple=True, default=(10_000, 1_000_000), show_default=True,
                  help="Store sizes to measure (repeatable); each is bulk-loaded.")
    @click.option("--changed", type=click.IntRange(1, 1_000_000), default=100, show_default=True, help="Keys changed upstream before the sync.")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch stores go (a 1,000,000-key store takes about 1 GB with its copies).")
    def bench_sync_cmd(obj: Ctx, sizes: tuple[int, ...], changed: int, directory: str | None, *, as_json: bool) -> None:
        """Bytes and time to sync k changed keys of a replica, against copying the whole store in the same run."""
        from .sync import bench_sync

        r = bench_sync(sizes=tuple(sizes), changed=changed, directory=directory, progress=_say)
        if as_json:
            print_json(r)
            return
        for row in r["stores"]:
            out.print(
                f"{row['keys']:>10,} keys, {row['changed']} changed: sync {row['sync_bytes']:,} B in {row['sync_s'] * 1000:.1f} ms;"
                f" copy {row['copy_bytes']:,} B in {row['copy_s'] * 1000:.0f} ms; bytes {row['bytes_ratio']:.4%}, time {row['time_ratio']:.2%}",
                markup=False,
            )

    @command(bench_group, "dashboard")
    @click.option("--tasks", type=click.IntRange(10, 1_000_000), default=1000, show_default=True, help="Tasks on the board.")
    @click.option("--log-events", type=click.IntRange(0, 100_000_000), default=100_000, show_default=True, help="Events bulk-loaded in the log.")
    @click.option("--renders", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Renders of each view.")
    @click.option("--events", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Writes timed until they reach an open page.")
    @click.option("--browser/--no-browser", default=True, show_default=True, help="Also measure in Chromium (Playwright), when installed.")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch store goes.")
    def bench_dashboard_cmd(obj: Ctx, tasks: int, log_events: int, renders: int, events: int, browser: bool, directory: str | None,
                            *, as_json: bool) -> None:  # fmt: skip
        """Dashboard time to first render per view (against the JSON task_list) and event-to-page latency (against the write)."""
        from ..errors import Invalid

        try:
            from .dashboard import bench_dashboard
        except ImportError as e:
            raise Invalid("dashboard", f"`comity bench dashboard` needs the server extra ({e.name} is missing): pip install 'comity[server]'") from None
        _show(bench_dashboard(tasks=tasks, log_events=log_events, renders=renders, events=events, browser=browser,
                              directory=directory, progress=_say), as_json, 30)  # fmt: skip

    @command(bench_group, "chaos")
    @click.option("--seeds", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Busy-afternoon schedules per strategy.")
    def bench_chaos_cmd(obj: Ctx, seeds: int, *, as_json: bool) -> None:
        """Simulated busy-afternoon schedules per second under comity, against the `none` strategy in the same run."""
        from .chaos import bench_chaos

        tick: Callable[[int, int], None] = lambda done, total: None  # noqa: E731
        _show(bench_chaos(seeds=seeds, progress=tick), as_json, 24)
