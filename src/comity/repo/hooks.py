"""The pre-commit and commit-msg hooks: install them, and the checks they run.

``install`` writes small shell hooks into the hooks directory git uses (honouring
``core.hooksPath``).  A hook already there is never replaced: it is moved aside to
``<name>.pre-comity`` and our hook runs it first, passing its arguments and failing
when it fails.  Installing again rewrites only comity's own script.

The hook runs ``python -m comity.repo.hook``, which imports the store and the
coordination layer only (no click, no rich), and refuses the commit when:

- a staged new migration's number is used by another file in another worktree or
  local branch (the message names that file, its worktree or branch, and the agent
  that took the number);
- a staged path is under another agent's live exclusive reservation;
- the staged diff undoes a decision another agent recorded (removes lines its commit
  added, or restores lines it removed) and this agent has not run ``comity decide ack``;
- the commit is made under a task (``COMITY_TASK``, ``COMITY_TOKEN``; or a
  ``Comity-Task:`` trailer, checked by the commit-msg hook) whose lease this agent
  (``COMITY_AGENT``) no longer holds.

``git commit --no-verify`` skips it (a person's escape); ``comity doctor`` finds what
slipped past.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..coord.reservations import overlaps, reservations
from ..errors import Invalid
from ..store import Session
from ..work.decisions import Decision, Undo, acknowledge, decisions
from ..work.tasks import parse_task_id, task_key
from ._git import GitFailed, Repo, parse_diff
from .migrations import CONVENTIONAL, Migration, Problem, Template, _guess, record_of, registered_dirs, survey

__all__ = ["HOOKS", "MARK", "install", "uninstall", "pre_commit", "commit_msg", "hooks_dir", "Report"]

HOOKS = ("pre-commit", "commit-msg")
MARK = "# comity-hook v1"
CHAINED = ".pre-comity"

_SCRIPT = """\
#!/bin/sh
{mark}: installed by `comity hooks install`; `comity hooks uninstall` restores what was here.
# A hook that was here before is kept as {name}{chained} and runs first.
here=$(dirname "$0")
if [ -x "$here/{name}{chained}" ]; then
    "$here/{name}{chained}" "$@" || exit $?
fi
{prefilter}python={python}
if [ ! -x "$python" ]; then
    echo "comity: $python is gone; skipping comity's {name} checks (run \\`comity hooks install\\` again)" >&2
    exit 0
fi
exec "$python" -m comity.repo.hook {name} "$@"
"""


def hooks_dir(repo: Repo) -> Path:
    """The directory git runs hooks from here (``core.hooksPath`` if set)."""
    out = repo.git("rev-parse", "--path-format=absolute", "--git-path", "hooks").decode().strip()
    return Path(out)


def _ours(path: Path) -> bool:
    try:
        return MARK in path.read_text(errors="replace")[:400]
    except OSError:
        return False


def install(repo: Repo, *, python: str | None = None) -> dict[str, Any]:
    """Install (or refresh) the hooks; returns what was written and what was chained."""
    d = hooks_dir(repo)
    d.mkdir(parents=True, exist_ok=True)
    py = python or sys.executable
    done: list[dict[str, Any]] = []
    for name in HOOKS:
        path = d / name
        chained: str | None = None
        if (path.exists() or path.is_symlink()) and not _ours(path):
            aside = d / (name + CHAINED)
            if aside.exists() or aside.is_symlink():
                raise Invalid(
                    "hooks",
                    f"{path} is not comity's and {aside} already exists; merge them by hand, then run this again",
                )
            os.rename(path, aside)
            chained = str(aside)
        elif (d / (name + CHAINED)).exists():
            chained = str(d / (name + CHAINED))
        # commit-msg has work only when the message names a task: spare every other commit a Python start.
        prefilter = "grep -qi '^comity-task:' \"$1\" 2>/dev/null || exit 0\n" if name == "commit-msg" else ""
        text = _SCRIPT.format(mark=MARK, name=name, chained=CHAINED, python=shlex.quote(py), prefilter=prefilter)
        tmp = d / f".{name}.comity-tmp"
        tmp.write_text(text)
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
        os.replace(tmp, path)
        done.append({"hook": str(path), "chained": chained})
    if py == sys.executable:
        _precompile()
    return {"dir": str(d), "hooks": done, "python": py}


def _precompile() -> None:
    """Byte-compile comity now, so a hook run under PYTHONDONTWRITEBYTECODE does not
    compile it again on every commit (compileall writes regardless of that setting)."""
    import compileall

    try:
        compileall.compile_dir(str(Path(__file__).resolve().parents[1]), quiet=2)
    except OSError:
        pass  # a read-only installation already ships its bytecode


def uninstall(repo: Repo) -> dict[str, Any]:
    """Remove comity's hooks, putting back any hook they had chained."""
    d = hooks_dir(repo)
    done = []
    for name in HOOKS:
        path = d / name
        aside = d / (name + CHAINED)
        if _ours(path):
            path.unlink()
            restored = False
            if aside.exists() or aside.is_symlink():
                os.rename(aside, path)
                restored = True
            done.append({"hook": str(path), "restored": restored})
    return {"dir": str(d), "removed": done}


