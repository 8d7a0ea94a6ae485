"""Eight OS processes acting with one agent token through one ``comity serve``, each reading a
counter and writing it back: every accepted increment counts and none is lost, with a
session per process or with none, on SQLite and PostgreSQL.

Issue 11 found this losing updates: the server kept one facade per *agent*, so the eight
processes shared the contexts it remembered, and their blind writes were all accepted
(320 accepted, the counter at 74).  A session is an agent *and* a session id
(docs/faces.md): processes with sessions of their own each write from their own read,
and requests that name no session remember nothing, so a write without a context to the
counter is refused as stale.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from conftest import BACKENDS, clean_env, drop_pg_schemas, pg_schema, pg_url  # noqa: E402
from faces_support import Proc, comity, serve, token  # noqa: E402

import comity as comity_lib  # noqa: E402

pytestmark = pytest.mark.slow

PROCESSES = 8
ROUNDS = 12

# argv: server URL, token, mode ("session" or "none"), index, ready file, go file, result file.
# Plain HTTP, so that whatever is remembered between requests is the server's doing.
WORKER = r"""
import http.client, json, os, sys, time, urllib.parse
url, token, mode, index, ready, go, result = sys.argv[1:8]
u = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
if mode == "session":
    headers["Comity-Session"] = "worker-" + index

def call(verb, **args):
    conn.request("POST", "/v1/" + verb, body=json.dumps(args), headers=headers)
    r = conn.getresponse()
    return r.status, json.loads(r.read())

out = {"accepted": 0, "refused": 0, "blind_refused": 0, "blind_accepted": 0}
assert call("whoami")[0] == 200  # connected before the start
open(ready, "w").close()
t = time.monotonic()
while not os.path.exists(go):
    if time.monotonic() - t > 60:
        sys.exit(99)
    time.sleep(0.001)
if mode == "none":
    # No session, no memory: a write without a context to the counter is stale, read or not.
    call("read", key="counter")
    status, body = call("write", key="counter", value=-1)
    out["blind_refused" if status == 409 and body["error"] == "stale_context" else "blind_accepted"] += 1
for _ in range(int(os.environ["ROUNDS"])):
    status, v = call("read", key="counter")
    assert status == 200, v
    if mode == "session":
        status, body = call("write", key="counter", value=v["values"][0] + 1)  # from this session's read, as remembered
    else:
        status, body = call("write", key="counter", value=v["values"][0] + 1, context=v["context"])
    if status == 200:
        out["accepted"] += 1
    else:
        assert status == 409 and body["error"] == "stale_context", (status, body)
        out["refused"] += 1
with open(result, "w") as f:
    json.dump(out, f)
"""


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc, str]]:
    where = tmp_path_factory.mktemp(f"shared-{request.param}")
    location = str(where / "s.db") if request.param == "sqlite" else pg_url(pg_schema(where))
    assert comity("init", location=location).returncode == 0
    tok = token(location, "worker")
    server = serve(location, where)
    try:
        yield location, server, tok
    finally:
        server.stop()
        if request.param == "postgres":
            drop_pg_schemas([pg_schema(where)])


@pytest.mark.parametrize("mode", ["session", "none"])
def test_eight_processes_with_one_token_lose_no_increment(served: tuple[str, Proc, str], mode: str, tmp_path: Path) -> None:
    location, server, tok = served
    with comity_lib.open(location) as store:
        s = store.session("setup")
        old = s.get("counter")
        start = s.put("counter", 0, context=old.context).pos if old.values else s.create("counter", 0).pos
    go = tmp_path / "go"
    procs = []
    for i in range(PROCESSES):
        argv = [sys.executable, "-c", WORKER, server.url, tok, mode, str(i), str(tmp_path / f"ready{i}"), str(go), str(tmp_path / f"out{i}.json")]
        procs.append(subprocess.Popen(argv, env=clean_env(ROUNDS=str(ROUNDS)), stderr=subprocess.PIPE, text=True))
    try:
        while not all((tmp_path / f"ready{i}").exists() for i in range(PROCESSES)):
            for p in procs:
                assert p.poll() is None, p.communicate()[1]
            subprocess.run(["sleep", "0.05"], check=True)
        go.touch()
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(PROCESSES)]
    accepted = sum(r["accepted"] for r in results)
    assert accepted + sum(r["refused"] for r in results) == PROCESSES * ROUNDS
    assert accepted >= 1
    with comity_lib.open(location) as store:
        s = store.session()
        assert s.get("counter").values == [accepted]  # the sum of accepted increments, none lost
        puts = [e for e in s.log("counter", after=start, limit=10_000) if e["op"] == "put"]
        assert len(puts) == accepted  # and nothing else was written
    if mode == "none":
        assert sum(r["blind_refused"] for r in results) == PROCESSES
        assert sum(r["blind_accepted"] for r in results) == 0
