"""Decisions taken from git: the added and removed lines of a commit, per file."""

from __future__ import annotations

from ..coord.reservations import normalize, overlaps
from ..errors import NotFound
from ..store import Session
from ..work.decisions import Decision, decide
from ._git import Repo, parse_diff

__all__ = ["decide_on_commit", "commit_changes"]


def commit_changes(repo: Repo, commit: str, paths: list[str]) -> dict[str, dict[str, list[str]]]:
    """Per file under ``paths``, the lines ``commit`` added and removed (``git show``)."""
    text = repo.git("show", "-U0", "--format=", "--no-color", "--no-ext-diff", "--no-renames", commit, "--", *paths)
    return {p: {"added": d.added, "removed": d.removed} for p, d in parse_diff(text).items() if d.added or d.removed}


def decide_on_commit(session: Session, repo: Repo, text: str, paths: list[str], commit: str | None = None) -> tuple[Decision, list[str]]:
    """Record a decision on ``paths`` (relative to the repository root) with the lines
    ``commit`` (default HEAD) changed there; returns it and the paths the commit did not touch."""
    norm = list(dict.fromkeys(normalize(p) for p in paths))
    rev = commit or "HEAD"
    sha = repo.git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False).decode().strip()
    if not sha:
        if commit is not None:
            raise NotFound(f"no commit {commit!r} in this repository")
        return decide(session, text, norm), norm  # no commits yet: the intent alone
    changes = commit_changes(repo, sha, norm)
    untouched = [p for p in norm if not any(f == p or f.startswith(p.rstrip("/") + "/") or _glob(p, f) for f in changes)]
    return decide(session, text, norm, commit=sha, changes=changes), untouched


def _glob(pattern: str, path: str) -> bool:
    return any(c in pattern for c in "*?[") and overlaps(path, pattern)