# -------------------------------------------------------------------------- checks


@dataclass(slots=True)
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not refusals: decisions on touched paths

    @property
    def ok(self) -> bool:
        return not self.problems


def staged(repo: Repo) -> list[tuple[str, str]]:
    """(status letter, path) of every staged change, renames as a delete and an add."""
    out = repo.git("diff", "--cached", "--name-status", "-z", "--no-renames", "--no-ext-diff").decode(errors="replace")
    parts = out.split("\0")
    rows = []
    for i in range(0, len(parts) - 1, 2):
        rows.append((parts[i][:1], parts[i + 1]))
    return rows


def _migration_dirs(session: Session, repo: Repo, added: list[str]) -> dict[str, Template]:
    reg = registered_dirs(session)
    dirs: dict[str, Template] = {}
    for path in added:
        d = os.path.dirname(path)
        if d in reg:
            dirs[d] = reg[d]
        elif os.path.basename(d) in CONVENTIONAL:
            dirs[d] = _guess(repo.top / d, d)
    return dirs


def _who(session: Session, d: str, m: Migration) -> str:
    if m.number is None:
        return ""
    rec = record_of(session, d, m.number)
    if rec is None or os.path.basename(str(rec.get("file", ""))) != m.name:
        return "; its number was not taken through comity"
    task = f" for task {rec['task']}" if rec.get("task") else ""
    return f"; number taken by agent {rec.get('agent')}{task} in worktree {rec.get('worktree')}"


def check_migrations(session: Session, repo: Repo, changes: list[tuple[str, str]]) -> list[Problem]:
    added = [p for s, p in changes if s == "A"]
    # A file this commit deletes is being renamed (git mv): its old name elsewhere is not a rival.
    deleted = {p for s, p in changes if s == "D"}
    dirs = _migration_dirs(session, repo, added)
    out: list[Problem] = []
    for d, tpl in dirs.items():
        mine = [os.path.basename(p) for p in added if os.path.dirname(p) == d and tpl.number_of(os.path.basename(p)) is not None]
        if not mine:
            continue
        found = survey(repo, d, tpl, numbers={n for n in (tpl.number_of(x) for x in mine) if n is not None})
        for name in mine:
            n = tpl.number_of(name)
            others = [m for m in found.values() if m.number == n and m.name != name and m.path not in deleted]
            for m in others:
                out.append(
                    Problem(
                        "duplicate-number",
                        f"{d}/{name}: number {n} is already used by {m.path} in {'; '.join(m.places)}{_who(session, d, m)}",
                        f"take a fresh number: `comity migrations new SLUG --dir {d}` and move your SQL there,"
                        f" or `comity migrations renumber --dir {d}`; then `git add` and commit again",
                        {"file": f"{d}/{name}", "number": n, "other": m.path, "places": m.places},
                    )
                )
    return out


def check_reservations(session: Session, agent: str | None, paths: list[str]) -> list[Problem]:
    live = [r for r in reservations(session) if not r.shared and r.holder != agent]
    if not live:
        return []
    now = session.now()
    out = []
    for p in paths:
        for r in live:
            if overlaps(p, r.pattern):
                who = "" if agent else " (set COMITY_AGENT if this reservation is yours)"
                out.append(
                    Problem(
                        "reserved",
                        f"{p} is under {r.holder}'s exclusive reservation {r.pattern!r} (token {r.token}, {r.expires - now:.0f}s left){who}",
                        f"leave {p} out of this commit (`git restore --staged {p}`), or ask {r.holder} to"
                        f" `comity release {r.pattern}`",
                        {"path": p, "holder": r.holder, "pattern": r.pattern},
                    )
                )
                break
    return out


