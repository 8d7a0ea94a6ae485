"""The faces' conformance suite (test_faces_conformance*.py): the same scripted scenarios
through every face, on SQLite and (with ``COMITY_TEST_POSTGRES_URL``) PostgreSQL, each face
answering the same outcome.

The faces (docs/faces.md): the Python API on the embedded store; the CLI on the embedded
store; plain HTTP requests, ``RemoteAgent`` and the CLI against ``comity serve``; ``comity
mcp`` over stdio, on the embedded store and against the server (``--store http://…``);
``comity mcp --http`` over streamable HTTP, on the embedded store and against the server.
The CLI and MCP servers are real processes, the HTTP clients (plain requests and
``RemoteAgent``) talk to a real server process, and MCP is spoken by the official client.

The suite runs in two files, the faces on the store itself and the faces of a server, so
that two test workers share it. Each scenario returns a transcript (the outcome of each
step, as codes and the few facts that matter) and every face must give the scenario's one
expected transcript. Actors are sessions of the face under test: alice's sessions ``1`` and
``2`` and bob's ``1`` (an MCP session over stdio is its server process; over HTTP its
``Comity-Session``). Servers and sessions are started once per backend and shared by the
scenarios, which use keys of their own.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mcp.server.mcpserver")

from conftest import BACKENDS, drop_pg_schemas, pg_schema, pg_url  # noqa: E402
from faces_support import (  # noqa: E402
    CliFace,
    Face,
    HttpFace,
    Outcome,
    Proc,
    PythonFace,
    RemoteFace,
    comity,
    mcp_http,
    mcp_stdio,
    serve,
    serve_mcp_http,
    token,
)

import comity as comity_lib  # noqa: E402

# Every face, split between the two test files.
FACES = ["python", "cli", "http", "remote", "cli_remote", "mcp_stdio", "mcp_stdio_remote", "mcp_http", "mcp_http_remote"]
AGENTS = ("alice", "bob")

# Besides the backends, two stores with a long past (issue 19: every check of the suite still
# passes after `comity compact`): "compacted", a SQLite store grown to COMPACTED_EVENTS events
# in bulk and compacted by the CLI to its latest COMPACTED_KEEP, run in `make test` through the
# Python API and plain HTTP (the faces' own code is the same on any store; the full set runs
# on "given"); and "given", a copy of the SQLite store file named by COMITY_CONFORMANCE_STORE
# (for instance one grown to 10,000,000 events by `comity bench store --log-events 10000000
# --grown-store PATH`, see README §Benchmarks), run through every face.
COMPACTED_EVENTS, COMPACTED_KEEP = 1_500, 300
COMPACTED_FACES = ("python", "http")  # conftest.pytest_collection_modifyitems deselects the rest
GIVEN = os.environ.get("COMITY_CONFORMANCE_STORE", "")
WORLDS: list[Any] = [*BACKENDS, "compacted", *(["given"] if GIVEN else [])]


class World:
    """One store of one backend, its servers (started on first use) and the faces' sessions."""

    def __init__(self, location: str, workdir: Path, faces: tuple[str, ...] | None = None) -> None:
        self.location = location
        self.workdir = workdir
        self.only = faces  # None: every face
        self.tokens = {a: token(location, a) for a in AGENTS}
        self.procs: dict[str, Proc] = {}
        self.faces: dict[tuple[str, str, str | None], Face] = {}
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = comity_lib.open(self.location)
        return self._store

    def url(self, which: str) -> str:
        """The URL of ``serve`` (comity serve), ``mcp`` (mcp --http on the store) or
        ``mcp_remote`` (mcp --http against comity serve)."""
        if which not in self.procs:
            if which == "serve":
                self.procs[which] = serve(self.location, self.workdir)
            elif which == "mcp":
                self.procs[which] = serve_mcp_http(self.location, self.workdir)
            else:
                self.procs[which] = serve_mcp_http(self.url("serve"), self.workdir)
        return self.procs[which].url

    def face(self, kind: str, agent: str, session: str | None = "1") -> Face:
        """``agent``'s session ``session`` on face ``kind``; ``None``: requests that name no session."""
        assert self.only is None or kind in self.only, (kind, self.only)  # conftest deselects the others
        key = (kind, agent, session)
        if key not in self.faces:
            self.faces[key] = self._open(kind, agent, session)
        return self.faces[key]

    def _open(self, kind: str, agent: str, session: str | None) -> Face:
        tok = self.tokens[agent]
        sid = None if session is None else f"{agent}-{session}"
        face: Face
        if kind == "python":
            face = PythonFace(self.location, agent, session=sid, store=self.store)
        elif kind == "cli":
            face = CliFace(self.location, agent, session=sid, extra=True)
        elif kind == "http":
            face = HttpFace(self.url("serve"), tok, session=sid)
        elif kind == "remote":
            face = RemoteFace(self.url("serve"), tok, session=sid)
        elif kind == "cli_remote":
            face = CliFace(self.url("serve"), None, session=sid, env={"COMITY_AUTH": tok}, extra=True)
        elif kind in ("mcp_stdio", "mcp_stdio_remote"):
            if session is None:
                pytest.skip("an MCP connection over stdio is always a session")
            remote = kind.endswith("remote")
            face = mcp_stdio(self.url("serve") if remote else self.location, None if remote else agent, auth=tok if remote else None, name=kind)
        elif kind in ("mcp_http", "mcp_http_remote"):
            if session is None:
                pytest.skip("over MCP's streamable HTTP an agent token without a session header is the token's own session")
            face = mcp_http(self.url("mcp_remote" if kind.endswith("remote") else "mcp"), tok, session=sid, name=kind)
        else:
            raise ValueError(kind)
        face.name = kind
        return face

    def log(self, key: str) -> list[dict[str, Any]]:
        return list(self.store.session().log(key))

    def close(self) -> None:
        for f in self.faces.values():
            try:
                f.close()
            except Exception:  # one face's teardown must not leave the servers running
                pass
        for p in self.procs.values():
            p.stop()
        if self._store is not None:
            self._store.close()


