"""The replication commands through the real CLI: clone, sync, escrow, status, --watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

Cli = Callable[..., subprocess.CompletedProcess[str]]


def ok(cli: Cli, *args: str, store: str | None = None) -> Any:
    r = cli(*args, store=store)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout) if r.stdout.strip().startswith(("{", "[")) else r.stdout.strip()


def test_clone_sync_escrow_and_status_through_the_cli(comity_cli: Cli, tmp_path: Path) -> None:
    up, rep = str(tmp_path / "up.db"), str(tmp_path / "sandbox.db")
    ok(comity_cli, "--agent", "carol", "put", "notes/plan", '"v1"', store=up)
    made = ok(comity_cli, "replica", "clone", up, rep, "--json", store=None)
    assert made["upstream"] == up and made["location"] == rep and made["replica"]
    got = ok(comity_cli, "--agent", "alice", "seq", "reserve", "migrations", "--count", "3", "--json", store=rep)
    assert (got["first"], got["last"], got["escrowed"]) == (1, 3, 3)
    ok(comity_cli, "--agent", "alice", "put", "notes/offline", '"kept"', store=rep)
    os.rename(up, up + ".away")  # the upstream is gone: the replica is cut off
    try:
        numbers = [ok(comity_cli, "--agent", "alice", "seq", "next", "migrations", store=rep) for _ in range(3)]
        assert numbers == ["1", "2", "3"]
        refused = comity_cli("--agent", "alice", "create", "files/x", '"y"', store=rep)
        assert refused.returncode == 5 and "last reached" in refused.stderr, refused.stderr
        cut = comity_cli("sync", "--json", store=rep)
        assert cut.returncode == 5
    finally:
        os.rename(up + ".away", up)
    done = ok(comity_cli, "sync", "--json", store=rep)
    assert {"sent", "received", "bytes"} <= set(done) and done["sent"] >= 2 and done["in_sync"]
    st = ok(comity_cli, "replica", "status", "--hash", "--json", store=rep)
    assert st["upstream"] == up and st["last_reached"] is not None and st["escrow"] == []
    assert ok(comity_cli, "get", "notes/offline", "--json", store=up)["values"] == ["kept"]
    again = ok(comity_cli, "sync", "--json", store=rep)
    assert again["sent"] == again["received"] == 0
    assert ok(comity_cli, "replica", "status", "--hash", "--json", store=rep)["state_hash"] == ok(
        comity_cli, "replica", "status", "--hash", "--json", store=up
    )["state_hash"]


def test_sync_watch_keeps_syncing_until_interrupted(comity_cli: Cli, tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    from conftest import COMITY

    up, rep = str(tmp_path / "up.db"), str(tmp_path / "r.db")
    ok(comity_cli, "--agent", "carol", "put", "k", "1", store=up)
    ok(comity_cli, "replica", "clone", up, rep, "--json", store=None)
    # Interrupted as from a terminal: SIGINT at its default in the child even when this test runs
    # where it is ignored (a shell's background job without job control ignores it, and Python
    # then leaves it ignored: the watch would never stop).
    proc = subprocess.Popen([*COMITY, "--store", rep, "sync", "--watch", "--interval", "0.1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        ok(comity_cli, "--agent", "carol", "put", "k2", "2", store=up)
        seen = [first]
        deadline = time.monotonic() + 120
        while not any(r.get("received") for r in seen):
            assert time.monotonic() < deadline, seen
            seen.append(json.loads(proc.stdout.readline()))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 130
    assert ok(comity_cli, "get", "k2", "--json", store=rep)["values"] == [2]
