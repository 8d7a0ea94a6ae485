"""Schemathesis over the HTTP API's own OpenAPI document: whatever the schema admits, and
much it does not (negative cases: wrong types, missing and unknown fields), the server
answers with a JSON body and never a 5xx.  In process (ASGI), bounded per endpoint."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import comity  # noqa: E402
from comity.server import create_app, issue_token  # noqa: E402

# Schemathesis parametrizes at collection, so the app (and its scratch store) is built at import;
# every process that collects this module removes its own directory at exit.
_DIR = Path(tempfile.mkdtemp(prefix="comity-fuzz-"))
STORE = comity.open(_DIR / "s.db", max_value_bytes=4096)
atexit.register(shutil.rmtree, _DIR, True)
atexit.register(STORE.close)
TOKEN = {"alice": issue_token(STORE.session("admin"), "alice")["auth_token"]}
STORE.session("alice").create("notes/a", "hello")
APP = create_app(STORE)

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(
    max_examples=30,
    with_security_parameters=False,  # the test sends a valid token; forged ones are tested below
)
# One test per operation, each with its own id ("POST /v1/read"): schemathesis' own
# parametrization gives all of them one test id, and pytest-xdist then runs only one.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


def test_every_operation_of_the_openapi_document_is_fuzzed() -> None:
    documented = {(m.upper(), p) for p, item in APP.openapi()["paths"].items() for m in item}
    assert {(op.method.upper(), op.path) for op in OPERATIONS} == documented
    assert len({op.label for op in OPERATIONS}) == len(OPERATIONS) >= 20


def _check(case: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN['alice']}"}
    if case.headers:
        case.headers.pop("Authorization", None)
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.path, case.body, response.status_code, response.text)
    content_type = response.headers.get("content-type") or [""]
    assert content_type[0].startswith("application/json"), response.text
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body.get("message"), body
    if response.status_code == 422:
        assert body["error"] == "invalid" and body.get("field"), body


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_input_yields_a_server_error(operation: Any) -> None:
    """Whatever the schema admits (positive cases) and much it does not (negative: wrong
    types, missing and unknown fields), this operation answers JSON and never a 5xx."""
    calls = []

    @given(
        case=st.one_of(
            operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
        )
    )
    @settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: Any) -> None:
        calls.append((case.method.upper(), case.path))
        _check(case)

    fuzz()
    assert calls and set(calls) == {(operation.method.upper(), operation.path)}, "the cases called this operation"


def test_forged_tokens_are_401_not_5xx() -> None:
    from starlette.testclient import TestClient

    client = TestClient(APP)
    real = TOKEN["alice"]
    for auth in [None, "Basic abc", "Bearer ", "Bearer x", "Bearer " + real[:-1] + ("1" if real[-1] == "0" else "0"), "Bearer bob." + real.split(".")[1],
                 "Bearer " + "a" * 5000, "Bearer \u00e9t\u00e9." + "0" * 64]:
        headers = {} if auth is None else {"Authorization": auth}
        try:
            r = client.post("/v1/read", json={"key": "notes/a"}, headers=headers)
        except UnicodeEncodeError:
            continue  # an HTTP client cannot send it at all
        assert r.status_code == 401, (auth, r.status_code, r.text)
        assert r.json()["error"] == "unauthorized"
