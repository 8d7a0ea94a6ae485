"""``comity doctor`` finds what slipped past the hooks (``--no-verify``), says how to fix
it, and exits 0 when clean, 3 when not; ``comity bench hooks`` runs end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_repo_support import commit, git, make_repo, ok, open_store, run, worktree

from comity.coord import reserve
from comity.bench.hooks import bench_hooks

MIG = "db/migrations"


def _doctor(cwd: Path, *args: str) -> tuple[int, dict[str, object]]:
    r = run(cwd, "doctor", "--json", *args)
    assert r.returncode in (0, 3), r.stderr
    return r.returncode, json.loads(r.stdout)


def _kinds(report: dict[str, object]) -> list[str]:
    problems = report["problems"]
    assert isinstance(problems, list)
    return sorted(p["kind"] for p in problems)


def test_doctor_reports_what_slipped_past_and_how_to_fix_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / MIG).mkdir(parents=True)
    (repo / MIG / "0001_init.sql").write_text("-- init\n")
    (repo / "app.py").write_text("def run():\n    return compute()\n")
    assert commit(repo, "init").returncode == 0
    (repo / "app.py").write_text("def run():\n    validate_input()\n    return compute()\n")
    assert commit(repo, "validate", agent="alice").returncode == 0
    ok(run(repo, "decide", "validate before computing: bad input corrupts the cache", "--paths", "app.py", agent="alice"))
    code, report = _doctor(repo)
    assert code == 0 and report["ok"] is True and report["problems"] == []
    assert MIG in report["scanned"]["migration_dirs"]  # type: ignore[index]

    a, b = worktree(repo, "wt-a"), worktree(repo, "wt-b")
    (a / MIG / "0002_a.sql").write_text("-- a\n")
    assert commit(a, "a", agent="alice").returncode == 0
    (b / MIG / "0002_b.sql").write_text("-- b\n")
    assert commit(b, "b", agent="bob").returncode != 0  # the hook refuses…
    assert commit(b, "b", agent="bob", no_verify=True).returncode == 0  # …a person skips it
    (b / "app.py").write_text("def run():\n    return compute()\n")
    assert commit(b, "drop validation", agent="bob", no_verify=True).returncode == 0
    undo = git(b, "rev-parse", "HEAD").stdout.strip()
    with open_store(repo) as store:
        reserve(store.session("ghost"), ["docs/**"])
    time.sleep(0.2)

    code, report = _doctor(repo, "--silent", "0.1")
    assert code == 3 and report["ok"] is False
    assert _kinds(report) == ["duplicate-number", "reserved-by-silent-agent", "undid-decision"]
    by = {p["kind"]: p for p in report["problems"]}  # type: ignore[attr-defined]
    dup = by["duplicate-number"]
    assert "0002_a.sql" in dup["message"] and "0002_b.sql" in dup["message"] and "renumber" in dup["fix"]
    assert "ghost" in by["reserved-by-silent-agent"]["message"] and "release" in by["reserved-by-silent-agent"]["fix"]
    undid = by["undid-decision"]
    assert undid["commit"] == undo and undid["branches"] == ["wt-b"] and "D-1" in undid["message"]
    assert f"comity decide ack D-1 --commit {undo[:10]}" in undid["fix"]
    human = run(repo, "doctor", "--silent", "0.1")
    assert human.returncode == 3 and "fix:" in human.stdout

    # Fixing each: renumber b's migration, accept the undo, release the ghost's reservation.
    git(b, "mv", f"{MIG}/0002_b.sql", f"{MIG}/0003_b.sql")
    assert commit(b, "renumber", agent="bob").returncode == 0
    ok(run(b, "decide", "ack", "D-1", "--commit", undo, agent="bob"))
    ok(run(repo, "release", "docs/**", agent="ghost"))
    code, report = _doctor(repo)
    assert code == 0, report

    # An undo acknowledged before committing goes through the hook and doctor stays clean.
    (a / "app.py").write_text("def run():\n    return compute()\n")
    assert commit(a, "drop validation too", agent="carol").returncode != 0
    ok(run(a, "decide", "ack", "D-1", agent="carol"))
    assert commit(a, "drop validation too", agent="carol").returncode == 0
    code, report = _doctor(repo)
    assert code == 0, report


def test_bench_hooks_smoke(tmp_path: Path) -> None:
    r = bench_hooks(files=30, migrations=10, worktrees=1, branches=2, commits=2, directory=str(tmp_path))
    assert {"hook_ms", "baseline_commit_ms", "hooked_commit_ms"} <= set(r)
    assert r["baseline_commit_ms"] > 0 and r["hooked_commit_ms"] > 0
    assert list(tmp_path.iterdir()) == []  # the scratch repository is removed
