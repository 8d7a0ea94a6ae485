"""A real partition: a server, two replicas, writers on every side, the link cut and healed.

Processes only: ``comity serve`` over the upstream store (SQLite, and PostgreSQL where
``COMITY_TEST_POSTGRES_URL`` is set), a TCP proxy between the replicas and the server
that refuses or hangs connections (``partition_proxy.py``), three writer processes
(one on each replica file, one through the server's HTTP API), and the ``comity`` CLI
for clone, escrow and sync.  On PostgreSQL the second replica is cloned from the
database itself (``replica clone postgresql://…``) through a second proxy in front of
PostgreSQL, so its upstream is the database, cut off and healed the same way.  While the link is cut the replicas keep working; what
needs the authority fails fast (within the upstream timeout, when the link hangs) except
what was escrowed.  After the heal a replica is killed mid-sync, the recorded sync
messages are sent again duplicated and out of order, and then every replica must hold
the same state (the same hash), every acknowledged write must be there (or a sibling,
unless a later write saw it), no sequence number may have been issued twice and the
bounded counter must not be below zero.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import comity
import comity.sync
from comity.causal import DVVSet

from conftest import PG_SKIP, drop_pg_schemas, pg_schema, pg_url
from server_support import COMITY, Served, _ready, clean_env

HERE = Path(__file__).resolve().parent
WRITES_PER_PHASE = 10  # acknowledged puts each writer makes in each phase before it moves on


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMITY, *args], env=clean_env(**(env or {})), capture_output=True, text=True, timeout=timeout, check=False)


def ok(*args: str, env: dict[str, str] | None = None) -> Any:
    r = run(*args, env=env)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout) if r.stdout.strip().startswith(("{", "[")) else r.stdout.strip()


class Proxy:
    def __init__(self, target_port: int, record: Path | None) -> None:
        recording = ["--record", str(record)] if record is not None else []
        self.proc = subprocess.Popen([sys.executable, str(HERE / "partition_proxy.py"), str(target_port), *recording],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        ports = json.loads(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{ports['port']}"
        self.control = ports["control"]
        self.record = record

    def mode(self, mode: str) -> Any:
        with socket.create_connection(("127.0.0.1", self.control), timeout=10) as s:
            s.sendall(f"{mode}\n".encode())
            answer = s.makefile().readline().strip()
        return json.loads(answer) if answer.startswith("{") else answer

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Writer:
    def __init__(self, where: str, agent: str, out: Path, stop: Path, token: str | None = None) -> None:
        self.out = out
        env = clean_env(**({"COMITY_AUTH": token} if token else {}), COMITY_UPSTREAM_TIMEOUT="1")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "sync_writer.py"), where, agent, str(out), str(stop)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.endswith("}")]

    def puts(self) -> int:
        return sum(1 for r in self.records() if r["op"] == "put")

    def wait_for_puts(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.puts() < n:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, f"{self.out.name}: only {self.puts()} writes"
            time.sleep(0.05)

    def finish(self) -> None:
        self.proc.wait(60)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        assert self.proc.returncode == 0, err


@pytest.fixture(params=["sqlite", "postgres"])
def upstream(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "up.db")
        return
    if PG_SKIP:
        pytest.skip(PG_SKIP)
    schema = pg_schema(tmp_path / "partition")
    yield pg_url(schema)
    drop_pg_schemas([schema])


def serve(location: str, log: Path) -> Served:
    with open(log, "w") as err:
        proc = subprocess.Popen([*COMITY, "--store", location, "serve", "--port", "0", "--json"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=clean_env())  # fmt: skip
    return _ready(proc, log, 60)


def via(url: str, port: int) -> str:
    """``url`` (a PostgreSQL URL) with its host and port replaced by 127.0.0.1:``port``."""
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def test_two_replicas_and_a_server_converge_after_a_partition_with_nothing_lost(upstream: str, tmp_path: Path) -> None:
    admin = ok("--store", upstream, "agent", "add", "replicator", "--admin", "--json")["auth_token"]
    server_agent = ok("--store", upstream, "agent", "add", "carol", "--json")["auth_token"]
    ok("--store", upstream, "--agent", "carol", "update", "budget", "inc", "30", "--type", "bcounter", "--json")
    server = serve(upstream, tmp_path / "serve.log")
    port = int(server.url.rsplit(":", 1)[1])
    proxy = Proxy(port, tmp_path / "recorded")
    proxies = [proxy]
    on_postgres = upstream.startswith("postgresql")
    if on_postgres:  # the second replica's upstream is the database, behind a proxy of its own
        proxies.append(Proxy(urlsplit(upstream).port or 5432, None))
    fast = {"COMITY_UPSTREAM_TIMEOUT": "1"}
    r1, r2 = str(tmp_path / "r1.db"), str(tmp_path / "r2.db")
    stop = tmp_path / "stop"
    writers: list[Writer] = []
    try:
        for r in (r1, r2):
            if r == r2 and on_postgres:
                source = via(upstream, int(proxies[1].url.rsplit(":", 1)[1]))
                made = ok("replica", "clone", source, r, "--json")
                assert made["upstream"] == source and ok("--store", r, "replica", "status", "--json")["upstream"] == source
            else:
                made = ok("--auth", admin, "replica", "clone", proxy.url, r, "--json")
                assert made["upstream"] == proxy.url
            got = ok("--store", r, "--agent", "escrow", "seq", "reserve", "mig", "--count", "25", "--json")
            assert got["count"] == 25
            ok("--store", r, "--agent", "escrow", "update", "budget", "escrow", "10", "--json")
        writers = [
            Writer(r1, "alice", tmp_path / "alice.jsonl", stop),
            Writer(r2, "bob", tmp_path / "bob.jsonl", stop),
            Writer(server.url, "carol", tmp_path / "carol.jsonl", stop, token=server_agent),
        ]
        for w in writers:
            w.wait_for_puts(WRITES_PER_PHASE)
        for r in (r1, r2):
            assert ok("--store", r, "sync", "--json")["complete"]

        # The link is cut: refused connections.
        for p in proxies:
            p.mode("drop")
        for w in writers:
            w.wait_for_puts(2 * WRITES_PER_PHASE)
        for r in (r1, r2):
            cut = run("--store", r, "sync", "--json")
            assert cut.returncode == 5 and "last reached" in cut.stderr, (r, cut.stderr)
            refused = run("--store", r, "--agent", "bob", "create", "files/0267.sql", '"x"', env=fast)
            assert refused.returncode == 5 and "cannot be reached" in refused.stderr and "last reached" in refused.stderr, refused.stderr
        # Then the server's link hangs: what needs the authority still fails fast, within the timeout.
        proxy.mode("stall")
        hung = run("--store", r1, "--agent", "bob", "task", "add", "hangs", env=fast)
        assert hung.returncode == 5 and "cannot be reached" in hung.stderr, hung.stderr
        assert proxy.mode("stats")["stalled"] >= 1
        proxy.mode("drop")
        for w in writers:
            w.wait_for_puts(3 * WRITES_PER_PHASE)

        # Heal; a replica is killed in the middle of its sync, then syncs again: the link lets
        # its hello and its first pull through (it takes the upstream's news in) and goes dead
        # under its push; killed there, it has pushed nothing.
        for p in proxies[1:]:
            p.mode("pass")
        stalled = proxy.mode("stats")["stalled"]
        proxy.mode("stall-after 2")
        victim = subprocess.Popen([*COMITY, "--store", r1, "sync", "--json"], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proxy.mode("stats")["stalled"] == stalled:
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline, "the victim's sync never reached its third message"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL  # killed mid-sync, not after it
        proxy.mode("pass")
        for w in writers:
            w.wait_for_puts(4 * WRITES_PER_PHASE)
        stop.touch()
        for w in writers:
            w.finish()

        for _ in range(6):
            results = [ok("--store", r, "sync", "--json") for r in (r1, r2)]
            if all(x["in_sync"] and x["sent"] == 0 and x["received"] == 0 for x in results):
                break
        else:
            raise AssertionError(f"no quiescence: {results}")

        # Every sync message again, duplicated and out of order: nothing changes.
        before = {r: ok("--store", r, "replica", "status", "--hash", "--json")["state_hash"] for r in (r1, r2)}
        assert proxy.record is not None
        recorded = sorted(proxy.record.glob("*.req"))
        replayed = [p.read_bytes() for p in recorded if b'"type":"push"' in p.read_bytes() or b'"type":"pull"' in p.read_bytes()]
        assert any(b'"type":"push"' in m for m in replayed)
        random.Random(3).shuffle(replayed)
        for message in replayed + replayed:
            status, answer = resend(port, message)
            assert status == 200 and answer["ok"] is True, answer
        for r in (r1, r2):
            again = ok("--store", r, "sync", "--json")
            assert again["received"] == 0 and again["sent"] == 0 and again["in_sync"]
            assert ok("--store", r, "replica", "status", "--hash", "--json")["state_hash"] == before[r]
    finally:
        stop.touch()
        for w in writers:
            if w.proc.poll() is None:
                w.proc.kill()
        for p in proxies:
            p.stop()
        server.stop()

    # The same state everywhere.
    stores = [comity.open(upstream), comity.open(r1), comity.open(r2)]
    try:
        hashes = {comity.sync.state_hash(s)["state_hash"] for s in stores}
        assert len(hashes) == 1
        check_nothing_lost(stores[0], [w.records() for w in writers])
    finally:
        for s in stores:
            s.close()


def resend(port: int, request: bytes) -> tuple[int, Any]:
    """Send a recorded HTTP request (its method, path, headers and body) to the server again."""
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def check_nothing_lost(store: comity.Store, logs: list[list[dict[str, Any]]]) -> None:
    records = [r for log in logs for r in log]
    # Every acknowledged write is there, or a write that saw it replaced it.
    writes = []
    for r in (r for r in records if r["op"] == "put"):
        seen = store.codec.open(r["saw"], r["key"]).seen.to_json()
        joined = store.codec.open(r["context"], r["key"]).seen
        writes.append({"key": r["key"], "dot": (r["replica"], joined.get(r["replica"])), "saw": seen, "value": r["value"]})
    assert len(writes) >= 3 * 4 * WRITES_PER_PHASE
    for key in {w["key"] for w in writes}:
        mine = [w for w in writes if w["key"] == key]
        covered = {w["dot"] for w in mine for o in mine if o is not w and w["dot"][1] <= o["saw"].get(w["dot"][0], 0)}
        expected = {w["dot"]: w["value"] for w in mine if w["dot"] not in covered}
        with store.backend.transaction(write=False) as tx:
            row = tx.load(key)
        assert row is not None
        live = {(d.replica, d.counter): w[0] for d, w in DVVSet.from_stored_json(json.loads(row.clock)).dotted_values() if w}
        for dot, value in expected.items():
            assert live.get(dot) == value, (key, dot, value, live)
    # No sequence number twice; the bounded counter never below zero; no increment lost.
    numbers = [r["value"] for r in records if r["op"] == "seq"]
    assert len(numbers) == len(set(numbers)) and len(numbers) >= 3 * WRITES_PER_PHASE
    offline = [r for r in records if r["op"] == "seq" and r["agent"] in ("alice", "bob")]
    assert offline, "the replicas took escrowed numbers"
    s = store.session()
    decs = sum(1 for r in records if r["op"] == "dec")
    assert s.get("budget").values == [30 - decs] and 30 - decs >= 0
    assert any(r["op"] == "refused" and r["what"] == "dec" for r in records), "someone ran out of rights"
    assert s.get("counters/hits").values == [sum(1 for r in records if r["op"] == "inc")]
