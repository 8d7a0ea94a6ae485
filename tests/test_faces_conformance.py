"""The conformance suite (faces_conformance.py) through the faces that open the store themselves:
the Python API, the CLI, ``comity mcp`` over stdio and ``comity mcp --http``."""

from __future__ import annotations

import pytest
from faces_conformance import SCENARIOS, World, world  # noqa: F401  (world: the module's fixture)

FACES = ["python", "cli", "mcp_stdio", "mcp_http"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", FACES)
def test_every_face_on_the_store_gives_the_same_outcome(world: World, kind: str, scenario: str) -> None:
    run, expected = SCENARIOS[scenario]
    assert run(world, kind, f"{kind}/{scenario}") == expected
