"""Hostile and broken clients against real `comity serve` and `comity mcp --http` processes:
slow or unfinished request heads, idle connections, more connections than the server
allows, bodies too large or sent with a bad token, floods of malformed requests.  Each
server answers or drops them as its limits say, keeps answering everyone else, keeps its
memory flat, and keeps its log short.  No timed assertions: a socket timeout only bounds
how long a test waits for what must come."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mcp.server.mcpserver")

from conftest import BACKENDS, drop_pg_schemas, pg_schema, pg_url  # noqa: E402
from faces_support import Proc, comity, serve, serve_mcp_http, token  # noqa: E402

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
WAIT = 60.0  # how long a test waits for what must come (never asserted on)


@dataclass
class Server:
    kind: str  # "serve" or "mcp"
    proc: Proc
    token: str
    host: str
    port: int
    path: str  # where requests go

    def connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=WAIT)
        return s

    def request(self, body: bytes, *, auth: str | None = None, extra: str = "") -> bytes:
        """One request on a new connection; the raw answer (head and body)."""
        s = self.connect()
        try:
            auth = auth if auth is not None else f"Bearer {self.token}"
            accept = "Accept: application/json, text/event-stream\r\n" if self.kind == "mcp" else ""
            head = (
                f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: {auth}\r\n{accept}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
            )
            s.sendall(head.encode() + body)
            return read_all(s)
        finally:
            s.close()

    def ok_body(self) -> bytes:
        if self.kind == "serve":
            return json.dumps({"key": "k"}).encode()
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode()  # fmt: skip

    def answers(self) -> bool:
        return status(self.request(self.ok_body())) == 200


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            got = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not got:
            break
        chunks.append(got)
    return b"".join(chunks)


def status(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3})", raw)
    return int(m.group(1)) if m else 0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(params=["serve", "mcp"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    location = str(tmp_path / "s.db")
    assert comity("init", location=location).returncode == 0
    tok = token(location, "alice")
    flags = ("--header-timeout", "1", "--keepalive-timeout", "1", "--max-connections", "24", "--log-per-minute", "5",
             "--max-body-bytes", str(1 << 20))  # fmt: skip
    proc = serve(location, tmp_path, *flags) if request.param == "serve" else serve_mcp_http(location, tmp_path, *flags)
    parts = urllib.parse.urlsplit(proc.url)
    path = "/v1/read" if request.param == "serve" else parts.path
    yield Server(request.param, proc, tok, parts.hostname or "127.0.0.1", int(parts.port or 0), path)
    proc.stop()


def stopped_log(server: Server) -> str:
    """Stop the server and return what it logged."""
    p = server.proc.proc
    p.terminate()
    p.wait(30)
    if server.kind == "serve":
        return server.proc.log.read_text()
    assert p.stderr is not None
    return p.stderr.read()


# ------------------------------------------------------------------ slow heads, idle connections


def test_an_unfinished_request_head_is_closed_with_408(server: Server) -> None:
    held = []
    for _ in range(20):
        s = server.connect()
        s.sendall(f"POST {server.path} HTTP/1.1\r\nHost: x\r\n".encode())  # and never the rest
        held.append(s)
    assert server.answers()  # everyone else is served meanwhile
    for s in held:
        raw = read_all(s)
        assert status(raw) == 408, raw[:200]
        s.close()


def test_dripping_a_head_does_not_extend_its_time(server: Server) -> None:
    s = server.connect()
    head = f"POST {server.path} HTTP/1.1\r\nHost: x\r\n" + "X-Pad: " + "a" * 4000 + "\r\n"
    closed = threading.Event()

    def drip() -> None:
        for byte in head.encode():
            if closed.is_set():
                return
            try:
                s.send(bytes([byte]))
            except OSError:
                return
            closed.wait(0.05)  # 4,000 bytes at 20 a second: far longer than the timeout

    t = threading.Thread(target=drip)
    t.start()
    raw = read_all(s)
    closed.set()
    t.join()
    s.close()
    assert status(raw) == 408, raw[:200]


def test_an_idle_connection_is_closed(server: Server) -> None:
    s = server.connect()
    s.sendall(b"")  # connected, sends nothing at all
    assert status(read_all(s)) == 408
    s.close()
    kept = server.connect()  # a kept-alive connection, idle after its answer
    body = server.ok_body()
    accept = "Accept: application/json, text/event-stream\r\n" if server.kind == "mcp" else ""
    kept.sendall(
        (f"POST {server.path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nAuthorization: Bearer {server.token}\r\n{accept}"
         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    )  # fmt: skip
    raw = read_all(kept)  # the answer, then the server closes the idle connection
    kept.close()
    assert status(raw) == 200, raw[:300]


def test_connections_past_the_limit_get_503_and_the_rest_are_served(server: Server) -> None:
    held = [server.connect() for _ in range(40)]
    refused = 0
    for s in held:
        s.settimeout(0.5)  # a refused one has its answer at once; the others are silent
        try:
            first = s.recv(200)
        except TimeoutError:
            first = b"?"
        if status(first) == 503:
            refused += 1
    assert refused >= 40 - 24
    for s in held:
        s.close()
    assert server.answers()


# ------------------------------------------------------------------ bodies


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bad_token_or_an_oversized_body_is_refused_before_the_body_is_read(tmp_path: Path, backend: str) -> None:
    location = str(tmp_path / "s.db") if backend == "sqlite" else pg_url(pg_schema(tmp_path))
    try:
        assert comity("init", location=location).returncode == 0
        tok = token(location, "alice")
        for kind in ("serve", "mcp"):
            proc = serve(location, tmp_path) if kind == "serve" else serve_mcp_http(location, tmp_path)
            try:
                parts = urllib.parse.urlsplit(proc.url)
                path = "/v1/write" if kind == "serve" else parts.path
                for auth, want in ((f"Bearer nobody.{'0' * 64}", 401), (f"Bearer {tok}", 413)):
                    s = socket.create_connection((parts.hostname, parts.port), timeout=WAIT)
                    # Declares a gigabyte, sends a little: the answer comes without the rest.
                    s.sendall(
                        (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n"
                         "Accept: application/json, text/event-stream\r\nContent-Length: 1000000000\r\n\r\n").encode() + b"{" * 1000
                    )  # fmt: skip
                    raw = read_all(s)
                    s.close()
                    assert status(raw) == want, (kind, raw[:300])
                    assert b'"error"' in raw
                # memory stays flat: 24 bodies of 9 MiB with a bad token, at once
                before = rss_kb(proc.proc.pid)
                errors: list[BaseException] = []

                def send_one() -> None:
                    try:
                        s = socket.create_connection((parts.hostname, parts.port), timeout=WAIT)
                        s.sendall(
                            (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x.{'1' * 64}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {9 << 20}\r\n\r\n").encode()
                        )  # fmt: skip
                        try:
                            s.sendall(b" " * (9 << 20))
                        except OSError:
                            pass  # answered and closed before the body was read: as it should be
                        s.close()
                    except BaseException as e:  # noqa: BLE001
                        errors.append(e)

                threads = [threading.Thread(target=send_one) for _ in range(24)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert not errors, errors
                assert rss_kb(proc.proc.pid) - before < 40_000, (before, rss_kb(proc.proc.pid))
            finally:
                proc.stop()
    finally:
        if backend == "postgres":
            drop_pg_schemas([pg_schema(tmp_path)])


def test_a_streamed_body_past_the_cap_is_cut_off(server: Server) -> None:
    s = server.connect()
    accept = "Accept: application/json, text/event-stream\r\n" if server.kind == "mcp" else ""
    s.sendall(
        (f"POST {server.path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nAuthorization: Bearer {server.token}\r\n{accept}"
         "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    )  # fmt: skip
    chunk = b" " * 65536
    try:
        for _ in range(64):  # 4 MiB, over the 1 MiB cap
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    except OSError:
        pass
    raw = read_all(s)
    s.close()
    assert status(raw) == 413, raw[:300]


# ------------------------------------------------------------------ logs


def test_a_flood_of_malformed_requests_is_logged_a_few_times(server: Server) -> None:
    for _ in range(300):
        s = server.connect()
        s.sendall(b"GARBAGE \x00\x01 NOT HTTP\r\n\r\n")
        read_all(s)
        s.close()
    assert server.answers()
    text = stopped_log(server)
    lines = [line for line in text.splitlines() if "Invalid HTTP request" in line]
    assert 1 <= len(lines) <= 3 * 5, (len(lines), text[-2000:])  # 5 a minute; the run may span a minute or two


def test_the_rate_limited_log_says_how_many_lines_it_dropped() -> None:
    import logging

    from comity.server.limits import RateLimitedLog

    now = [0.0]
    limit = RateLimitedLog(3, clock=lambda: now[0])
    logger = logging.getLogger("comity.test.ratelimit")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    logger.addFilter(limit)
    logger.propagate = False
    for i in range(10):
        logger.warning("bad request from %s", f"10.0.0.{i}")
    logger.warning("another kind")  # each kind has its own allowance
    assert len(seen) == 4
    now[0] = 61.0
    logger.warning("bad request from %s", "10.0.0.99")
    assert seen[-1] == "bad request from 10.0.0.99 (7 similar line(s) dropped in the last minute)"


# ------------------------------------------------------------------ the README's curl


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_example_works_as_written(tmp_path: Path) -> None:
    line = next(x for x in README.splitlines() if x.startswith("$ curl ") and "/v1/" in x)
    location = str(tmp_path / "s.db")
    assert comity("init", location=location).returncode == 0
    tok = token(location, "alice")
    proc = serve(location, tmp_path)
    try:
        host = urllib.parse.urlsplit(proc.url).netloc
        argv = shlex.split(line[2:].replace("http://build1:8765", f"http://{host}").replace("$ALICE_TOKEN", tok))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        answer = json.loads(r.stdout)
        assert r.returncode == 0 and "values" in answer and "context" in answer, r.stdout
    finally:
        proc.stop()
