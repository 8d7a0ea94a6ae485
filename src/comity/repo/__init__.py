"""The repository face: git worktrees and branches sharing one store.

Migration numbers from one authority across every worktree and branch; git hooks
that refuse a commit colliding with another agent's work (a migration number, an
exclusive reservation, a recorded decision, a task lease taken over); ``doctor`` for
what slipped past.  The git hook imports this package on every commit, so its names
load on first use (PEP 562) and importing it loads no CLI code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._git import GitFailed, Repo
    from .doctor import doctor
    from .hooks import install, pre_commit, uninstall
    from .intent import decide_on_commit
    from .migrations import Template, check, new_migration, renumber

__all__ = [
    "Repo",
    "GitFailed",
    "Template",
    "new_migration",
    "check",
    "renumber",
    "install",
    "uninstall",
    "pre_commit",
    "decide_on_commit",
    "doctor",
]

_WHERE = {
    "Repo": "._git",
    "GitFailed": "._git",
    "Template": ".migrations",
    "new_migration": ".migrations",
    "check": ".migrations",
    "renumber": ".migrations",
    "install": ".hooks",
    "uninstall": ".hooks",
    "pre_commit": ".hooks",
    "decide_on_commit": ".intent",
    "doctor": ".doctor",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value
