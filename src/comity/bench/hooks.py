"""``comity bench hooks``: what the pre-commit hook adds to a commit.

A scratch repository with ``files`` files, ``migrations`` migrations, ``worktrees``
extra worktrees (each with an uncommitted migration on disk) and ``branches`` local
branches (each with a migration of its own), a live exclusive reservation and a
decision held by another agent, and a claimed task.  Each measured commit adds a
migration and edits a file under the decision (an unrelated edit, so every check runs
and passes).  Commits alternate between the hook installed and hooks switched off
(``-c core.hooksPath=<empty dir>``), in the same run; ``hook_ms`` is the difference
of the medians.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..coord import reserve
from ..store import open as open_store
from ..work import Board
from ..repo._git import Repo
from ..repo.hooks import install
from ..repo.intent import decide_on_commit
from ..repo.migrations import Template, register_dir

__all__ = ["bench_hooks"]

_DIR = "db/migrations"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}
    env.update(extra)
    return env


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> bytes:
    p = subprocess.run(["git", *args], cwd=cwd, env=env or _env(), input=input, capture_output=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])}: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def _ms(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 2)


def _build(root: Path, files: int, migrations: int, worktrees: int, branches: int, say: Callable[[str], None]) -> None:
    _git(root.parent, "init", "-q", "-b", "main", str(root))
    for k, v in (("user.name", "Bench"), ("user.email", "bench@example.com"), ("commit.gpgsign", "false"), ("gc.auto", "0")):
        _git(root, "config", k, v)
    say(f"bench hooks: {files} files, {migrations} migrations")
    for i in range(files):
        d = root / "src" / f"pkg{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text("".join(f"value_{i}_{j} = {j}\n" for j in range(20)))
    mig = root / _DIR
    mig.mkdir(parents=True)
    for n in range(1, migrations + 1):
        (mig / f"{n:04d}_m{n}.sql").write_text(f"-- {n}\nCREATE TABLE t{n} (id int);\n")
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("guide\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")
    # A commit that a decision will be about: it replaces a line of src/pkg0/f0.py.
    f0 = root / "src" / "pkg0" / "f0.py"
    f0.write_text(f0.read_text().replace("value_0_5 = 5\n", "value_0_5 = retry_with_backoff(5)\n"))
    _git(root, "commit", "-q", "-am", "keep the retry")
    if branches:
        say(f"bench hooks: {branches} branches")
        head = _git(root, "rev-parse", "HEAD").decode().strip()
        stream = []
        for i in range(branches):
            body = f"-- branch {i}\n".encode()
            msg = f"branch {i}\n".encode()
            stream.append(
                b"commit refs/heads/b-%d\ncommitter Bench <bench@example.com> 1700000000 +0000\n" % i
                + b"data %d\n%s" % (len(msg), msg)
                + f"from {head}\n".encode()
                + f"M 100644 inline {_DIR}/{5000 + i:04d}_branch_{i}.sql\n".encode()
                + b"data %d\n%s\n" % (len(body), body)
            )
        _git(root, "fast-import", "--quiet", input=b"".join(stream))
    say(f"bench hooks: {worktrees} worktrees")
    for i in range(worktrees):
        wt = root.parent / f"wt-{i}"
        _git(root, "worktree", "add", "-q", "-b", f"wt-{i}", str(wt))
        (wt / _DIR / f"{7000 + i:04d}_wip_{i}.sql").write_text(f"-- work in progress {i}\n")


def bench_hooks(
    *,
    files: int = 1000,
    migrations: int = 500,
    worktrees: int = 8,
    branches: int = 50,
    commits: int = 20,
    directory: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median time a commit takes with comity's pre-commit hook and without it."""
    say = progress or (lambda _m: None)
    scratch = Path(tempfile.mkdtemp(prefix="comity-bench-hooks-", dir=directory))
    try:
        root = scratch / "repo"
        _build(root, files, migrations, worktrees, branches, say)
        repo = Repo.find(root)
        store = open_store(repo.store_path)
        try:
            other = store.session("bench-other")
            register_dir(other, _DIR, Template.parse("sql"))
            reserve(other, ["docs/**"], ttl=3600)
            decide_on_commit(other, repo, "keep the retry: the API drops calls", ["src/pkg0/f0.py"], "HEAD")
            me = store.session("bench")
            board = Board(me)
            task = board.add("bench task")
            claim = board.claim(task["id"], ttl=3600)
        finally:
            store.close()
        install(repo, python=sys.executable)
        off = scratch / "no-hooks"
        off.mkdir()
        env = _env(COMITY_AGENT="bench", COMITY_TASK=str(task["id"]), COMITY_TOKEN=str(claim.token))
        say(f"bench hooks: {commits} commits with the hook, {commits} without")
        timings: dict[str, list[float]] = {"hook": [], "baseline": []}
        f0 = root / "src" / "pkg0" / "f0.py"
        n = 10_000
        for k in range(commits):
            order = ("hook", "baseline") if k % 2 == 0 else ("baseline", "hook")
            for mode in order:
                n += 1
                (root / _DIR / f"{n:05d}_c{k}_{mode}.sql").write_text(f"-- {mode} {k}\n")
                with f0.open("a") as f:
                    f.write(f"extra_{n} = {n}\n")
                _git(root, "add", "-A", env=env)
                args = ["git"] + (["-c", f"core.hooksPath={off}"] if mode == "baseline" else []) + ["commit", "-q", "-m", f"{mode} {k}"]
                t0 = time.perf_counter()
                p = subprocess.run(args, cwd=root, env=env, capture_output=True, check=False)
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    raise RuntimeError(f"the {mode} commit {k} failed: {p.stderr.decode(errors='replace').strip()}")
                timings[mode].append(dt)
        hook_p50 = statistics.median(timings["hook"]) * 1000
        base_p50 = statistics.median(timings["baseline"]) * 1000
        return {
            "hook_ms": round(hook_p50 - base_p50, 2),
            "baseline_commit_ms": round(base_p50, 2),
            "hooked_commit_ms": round(hook_p50, 2),
            "hooked_p90_ms": _ms(timings["hook"], 0.9),
            "baseline_p90_ms": _ms(timings["baseline"], 0.9),
            "ratio": round(hook_p50 / base_p50, 2) if base_p50 else None,
            "commits": commits,
            "files": files,
            "migrations": migrations,
            "worktrees": worktrees,
            "branches": branches,
            "checks": ["task lease", "migration numbers", "reservations", "decisions"],
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