def decided_diffs(repo: Repo, paths: list[str], *args: str) -> dict[str, tuple[list[str], list[str]]]:
    if not paths:
        return {}
    text = repo.git(*args, "-U0", "--no-color", "--no-ext-diff", "--no-renames", "--", *paths)
    return {p: (d.added, d.removed) for p, d in parse_diff(text).items()}


def undoing(ds: list[Decision], diffs: dict[str, tuple[list[str], list[str]]]) -> list[tuple[Decision, Undo]]:
    found = []
    for d in ds:
        for path, (added, removed) in diffs.items():
            u = d.undone_by(path, added, removed)
            if u is not None:
                found.append((d, u))
    return found


def _undo_problem(d: Decision, u: Undo, where: str) -> Problem:
    bits = []
    if u.removes:
        bits.append(f"removes {len(u.removes)} line(s) its commit added, e.g. {u.removes[0]!r}")
    if u.restores:
        bits.append(f"restores {len(u.restores)} line(s) it removed, e.g. {u.restores[0]!r}")
    commit = f" (commit {d.commit[:10]})" if d.commit else ""
    return Problem(
        "undoes-decision",
        f"{where} {u.path} undoes decision {d.id} by {d.agent}{commit}: \"{d.text}\"; it {' and '.join(bits)}",
        f"keep those lines, or if you mean to undo it: read it (`comity decisions {u.path}`), then"
        f" `comity decide ack {d.id}` and commit again",
        {"decision": d.id, "path": u.path, "removes": u.removes, "restores": u.restores, "by": d.agent},
    )


def check_decisions(session: Session, repo: Repo, agent: str | None, paths: list[str], report: Report) -> None:
    all_ds = decisions(session)
    ds = [d for d in all_ds if any(d.covers(p) for p in paths)]
    if not ds:
        return
    for d in ds:
        if d.agent != agent:
            report.notes.append(f"decision {d.id} by {d.agent} on {', '.join(d.paths)}: {d.text}")
    others = [d for d in ds if d.agent != agent]
    files = sorted({p for p in paths for d in others if p in d.changes})
    diffs = decided_diffs(repo, files, "diff", "--cached")
    tree: str | None = None
    for d, u in undoing(others, diffs):
        if agent is not None and agent in d.acks:
            # Acknowledged: let it through, and remember this tree so doctor does not report it.
            if tree is None:
                tree = repo.git("write-tree").decode().strip()
            try:
                acknowledge(session, d.id, tree=tree)
            except Exception:  # noqa: BLE001 - a note for doctor must never block a commit
                pass
            continue
        report.problems.append(_undo_problem(d, u, "staged change to"))


def check_task(session: Session, agent: str | None, task: str | None, token: str | None, source: str) -> list[Problem]:
    if not task:
        return []
    try:
        tid = parse_task_id(task, "COMITY_TASK")
    except Invalid as e:
        return [Problem("task", f"{source}: {e.message}", "fix the task id (it looks like T-12)")]
    if not agent:
        return [Problem("task", f"this commit is made under task {tid} but COMITY_AGENT is not set",
                        "set COMITY_AGENT to the agent holding the task's lease, or unset COMITY_TASK")]
    tok: int | None = None
    if token:
        try:
            tok = int(token)
        except ValueError:
            return [Problem("task", f"the fencing token {token!r} is not a number", "use the token `comity task claim` printed")]
    rows, now = session.leases(task_key(tid), limit=1)
    lease = next((r for r in rows if r.resource == task_key(tid)), None)
    fix = f"stop: see `comity task show {tid}`; if the work is still yours, claim it again (`comity task claim {tid}`)"
    if lease is None:
        return [Problem("task", f"this commit is made under task {tid} ({source}), which nobody ever claimed", fix)]
    if lease.holder != agent:
        held = any(e.get("agent") == agent and e.get("op") == "task.claim" for e in session.log(task_key(tid), limit=10_000))
        v = session.get(task_key(tid))
        record = v.values[0] if len(v.values) == 1 and isinstance(v.values[0], dict) else {}
        status = record.get("status")
        detail = {"task": tid, "holder": lease.holder, "token": lease.token, "state": status}
        live = bool(lease.holder) and lease.expires > now
        if status in ("done", "failed", "submitted"):
            what = {"done": "completed", "failed": "marked failed", "submitted": "submitted for verification"}[status]
            by = f" by {record['completed_by']}" if record.get("completed_by") else ""
            mine = f"{agent} never claimed it" if not held else f"{agent}'s claim on it had ended"
            return [Problem("task", f"this commit names task {tid} ({source}), which was {what}{by}; {mine}",
                            f"this work is not under {tid}: remove the Comity-Task trailer (or unset COMITY_TASK), or name the "
                            f"task you hold; see `comity task show {tid}`", detail)]  # fmt: skip
        now_held = f"it is held by {lease.holder} (token {lease.token})" if live else "nobody holds it now"
        if not held:
            return [Problem("task", f"{agent} never claimed task {tid} ({source}); {now_held}",
                            f"claim it before committing under it (`comity task claim {tid}`), or name the task you hold", detail)]
        holder = f"now held by {lease.holder} (token {lease.token})" if live else "released or expired"
        return [Problem("task", f"{agent} no longer holds task {tid} ({source}): its lease is {holder}", fix, detail)]
    if tok is not None and tok != lease.token:
        return [Problem("task", f"token {tok} for task {tid} was superseded by token {lease.token} ({source})", fix,
                        {"task": tid, "token": lease.token})]
    if lease.expires <= now:
        return [Problem("task", f"{agent}'s lease on task {tid} expired {now - lease.expires:.0f}s ago ({source})",
                        f"renew it if nobody took it: `comity task claim {tid}`", {"task": tid})]
    return []


