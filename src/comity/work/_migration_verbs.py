"""The numbered-file verbs of :class:`comity.work.Agent`: ``migration_new`` and
``migration_check`` work in the caller's git worktree (a seam, :class:`Worktrees`, that
the faces supply from :mod:`comity.repo.worktree`); ``migration_take`` and
``migration_dirs`` are the store's half, which a client that creates the file itself
(``comity.remote.RemoteAgent``) calls over HTTP."""

from __future__ import annotations

from typing import Any

from ..errors import Invalid, Step
from ..store import Session
from .numbers import LocalNumbers, Worktree, Worktrees, slug_of, take

__all__ = ["MigrationVerbs", "MIGRATION_VERBS", "unit_of"]

MIGRATION_VERBS = ["migration_new", "migration_check", "migration_take", "migration_dirs"]


def unit_of(slug: str, task: str | None, request_id: str | None) -> str | None:
    """What one number is for: a task and a slug (a retry, a successor get the same number),
    else the request (a retry gets the same number), else nothing (each call a new one)."""
    if task:
        return f"{task}/{slug_of(slug)}"
    if request_id:
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
            raise Invalid("request_id", "must be a string of 1 to 128 characters")
        return f"request/{request_id}"
    return None


class MigrationVerbs:
    session: Session
    worktrees: Worktrees | None

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _worktree(self, path: str | None) -> Worktree:
        if self.worktrees is None:
            raise Invalid(
                "worktree",
                "a comity server does not run beside your files, so it cannot create one in your git worktree: "
                "take the number here and create the file yourself (or call this through a client running in your worktree)",
                next=[Step("migration_take", {"dir": "DIR", "slug": "SLUG", "floor": "the highest number in DIR anywhere"},
                           "takes the number and records the file's name; then create the file")],
            )
        return self.worktrees(path)

    def migration_new(
        self,
        slug: str,
        dir: str | None = None,
        template: str | None = None,
        task: str | None = None,
        worktree: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        if self.session.agent is None:
            raise Invalid("agent", "taking a migration number needs an agent name")
        unit = unit_of(slug, task, request_id)
        rec = self._worktree(worktree).new_migration(LocalNumbers(self.session), slug, dir, template=template, task=task, unit=unit)
        return self._answer(rec)

    def migration_check(self, dir: str | None = None, template: str | None = None, worktree: str | None = None) -> dict[str, Any]:
        problems = self._worktree(worktree).check_migrations(LocalNumbers(self.session), dir, template=template)
        return self._answer({"ok": not problems, "problems": problems})

    def migration_take(
        self,
        dir: str,
        slug: str,
        template: str | None = None,
        guess: str | None = None,
        floor: int = 0,
        unit: str | None = None,
        revision: str | None = None,
        task: str | None = None,
        worktree: str | None = None,
        branch: str | None = None,
        detail: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        if unit is None:
            unit = unit_of(slug, None, request_id)
        rec = take(self.session, dir, slug, template=template, guess=guess, floor=floor, unit=unit, revision=revision,
                   worktree=worktree, branch=branch, task=task, detail=detail)  # fmt: skip
        return self._answer(rec)

    def migration_dirs(self) -> dict[str, Any]:
        return self._answer({"dirs": LocalNumbers(self.session).dirs()})
