"""The verb table is the one declaration of every verb: each face must agree with it.

A verb added to the table without its facade method, or a facade method whose signature
or default differs, or a face that drops or renames an argument, fails here.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import anyio
import click
import pytest

from comity.cli import GENERATED, NOT_COMMANDS, cli
from comity.errors import Invalid
from comity.render import CLI_FORMS, cli_command, describe_key, news_line, tool_call
from comity.work import VERB, VERBS, Agent, bind
from comity.work.verbs import input_schema, output_schema, python_annotation

ROOT = Path(__file__).resolve().parents[1]


def test_every_verb_is_a_facade_method_with_the_tables_signature() -> None:
    for verb in VERBS:
        fn = getattr(Agent, verb.name, None)
        assert callable(fn), f"Agent has no method {verb.name}"
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        assert [p.name for p in params] == verb.names, verb.name
        for p, declared in zip(params, verb.params):
            default = inspect.Parameter.empty if declared.required else declared.default
            assert p.default == default, f"{verb.name}.{p.name}: default {p.default!r}, table {default!r}"
            assert p.annotation == python_annotation(declared.kind), f"{verb.name}.{p.name}: {p.annotation} vs {declared.kind}"
    public = {n for n in dir(Agent) if not n.startswith("_") and callable(getattr(Agent, n))} - {"call", "remembered"}
    assert public == set(VERB), f"facade methods not in the table: {public - set(VERB)}"


def test_the_remote_client_is_generated_from_the_table() -> None:
    from comity.remote import RemoteAgent

    for verb in VERBS:
        assert inspect.signature(getattr(RemoteAgent, verb.name)) == inspect.signature(getattr(Agent, verb.name)), verb.name


def test_the_http_api_is_generated_from_the_table(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    import comity
    from comity.server import create_app

    with comity.open(tmp_path / "s.db") as store:
        doc = create_app(store).openapi()
    schemas = doc["components"]["schemas"]
    routes = {p.removeprefix("/v1/") for p in doc["paths"] if p.startswith("/v1/") and "/admin/" not in p and p != "/v1/health"}
    assert routes == set(VERB)
    for verb in VERBS:
        op = doc["paths"][f"/v1/{verb.name}"]["post"]
        ref = json.dumps(op["requestBody"]["content"]["application/json"]["schema"]).split("#/components/schemas/")[1].split('"')[0]
        body = schemas[ref]
        assert list(body.get("properties", {})) == verb.names
        assert sorted(body.get("required", [])) == sorted(p.name for p in verb.params if p.required), verb.name
        for p in verb.params:
            if not p.required:
                default = list(p.default) if isinstance(p.default, tuple) else p.default
                assert body["properties"][p.name].get("default") == default, (verb.name, p.name)
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == output_schema(verb)


def test_the_mcp_tools_are_generated_from_the_table() -> None:
    pytest.importorskip("mcp.server.mcpserver")
    from comity.mcp.server import CONTRACT, OneSession, build_server

    app = build_server(OneSession(None), bench=False)  # type: ignore[arg-type]
    tools = {t.name: t for t in anyio.run(app.list_tools)}
    assert set(tools) == {v.name for v in VERBS if v.tool} == set(CONTRACT)
    for name, t in tools.items():
        verb = VERB[name]
        assert t.input_schema == input_schema(verb) and t.output_schema == output_schema(verb)
        assert t.input_schema["additionalProperties"] is False
        assert t.description == verb.text
        # descriptions read as prose: no source indentation, no line breaks; each ends with an example
        assert "\n" not in t.description and "  " not in t.description, name
        assert "Example:" in t.description and f"{name}(" in t.description.split("Example:")[1], name
        for p, spec in t.input_schema["properties"].items():
            assert spec.get("description"), f"{name}.{p} has no description"
            # typed, so that strict clients (MCP Inspector --strict) do not warn
            assert "type" in spec or all("type" in alt for alt in spec.get("anyOf", [None])), f"{name}.{p}: {spec}"


def test_every_verb_has_a_command_and_its_options_default_as_the_table() -> None:
    commands: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            commands[f"{prefix}{name}".strip()] = cmd
            if isinstance(cmd, click.Group):
                walk(cmd, f"{prefix}{name} ")

    walk(cli, "")
    for verb in VERBS:
        if verb.name in NOT_COMMANDS:
            continue
        form = CLI_FORMS.get(verb.name)
        assert form is not None, f"no command maps onto {verb.name}"
        path = form.path.replace(" --next", "")
        cmd = commands[path]
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.name not in verb.names:
                continue
            declared = verb.param(param.name)
            if not declared.required and declared.default is not None and declared.base != "bool" and not declared.base.startswith("list["):
                assert param.default == declared.default, (verb.name, param.name, param.default, declared.default)
            if path in GENERATED:
                assert param.help and declared.doc in param.help, (verb.name, param.name)


def test_the_library_under_the_faces_defaults_as_the_table() -> None:
    """A lease or a reservation granted without a length lasts as long whoever asks for it:
    the board, the lease API, the store's own fallback and the liveness window are the table's."""
    import importlib

    from comity.coord import leases, liveness
    from comity.store import _txn
    from comity.work import tasks
    from comity.work.tasks import Board

    reservations = importlib.import_module("comity.coord.reservations")  # the package names a function so
    from comity.work.verbs import LEASE_TTL_S, RESERVATION_TTL_S

    def default(fn: Any, name: str) -> Any:
        return inspect.signature(fn).parameters[name].default

    assert VERB["task_claim"].param("ttl").default == LEASE_TTL_S == leases.DEFAULT_TTL_S == _txn.DEFAULT_LEASE_S
    assert default(leases.Leases.acquire, "ttl") == LEASE_TTL_S
    assert default(liveness.agents, "ttl") == VERB["agents"].param("ttl").default == LEASE_TTL_S
    assert default(reservations.reserve, "ttl") == VERB["reserve_paths"].param("ttl").default == RESERVATION_TTL_S
    for name in ("claim", "claim_next"):
        ttl = default(getattr(Board, name), "ttl")
        assert ttl is None or ttl == LEASE_TTL_S, (name, ttl)
    assert tasks._ttl(None) == LEASE_TTL_S  # what None means


def test_bind_refuses_what_the_table_does_not_admit_naming_the_argument() -> None:
    assert bind("keys", {}) == {"prefix": "", "limit": 200, "deleted": False}
    assert bind("task_add", {"title": "t"})["deps"] is None
    cases: list[tuple[str, Any, str]] = [
        ("read", {}, "key"),
        ("read", {"key": "k", "colour": "red"}, "colour"),
        ("read", {"key": 12}, "key"),
        ("write", {"key": "k", "value": 1, "keep_both": "yes"}, "keep_both"),
        ("news", {"limit": 0}, "limit"),
        ("news", {"limit": True}, "limit"),
        ("task_claim", {"id": "T-1", "ttl": 0}, "ttl"),
        ("task_claim", {"id": "T-1", "ttl": float("inf")}, "ttl"),
        ("task_complete", {"id": "T-1", "token": 2**64}, "token"),
        ("reserve_paths", {"paths": ["a", 1]}, "paths.1"),
        ("reserve_paths", {"paths": "src/x.py"}, "paths"),
        ("nosuchverb", {}, "verb"),
        ("read", [1], "args"),
    ]
    for verb, args, field in cases:
        with pytest.raises(Invalid) as e:
            bind(verb, args)
        assert e.value.field == field, (verb, args, e.value)


def test_a_next_step_renders_as_a_command_and_as_a_tool_call() -> None:
    assert cli_command("read", {"key": "notes/a b"}) == "comity get 'notes/a b'"
    assert cli_command("write", {"key": "k", "value": {"x": 1}, "keep_both": True}) == "comity put k '{\"x\": 1}' --keep-both"
    assert cli_command("task_show", {"id": "T-3"}) == "comity task show T-3"
    assert cli_command("task_ready", {}) == "comity task ready"
    assert cli_command("task_claim_next", {}) == "comity task claim --next"
    assert tool_call("read", {"key": "k"}) == 'read(key="k")'


def test_internal_keys_are_shown_as_what_they_mean() -> None:
    assert describe_key("@task/T-1") == "task T-1"
    assert describe_key("@seq/tasks") == "sequence tasks"
    assert describe_key("@open/000000000007") == "the ready queue (task T-7)"
    assert describe_key("notes/a") == "notes/a"
    line = news_line({"agent": "bob", "op": "task.claim", "key": "@task/T-3", "pos": 12})
    assert line == "bob claimed task T-3 (pos 12)"


def test_the_docs_say_how_to_add_a_verb() -> None:
    faces = (ROOT / "docs" / "faces.md").read_text()
    assert "Adding a verb" in faces and "verbs.py" in faces


@pytest.mark.parametrize("ttl", [10**400, -(10**400), float("inf"), float("nan")])
def test_a_number_past_floats_range_is_invalid_naming_it(ttl: object) -> None:
    """10**400 is an integer JSON can carry and float() cannot hold: refused, not a crash
    (found by tests/test_face_fuzz.py)."""
    with pytest.raises(Invalid) as e:
        bind("reserve_paths", {"paths": ["src/a.py"], "ttl": ttl})
    assert e.value.details["field"] == "ttl" and "finite" in e.value.message
