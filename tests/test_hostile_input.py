"""Requests a tester sent on purpose, through every face (Python, CLI, HTTP, MCP over stdio
and HTTP) and both backends: each is refused as bad input naming its field, or does what it
should, and a refused request leaves the log where it was.

Each case is one row of issue 14's table: forged contexts nested 30,000 levels deep, an
over-long context, ``keys`` with a negative limit, ``task_list`` with a made-up state,
``agents`` with a nonsensical ttl, agent names that only look alike, a 4,300-digit counter
increment, and a fenced action that must renew a lease for the length it was claimed with.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mcp.server.mcpserver")

from conftest import BACKENDS, drop_pg_schemas, pg_schema, pg_url  # noqa: E402
from faces_support import FACES, Face, Outcome, comity, head, open_face  # noqa: E402

import comity as comity_lib  # noqa: E402


@pytest.fixture(scope="module", params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    where = tmp_path_factory.mktemp(f"hostile-{request.param}")
    if request.param == "sqlite":
        loc = str(where / "s.db")
    else:
        loc = pg_url(pg_schema(where))
    r = comity("init", location=loc)
    assert r.returncode == 0, r
    yield loc
    if request.param == "postgres":
        drop_pg_schemas([pg_schema(where)])


@pytest.fixture(scope="module", params=FACES)
def face(request: pytest.FixtureRequest, location: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Face]:
    with open_face(request.param, location, tmp_path_factory.mktemp("face")) as f:
        yield f


def refused(face: Face, location: str, verb: str, args: dict[str, Any], field: str | None) -> Outcome:
    """Call, and assert bad input naming ``field``, with the log position unchanged."""
    before = head(location)
    out = face.call(verb, args)
    assert out.code == "invalid", (face.name, verb, out)
    if field is not None and out.field is not None:
        assert out.field == field, (face.name, verb, out)
    elif field is not None:  # a face's own argument check (click) names the option, not the field
        assert field.replace("_", "-") in out.message.lower() or field in out.message, (face.name, verb, out)
    assert head(location) == before, f"{face.name} {verb}: a refused request moved the log"
    return out


def ok(face: Face, verb: str, args: dict[str, Any]) -> Any:
    out = face.call(verb, args)
    assert out.ok, (face.name, verb, out)
    return out.body


def _forged(depth: int) -> str:
    payload = ("[" * depth + "]" * depth).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + ".AAAAAAAAAAAAAAAA"


# ------------------------------------------------------------------ contexts


@pytest.mark.parametrize("depth", [20_000, 30_000])
def test_a_forged_context_nested_deep_is_invalid(face: Face, location: str, depth: int) -> None:
    ok(face, "write", {"key": f"{face.name}/deep/{depth}", "value": 1})
    refused(face, location, "write", {"key": f"{face.name}/deep/{depth}", "value": 2, "context": _forged(depth)}, "context")
    t = ok(face, "task_add", {"title": "deep"})
    refused(face, location, "task_claim", {"id": t["id"], "context": _forged(depth)}, "context")


def test_a_context_is_capped_in_length(face: Face, location: str) -> None:
    ok(face, "write", {"key": f"{face.name}/long/ctx", "value": 1})
    out = refused(face, location, "write", {"key": f"{face.name}/long/ctx", "value": 2, "context": "A" * 70_000 + ".AAAA"}, "context")
    assert "at most" in out.message


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize("limit", [-1, 0, 10**9])
def test_keys_limit_out_of_range_is_invalid(face: Face, location: str, limit: int) -> None:
    ok(face, "write", {"key": f"{face.name}/listed/{limit}", "value": 1})
    refused(face, location, "keys", {"prefix": f"{face.name}/listed/", "limit": limit}, "limit")


def test_task_list_with_a_made_up_state_is_invalid(face: Face, location: str) -> None:
    out = refused(face, location, "task_list", {"state": "bogus"}, "state")
    assert "open" in out.message  # it says which states there are
    assert ok(face, "task_list", {"state": "done"}) is not None


@pytest.mark.parametrize("ttl", [-1, 0, 1e308])
def test_agents_with_a_nonsensical_ttl_is_invalid(face: Face, location: str, ttl: float) -> None:
    refused(face, location, "agents", {"ttl": ttl}, "ttl")


# ------------------------------------------------------------------ names


def test_an_agent_name_with_a_cyrillic_letter_is_refused(face: Face, location: str) -> None:
    t = ok(face, "task_add", {"title": "for bob"})
    out = refused(face, location, "task_assign", {"id": t["id"], "agent": "b\u043eb"}, None)  # Cyrillic o
    assert "U+043E" in out.message


def test_a_fullwidth_name_is_the_ascii_name(face: Face, location: str) -> None:
    t = ok(face, "task_add", {"title": "for carol"})
    body = ok(face, "task_assign", {"id": t["id"], "agent": "\uff43\uff41\uff52\uff4f\uff4c"})  # fullwidth "carol"
    if face.name != "cli" or body is not None:
        assert body["assignee"] == "carol"
    with comity_lib.open(location) as s:
        from comity.work.tasks import Board

        claim = Board(s.session("carol")).claim(t["id"])
        assert claim.token >= 1


def test_assigning_to_an_agent_never_seen_says_so(face: Face, location: str) -> None:
    t = ok(face, "task_add", {"title": "for nobody yet"})
    body = ok(face, "task_assign", {"id": t["id"], "agent": "zed"})
    assert body["assignee"] == "zed" and "zed" in body["warning"] and "has acted" in body["warning"]
    mine = ok(face, "task_assign", {"id": t["id"], "agent": "alice"})
    assert "warning" not in mine


# ------------------------------------------------------------------ CRDTs


def test_a_huge_counter_increment_is_refused_and_later_ones_work(face: Face, location: str) -> None:
    refused(face, location, "update", {"key": f"{face.name}/ctr/huge", "op": "inc", "arg": 10**4299, "type": "gcounter"}, "arg")
    assert ok(face, "update", {"key": f"{face.name}/ctr/huge", "op": "inc", "arg": 1, "type": "gcounter"})["value"] == 1
    assert ok(face, "update", {"key": f"{face.name}/ctr/huge", "op": "inc", "arg": 2**63 - 2})["value"] == 2**63 - 1
    refused(face, location, "update", {"key": f"{face.name}/ctr/huge", "op": "inc", "arg": 1}, "arg")  # past int64: said, not broken
    assert ok(face, "read", {"key": f"{face.name}/ctr/huge"})["values"] == [2**63 - 1]


# ------------------------------------------------------------------ leases


def _last_lease_event(location: str, task_id: str) -> dict[str, Any]:
    with comity_lib.open(location) as s:
        events = s.session().log(f"@lease/@task/{task_id}")
    return events[-1]


def test_a_fenced_action_renews_for_the_length_the_lease_was_claimed_with(face: Face, location: str) -> None:
    t = ok(face, "task_add", {"title": "short lease"})
    c = ok(face, "task_claim", {"id": t["id"], "ttl": 30})
    token = c["token"] if c is not None else _last_lease_event(location, t["id"])["token"]
    ok(face, "task_checkpoint", {"id": t["id"], "token": token, "note": "half way"})
    e = _last_lease_event(location, t["id"])
    assert e["op"] == "renew" and e["ttl"] == 30, e
    ok(face, "task_renew", {"id": t["id"], "token": token, "ttl": 45})
    ok(face, "task_checkpoint", {"id": t["id"], "token": token, "note": "nearly"})
    e = _last_lease_event(location, t["id"])
    assert e["op"] == "renew" and e["ttl"] == 45, e  # the length it was last renewed with


# ------------------------------------------------------------------ secrets


def test_token_hashes_are_not_readable_through_any_verb(face: Face, location: str) -> None:
    with comity_lib.open(location) as s:
        record = s.session().get("@auth/alice", secrets=True).values
    if not record:  # faces without tokens: issue one, so there is a hash to hide
        comity("agent", "add", "alice", "--rotate", location=location)
        with comity_lib.open(location) as s:
            record = s.session().get("@auth/alice", secrets=True).values
    digest = record[0]["sha256"]
    refused(face, location, "read", {"key": "@auth/alice"}, "key")
    answers = []
    for verb, args in [
        ("keys", {"prefix": "@"}), ("keys", {"prefix": "@auth/"}), ("keys", {"prefix": "@au"}),
        ("log", {"key": "@auth/alice"}), ("log", {"limit": 10_000}), ("news", {}), ("why", {"target": "@auth/alice"}),
    ]:  # fmt: skip
        try:
            out = face.call(verb, args)
        except Exception as e:  # noqa: BLE001
            if type(e).__name__ == "Unsupported":
                continue
            raise
        assert out.code in ("ok", "not_found"), (face.name, verb, out)
        answers.append(json.dumps(out.body) + out.raw)
        if verb == "keys" and out.ok:
            keys = out.body if isinstance(out.body, list) else out.body["keys"]
            assert not [k for k in keys if k.startswith("@auth/")], (verb, args, keys)
    assert answers and not [a for a in answers if digest in a]
