"""Faults with real processes (issue 14's fault suite): a server SIGKILLed under concurrent
writers, a full disk, a corrupted copy of the store, clients that send their headers a byte
at a time.  Each ends the same way: every write a client was told succeeded is in the
store, once, and nothing the fault touched is passed off as healthy.

Writers are separate OS processes (``_WRITER`` below) that print each key the moment its
write is acknowledged; the test reads those lines as the truth of what was promised.  No
timed assertions: waits are for progress the writers report, bounded only so a hung run
fails instead of hanging.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from conftest import BACKENDS, clean_env, drop_pg_schemas, pg_schema, pg_url  # noqa: E402
from faces_support import Proc, comity, serve, token  # noqa: E402

import comity as comity_lib  # noqa: E402

pytestmark = pytest.mark.slow

WAIT = 120.0  # how long a test waits for what must come (never asserted on)

# A writer: creates PREFIX/0, PREFIX/1, … and prints each key once its create is acknowledged.
#   http URL TOKEN PREFIX N : through the HTTP API; a lost connection is retried with the same
#                             request id (the server may be dead: it waits for the next one)
#   store PATH PREFIX N SIZE : the Python API on the store file; stops at the first refusal and
#                             prints it as {"error": code, "message": …}
_WRITER = textwrap.dedent(
    """
    import json, sys, time, urllib.error, urllib.request, http.client
    mode = sys.argv[1]
    if mode == "http":
        url, tok, prefix, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
        for i in range(n):
            body = json.dumps({"key": f"{prefix}/{i}", "value": i, "request_id": f"{prefix}-{i}"}).encode()
            deadline = time.monotonic() + 120
            while True:
                req = urllib.request.Request(url + "/v1/create", data=body, method="POST", headers={
                    "Authorization": "Bearer " + tok, "Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        answer = json.loads(r.read())
                    break
                except urllib.error.HTTPError as e:
                    print(json.dumps({"error": e.code, "message": e.read().decode()[:500]}), flush=True)
                    sys.exit(0)
                except (OSError, http.client.HTTPException):  # the server is gone (for now): the same request again
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            print(json.dumps({"key": f"{prefix}/{i}", "pos": answer["pos"]}), flush=True)
    else:
        import comity
        from comity import ComityError
        from comity.work import Agent
        path, prefix, n, size = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        with comity.open(path, create=False) as store:
            agent = Agent(store.session(prefix.split("/")[0]))
            for i in range(n):
                try:
                    answer = agent.create(f"{prefix}/{i}", "x" * size)
                except ComityError as e:
                    print(json.dumps({"error": e.code, "message": e.message}), flush=True)
                    sys.exit(0)
                print(json.dumps({"key": f"{prefix}/{i}", "pos": answer["pos"]}), flush=True)
    """
)


class Writer:
    """A writer process and the lines it printed, read as they come."""

    def __init__(self, script: Path, *args: str, preexec: Any = None) -> None:
        self.err = script.with_name(f"writer-{'-'.join(args[2:4]).replace('/', '_')}-{time.monotonic_ns()}.err")
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=err,
                                         text=True, env=clean_env(), preexec_fn=preexec)  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"garbled": line})

    @property
    def acked(self) -> list[str]:
        return [x["key"] for x in self.lines if "key" in x]

    @property
    def refusal(self) -> dict[str, Any] | None:
        return next((x for x in self.lines if "error" in x), None)

    def finish(self) -> None:
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(WAIT)
        err = self.err.read_text()
        assert self.proc.returncode == 0 and "Traceback" not in err, (self.proc.returncode, err[-3000:])


def wait_for(what: str, done: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT}s for {what}")
        time.sleep(0.02)


def present(location: str, keys: list[str]) -> dict[str, list[Any]]:
    """Each key's live values, and its creates in the log, read by a new connection."""
    with comity_lib.open(location, create=False) as store:
        s = store.session()
        values = {k: s.get(k).values for k in keys}
        events: list[dict[str, Any]] = []
        while True:
            page = s.log(after=events[-1]["pos"] if events else 0, limit=10_000, values=False)
            if not page:
                break
            events += page
    creates: dict[str, int] = {}
    for e in events:
        if e["key"] in values and e["op"] in ("put", "create"):
            creates[e["key"]] = creates.get(e["key"], 0) + 1
    return {k: [values[k], creates.get(k, 0)] for k in keys}


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    loc = str(tmp_path / "s.db") if request.param == "sqlite" else pg_url(pg_schema(tmp_path))
    assert comity("init", location=loc).returncode == 0
    yield loc
    if request.param == "postgres":
        drop_pg_schemas([pg_schema(tmp_path)])


@pytest.fixture
def writer_script(tmp_path: Path) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    return script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ SIGKILL of a server


def test_a_server_killed_under_concurrent_writers_loses_no_acknowledged_write(
    location: str, tmp_path: Path, writer_script: Path
) -> None:
    port = _free_port()
    tokens = {f"w{i}": token(location, f"w{i}") for i in range(4)}
    server = serve(location, tmp_path, "--port", str(port))
    n = 40
    writers = [Writer(writer_script, "http", server.url, tok, name, str(n)) for name, tok in tokens.items()]
    restarted: Proc | None = None
    try:
        wait_for("the writers' first acknowledgements", lambda: sum(len(w.acked) for w in writers) >= 20)
        server.kill()  # SIGKILL: no shutdown, requests in flight lost with their answers
        at_kill = sum(len(w.acked) for w in writers)
        restarted = serve(location, tmp_path, "--port", str(port))
        for w in writers:
            w.finish()
    finally:
        for w in writers:
            if w.proc.poll() is None:
                w.proc.kill()
        server.stop()
        if restarted is not None:
            restarted.stop()
    assert at_kill < 4 * n, "the kill came after the writers were done: nothing was in flight"
    for name, w in zip(tokens, writers, strict=True):
        assert w.refusal is None, w.refusal
        assert w.acked == [f"{name}/{i}" for i in range(n)]  # each retried to the end, none refused by itself
    found = present(location, [k for w in writers for k in w.acked])
    for key, (values, creates) in sorted(found.items()):
        assert values == [int(key.rsplit("/", 1)[1])] and creates == 1, (key, values, creates)


# ------------------------------------------------------------------ a full disk


def _mount_small_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, check=False)
    return r.returncode == 0


def test_a_full_disk_refuses_writes_as_unavailable_and_keeps_every_acknowledged_one(tmp_path: Path, writer_script: Path) -> None:
    """On a 1 MiB tmpfs when this process may mount one, else with the file size limited
    (RLIMIT_FSIZE): writers run until the disk refuses; the refusal is ``unavailable``
    (CLI exit 5) saying why, never a bug; with room again the store checks healthy, holds
    every acknowledged write and takes new ones."""
    disk = tmp_path / "disk"
    mounted = _mount_small_tmpfs(disk, "1m")
    db = disk / "s.db"
    try:
        assert comity("init", location=str(db)).returncode == 0
        limit: Any = None
        if not mounted:  # the file size limit: a write past it fails as a full disk does (EFBIG)
            import resource

            cap = max(p.stat().st_size for p in disk.iterdir()) + 512 * 1024

            def limit() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        writers = [Writer(writer_script, "store", str(db), f"w{i}/k", "2000", "8000", preexec=limit) for i in range(2)]
        for w in writers:
            w.finish()
        for w in writers:
            assert w.refusal is not None and w.refusal["error"] == "unavailable", w.lines[-3:]
            assert "disk" in w.refusal["message"] or "full" in w.refusal["message"], w.refusal
        acked = [k for w in writers for k in w.acked]
        assert acked, "nothing was written before the disk filled"
        acked_cli = 0

        # The CLI says so too: exit 5, one line, no traceback (what the writers left free may
        # take a few more values first).
        for i in range(40):
            r = subprocess.run([*_comity(), "--store", str(db), "--agent", "w9", "create", f"w9/k{i}", json.dumps("x" * 100_000)],
                               capture_output=True, text=True, env=clean_env(), preexec_fn=limit, timeout=WAIT, check=False)  # fmt: skip
            if r.returncode != 0:
                break
            acked_cli = i + 1
        assert r.returncode == 5 and "Traceback" not in r.stderr and "internal" not in r.stderr, (r.returncode, r.stderr)
        assert "disk" in r.stderr or "full" in r.stderr, r.stderr

        # Room again: healthy, everything acknowledged is there, new writes go through.
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        chk = comity("check", location=str(db))
        assert chk.returncode == 0, chk.stderr
        for key, (values, creates) in present(str(db), acked).items():
            assert values == ["x" * 8000] and creates == 1, (key, creates)
        for key, (values, creates) in present(str(db), [f"w9/k{i}" for i in range(acked_cli)]).items():
            assert values == ["x" * 100_000] and creates == 1, (key, creates)
        after = Writer(writer_script, "store", str(db), "w9/after", "3", "8000")
        after.finish()
        assert after.acked == [f"w9/after/{i}" for i in range(3)]
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def _comity() -> list[str]:
    from conftest import COMITY

    return list(COMITY)


# ------------------------------------------------------------------ a corrupted copy


def test_a_corrupted_copy_is_refused_and_the_original_keeps_every_acknowledged_write(tmp_path: Path, writer_script: Path) -> None:
    """A copy of the store file taken while writers run (no WAL, then damaged on purpose):
    reading it says it is damaged (exit 5), never opens it as a new or empty store, and
    never touches it; ``check --salvage-to`` rebuilds what is readable into a store that
    works; the original holds every acknowledged write."""
    db = tmp_path / "s.db"
    assert comity("init", location=str(db)).returncode == 0
    writers = [Writer(writer_script, "store", str(db), f"w{i}/k", "150", "3000") for i in range(2)]
    copy = tmp_path / "copy.db"
    try:
        wait_for("writes to copy", lambda: sum(len(w.acked) for w in writers) >= 40)
        shutil.copyfile(db, copy)  # mid-run, without its WAL: what a careless backup takes
    finally:
        for w in writers:
            w.finish()
    size = copy.stat().st_size
    page = 4096
    with open(copy, "r+b") as f:  # every third page after the first overwritten
        for at in range(page, size, 3 * page):
            f.seek(at)
            f.write(b"\xde\xad\xbe\xef" * (page // 4))
    damaged = copy.read_bytes()

    for args in (["get", "w0/k/0"], ["log", "--limit", "10"], ["keys"], ["--agent", "x", "put", "k", "1"], ["check"]):
        r = comity(*args, location=str(copy))
        assert r.returncode == 5 and "Traceback" not in r.stderr, (args, r.returncode, r.stderr)
        assert str(copy) in r.stderr, (args, r.stderr)
    for args in (["serve", "--port", "0"], ["mcp", "--agent", "x"], ["mcp", "--http", "--port", "0"]):  # servers refuse to start on it
        r = subprocess.run([*_comity(), "--store", str(copy), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=clean_env(), timeout=WAIT, check=False)  # fmt: skip
        assert r.returncode == 5 and "is damaged" in r.stderr and "Traceback" not in r.stderr, (args, r.returncode, r.stderr)
    assert copy.read_bytes() == damaged  # nothing was "repaired" or replaced behind anyone's back

    salvaged = tmp_path / "salvaged.db"
    r = comity("check", "--salvage-to", str(salvaged), location=str(copy))
    assert r.returncode in (0, 5) and "Traceback" not in r.stderr, r.stderr
    if r.returncode == 0:  # what was readable, rebuilt into a store that checks healthy and takes writes
        assert comity("check", location=str(salvaged)).returncode == 0
        assert comity("--agent", "x", "put", "after/salvage", "1", location=str(salvaged)).returncode == 0
    else:  # the damage hit what says whose store it is: nothing to salvage, and it says what to do
        assert "restore a backup" in r.stderr, r.stderr
        assert comity("get", "k", location=str(salvaged)).returncode == 5  # no half-built store left behind

    assert comity("check", location=str(db)).returncode == 0
    acked = [k for w in writers for k in w.acked]
    assert len(acked) == 300
    for key, (values, creates) in present(str(db), acked).items():
        assert values == ["x" * 3000] and creates == 1, (key, creates)


# ------------------------------------------------------------------ slow headers


def test_writers_are_served_while_slow_header_clients_hold_connections(
    location: str, tmp_path: Path, writer_script: Path
) -> None:
    """Sixty clients open connections and send their request heads a byte at a time; the
    server closes each at its header timeout (408) while four writers' every create is
    acknowledged and stored."""
    tokens = {f"w{i}": token(location, f"w{i}") for i in range(4)}
    server = serve(location, tmp_path, "--header-timeout", "2")
    host, port = server.url.split("//", 1)[1].rsplit(":", 1)
    stop = threading.Event()
    answers: list[bytes] = []

    def drip() -> None:
        s = socket.create_connection((host, int(port)), timeout=WAIT)
        try:
            s.sendall(b"POST /v1/read HTTP/1.1\r\nHost: x\r\n")
            while not stop.is_set():
                s.sendall(b"X")
                s.settimeout(0.2)
                try:
                    got = s.recv(4096)
                    answers.append(got)
                    return  # the server answered (408) or closed the connection
                except TimeoutError:
                    continue
        except OSError:
            answers.append(b"closed")
        finally:
            s.close()

    slow = [threading.Thread(target=drip, daemon=True) for _ in range(60)]
    for t in slow:
        t.start()
    n = 25
    writers = [Writer(writer_script, "http", server.url, tok, name, str(n)) for name, tok in tokens.items()]
    try:
        for w in writers:
            w.finish()
        for t in slow:
            t.join(WAIT)
    finally:
        stop.set()
        server.stop()
    for name, w in zip(tokens, writers, strict=True):
        assert w.refusal is None and w.acked == [f"{name}/{i}" for i in range(n)], (w.refusal, w.acked[-3:])
    assert len(answers) == 60 and all(a == b"closed" or a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers), answers[:3]
    for key, (values, creates) in present(location, [k for w in writers for k in w.acked]).items():
        assert values == [int(key.rsplit("/", 1)[1])] and creates == 1, (key, values, creates)
