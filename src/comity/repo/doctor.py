"""``comity doctor``: what slipped past the hooks (``--no-verify``, hooks not installed).

Scans every worktree and local branch for duplicate migration numbers and several
migration heads, the store for reservations held by agents that are suspected or have
gone silent, and the commits of local branches since each decision's commit for
changes that undid it.  Each problem says how to fix it.
"""

from __future__ import annotations

from typing import Any

from ..coord.liveness import agents
from ..coord.reservations import reservations
from ..store import Session
from ..work.decisions import Decision, accepted, decisions
from ._git import Repo, parse_diff
from .hooks import _undo_problem, built_on_refuted
from .migrations import Problem, all_dirs, duplicates, several_heads, survey

__all__ = ["doctor", "DEFAULT_SILENT_S"]

DEFAULT_SILENT_S = 1800.0
_MAX_COMMITS = 2000


def _silent_holders(session: Session, silent_s: float) -> list[Problem]:
    live = reservations(session)
    if not live:
        return []
    status = {a.agent: a for a in agents(session, ttl=min(silent_s, 300.0))}
    out = []
    for r in live:
        a = status.get(r.holder)
        if a is None:
            why = "has taken no action in the recent log"
        elif a.suspected:
            why = f"is suspected (phi {a.phi:.1f}, silent {a.silent_s or 0:.0f}s)"
        elif a.silent_s is not None and a.silent_s > silent_s:
            why = f"has been silent for {a.silent_s:.0f}s"
        else:
            continue
        out.append(
            Problem(
                "reserved-by-silent-agent",
                f"{r.holder} holds the {'shared' if r.shared else 'exclusive'} reservation {r.pattern!r} but {why}",
                f"ask {r.holder}'s owner; if it is gone, release it on its behalf:"
                f" `comity --agent {r.holder} release {r.pattern}` (it also expires by itself)",
                {"holder": r.holder, "pattern": r.pattern, "token": r.token},
            )
        )
    return out


def _commits(repo: Repo, d: Decision, branches: list[str]) -> list[tuple[str, str]]:
    """(commit, tree) of the commits on local branches since ``d``'s commit that touch its files."""
    files = sorted(d.changes)
    if not files or not d.commit or not branches:
        return []
    ok = repo.git("rev-parse", "--verify", "-q", f"{d.commit}^{{commit}}", check=False).strip()
    if not ok:
        return []
    out = repo.git(
        "log", f"--max-count={_MAX_COMMITS}", "--format=%H %T", *branches, f"^{d.commit}", "--", *files, check=False
    ).decode()
    rows = []
    for line in out.splitlines():
        sha, _, tree = line.partition(" ")
        if sha:
            rows.append((sha, tree))
    return rows


def _undid_decisions(session: Session, repo: Repo) -> list[Problem]:
    ds = [d for d in decisions(session) if d.changes and d.commit]
    if not ds:
        return []
    branches = [name for name, _ in repo.branches()]
    refs = [f"refs/heads/{b}" for b in branches]
    out: list[Problem] = []
    for d in ds:
        for sha, tree in _commits(repo, d, refs):
            text = repo.git("show", "-U0", "--format=", "--no-color", "--no-ext-diff", "--no-renames", sha, "--", *sorted(d.changes))
            for path, diff in parse_diff(text).items():
                u = d.undone_by(path, diff.added, diff.removed)
                if u is None or accepted(session, d.id, tree):
                    continue
                holders = repo.git("branch", "--format=%(refname:short)", "--contains", sha, check=False).decode().split()
                p = _undo_problem(d, u, f"commit {sha[:10]} (on {', '.join(holders) or 'no branch'}):")
                p.kind = "undid-decision"
                p.fix = (
                    f"restore the decided lines (`git revert {sha[:10]}` or edit them back); if the undo was meant,"
                    f" record it: `comity decide ack {d.id} --commit {sha[:10]}`"
                )
                p.detail.update({"commit": sha, "branches": holders})
                out.append(p)
    return out


def doctor(session: Session, repo: Repo, *, silent_s: float = DEFAULT_SILENT_S) -> dict[str, Any]:
    """Every problem found, with how to fix each; ``ok`` when there are none."""
    problems: list[Problem] = []
    dirs = all_dirs(session, repo)
    for d, tpl in sorted(dirs.items()):
        found = survey(repo, d, tpl)
        problems += duplicates(d, found)
        problems += several_heads(repo, d, tpl, found)
    problems += _silent_holders(session, silent_s)
    problems += _undid_decisions(session, repo)
    for branch, _ in repo.branches():
        problems += built_on_refuted(session, repo, f"refs/heads/{branch}", f"branch {branch}")
    return {
        "ok": not problems,
        "problems": [p.to_json() for p in problems],
        "scanned": {
            "migration_dirs": sorted(dirs),
            "worktrees": [str(w.path) for w in repo.worktrees()],
            "branches": len(repo.branches()),
        },
    }
