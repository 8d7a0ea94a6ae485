"""`make demo`'s first part, as a user runs it: two MCP hosts in two git worktrees through
the migration race, the stale note and the claim race.  The script checks its own story
(it exits non-zero if comity misbehaves); this checks what it told the user, in 80 columns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp.server.mcpserver", reason="the MCP SDK 2.x is not installed (pip install -e '.[dev]')")

from test_repo_support import env  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "examples" / "migration_race.py"


def test_the_demo_tells_the_migration_story_through_two_mcp_hosts_in_80_columns() -> None:
    p = subprocess.run([sys.executable, str(DEMO)], env=env(COLUMNS="200"), capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = p.stdout
    assert "alice whoami: agent 'alice' (COMITY_AGENT)" in out and "bob whoami: agent 'bob' (the worktree" in out
    assert "migration_new -> number 267" in out and "migration_new -> number 268" in out
    assert "PreToolUse Write db/migrations/0267_by_hand.sql: deny" in out and 'migration_new(slug="by_hand"' in out.replace("\n", " ")
    assert out.count(": accepted") >= 2 and "refused" in out
    assert "stale_context" in out and "task_claim: won" in out and "task_claim: refused" in out
    assert "0265_add_sessions.sql, 0266_add_audit.sql, 0267_" in out and "0268_" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_the_demos_chaos_table_fits_80_columns_with_the_careful_baselines() -> None:
    import importlib.util
    import io

    from rich.console import Console

    spec = importlib.util.spec_from_file_location("chaos_story", DEMO.with_name("chaos_story.py"))
    assert spec is not None and spec.loader is not None
    story = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(story)
    buf = io.StringIO()
    story.con = Console(file=buf, width=80, highlight=False, color_system=None)
    story.table(1, ["zombie_commit", "triage_race"])
    out = buf.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for word in ("careful", "cas", "comity", "naive", "zombie_commit", "triage_race", "best baseline"):
        assert word in out, (word, out)
    first = [line.rstrip() for line in out.splitlines() if line.strip().startswith(("zombie_commit", "triage_race"))][:2]
    assert len(first) == 2 and all(line.endswith("· (·)") for line in first), out  # comity's column: no anomaly, faulted or not
