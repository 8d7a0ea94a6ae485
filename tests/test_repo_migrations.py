"""Migration numbers across real worktrees and branches: allocation in separate
processes, the pre-commit refusal of a hand-written duplicate, layouts, check, renumber."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import cli_together
from test_repo_support import commit, env, git, make_repo, ok, open_store, run, worktree

from comity.errors import Invalid
from comity.repo import Repo, Template, check, new_migration, renumber

MIG = "db/migrations"


def _seed(repo: Path) -> None:
    (repo / MIG).mkdir(parents=True)
    (repo / MIG / "0001_init.sql").write_text("-- init\n")
    assert commit(repo, "first migration").returncode == 0


def test_two_worktrees_take_numbers_at_once_and_both_commits_go_through(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    _seed(repo)
    # A branch with no worktree already holds 0007: the seed must see it.
    git(repo, "checkout", "-q", "-b", "old")
    (repo / MIG / "0007_old.sql").write_text("-- old\n")
    assert commit(repo, "old work").returncode == 0
    git(repo, "checkout", "-q", "main")
    a, b = worktree(repo, "wt-a"), worktree(repo, "wt-b")

    # Four processes in two worktrees, released together by a barrier.
    jobs = [(a, "alice", "add_users"), (b, "bob", "add_orders"), (a, "alice", "add_index"), (b, "bob", "add_view")]
    outs = cli_together(
        [["migrations", "new", slug, "--dir", MIG, "--json"] for _, _, slug in jobs],
        env=[env(COMITY_AGENT=agent) for _, agent, _ in jobs],
        cwd=[cwd for cwd, _, _ in jobs],
    )
    results = []
    for p in outs:
        assert p.returncode == 0, p.stderr
        results.append(json.loads(p.stdout))
    numbers = [r["number"] for r in results]
    assert len(set(numbers)) == 4 and min(numbers) > 7, numbers
    for r, (wt, agent) in zip(results, [(a, "alice"), (b, "bob"), (a, "alice"), (b, "bob")]):
        assert (wt / r["file"]).exists() and r["agent"] == agent and r["worktree"] == str(wt)
        assert re.fullmatch(rf"{MIG}/\d{{4}}_add_\w+\.sql", r["file"])
    assert commit(a, "alice's migrations", agent="alice").returncode == 0
    assert commit(b, "bob's migrations", agent="bob").returncode == 0
    # Renaming a migration (same number, new slug) is not a duplicate of its old name.
    old = results[0]["file"]
    git(a, "mv", old, old.replace("add_users", "create_users"))
    assert commit(a, "rename", agent="alice").returncode == 0
    with open_store(repo) as store:
        s = store.session()
        recorded = s.get(f"@migration/{MIG}/{numbers[1]}").value
        assert recorded["agent"] == "bob" and recorded["branch"] == "wt-b"


def test_a_hand_written_duplicate_is_refused_naming_the_other_file_worktree_and_agent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    _seed(repo)
    a, b = worktree(repo, "wt-a"), worktree(repo, "wt-b")
    got = json.loads(ok(run(a, "migrations", "new", "add_users", "--dir", MIG, "--json", agent="alice", COMITY_TASK="T-4")).stdout)
    assert got["file"] == f"{MIG}/0002_add_users.sql" and got["task"] == "T-4"
    (b / MIG / "0002_add_orders.sql").write_text("CREATE TABLE orders (id int);\n")
    r = commit(b, "orders", agent="bob")
    assert r.returncode != 0
    assert "0002_add_orders.sql" in r.stderr and f"{MIG}/0002_add_users.sql" in r.stderr
    assert str(a) in r.stderr and "alice" in r.stderr and "T-4" in r.stderr
    assert "comity migrations new" in r.stderr  # says how to fix it
    # Taking a number through comity fixes it.
    (b / MIG / "0002_add_orders.sql").unlink()
    fresh = ok(run(b, "migrations", "new", "add_orders", "--dir", MIG, agent="bob")).stdout.strip()
    assert fresh == f"{MIG}/0003_add_orders.sql"
    assert commit(b, "orders", agent="bob").returncode == 0
    # A branch that has no worktree any more still counts.
    assert commit(a, "users", agent="alice").returncode == 0
    git(repo, "worktree", "remove", "--force", str(a))
    c = worktree(repo, "wt-c")
    (c / MIG / "0002_other.sql").write_text("-- other\n")
    r = commit(c, "other", agent="carol")
    assert r.returncode != 0 and "branch wt-a" in r.stderr and "0002_add_users.sql" in r.stderr


def test_layouts_rails_django_alembic_and_patterns(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    r = Repo.find(repo)
    with open_store(repo) as store:
        s = store.session("alice")
        t1 = new_migration(s, r, "db/migrate", "add_users", template="rails")
        t2 = new_migration(s, r, "db/migrate", "add_orders")  # the layout is remembered
        assert re.fullmatch(r"db/migrate/\d{14}_add_users\.rb", t1["file"])
        assert t2["number"] > t1["number"] and len(str(t2["number"])) == 14
        assert "class AddOrders < ActiveRecord::Migration" in (repo / t2["file"]).read_text()
        d1 = new_migration(s, r, "shop/migrations", "initial", template="django")
        d2 = new_migration(s, r, "shop/migrations", "add_price")
        assert d2["file"] == "shop/migrations/0002_add_price.py"
        assert '("shop", "0001_initial")' in (repo / d2["file"]).read_text()
        assert "initial = True" in (repo / d1["file"]).read_text()
        e1 = new_migration(s, r, "alembic/versions", "create_users", template="alembic")
        e2 = new_migration(s, r, "alembic/versions", "add_email")
        text2 = (repo / e2["file"]).read_text()
        assert e2["file"].endswith(f"{e2['revision']}_add_email.py")
        assert f'revision = "{e2["revision"]}"' in text2 and f"down_revision = '{e1['revision']}'" in text2
        assert "down_revision = None" in (repo / e1["file"]).read_text()
        p = new_migration(s, r, "sql", "x", template="V{n}__{slug}.sql")
        assert p["file"] == "sql/V1__x.sql"
        with pytest.raises(Invalid):
            Template.parse("{n}.sql")
        with pytest.raises(Invalid):
            new_migration(s, r, "sql", "!!!")


def test_check_finds_duplicates_and_several_heads(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    _seed(repo)  # db/migrations is found by its name, never registered
    a, b = worktree(repo, "wt-a"), worktree(repo, "wt-b")
    with open_store(repo) as store:
        s = store.session("alice")
        for wt in (a, b):
            new_migration(s, Repo.find(wt), "app/migrations", "initial" if wt == a else "start", template="django")
        for wt in (a, b):
            new_migration(s, Repo.find(wt), "alembic/versions", "rev", template="alembic")
        (a / MIG / "0005_a.sql").write_text("")
        (b / MIG / "0005_b.sql").write_text("")
        found = check(s, Repo.find(repo))
    kinds = sorted((p.kind, p.detail.get("dir")) for p in found)
    assert ("duplicate-number", MIG) in kinds
    assert ("several-heads", "alembic/versions") in kinds
    # Django: 0001_initial in wt-a and 0002_start in wt-b (numbers are distinct) are both roots;
    # both are heads of the app.
    assert ("several-heads", "app/migrations") in kinds
    r = run(repo, "migrations", "check", "--json")
    assert r.returncode == 3
    assert {p["kind"] for p in json.loads(r.stdout)["problems"]} == {"duplicate-number", "several-heads"}
    r = run(repo, "migrations", "check", "--dir", MIG)
    assert r.returncode == 3 and "0005_a.sql" in r.stdout and "0005_b.sql" in r.stdout and "fix:" in r.stdout


def test_renumber_moves_the_branch_past_main(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    _seed(repo)
    feat = worktree(repo, "feat")
    (feat / MIG / "0002_feat.sql").write_text("-- feat\n")
    (feat / MIG / "0003_feat_more.sql").write_text("-- feat 2\n")
    assert commit(feat, "feature").returncode == 0
    (repo / MIG / "0002_main.sql").write_text("-- main\n")
    assert commit(repo, "main moves on").returncode == 0
    with open_store(repo) as store:
        s = store.session("alice")
        dry = renumber(s, Repo.find(feat), MIG, dry_run=True)
        assert [m["to"] for m in dry["moves"]] == [f"{MIG}/0003_feat.sql", f"{MIG}/0004_feat_more.sql"]
        assert (feat / MIG / "0002_feat.sql").exists()
        moved = renumber(s, Repo.find(feat), MIG)
    names = sorted(p.name for p in (feat / MIG).iterdir())
    assert names[0] == "0001_init.sql" and "0002_feat.sql" not in names and len(names) == 3
    new = [m["to"].rsplit("/", 1)[1] for m in moved["moves"]]
    assert int(new[0][:4]) > 2 and int(new[1][:4]) > int(new[0][:4])
    assert new[0].endswith("_feat.sql") and new[1].endswith("_feat_more.sql")
    status = git(feat, "status", "--porcelain").stdout
    assert "R " in status  # staged as renames by git mv
    assert commit(feat, "renumbered").returncode == 0
    git(feat, "merge", "-q", "--no-edit", "main")
    with open_store(repo) as store:
        assert check(store.session(), Repo.find(repo), MIG) == []


def test_renumber_alembic_rewrites_down_revision(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    d = "alembic/versions"
    with open_store(repo) as store:
        s = store.session("alice")
        base = new_migration(s, Repo.find(repo), d, "base", template="alembic")
        assert commit(repo, "base").returncode == 0
        feat = worktree(repo, "feat")
        mine = new_migration(s, Repo.find(feat), d, "feature")
        assert commit(feat, "feature").returncode == 0
        theirs = new_migration(s, Repo.find(repo), d, "main_change")
        assert commit(repo, "main").returncode == 0
        assert [p.kind for p in check(s, Repo.find(repo), d)] == ["several-heads"]
        r = renumber(s, Repo.find(feat), d)
    assert r["moves"] == [{"file": mine["file"], "down_revision": [[base["revision"]], [theirs["revision"]]]}]
    text = (feat / mine["file"]).read_text()
    assert f"down_revision = '{theirs['revision']}'" in text and f"Revises: {theirs['revision']}" in text
    assert commit(feat, "onto main").returncode == 0
    git(feat, "merge", "-q", "--no-edit", "main")
    with open_store(repo) as store:
        assert check(store.session(), Repo.find(repo), d) == []


def test_renumber_django_follows_dependencies(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    d = "shop/migrations"
    with open_store(repo) as store:
        s = store.session("alice")
        new_migration(s, Repo.find(repo), d, "initial", template="django")
        assert commit(repo, "base").returncode == 0
        feat = worktree(repo, "feat")
        (feat / d / "0002_feat.py").write_text(
            'from django.db import migrations\n\nclass Migration(migrations.Migration):\n'
            '    dependencies = [("shop", "0001_initial")]\n    operations = []\n'
        )
        (feat / d / "0003_feat_two.py").write_text(
            'from django.db import migrations\n\nclass Migration(migrations.Migration):\n'
            '    dependencies = [("shop", "0002_feat"), ("auth", "0001_initial")]\n    operations = []\n'
        )
        assert commit(feat, "feature").returncode == 0
        main_new = new_migration(s, Repo.find(repo), d, "main_change")
        assert commit(repo, "main").returncode == 0
        r = renumber(s, Repo.find(feat), d)
    first, second = (m["to"].rsplit("/", 1)[1][:-3] for m in r["moves"])
    main_stem = main_new["file"].rsplit("/", 1)[1][:-3]
    assert f'("shop", "{main_stem}")' in (feat / d / f"{first}.py").read_text()
    two = (feat / d / f"{second}.py").read_text()
    assert f'("shop", "{first}")' in two and '("auth", "0001_initial")' in two


def test_a_task_asking_again_holds_one_number_in_any_worktree(tmp_path: Path) -> None:
    """One unit of work, one number: the agent that crashed after taking it, a retry whose
    answer was lost, and the successor that took the task over all get the same number."""
    repo = make_repo(tmp_path / "repo", hooks=False)
    _seed(repo)
    a, b = worktree(repo, "wt-a"), worktree(repo, "wt-b")
    with open_store(repo) as store:
        alice, bob = store.session("alice"), store.session("bob")
        first = new_migration(alice, Repo.find(a), MIG, "add_users", task="T-9")
        again = new_migration(alice, Repo.find(a), MIG, "add_users", task="T-9")
        assert again["number"] == first["number"] == 2 and again["held"] and again["file"] == first["file"]
        successor = new_migration(bob, Repo.find(b), MIG, "add_users", task="T-9")  # took T-9 over, in its worktree
        assert successor["number"] == 2 and (b / successor["file"]).exists()
        other = new_migration(bob, Repo.find(b), MIG, "add_orders", task="T-9")  # a second migration of the task
        plain = new_migration(alice, Repo.find(a), MIG, "add_index")  # no task: always a fresh number
        assert (other["number"], plain["number"]) == (3, 4)
        assert check(alice, Repo.find(a), MIG) == []  # the same file in two worktrees is not a duplicate


def test_a_number_in_another_worktrees_uncommitted_file_is_not_taken(tmp_path: Path) -> None:
    """A hand-written migration that exists only on another worktree's disk (not committed,
    not taken through comity) still holds its number: the next one taken is past it."""
    repo = make_repo(tmp_path / "repo", hooks=False)
    _seed(repo)
    a, b = worktree(repo, "wt-a"), worktree(repo, "wt-b")
    (a / MIG / "0002_by_hand.sql").write_text("-- written by hand, not committed\n")
    (a / MIG / "0003_staged.sql").write_text("-- staged, not committed\n")
    git(a, "add", MIG)
    with open_store(repo) as store:
        got = new_migration(store.session("bob"), Repo.find(b), MIG, "add_orders")
    assert got["number"] == 4 and got["file"] == f"{MIG}/0004_add_orders.sql"
    assert not (b / MIG / "0002_add_orders.sql").exists() and not (b / MIG / "0003_add_orders.sql").exists()


def test_the_hook_refuses_a_duplicate_of_another_worktrees_uncommitted_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    _seed(repo)
    a, b = worktree(repo, "wt-a"), worktree(repo, "wt-b")
    (a / MIG / "0002_by_hand.sql").write_text("-- not committed\n")
    (b / MIG / "0002_orders.sql").write_text("-- bob's\n")
    r = commit(b, "orders", agent="bob")
    assert r.returncode != 0
    assert "number 2 is already used by" in r.stderr and f"{MIG}/0002_by_hand.sql" in r.stderr and str(a) in r.stderr
    assert "its number was not taken through comity" in r.stderr