def _compacted(location: str) -> None:
    """Give the store at ``location`` a long past through the library (COMPACTED_EVENTS: writes
    over a few keys, done tasks, then bob's session left at its position), then compact it with
    the CLI to its latest COMPACTED_KEEP events: most of the past goes, what the store needs stays."""
    from comity.work import Agent

    store = comity_lib.open(location)
    try:
        past = Agent(store.session("carol", name="past"))
        for i in range(COMPACTED_EVENTS):
            if i % 50 == 0:
                task = body_of(past.call("task_add", {"title": f"old {i}"}))["id"]
                token = body_of(past.call("task_claim", {"id": task}))["token"]
                body_of(past.call("task_complete", {"id": task, "token": token, "result": "ok"}))
            body_of(past.call("write", {"key": f"past/{i % 40}", "value": i}))
    finally:
        store.close()
    r = comity("compact", "--keep", str(COMPACTED_KEEP), "--json", location=location)
    assert r.returncode == 0, r
    report = json.loads(r.stdout)
    assert report["deleted"] > COMPACTED_EVENTS // 2 and report["size_after_bytes"] < report["size_bytes"], report


def body_of(answer: Any) -> dict[str, Any]:
    """A library verb's answer as a dict (the verbs answer objects with ``to_json``)."""
    return dict(answer if isinstance(answer, dict) else answer.to_json())


def _copy_given(target: Path) -> str:
    """A consistent copy of the store file named by COMITY_CONFORMANCE_STORE (the scenarios write)."""
    source = Path(GIVEN)
    if not source.is_file():
        raise pytest.UsageError(f"COMITY_CONFORMANCE_STORE={GIVEN!r}: not a SQLite store file; name the store.db to copy")
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return str(target)