def built_on_refuted(session: Session, repo: Repo, rev: str, where: str) -> list[Problem]:
    """``rev`` has among its ancestors the commit of a change that is refuted or tainted."""
    from ..work.changes import Changes

    bad = [c for c in Changes(session).find() if c["state"] in ("refuted", "tainted") and c.get("commit")]
    if not bad or not repo.git("rev-parse", "--verify", "-q", rev, check=False).strip():
        return []
    out = []
    for c in bad:
        if not _is_ancestor(repo, c["commit"], rev):
            continue
        why = (f"refuted by {c['refuted'].get('by')}: {c['refuted'].get('reason')}" if c["state"] == "refuted"
               else f"built on refuted {', '.join(c['tainted_by'])}")
        out.append(Problem(
            "built-on-refuted",
            f"{where} is built on commit {c['commit'][:10]} of change {c['id']} by {c['author']}, which is {c['state']} ({why})",
            f"rebase off {c['commit'][:10]} (or revert it), or wait until {c['id']} is verified again; see `comity why {c['id']}`",
            {"change": c["id"], "commit": c["commit"], "state": c["state"]},
        ))  # fmt: skip
    return out


def _is_ancestor(repo: Repo, commit: str, rev: str) -> bool:
    try:
        repo.git("merge-base", "--is-ancestor", commit, rev)
    except GitFailed:  # exit 1 (not an ancestor), or a commit this repository does not have
        return False
    return True


def pre_commit(session: Session, repo: Repo, env: dict[str, str]) -> Report:
    """Every check of a commit about to be made in ``repo``, with the agent's environment."""
    agent = env.get("COMITY_AGENT") or None
    report = Report()
    changes = staged(repo)
    paths = sorted({p for _, p in changes})
    if not paths:
        return report
    report.problems += check_task(session, agent, env.get("COMITY_TASK"), env.get("COMITY_TOKEN"), "COMITY_TASK")
    report.problems += check_migrations(session, repo, changes)
    report.problems += check_reservations(session, agent, paths)
    check_decisions(session, repo, agent, paths, report)
    report.problems += built_on_refuted(session, repo, "HEAD", "this commit")
    return report


_TRAILER = re.compile(r"^Comity-(Task|Token):[ \t]*(\S+)[ \t]*$", re.M | re.I)


def commit_msg(session: Session, message: str, env: dict[str, str]) -> Report:
    """The ``Comity-Task:`` (and ``Comity-Token:``) trailers of a commit message."""
    found = {k.lower(): v for k, v in _TRAILER.findall(message)}
    report = Report()
    task = found.get("task")
    if task is None:
        return report
    if env.get("COMITY_TASK") and env["COMITY_TASK"] == task and not found.get("token"):
        return report  # the pre-commit hook checked it already
    token = found.get("token") or env.get("COMITY_TOKEN")
    report.problems += check_task(session, env.get("COMITY_AGENT") or None, task, token, "Comity-Task trailer")
    return report
