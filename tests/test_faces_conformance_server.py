"""The conformance suite (faces_conformance.py) through the faces of a ``comity serve``:
plain HTTP requests (``POST /v1/{verb}``), ``RemoteAgent``, the CLI with ``--store
http://…``, and ``comity mcp`` over stdio and over streamable HTTP with ``--store http://…``."""

from __future__ import annotations

import pytest
from faces_conformance import SCENARIOS, World, world  # noqa: F401  (world: the module's fixture)

FACES = ["http", "remote", "cli_remote", "mcp_stdio_remote", "mcp_http_remote"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", FACES)
def test_every_face_of_a_server_gives_the_same_outcome(world: World, kind: str, scenario: str) -> None:
    run, expected = SCENARIOS[scenario]
    assert run(world, kind, f"{kind}/{scenario}") == expected


def test_the_two_files_run_every_face() -> None:
    import faces_conformance
    import test_faces_conformance

    assert sorted(FACES + test_faces_conformance.FACES) == sorted(faces_conformance.FACES)
