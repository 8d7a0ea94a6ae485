"""The caller's git worktree, as the agent verbs reach it: where ``migration_new`` creates
its file, and who an agent is when nobody named it.

:class:`GitWorktree` is the worktree half of ``migration_new`` and ``migration_check``
(:class:`comity.work.numbers.Worktree`); the number comes from whichever authority the
face has (the store in process, or a comity server).  :class:`Worktrees` says which
worktree a call works in: the one this process runs in, or, when the call names one
(``worktree="/abs/path"``, for a server serving several), that one, if it belongs to the
same repository.

An agent's name, when neither ``--agent`` nor ``COMITY_AGENT`` gives one, is the
worktree's directory name (:func:`agent_from_worktree`): one ``.mcp.json`` committed to the
repository then starts a differently named agent in every worktree, with no file
shared by all of them naming anyone.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from ..errors import Invalid
from ..work.numbers import Numbers
from ._git import Repo
from .migrations import CONVENTIONAL, check, conventional_dirs, create_migration

__all__ = ["GitWorktree", "Worktrees", "agent_from_worktree", "migration_dir"]


def migration_dir(numbers: Numbers, repo: Repo, given: str | None) -> str:
    """The migrations directory a call means, relative to the repository root: as given,
    else the only one known (numbers taken there, or named like one in HEAD's tree or on disk)."""
    if given is not None:
        if not isinstance(given, str) or not given.strip():
            raise Invalid("dir", "must be a directory relative to the repository root, e.g. 'db/migrations'")
        p = Path(given)
        if p.is_absolute():
            return repo.rel(p)
        norm = os.path.normpath(given).replace(os.sep, "/")
        if norm == ".." or norm.startswith("../"):
            raise Invalid("dir", f"{given!r} leaves the repository; give a directory inside it, e.g. 'db/migrations'")
        return "" if norm == "." else norm
    known = set(numbers.dirs()) | set(conventional_dirs(repo))
    if not known:
        for root, dirs, _files in os.walk(repo.top):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("node_modules", "__pycache__")]
            for d in dirs:
                if d in CONVENTIONAL:
                    known.add(Path(root, d).relative_to(repo.top).as_posix())
    if len(known) == 1:
        return known.pop()
    if not known:
        raise Invalid("dir", "no migrations directory is known in this repository yet: give one, e.g. dir=\"db/migrations\"")
    raise Invalid("dir", f"this repository has several migrations directories ({', '.join(sorted(known))}): say which")


class GitWorktree:
    """One worktree of a repository: the migration verbs' files live here."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    @property
    def path(self) -> str:
        return str(self.repo.top)

    def new_migration(
        self, numbers: Numbers, slug: str, d: str | None, *, template: str | None, task: str | None, unit: str | None
    ) -> dict[str, Any]:
        if numbers.agent is None:
            raise Invalid("agent", "taking a migration number needs an agent name")
        where = migration_dir(numbers, self.repo, d)
        return create_migration(numbers, self.repo, where, slug, template=template, task=task, unit=unit)

    def check_migrations(self, numbers: Numbers, d: str | None, *, template: str | None) -> list[dict[str, Any]]:
        where = None if d is None else migration_dir(numbers, self.repo, d)
        return [p.to_json() for p in check(numbers, self.repo, where, template)]


class Worktrees:
    """Which worktree a call works in.  ``default`` is the worktree this process runs in
    (None: it runs in none, or serves many, so a call must name its own); a named one must
    be a worktree of the repository ``common`` (the git common directory), when given."""

    def __init__(self, default: Repo | None, *, common: Path | None = None, served: str = "this server") -> None:
        self._default: Repo | None = default
        self._found = True
        self._cwd: str | None = None
        self._common = common
        self.served = served

    @classmethod
    def here(cls, cwd: str | os.PathLike[str] | None = None, *, served: str = "this process") -> Worktrees:
        """The worktree this process runs in (found on first use: git runs only for the verbs that need it)."""
        w = cls(None, served=served)
        w._found = False
        w._cwd = os.fspath(cwd) if cwd is not None else None
        return w

    @classmethod
    def serving(cls, cwd: str | os.PathLike[str] | None = None, *, served: str) -> Worktrees:
        """A server's: it runs in no caller's worktree, so each call names its own, which must
        be a worktree of the repository the server runs in (none: every call is refused)."""
        try:
            common: Path | None = Repo.find(cwd).common
        except Invalid:
            common = None
        w = cls(None, common=common, served=served)
        w._closed = common is None
        return w

    _closed = False

    @property
    def default(self) -> Repo | None:
        if not self._found:
            self._found = True
            try:
                self._default = Repo.find(self._cwd)
            except Invalid:
                self._default = None
        return self._default

    @property
    def common(self) -> Path | None:
        if self._common is not None:
            return self._common
        d = self.default
        return d.common if d is not None else None

    def __call__(self, path: str | None) -> GitWorktree:
        if path is None:
            if self.default is None:
                raise Invalid(
                    "worktree",
                    f"{self.served} does not run in your git worktree: give worktree, the absolute path of the worktree you work in",
                )
            return GitWorktree(self.default)
        if self._closed:
            raise Invalid("worktree", f"{self.served} does not run inside a git repository, so it creates no files in worktrees")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise Invalid("worktree", f"must be an absolute path, got {str(path)[:200]!r}")
        if not os.path.isdir(path):
            raise Invalid("worktree", f"{path} is not a directory on the machine {self.served} runs on")
        repo = Repo.find(path)
        if self.common is not None and os.path.realpath(repo.common) != os.path.realpath(self.common):
            raise Invalid("worktree", f"{path} is not a worktree of the repository whose store this is ({self.common})")
        return GitWorktree(repo)


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-@+:]+")


def agent_from_worktree(repo: Repo) -> str:
    """The agent name of a worktree: its directory's name (in the agent-name alphabet), with
    a short hash of its path when another worktree of the repository has the same name."""
    base = _name_of(repo.top)
    try:
        others = [w.path for w in repo.worktrees() if os.path.realpath(w.path) != os.path.realpath(repo.top)]
    except Exception:  # noqa: BLE001 - naming must not fail on a broken worktree list
        others = []
    if any(_name_of(p) == base for p in others):
        digest = hashlib.sha256(os.path.realpath(repo.top).encode()).hexdigest()[:6]
        return f"{base[:120]}-{digest}"
    return base


def _name_of(path: Path) -> str:
    name = unicodedata.normalize("NFKD", Path(path).name).encode("ascii", "ignore").decode()
    name = _NAME_CHARS.sub("-", name).strip("-.") or "worktree"
    return name[:128]
