"""docs/design.md's layering: imports point down only; core code takes time and randomness from the seams."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "comity"

# Lower number = lower layer.  A module may import its own layer or below.
LAYER = {
    # the faces' shared words and CLI kit depend on errors only, so any layer's commands may use them
    "runtime": 0, "errors": 0, "render": 0, "clikit": 0,
    "causal": 1, "crdt": 1,
    "store": 2,
    "sync": 3,
    "coord": 4,
    "work": 5,
    "chaos": 6,
    "cli": 7, "server": 7, "mcp": 7, "integrations": 7, "bench": 7, "repo": 7, "remote": 7, "jepsen": 7, "replica_cli": 7,
}
CORE = ["causal", "crdt", "store", "coord", "work", "sync"]


def _top(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(SRC).parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level])
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x
                    out += [f"{target}.{a.name}".strip(".") for a in node.names]
                    continue
                out.append(target)
            elif node.module and node.module.startswith("comity"):
                out.append(node.module.removeprefix("comity").strip("."))
        elif isinstance(node, ast.Import):
            out += [a.name.removeprefix("comity").strip(".") for a in node.names if a.name.startswith("comity")]
    return [o for o in out if o]


def test_imports_point_down_only() -> None:
    bad = []
    for path in SRC.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == SRC:
            continue  # the top-level package re-exports the user-facing names
        mine = _top(path)
        for target in _imports(path):
            theirs = target.split(".")[0]
            if theirs in LAYER and mine in LAYER and LAYER[theirs] > LAYER[mine]:
                bad.append(f"{path.relative_to(SRC)} imports {target}")
    assert not bad, bad


def test_core_code_uses_the_seams() -> None:
    leak = re.compile(r"time\.time\(|time\.monotonic\(|datetime\.now\(|^\s*import random|random\.|uuid4\(|socket\.")
    found = []
    for name in CORE:
        for path in (SRC / name).rglob("*.py") if (SRC / name).exists() else []:
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if leak.search(line) and not line.strip().startswith("#"):
                    found.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not found, found
