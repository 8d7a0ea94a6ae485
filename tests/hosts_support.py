"""The seed's scenario, as agent hosts run it: a repository whose last migration is 0266,
two git worktrees (alice's and bob's), the comity git hooks installed, and the steps every
host test replays through its own client: one migration number each, a stale note refused
and redone, one claim winning."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from test_repo_support import git, make_repo, ok, run, worktree

MIGRATIONS = "db/migrations"
NOTE = "notes/schema"


@dataclass
class Scene:
    root: Path
    alice: Path  # the main worktree
    bob: Path  # a second worktree, branch bob


def scene(tmp_path: Path) -> Scene:
    """The repository of the story: migrations up to 0266 committed, hooks installed, two worktrees."""
    repo = make_repo(tmp_path / "app")
    d = repo / MIGRATIONS
    d.mkdir(parents=True)
    for n, slug in ((265, "add_sessions"), (266, "add_audit")):
        (d / f"{n:04d}_{slug}.sql").write_text(f"-- {n}\n")
    git(repo, "add", MIGRATIONS)
    git(repo, "commit", "-q", "-m", "migrations up to 0266")
    ok(run(repo, "init"))
    return Scene(tmp_path, repo, worktree(repo, "bob"))


def check_migrations(s: Scene, answers: dict[str, dict[str, Any]]) -> None:
    """Each agent got its own number, 0267 and 0268, and the file on disk in its own
    worktree carries exactly that number: no number unrelated to the files was shown."""
    numbers = sorted(int(a["number"]) for a in answers.values())
    assert numbers == [267, 268], answers
    for who, a in answers.items():
        where = s.alice if who == "alice" else s.bob
        path = Path(a["path"])
        assert path.is_file() and path.parent == where / MIGRATIONS, (who, a)
        m = re.match(r"(\d+)_", path.name)
        assert m is not None and int(m.group(1)) == a["number"], (who, a)
        assert a["file"] == f"{MIGRATIONS}/{path.name}"
        for other in (s.alice, s.bob):
            if other != where:
                assert not (other / MIGRATIONS / path.name).exists()


def commit_both(s: Scene, answers: dict[str, dict[str, Any]], names: dict[str, str]) -> None:
    """Both agents write their SQL into the file they were given and commit through the
    installed hooks: both commits are accepted."""
    for who, a in answers.items():
        where = s.alice if who == "alice" else s.bob
        Path(a["path"]).write_text(f"-- {who}'s migration\nCREATE TABLE {who}_t (id int);\n")
        git(where, "add", a["file"])
        p = git(where, "commit", "-q", "-m", f"{who}: migration", check=False, COMITY_AGENT=names[who])
        assert p.returncode == 0, (who, p.stdout, p.stderr)
