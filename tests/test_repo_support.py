"""Helpers for the repository tests: real git repositories, real worktrees, the real
``comity`` command and real ``git commit`` through the installed hooks.

Every subprocess gets an environment without COMITY_* and GIT_* (except what a test
sets) and with git's global and system configuration switched off."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import COMITY, clean_env

import comity
from comity.repo import Repo

Proc = subprocess.CompletedProcess[str]


def env(**extra: str) -> dict[str, str]:
    return clean_env(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", **extra)


def git(cwd: Path, *args: str, check: bool = True, **extra: str) -> Proc:
    p = subprocess.run(["git", *args], cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def run(cwd: Path, *args: str, agent: str | None = None, **extra: str) -> Proc:
    """The real ``comity`` command in ``cwd`` (the store found from the repository)."""
    e = env(**extra)
    if agent is not None:
        e["COMITY_AGENT"] = agent
    return subprocess.run([*COMITY, *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=60, check=False)


def ok(p: Proc) -> Proc:
    assert p.returncode == 0, (p.args, p.returncode, p.stdout, p.stderr)
    return p


def make_repo(where: Path, *, hooks: bool = True) -> Path:
    git(where.parent, "init", "-q", "-b", "main", str(where))
    for k, v in (("user.name", "Test"), ("user.email", "test@example.com"), ("commit.gpgsign", "false")):
        git(where, "config", k, v)
    (where / "README").write_text("hello\n")
    git(where, "add", "README")
    git(where, "commit", "-q", "-m", "init")
    if hooks:
        ok(run(where, "hooks", "install"))
    return where


def worktree(repo: Path, name: str) -> Path:
    path = repo.parent / name
    git(repo, "worktree", "add", "-q", "-b", name, str(path))
    return path


def commit(cwd: Path, message: str, *, agent: str | None = None, all_files: bool = True, no_verify: bool = False, **extra: str) -> Proc:
    if all_files:
        git(cwd, "add", "-A")
    if agent is not None:
        extra["COMITY_AGENT"] = agent
    args = ["commit", "-q", "-m", message] + (["--no-verify"] if no_verify else [])
    return git(cwd, *args, check=False, **extra)


def open_store(repo: Path) -> comity.Store:
    """The store every worktree of ``repo`` shares (where the hook finds it)."""
    return comity.open(Repo.find(repo).store_path)
