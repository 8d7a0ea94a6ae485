"""The remote client against real `comity serve` processes: `comity.open("http://…")`
sessions answer like store sessions, errors arrive as the same types, and with two
servers over one store a client survives one being killed mid-run without losing an
acknowledged write."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_support import Served, agent_token, comity, serve, serve_many  # noqa: E402

import comity as comity_api  # noqa: E402
from comity import Fenced, Invalid, NotFound, StaleContext, Unavailable  # noqa: E402
from comity.remote import RemoteAgent, RemoteSession, RemoteStore  # noqa: E402
from comity.store import News, TxnResult, Versioned, Written  # noqa: E402
from comity.work import Agent  # noqa: E402


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, str], Path]]:
    store = tmp_path_factory.mktemp("remote") / "s.db"
    tokens = {"alice": agent_token(store, "alice"), "bob": agent_token(store, "bob")}
    server = serve(store)
    yield server, tokens, store
    server.stop()


def test_open_http_gives_sessions_with_the_store_value_types(one: tuple[Served, dict[str, str], Path]) -> None:
    server, tokens, _ = one
    store = comity_api.open(server.url, auth=tokens["alice"])
    assert isinstance(store, RemoteStore)
    s = store.session()
    assert isinstance(s, RemoteSession) and s.agent == "alice"
    absent = s.get("notes/schema")
    assert isinstance(absent, Versioned) and absent.values == [] and absent.context
    w = s.put("notes/schema", "users: id", context=absent.context)
    assert isinstance(w, Written) and w.op == "put" and w.values == ["users: id"] and w.pos > 0
    v = s.get("notes/schema")
    assert v.value == "users: id" and v.context == w.context

    # bob writes over what he read; alice's stale context is refused with the news, her value back
    with comity_api.open(server.url, auth=tokens["bob"]) as bob_store:
        bob = bob_store.session("bob")
        bob.put("notes/schema", "users: id, email", context=bob.get("notes/schema").context)
        with pytest.raises(StaleContext) as e:
            s.put("notes/schema", "users: id, name", context=v.context)
        assert e.value.key == "notes/schema" and e.value.rejected == "users: id, name"
        assert [n["agent"] for n in e.value.news] == ["bob"]
        # keep_both stores it beside bob's as a sibling; a write covering both resolves them
        both = s.put("notes/schema", "users: id, name", context=v.context, keep_both=True)
        assert sorted(both.values) == ["users: id, email", "users: id, name"]
        assert s.put("notes/schema", "users: id, email, name", context=s.get("notes/schema").context).values == ["users: id, email, name"]

        # create: exactly once, and the loser is told who has it
        assert s.create("migrations/0267", "alice.sql").op == "create"
        with pytest.raises(StaleContext, match="alice"):
            bob.create("migrations/0267", "bob.sql")
        # a retried create with the same request id gets the recorded outcome, not a refusal
        first = bob.create("migrations/0268", "bob.sql", request_id="req-0268")
        again = bob.create("migrations/0268", "bob.sql", request_id="req-0268")
        assert again.replayed and again.pos == first.pos

        # the session asks for news on its own; other types come back as the store's
        n = bob.news()
        assert isinstance(n, News) and isinstance(n.position, int)
        u = s.update("counters/builds", "inc", 2, type="gcounter")
        assert isinstance(u, TxnResult) and u.results[0]["value"] == 2 and u.results[0]["type"] == "gcounter"
        assert "notes/schema" in s.keys("notes/")
        assert [e["op"] for e in s.log("migrations/0267")] == ["create"]
        gone = s.delete("migrations/0267", context=s.get("migrations/0267").context)
        assert gone.op == "delete" and gone.values == []
        assert s.head() >= gone.pos

        # errors come back as the same types, naming the field
        with pytest.raises(Invalid) as bad:
            s.put("has space", 1)
        assert bad.value.field == "key"
        with pytest.raises(Invalid) as bad:
            store.session("bob").get("notes/schema")  # alice's token cannot act as bob
        assert bad.value.field == "auth" and "alice" in bad.value.message
    store.close()


def test_remote_agent_answers_as_the_agent_does(one: tuple[Served, dict[str, str], Path]) -> None:
    server, tokens, path = one
    remote = RemoteAgent(server.url, auth=tokens["alice"], agent="alice")
    with comity_api.open(path) as local_store:
        local = Agent(local_store.session("alice"))
        pairs = [
            (remote.read("notes/agent-a"), local.read("notes/agent-b")),
            (remote.create("notes/agent-a", 1), local.create("notes/agent-b", 1)),
            (remote.seq_next("tickets"), local.seq_next("tickets")),
            (remote.task_add("remote task"), local.task_add("local task")),
            (remote.keys("notes/"), local.keys("notes/")),
            (remote.reservations(), local.reservations()),
            (remote.news(), local.news()),
        ]
        for r, loc in pairs:
            assert set(r) == set(loc), (r, loc)
            assert r["stale"] == [] and isinstance(r["news"], list)
        tid = remote.task_add("claim me")["id"]
        claim = remote.task_claim(tid)
        assert claim["task"]["lease"]["holder"] == "alice"
        bob = RemoteAgent([server.url], auth=tokens["bob"])
        with pytest.raises(Fenced):
            bob.task_complete(tid, claim["token"])
        with pytest.raises(NotFound):
            bob.task_show("T-424242")
        assert remote.task_complete(tid, claim["token"])["state"] == "done"
    remote.close()
    bob.close()


def test_remote_agent_has_every_verb_with_the_same_signature() -> None:
    import inspect

    from comity.work import VERBS

    for verb in VERBS:
        assert hasattr(RemoteAgent, verb.name), f"RemoteAgent lacks the verb {verb.name}"
        assert inspect.signature(getattr(RemoteAgent, verb.name)) == inspect.signature(getattr(Agent, verb.name)), verb.name


def test_no_server_answering_is_unavailable(one: tuple[Served, dict[str, str], Path]) -> None:
    _, tokens, _ = one
    with pytest.raises(Unavailable):
        comity_api.open("http://127.0.0.1:9", auth=tokens["alice"]).session().get("k")
    r = comity("--store", "http://127.0.0.1:9", "--auth", tokens["alice"], "get", "k")
    assert r.returncode == 5 and "no comity server answered" in r.stderr
    with pytest.raises(Invalid) as e:
        comity_api.open("http://127.0.0.1:9", auth=None)  # type: ignore[call-overload]
    assert e.value.field == "auth"


def test_failover_between_two_servers_over_one_store_loses_no_acknowledged_write(tmp_path: Path) -> None:
    store = tmp_path / "shared.db"
    token = agent_token(store, "alice")
    first, second, third = serve_many(store, count=3)  # the third is for the CLI, at the end
    try:
        # the first URL is preferred; once it is gone the client stays with the second
        client = RemoteAgent([first.url, second.url], auth=token, timeout=20)
        acked: list[str] = []
        counter = 0  # acknowledged increments of one key, each a context-checked write
        client.create("acks/counter", 0)
        killed = threading.Event()

        def killer() -> None:
            while len(acked) < 60:
                time.sleep(0.002)
            # Stop it first, so that a request is surely in flight when it dies: the client,
            # blocked on the answer, sees the connection reset and retries on the second.
            first.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.2)
            first.proc.send_signal(signal.SIGKILL)
            killed.set()

        t = threading.Thread(target=killer)
        t.start()
        for i in range(400):
            key = f"acks/{i:04d}"
            client.create(key, {"i": i})
            acked.append(key)
            if i % 4 == 0:
                current = client.read("acks/counter")["values"][0]
                client.write("acks/counter", current + 1)
                counter += 1
            if killed.is_set() and len(acked) > 120:
                break
        t.join(30)
        assert killed.is_set() and first.proc.wait(10) == -signal.SIGKILL
        assert client.urls[client._current] == second.url
        client.close()
        first.stop()
        second.stop()

        with comity_api.open(store) as s:
            session = s.session()
            stored = set(session.keys("acks/", limit=10_000)) - {"acks/counter"}
            assert stored == set(acked), sorted(stored ^ set(acked))
            for key in acked:
                assert [e["op"] for e in session.log(key)] == ["create"], key  # retried, never twice
            assert session.get("acks/counter").values == [counter]

        # the CLI fails over too: a dead first URL, a live second
        r = comity("--store", f"{first.url},{third.url}", "--auth", token, "get", "acks/0000", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["values"] == [{"i": 0}], r
    finally:
        for server in (first, second, third):
            server.stop()


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_a_session_failing_over_to_another_server_skips_no_news(tmp_path: Path, how: str) -> None:
    """A session's news position is in the store, not in the server: when its server goes
    away (stopped, or killed before it saved anything but the session's start), the next
    server resumes it, and what another agent wrote since is still news (repeated perhaps,
    never skipped)."""
    store = tmp_path / "s.db"
    tokens = {"alice": agent_token(store, "alice"), "bob": agent_token(store, "bob")}
    first, second = serve_many(store, count=2)
    try:
        alice = RemoteAgent([first.url, second.url], auth=tokens["alice"], session="alice-1", timeout=20)
        bob = RemoteAgent([second.url], auth=tokens["bob"], timeout=20)
        bob.write("k", 1)
        assert alice.read("k")["values"] == [1]
        first.stop() if how == "stopped" else first.kill()
        w = bob.write("k", 2, context=bob.read("k")["context"])
        if how == "stopped":  # the session was saved as it closed, the key it read with it
            assert [n["pos"] for n in alice.task_list()["news"] if n["key"] == "k"] == [w["pos"]]
        news = alice.news()["news"]
        assert w["pos"] in [n["pos"] for n in news] or how == "stopped"  # killed: news() still has it
        assert alice.urls[alice._current] == second.url
        alice.close()
        bob.close()
    finally:
        first.stop()
        second.stop()
