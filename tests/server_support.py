"""Real `comity serve` processes for the server and remote-client tests, and a plain HTTP caller."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BIN = Path(sys.executable).with_name("comity")
COMITY = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "comity.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}
    env.update(extra)
    return env


def comity(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMITY, *args], env=clean_env(**(env or {})), capture_output=True, text=True, timeout=timeout, check=False)


def agent_token(store: Path | str, name: str, *, admin: bool = False) -> str:
    """A token from `comity agent add NAME --json` on the store itself."""
    r = comity("--store", str(store), "agent", "add", name, "--json", *(["--admin"] if admin else []))
    assert r.returncode == 0, r
    out = json.loads(r.stdout)
    assert out["agent"] == name and out["auth_token"].startswith(name + ".")
    return str(out["auth_token"])


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the server dies wherever it is, mid-request included."""
        self.proc.kill()
        self.proc.wait(10)

    def errors(self) -> str:
        return self.log.read_text()


def serve(store: Path, *, env: dict[str, str] | None = None, timeout: float = 30) -> Served:
    """Start `comity --store STORE serve --port 0 --json` and wait until it answers."""
    return serve_many(store, count=1, env=env, timeout=timeout)[0]


def serve_many(store: Path, *, count: int, env: dict[str, str] | None = None, timeout: float = 30) -> list[Served]:
    """``count`` servers over one store, started together."""
    started = []
    for _ in range(count):
        log = store.with_name(f"serve-{os.urandom(4).hex()}.log")
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [*COMITY, "--store", str(store), "serve", "--port", "0", "--json"],
                stdout=subprocess.PIPE, stderr=err, text=True, env=clean_env(**(env or {})),
            )  # fmt: skip
        started.append((proc, log))
    return [_ready(proc, log, timeout) for proc, log in started]


def _ready(proc: subprocess.Popen[str], log: Path, timeout: float) -> Served:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError(f"comity serve printed no URL in {timeout}s: {log.read_text()}")
    sel.close()
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"comity serve exited {proc.returncode}: {log.read_text()}")
    served = Served(json.loads(line)["url"], proc, log)
    while True:
        try:
            with urllib.request.urlopen(served.url + "/v1/health", timeout=5) as r:
                if r.status == 200:
                    return served
        except OSError:
            pass
        if time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"comity serve did not answer in {timeout}s: {log.read_text()}")
        time.sleep(0.05)


def call(
    url: str,
    verb: str,
    token: str | None,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str | None = None,
    method: str = "POST",
) -> tuple[int, Any]:
    """POST /v1/VERB with a JSON body (or ``raw`` bytes); answers (status, decoded JSON body)."""
    data = raw if raw is not None else json.dumps({} if body is None else body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    # http.client, not urllib: a server that refuses a body before reading it (413, 401) answers and
    # closes while a large body is still being sent; the answer is read after the broken pipe.
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        try:
            conn.request(method, (parts.path or "") + (path or f"/v1/{verb}"), body=data if method == "POST" else None, headers=h)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        status, payload = r.status, r.read()
        ctype = r.headers.get("content-type", "")
    finally:
        conn.close()
    assert ctype.startswith("application/json"), (status, ctype, payload[:200])
    return status, json.loads(payload)