@pytest.fixture(scope="module", params=WORLDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    where = tmp_path_factory.mktemp(f"faces-{request.param}")
    if request.param == "postgres":
        location = pg_url(pg_schema(where))
    elif request.param == "given":
        location = _copy_given(where / "s.db")
    else:
        location = str(where / "s.db")
    if request.param != "given":
        r = comity("init", location=location)
        assert r.returncode == 0, r
    if request.param == "compacted":
        _compacted(location)
    w = World(location, where, COMPACTED_FACES if request.param == "compacted" else None)
    try:
        yield w
    finally:
        w.close()
        if request.param == "postgres":
            drop_pg_schemas([pg_schema(where)])


# ------------------------------------------------------------------ reading outcomes


def remembers(kind: str) -> bool:
    """Whether a session of this face remembers the contexts it read between calls (a
    one-shot CLI call on the embedded store does not: it passes the context it read)."""
    return kind != "cli"


def news_keys(out: Outcome) -> list[str]:
    """The keys of the news an answer or a refusal carried, in the face's own idiom: JSON, or
    text (``news: bob put k (pos 3)``) in MCP's refusals and on the CLI's stderr."""
    if isinstance(out.body, dict) and isinstance(out.body.get("news"), list):
        return [str(n.get("key")) for n in out.body["news"]]
    # MCP's refusals and the CLI's stderr (an answer that is a bare list, as `task list --json`)
    return [m.group(1) for m in re.finditer(r"^news: \S+ \S+ (\S+)", out.message, re.M)]


def next_verbs(out: Outcome) -> list[str]:
    """The next steps a refusal names, as verbs: JSON (``next``), or MCP's ``next: read(key=…)``."""
    if isinstance(out.body, dict) and isinstance(out.body.get("next"), list):
        return [str(n.get("verb")) for n in out.body["next"]]
    return re.findall(r"^next: (\w+)\(", out.message, re.M)


def rejected(out: Outcome) -> Any:
    """The value a stale write did not write, handed back: JSON (``rejected``), or MCP's
    ``not written (…): VALUE``."""
    if isinstance(out.body, dict) and "rejected" in out.body:
        return out.body["rejected"]
    m = re.search(r"^not written[^:]*: (.*)$", out.message, re.M)
    return json.loads(m.group(1)) if m else None


def body(out: Outcome) -> dict[str, Any]:
    assert out.ok, out
    assert isinstance(out.body, dict), out
    return out.body


def step(out: Outcome) -> str:
    """An outcome as a transcript entry: ``ok``, or the error code."""
    assert out.code != "internal", out
    return out.code


def ctx(out: Outcome) -> str:
    return str(body(out)["context"])


def values(w: World, key: str) -> list[Any]:
    """What ``key`` holds now, read by the library (the faces' own reads are in the scenarios)."""
    return sorted(w.store.session().get(key).values, key=json.dumps)


def at_once(*calls: Callable[[], Outcome]) -> list[Outcome]:
    """The calls started together (each face's sessions are separate connections or processes)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


# ------------------------------------------------------------------ scenarios


def stale_write_refused_with_its_news(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    t = [step(bob.call("write", {"key": k, "value": 1}))]
    seen = alice.call("read", {"key": k})
    theirs = bob.call("read", {"key": k})
    t += [step(seen), step(bob.call("write", {"key": k, "value": 2, "context": ctx(theirs)}))]
    refused = alice.call("write", {"key": k, "value": {"mine": 3}, "context": ctx(seen)})
    t += [step(refused), k in news_keys(refused), rejected(refused), next_verbs(refused), values(w, k)]
    return t


def news_between_calls(w: World, kind: str, k: str) -> list[Any]:
    """A session that read a key is told, in its next answer whatever it asks, that another
    agent wrote the key; once."""
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    t = [step(bob.call("write", {"key": k, "value": 1})), step(alice.call("read", {"key": k}))]
    theirs = bob.call("read", {"key": k})
    t += [step(bob.call("write", {"key": k, "value": 2, "context": ctx(theirs)}))]
    told = alice.call("task_list", {"state": "done"})
    again = alice.call("task_list", {"state": "done"})
    t += [step(told), k in news_keys(told), step(again), k in news_keys(again)]
    return t


def blind_write_to_an_existing_key_refused(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    t = [step(bob.call("write", {"key": k, "value": 1}))]
    refused = alice.call("write", {"key": k, "value": 2})  # alice's session never read k
    t += [step(refused), k in news_keys(refused), values(w, k)]
    return t


def no_session_remembers_nothing(w: World, kind: str, k: str) -> list[Any]:
    bob = w.face(kind, "bob")
    anonymous = w.face(kind, "alice", None)  # skips where a face has no such request
    t = [step(bob.call("write", {"key": k, "value": 1})), step(anonymous.call("read", {"key": k}))]
    t += [step(anonymous.call("write", {"key": k, "value": 2})), values(w, k)]
    return t


def two_sessions_of_one_agent_each_write_from_their_own_read(w: World, kind: str, k: str) -> list[Any]:
    one, two, bob = w.face(kind, "alice", "1"), w.face(kind, "alice", "2"), w.face(kind, "bob")
    t = [step(bob.call("write", {"key": k, "value": 0}))]
    read1, read2 = one.call("read", {"key": k}), two.call("read", {"key": k})
    t += [step(read1), step(read2)]
    if remembers(kind):  # each session writes from what it read, as remembered
        t += [step(one.call("write", {"key": k, "value": 1})), step(two.call("write", {"key": k, "value": 2}))]
    else:
        t += [step(one.call("write", {"key": k, "value": 1, "context": ctx(read1)}))]
        t += [step(two.call("write", {"key": k, "value": 2, "context": ctx(read2)}))]
    t += [values(w, k)]
    return t


def create_race(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    outs = at_once(lambda: alice.call("create", {"key": k, "value": "alice"}), lambda: bob.call("create", {"key": k, "value": "bob"}))
    winner = ["alice", "bob"][[o.ok for o in outs].index(True)] if any(o.ok for o in outs) else None
    told = [o for o in outs if not o.ok]
    return [sorted(step(o) for o in outs), values(w, k) == [winner], len(w.log(k)), bool(told) and f"by {winner}" in told[0].message]


def keep_both_siblings(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    t = [step(bob.call("write", {"key": k, "value": 1}))]
    seen, theirs = alice.call("read", {"key": k}), bob.call("read", {"key": k})
    t += [step(bob.call("write", {"key": k, "value": 2, "context": ctx(theirs)}))]
    kept = alice.call("write", {"key": k, "value": 3, "context": ctx(seen), "keep_both": True})
    both = alice.call("read", {"key": k})
    t += [step(kept), sorted(body(both)["values"])]
    t += [step(alice.call("write", {"key": k, "value": 4, "context": ctx(both)})), values(w, k)]  # resolves the siblings
    return t


def claim_race(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    task = task_id(alice.call("task_add", {"title": k}))
    outs = at_once(lambda: alice.call("task_claim", {"id": task}), lambda: bob.call("task_claim", {"id": task}))
    winner = ["alice", "bob"][[o.ok for o in outs].index(True)] if any(o.ok for o in outs) else None
    shown = body(bob.call("task_show", {"id": task}))
    told = [o for o in outs if not o.ok]
    t = [sorted(step(o) for o in outs), shown["claimed_by"] == winner, shown["state"]]
    return [*t, bool(told) and f"claimed by {winner}" in told[0].message]  # the loser is told who has it


def task_id(out: Outcome) -> str:
    b = body(out)
    return str(b["id"] if "id" in b else b["task"]["id"])


def fenced_completion(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    task = task_id(alice.call("task_add", {"title": k}))
    first = body(alice.call("task_claim", {"id": task}))["token"]
    t = [step(alice.call("task_release", {"id": task, "token": first}))]
    second = body(bob.call("task_claim", {"id": task}))["token"]
    zombie = alice.call("task_complete", {"id": task, "token": first, "result": "zombie"})
    t += [second > first, step(zombie), step(bob.call("task_complete", {"id": task, "token": second, "result": "done"}))]
    shown = body(alice.call("task_show", {"id": task}))
    t += [shown["state"], shown["completed_by"], shown["result"]]
    return t


def retried_write_answered_with_the_recorded_outcome(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    rid = lambda n: f"{kind}-{k}-{n}".replace("/", "_")  # noqa: E731
    t = [step(bob.call("write", {"key": k, "value": 0}))]
    seen = alice.call("read", {"key": k})
    args = {"key": k, "value": 1, "request_id": rid(1)}
    if not remembers(kind):
        args["context"] = ctx(seen)
    first, again = alice.call("write", args), alice.call("write", args)
    t += [step(first), step(again), body(again)["pos"] == body(first)["pos"], bool(body(again).get("replayed"))]
    # A write with no context to a new key, and a create: a retry is not refused by its own first attempt.
    new = {"key": k + "/new", "value": 1, "request_id": rid(2)}
    t += [step(alice.call("write", new)), step(alice.call("write", new))]
    made = {"key": k + "/made", "value": 1, "request_id": rid(3)}
    t += [step(alice.call("create", made)), step(alice.call("create", made))]
    # The same id for a different request is bad input, not a replay.
    other = alice.call("write", {**args, "value": 99})
    t += [step(other), named(other, "request_id")]
    t += [[e["op"] for e in w.log(k)], len(w.log(k + "/new")), len(w.log(k + "/made")), values(w, k)]
    return t


def retried_claim_answered_with_the_recorded_outcome(w: World, kind: str, k: str) -> list[Any]:
    alice, bob = w.face(kind, "alice"), w.face(kind, "bob")
    task = task_id(alice.call("task_add", {"title": k}))
    args = {"id": task, "request_id": f"{kind}-{k}-claim".replace("/", "_")}
    first, again = alice.call("task_claim", args), alice.call("task_claim", args)
    t = [step(first), step(again), body(again)["token"] == body(first)["token"]]
    t += [step(bob.call("task_claim", {"id": task}))]  # it is alice's, claimed once
    claims = [e for e in w.log(f"@task/{task}") if e["op"] in ("task.claim", "acquire")]
    attempts = body(bob.call("task_show", {"id": task}))["attempts"]
    return [*t, len(claims) <= 1, attempts]


def bad_input_refused_naming_the_field(w: World, kind: str, k: str) -> list[Any]:
    alice = w.face(kind, "alice")
    t: list[Any] = []
    for verb, args, field in (
        ("keys", {"prefix": k, "limit": 0}, "limit"),
        ("task_list", {"state": "bogus"}, "state"),
        ("task_claim", {"id": "T-1", "ttl": -1}, "ttl"),
    ):
        out = alice.call(verb, args)
        t += [step(out), named(out, field)]
    return t


def unknown_argument_refused(w: World, kind: str, k: str) -> list[Any]:
    alice = w.face(kind, "alice")
    t: list[Any] = []
    for verb, args, field in (
        ("write", {"key": k, "value": 1, "colour": "red"}, "colour"),
        ("read", {"key": k, "as_of": 3}, "as_of"),
        ("task_claim", {"id": "T-1", "force": True}, "force"),
    ):
        out = alice.call(verb, args)
        t += [step(out), named(out, field)]
    t += [len(w.log(k))]  # nothing written
    return t


def defaults_are_the_tables(w: World, kind: str, k: str) -> list[Any]:
    """A call that leaves an argument out gets the table's default, whichever face it comes
    through: ``keys`` lists 200, a claim's lease lasts 300 seconds."""
    from comity.causal import HLCTimestamp

    with comity_lib.open(w.location) as store:
        s = store.session("seed")
        for i in range(250):
            s.put(f"{k}/{i:03d}", i)
    alice = w.face(kind, "alice")
    listed = alice.call("keys", {"prefix": k + "/"})
    keys = body(listed)["keys"] if isinstance(listed.body, dict) else listed.body
    task = task_id(alice.call("task_add", {"title": k}))
    claim = body(alice.call("task_claim", {"id": task}))
    [granted] = [e for e in w.log(f"@lease/@task/{task}") if e["op"] == "acquire"] or [None]
    lease = None if granted is None else round(claim["expires"] - HLCTimestamp.decode(granted["hlc"]).wall_ms / 1000.0)
    return [len(keys), lease]


def named(out: Outcome, field: str) -> bool:
    """The refusal names ``field``: as its field, or (a face's own argument check, such as
    the CLI's options) in its words."""
    if out.field is not None:
        return out.field == field
    return field in out.message or field.replace("_", "-") in out.message


SCENARIOS: dict[str, tuple[Callable[[World, str, str], list[Any]], list[Any]]] = {
    "stale_write": (
        stale_write_refused_with_its_news,
        ["ok", "ok", "ok", "stale_context", True, {"mine": 3}, ["read", "write"], [2]],
    ),
    "news_between_calls": (news_between_calls, ["ok", "ok", "ok", "ok", True, "ok", False]),
    "blind_write": (blind_write_to_an_existing_key_refused, ["ok", "stale_context", True, [1]]),
    "no_session": (no_session_remembers_nothing, ["ok", "ok", "stale_context", [1]]),
    "two_sessions": (two_sessions_of_one_agent_each_write_from_their_own_read, ["ok", "ok", "ok", "ok", "stale_context", [1]]),
    "create_race": (create_race, [["ok", "stale_context"], True, 1, True]),
    "keep_both": (keep_both_siblings, ["ok", "ok", "ok", [2, 3], "ok", [4]]),
    "claim_race": (claim_race, [["ok", "stale_context"], True, "claimed", True]),
    "fenced_completion": (fenced_completion, ["ok", True, "fenced", "ok", "done", "bob", "done"]),
    "retried_write": (
        retried_write_answered_with_the_recorded_outcome,
        ["ok", "ok", "ok", True, True, "ok", "ok", "ok", "ok", "invalid", True, ["put", "put"], 1, 1, [1]],
    ),
    "retried_claim": (retried_claim_answered_with_the_recorded_outcome, ["ok", "ok", True, "stale_context", True, 1]),
    "bad_input": (bad_input_refused_naming_the_field, ["invalid", True] * 3),
    "defaults": (defaults_are_the_tables, [200, 300]),
    "unknown_argument": (unknown_argument_refused, ["invalid", True] * 3 + [0]),
}
