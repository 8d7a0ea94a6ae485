"""`comity serve` as agents use it: a real server process, real HTTP requests, tokens from
`comity agent add`, and the CLI pointed at the server (`--store http://…`)."""

from __future__ import annotations

import inspect
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import cli_together  # noqa: E402
from server_support import Served, agent_token, call, clean_env, comity, serve  # noqa: E402

from comity.work import VERBS, Agent  # noqa: E402


@dataclass
class Api:
    url: str
    store: Path
    tokens: dict[str, str]
    server: Served

    def call(self, verb: str, who: str | None, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return call(self.url, verb, None if who is None else self.tokens[who], body, **kw)

    def ok(self, verb: str, who: str, body: Any = None) -> dict[str, Any]:
        status, answer = self.call(verb, who, body)
        assert status == 200, (verb, body, status, answer)
        return dict(answer)

    def cli(self, who: str, *args: str) -> subprocess.CompletedProcess[str]:
        return comity("--store", self.url, "--auth", self.tokens[who], *args)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    store = tmp_path_factory.mktemp("api") / "s.db"
    tokens = {"alice": agent_token(store, "alice"), "bob": agent_token(store, "bob"), "ops": agent_token(store, "ops", admin=True)}
    server = serve(store, env={"COMITY_MAX_VALUE_BYTES": "4096"})
    yield Api(server.url, store, tokens, server)
    server.stop()
    assert "Traceback" not in server.errors(), server.errors()


def race(*calls: Any) -> list[Any]:
    """Run the calls at the same moment, one thread each; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# ------------------------------------------------------------------ races


@pytest.mark.parametrize("n", range(5))
def test_racing_creates_of_migration_0267_one_wins_and_the_loser_is_told_who(api: Api, n: int) -> None:
    key = f"db/{n}/migrations/0267"
    results = race(
        lambda: api.call("create", "alice", {"key": key, "value": "alice's 0267"}),
        lambda: api.call("create", "bob", {"key": key, "value": "bob's 0267"}),
    )
    statuses = sorted(s for s, _ in results)
    assert statuses == [200, 409], results
    (win, won), (lose, lost) = sorted(zip(["alice", "bob"], [a for _, a in results]), key=lambda p: "error" in p[1])
    assert lost["error"] == "stale_context" and lost["key"] == key
    assert win in lost["message"] and lost["news"][0]["agent"] == win, lost
    assert lost["rejected"] == f"{lose}'s 0267"  # the loser's value comes back: nothing is lost
    assert api.ok("read", lose, {"key": key})["values"] == [f"{win}'s 0267"]


def test_racing_claims_of_one_task_one_wins_and_the_loser_is_told_who(api: Api) -> None:
    for _ in range(5):
        tid = api.ok("task_add", "ops", {"title": "write migration 0267"})["id"]
        results = race(
            lambda: api.call("task_claim", "alice", {"id": tid}),
            lambda: api.call("task_claim", "bob", {"id": tid}),
        )
        assert sorted(s for s, _ in results) == [200, 409], results
        winner = next(who for who, (s, _) in zip(["alice", "bob"], results) if s == 200)
        loser_body = next(a for s, a in results if s == 409)
        assert loser_body["error"] == "stale_context" and winner in loser_body["message"], loser_body
        shown = api.ok("task_show", "ops", {"id": tid})
        assert shown["state"] == "claimed" and shown["lease"]["holder"] == winner


def test_the_cli_against_the_server_exits_3_for_the_loser(api: Api) -> None:
    tid = api.ok("task_add", "ops", {"title": "the CLI race"})["id"]
    for args in (["create", "db/cli/migrations/0267", '"mine"'], ["task", "claim", tid]):
        racers = ("alice", "bob")
        ran = cli_together([["--store", api.url, "--auth", api.tokens[who], *args] for who in racers], env=clean_env(), cwd=Path.cwd())
        done = {who: (p.returncode, p.stdout, p.stderr) for who, p in zip(racers, ran)}
        assert sorted(code for code, _, _ in done.values()) == [0, 3], done
        winner = next(who for who, (code, _, _) in done.items() if code == 0)
        loser = "bob" if winner == "alice" else "alice"
        assert winner in done[loser][2] and "Traceback" not in done[loser][2], done
    # and sequentially: the loser learns the winner, exit 3
    r = api.cli("bob", "create", "db/cli/migrations/0267", '"again"')
    assert r.returncode == 3 and "already exists" in r.stderr
    r = api.cli("alice", "get", "db/cli/migrations/0267", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["values"] == ["mine"]


# ------------------------------------------------------------------ tokens


def test_a_forged_or_missing_token_is_401_and_changes_nothing(api: Api) -> None:
    head = api.ok("info", "ops")["head"]
    real = api.tokens["alice"]
    forged = real[:-1] + ("1" if real[-1] == "0" else "0")
    for headers in [{}, {"Authorization": "Basic YWxpY2U6eA=="}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer {forged}"},
                    {"Authorization": "Bearer " + real.replace("alice.", "bob.")}, {"Authorization": "Bearer nobody." + "0" * 64},
                    {"Authorization": "Bearer " + "x" * 10_000}, {"Authorization": "Bearer \u00e9t\u00e9." + "0" * 64}]:
        for body in [{"key": "notes/forged", "value": 1}, None]:
            raw = b"{not json" if body is None else None
            status, answer = call(api.url, "create", None, body, raw=raw, headers=headers)
            assert status == 401 and answer["error"] == "unauthorized", (headers, status, answer)
    assert api.ok("info", "ops")["head"] == head


def test_the_agent_acting_is_the_tokens(api: Api) -> None:
    assert api.ok("whoami", "alice")["agent"] == "alice"
    status, answer = api.call("create", "alice", {"key": "notes/who", "value": 1, "agent": "bob"})
    assert status == 422 and answer["field"] == "agent"
    status, answer = api.call("whoami", "alice", headers={"Comity-Agent": "bob"})
    assert status == 403 and answer["error"] == "forbidden"
    assert api.ok("create", "alice", {"key": "notes/who", "value": 1})["pos"] > 0
    assert api.ok("log", "ops", {"key": "notes/who"})["events"][0]["agent"] == "alice"
    r = comity("--store", api.url, "--auth", api.tokens["alice"], "--agent", "bob", "get", "notes/who")
    assert r.returncode == 2 and "alice" in r.stderr


def test_alice_cannot_complete_renew_or_release_bobs_claim(api: Api) -> None:
    tid = api.ok("task_add", "ops", {"title": "bob's work"})["id"]
    claim = api.ok("task_claim", "bob", {"id": tid, "ttl": 600})
    token = claim["token"]
    before = api.ok("task_show", "ops", {"id": tid})
    for verb, extra in [("task_complete", {"result": "stolen"}), ("task_renew", {}), ("task_release", {}),
                        ("task_checkpoint", {"note": "mine now"}), ("task_fail", {"reason": "no"})]:
        status, answer = api.call(verb, "alice", {"id": tid, "token": token, **extra})
        assert status == 409 and answer["error"] == "fenced" and "bob" in answer["message"], (verb, status, answer)
    after = api.ok("task_show", "ops", {"id": tid})
    assert after["state"] == "claimed" and after["lease"]["holder"] == "bob" and after["lease"]["token"] == token
    assert after["checkpoints"] == before["checkpoints"] and after["result"] is None
    r = api.cli("alice", "task", "done", tid, "--token", str(token))
    assert r.returncode == 3 and "bob" in r.stderr
    assert api.ok("task_complete", "bob", {"id": tid, "token": token, "result": "done"})["state"] == "done"


def test_agent_add_needs_an_admin_token(api: Api) -> None:
    status, answer = call(api.url, "", api.tokens["bob"], {"name": "mallory"}, path="/v1/admin/agent_add")
    assert status == 403 and answer["error"] == "forbidden"
    r = api.cli("bob", "agent", "add", "mallory")
    assert r.returncode == 2 and "admin" in r.stderr and r.stdout == ""
    r = api.cli("ops", "agent", "add", "carol", "--json")
    assert r.returncode == 0, r
    carol = json.loads(r.stdout)
    assert carol["agent"] == "carol" and carol["admin"] is False
    assert call(api.url, "whoami", carol["auth_token"])[1]["agent"] == "carol"
    # the store keeps a hash, never the token, and no verb shows even the hash
    import comity

    with comity.open(api.store) as s:
        stored = s.session().get("@auth/carol", secrets=True).values[0]
    assert carol["auth_token"] not in json.dumps(stored) and len(stored["sha256"]) == 64
    status, refused = api.call("read", "ops", {"key": "@auth/carol"})
    assert status == 422 and refused["field"] == "key" and stored["sha256"] not in json.dumps(refused)
    # issuing again is refused (exit 3); --rotate replaces it and the old token stops working
    assert api.cli("ops", "agent", "add", "carol").returncode == 3
    r = api.cli("ops", "agent", "add", "carol", "--rotate", "--json")
    rotated = json.loads(r.stdout)["auth_token"]
    assert call(api.url, "whoami", carol["auth_token"])[0] == 401
    assert call(api.url, "whoami", rotated)[1]["agent"] == "carol"
    r = api.cli("ops", "agent", "add", "\u00e9t\u00e9")  # a name a key cannot hold
    assert r.returncode == 2 and "name" in r.stderr
    # agents cannot write the token records themselves
    status, answer = api.call("write", "alice", {"key": "@auth/alice", "value": {"sha256": "0" * 64, "admin": True}})
    assert status == 422 and answer["field"] == "key"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("verb", "raw", "field"),
    [
        ("create", b"{not json", "body"),
        ("create", b"\xff\xfe{}", "body"),
        ("create", b"[1, 2]", "body"),
        ("create", b'{"key": "k"}', "value"),
        ("create", b'{"key": 12, "value": 1}', "key"),
        ("create", b'{"key": "k", "value": 1, "colour": "red"}', "colour"),
        ("create", b'{"key": "has space", "value": 1}', "key"),
        ("create", b'{"key": "k", "value": NaN}', "value"),
        ("write", b'{"key": "k", "value": 1, "keep_both": "yes"}', "keep_both"),
        ("write", b'{"key": "k", "value": 1, "context": "forged"}', "context"),
        ("log", b'{"limit": 99999999999999999999999999}', "limit"),
        ("log", b'{"limit": -5}', "limit"),
        ("task_complete", b'{"id": "T-1", "token": 1e400}', "token"),
        ("task_claim", b'{"id": "T-1", "ttl": 1e400}', "ttl"),
        ("task_claim", b"{}", "id"),
        ("task_add", b'{"title": "t", "deps": "T-1"}', "deps"),
        ("reserve_paths", b'{"paths": [1]}', "paths.0"),
        ("news", b'{"limit": 0}', "limit"),
        ("seq_next", b'{"name": ""}', "name"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_changes_nothing(api: Api, verb: str, raw: bytes, field: str) -> None:
    head = api.ok("info", "ops")["head"]
    status, answer = api.call(verb, "alice", raw=raw)
    assert status == 422, (status, answer)
    # (seq_next names "ops[0].name": the sequences layer does not rename its transaction's field)
    assert answer["error"] == "invalid" and answer["field"].removeprefix("ops[0].") == field, answer
    assert answer["message"].startswith(answer["field"]), answer
    assert api.ok("info", "ops")["head"] == head


def test_huge_values_and_bodies_are_refused_not_crashed(api: Api) -> None:
    status, answer = api.call("create", "alice", {"key": "notes/huge", "value": "x" * 5000})  # over the 4096-byte cap
    assert status == 422 and answer["field"] == "value"
    status, answer = api.call("create", "alice", raw=b'{"key": "notes/huge", "value": "' + b"x" * 2_000_000 + b'"}')
    assert status == 413 and answer["field"] == "body"
    for depth in (2_000, 100_000):  # nesting past the store's cap, and past what a JSON parser can recurse into
        status, answer = api.call("create", "alice", raw=b'{"key": "notes/deep", "value": ' + b"[" * depth + b"]" * depth + b"}")
        assert status == 422 and answer["field"] in ("value", "body"), (status, answer)
        assert "nested" in answer["message"], answer  # what to change, whichever layer refused it
    status, answer = api.call("nosuchverb", "alice", {})
    assert status == 404 and answer["error"] == "not_found"
    status, answer = api.call("read", "alice", method="GET")
    assert status == 405 and answer["error"] == "invalid"
    status, answer = api.call("read", "alice", {"key": "notes/nothing-here"})
    assert status == 200 and answer["values"] == []
    status, answer = api.call("task_show", "alice", {"id": "T-99999"})
    assert status == 404 and answer["error"] == "not_found"


# ------------------------------------------------------------------ sessions and the schema


def test_news_and_remembered_contexts_belong_to_the_session_never_to_the_agent(api: Api) -> None:
    key = "notes/persist"
    one, two = {"Comity-Session": "alice-one"}, {"Comity-Session": "alice-two"}

    def ok(verb: str, who: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        status, answer = api.call(verb, who, body, headers=headers)
        assert status == 200, (verb, body, status, answer)
        return dict(answer)

    ok("create", "alice", {"key": key, "value": "v1"}, one)
    assert ok("read", "alice", {"key": key}, one)["values"] == ["v1"]
    ok("write", "bob", {"key": key, "value": "v2", "context": ok("read", "bob", {"key": key})["context"]})
    # session one's next answer, whatever the verb, carries bob's write and marks its read stale
    answer = ok("whoami", "alice", headers=one)
    assert [(n["agent"], n["key"]) for n in answer["news"]] == [("bob", key)] and answer["stale"] == [key]
    assert ok("whoami", "alice", headers=one)["news"] == []  # shown once
    # its write without a context uses the context it last saw, so it is refused, naming bob
    status, refused = api.call("write", "alice", {"key": key, "value": "v3"}, headers=one)
    assert status == 409 and "bob" in refused["message"]
    # session two of the same agent read it after bob: its write without a context goes through
    assert ok("read", "alice", {"key": key}, two)["values"] == ["v2"]
    assert ok("write", "alice", {"key": key, "value": "v3"}, two)["values"] == ["v3"]
    # a request naming no session remembers nothing: a blind write to an existing key is stale
    ok("read", "alice", {"key": key})
    status, refused = api.call("write", "alice", {"key": key, "value": "v4"})
    assert status == 409 and refused["error"] == "stale_context"
    # a bad session id is refused, naming the header
    status, bad = api.call("whoami", "alice", headers={"Comity-Session": "two words"})
    assert status == 422 and bad["field"] == "Comity-Session"


def test_openapi_documents_every_verb_with_its_arguments(api: Api) -> None:
    status, doc = call(api.url, "", None, path="/openapi.json", method="GET")
    assert status == 200
    schemas = doc["components"]["schemas"]
    assert "bearer" in json.dumps(doc["components"]["securitySchemes"]).lower()
    for verb in VERBS:
        op = doc["paths"][f"/v1/{verb.name}"]["post"]
        assert op["operationId"] == verb.name and op["summary"] == verb.summary and op["description"] == verb.text
        assert {"401", "409", "422"} <= set(op["responses"])
        body = json.dumps(op["requestBody"]["content"]["application/json"]["schema"])
        name = body.split("#/components/schemas/")[1].split('"')[0]
        params = [p for p in inspect.signature(getattr(Agent, verb.name)).parameters if p != "self"]
        assert list(schemas[name].get("properties", {})) == params == verb.names, verb.name
        assert schemas[name]["additionalProperties"] is False
        answer = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert {f.name for f in verb.result if f.required} <= set(answer["required"]), verb.name
    assert "/v1/admin/agent_add" in doc["paths"]
