"""Migration numbers across worktrees and branches: allocate, check, renumber.

Two agents in two worktrees both writing ``migrations/0267_*.sql`` is a lost update:
each saw the directory before the other wrote.  Numbers here come from one authority,
the store's sequence ``migrations/<dir>``, seeded from the highest number found in
``<dir>`` in every worktree (on disk, committed or not) and every local branch.

Seeding is safe across processes: a context-guarded write raises the sequence to at
least the seen maximum (never lowers it; a stale context re-reads and retries), then
the number is taken with ``Next`` in its own transaction, which no two callers can
share.  Two processes that seed concurrently both raise to at least the same floor,
and ``Next`` hands them distinct numbers above it; a number that a hand-written file
took meanwhile (looked up again after allocation) is skipped.  Rails timestamps are allocated by
a context-guarded compare-and-set instead (``max(now, last + 1s)``), so they stay valid
times and are unique per allocation.

Who got which number is recorded in ``@migration/<dir>/<n>`` (agent, worktree, branch,
task); the directory's layout in ``@migration-dir/<dir>``.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import Invalid, NotFound, StaleContext
from ..store import Create, Session
from ..work.numbers import (
    DIR_PREFIX,
    KINDS,
    MIGRATION_PREFIX,
    Template,
    _ts_after,
    allocate,
    dir_key,
    infer_template,
    LocalNumbers,
    Numbers,
    layout_of,
    record_of,
    register_dir,
    registered_dirs,
    slug_of,
)
from ._git import GitFailed, Repo, read_objects, tree_names

__all__ = [
    "KINDS",
    "Template",
    "Migration",
    "Problem",
    "template_for",
    "registered_dirs",
    "register_dir",
    "survey",
    "new_migration",
    "check",
    "renumber",
    "record_of",
    "MIGRATION_PREFIX",
    "DIR_PREFIX",
]

# Directories that hold migrations by convention: found without being registered.
CONVENTIONAL = {"migrations": None, "migrate": "rails", "versions": "alembic"}
_RETRIES = 64



def template_for(session: Session, repo: Repo, d: str, given: str | None = None) -> Template:
    """The layout of ``d``: as given, else as registered, else guessed from its files."""
    if given is not None:
        return Template.parse(given)
    reg = registered_dirs(session).get(d)
    if reg is not None:
        return reg
    return _guess(repo.top / d, d)


def _guess(path: Path, d: str) -> Template:
    try:
        names = sorted(os.listdir(path))
    except OSError:
        names = []
    sample = None
    py = [n for n in names if n.endswith(".py") and n != "__init__.py"]
    if py:
        try:
            sample = (path / py[0]).read_text(errors="replace")[:4000]
        except OSError:
            sample = None
    if not names and CONVENTIONAL.get(os.path.basename(d)):
        return Template.parse(CONVENTIONAL[os.path.basename(d)] or "sql")
    return infer_template(names, sample)


def conventional_dirs(repo: Repo) -> list[str]:
    """Directories of HEAD's tree named like migration directories."""
    out = repo.git("ls-tree", "-r", "-d", "--name-only", "-z", "HEAD", check=False)
    return [p for p in out.decode(errors="replace").split("\0") if p and os.path.basename(p) in CONVENTIONAL]


def all_dirs(session: Session | Numbers, repo: Repo) -> dict[str, Template]:
    """Every migration directory: those numbers were taken in, and those named like one in HEAD's tree."""
    if isinstance(session, Session):
        dirs = registered_dirs(session)
    else:
        dirs = {d: Template.parse(spec) for d, spec in session.dirs().items()}
    for d in conventional_dirs(repo):
        if d not in dirs:
            dirs[d] = _guess(repo.top / d, d)
    return dirs


# ------------------------------------------------------------------------ survey


@dataclass(slots=True)
class Migration:
    """One migration file and every place it was seen."""

    dir: str
    name: str
    number: int | None
    places: list[str] = field(default_factory=list)  # "worktree PATH (branch B)", "branch B"
    here: bool = False  # on disk in the current worktree
    oid: str | None = None  # a blob holding it, when seen on a branch
    disk: Path | None = None  # a file holding it, when seen in a worktree

    @property
    def path(self) -> str:
        return f"{self.dir}/{self.name}" if self.dir else self.name

    def content(self, blobs: dict[str, bytes]) -> str:
        if self.disk is not None:
            try:
                return self.disk.read_text(errors="replace")
            except OSError:
                pass
        if self.oid is not None and self.oid in blobs:
            return blobs[self.oid].decode(errors="replace")
        return ""


def survey(repo: Repo, d: str, template: Template, *, numbers: set[int] | None = None) -> dict[str, Migration]:
    """Every migration file of ``d`` in every worktree (on disk) and local branch, by name;
    only those numbered ``numbers``, if given (the hook's question: fast on large trees)."""
    found: dict[str, Migration] = {}
    needles = None if numbers is None else tuple(x for n in numbers for x in template.needles(n))
    text_needles = None if numbers is None else tuple(str(n) for n in numbers)

    def add(name: str, place: str, *, here: bool = False, oid: str | None = None, disk: Path | None = None) -> None:
        if text_needles is not None and not any(t in name for t in text_needles):
            return
        if not template.matches(name):
            return
        number = template.number_of(name)
        if numbers is not None and number not in numbers:
            return
        m = found.get(name)
        if m is None:
            m = found[name] = Migration(d, name, number)
        if place not in m.places:
            m.places.append(place)
        m.here = m.here or here
        m.oid = m.oid or oid
        m.disk = m.disk or disk

    for wt in repo.worktrees():
        if wt.bare or wt.prunable:
            continue
        where = wt.path / d
        try:
            names = os.listdir(where)
        except OSError:
            continue
        label = f"worktree {wt.path}" + (f" (branch {wt.branch})" if wt.branch else " (detached)")
        here = repo.is_here(wt)
        for name in names:
            add(name, label, here=here, disk=where / name)
    refs = repo.branches()
    objs = read_objects(repo, [f"{oid}:{d}" if d else f"{oid}^{{tree}}" for _, oid in refs])
    parsed: dict[str, list[tuple[str, str, str]]] = {}
    for name, oid in refs:
        obj = objs.get(f"{oid}:{d}" if d else f"{oid}^{{tree}}")
        if obj is None or obj[1] != "tree":
            continue
        entries = parsed.get(obj[0])
        if entries is None:
            if needles is not None and not any(x in obj[2] for x in needles):
                entries = []  # no entry of this tree can carry a wanted number
            else:
                entries = tree_names(obj[0], obj[2])
            parsed[obj[0]] = entries
        for mode, fname, blob in entries:
            if not mode.startswith("4"):  # 40000 is a subtree
                add(fname, f"branch {name}", oid=blob)
    return found


# ------------------------------------------------------------------ file contents


def _camel(slug: str) -> str:
    return "".join(p.capitalize() for p in slug.split("_") if p)


def _app_label(d: str) -> str:
    parts = [p for p in d.split("/") if p]
    return parts[-2] if len(parts) >= 2 else (parts[-1] if parts else "app")


_DEP = re.compile(r"""\(\s*['"]([\w.]+)['"]\s*,\s*['"]([\w.]+)['"]\s*\)""")
_REV = re.compile(r"""^revision\s*(?::\s*[\w\[\], ]+)?=\s*['"]([^'"]+)['"]""", re.M)
_DOWN = re.compile(r"""^down_revision\s*(?::\s*[^=]+)?=\s*(.+)$""", re.M)


def django_parents(text: str, app: str) -> list[str]:
    m = re.search(r"dependencies\s*=\s*\[(.*?)\]", text, re.S)
    if m is None:
        return []
    return [name for a, name in _DEP.findall(m.group(1)) if a == app and not name.startswith("__")]


def alembic_ids(text: str) -> tuple[str | None, list[str]]:
    """(revision, down revisions) of an Alembic migration's source."""
    rev = _REV.search(text)
    down = _DOWN.search(text)
    parents: list[str] = []
    if down is not None:
        expr = down.group(1).split("#", 1)[0].strip()
        try:
            value = ast.literal_eval(expr)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, str):
            parents = [value]
        elif isinstance(value, (tuple, list)):
            parents = [x for x in value if isinstance(x, str)]
    return (rev.group(1) if rev else None), parents


def _content(template: Template, d: str, slug: str, n: int, rev: str, parents: list[str], when: str) -> str:
    if template.kind == "sql" or (template.kind == "custom" and template.pattern.endswith(".sql")):
        return f"-- {n:04d} {slug}\n"
    if template.kind == "rails":
        return f"class {_camel(slug)} < ActiveRecord::Migration[7.1]\n  def change\n  end\nend\n"
    if template.kind == "django":
        app = _app_label(d)
        deps = "".join(f'        ("{app}", "{p}"),\n' for p in parents)
        initial = "    initial = True\n\n" if not parents else ""
        return (
            "from django.db import migrations\n\n\n"
            "class Migration(migrations.Migration):\n\n"
            f"{initial}    dependencies = [\n{deps}    ]\n\n    operations = [\n    ]\n"
        )
    if template.kind == "alembic":
        down = "None" if not parents else repr(parents[0]) if len(parents) == 1 else repr(tuple(parents))
        revises = ", ".join(parents) or "None"
        return (
            f'"""{slug.replace("_", " ")}\n\nRevision ID: {rev}\nRevises: {revises}\nCreate Date: {when}\n"""\n\n'
            f'revision = "{rev}"\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\n\n'
            "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
        )
    return ""


def _heads_here(path: Path, template: Template, d: str) -> list[str]:
    """The latest migration(s) on disk in this worktree: what a new one follows."""
    try:
        names = sorted(n for n in os.listdir(path) if template.matches(n))
    except OSError:
        return []
    if template.kind == "alembic":
        revs: dict[str, list[str]] = {}
        for n in names:
            rev, parents = alembic_ids((path / n).read_text(errors="replace"))
            if rev:
                revs[rev] = parents
        children = {p for ps in revs.values() for p in ps}
        return sorted(r for r in revs if r not in children)
    numbered = [(template.number_of(n), n) for n in names]
    best = max((num for num, _ in numbered if num is not None), default=None)
    if best is None:
        return []
    return [n.rsplit(".", 1)[0] for num, n in numbered if num == best][:1]


def new_migration(
    session: Session,
    repo: Repo,
    d: str,
    slug: str,
    *,
    template: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Take the next number of ``d``, create the file in this worktree, record who got it
    (:meth:`create_migration` with the store of this process as the authority)."""
    # One task asking again for the same migration (after a crash, a lost answer, or as the
    # successor of an agent presumed dead) gets the number it already holds, not a second one.
    unit = f"{task}/{slug_of(slug)}" if task else None
    return create_migration(LocalNumbers(session), repo, d, slug, template=template, task=task, unit=unit)


def layout_here(numbers: Numbers, repo: Repo, d: str, given: str | None = None) -> Template:
    """The layout of ``d``: as given, else as remembered by the authority, else guessed from its files."""
    if given is not None:
        return Template.parse(given)
    known = numbers.dirs().get(d)
    return Template.parse(known) if known is not None else _guess(repo.top / d, d)


def create_migration(
    numbers: Numbers,
    repo: Repo,
    d: str,
    slug: str,
    *,
    template: str | None = None,
    task: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """The worktree's half of ``migration_new``: the floor from every worktree and local
    branch, a number from ``numbers`` (the store here, or a server), the file created in
    this worktree.  Answers the record with ``path``, the file's absolute path."""
    if numbers.agent is None:
        raise Invalid("agent", "taking a migration number needs an agent name")
    slug = slug_of(slug)
    tpl = layout_here(numbers, repo, d, template)
    seen = survey(repo, d, tpl)
    floor = max((m.number for m in seen.values() if m.number is not None), default=0)
    target = repo.top / d
    target.mkdir(parents=True, exist_ok=True)
    parents = _heads_here(target, tpl, d)
    detail: dict[str, Any] = {}
    if tpl.numbering == "revision":
        detail["down_revision"] = parents
    elif tpl.kind == "django":
        detail["dependencies"] = parents
    branch = repo.branch()
    for _ in range(_RETRIES):
        rev = secrets.token_hex(6) if tpl.numbering == "revision" else None
        rec = numbers.take(d, slug, template=layout_of(tpl), floor=floor, unit=unit, revision=rev,
                           worktree=str(repo.top), branch=branch, task=task, detail=detail)  # fmt: skip
        n = int(rec["number"])
        name = os.path.basename(str(rec["file"]))
        path = target / name
        if rec.get("held") and path.exists():
            break  # this worktree already has the unit's file: nothing to create
        if tpl.numbering != "revision" and any(m.name != name for m in survey(repo, d, tpl, numbers={n}).values()):
            floor = max(floor, n)  # written by hand since the survey, somewhere: skip it
            unit = None  # the unit's number is someone else's file now: take a fresh one
            continue
        when = datetime.fromtimestamp(float(rec.get("time") or 0), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(_content(tpl, d, slug, n, str(rec.get("revision") or ""), parents, when))
            break
        except FileExistsError:
            floor = max(floor, n)  # a file appeared since the survey: take the next one
            unit = None
    else:
        raise StaleContext(f"could not create a new migration in {d}: every number taken was already on disk")
    out = {k: v for k, v in rec.items() if k != "held" or v}
    out["path"] = str(path)
    return out


# ------------------------------------------------------------------------- checks


@dataclass(slots=True)
class Problem:
    """Something a check found, with how to fix it."""

    kind: str  # duplicate-number | several-heads | reserved-by-silent-agent | undid-decision | …
    message: str
    fix: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "fix": self.fix, **self.detail}


def _where(m: Migration) -> str:
    return "; ".join(m.places)


def duplicates(d: str, found: dict[str, Migration]) -> list[Problem]:
    by_number: dict[int, list[Migration]] = {}
    for m in found.values():
        if m.number is not None:
            by_number.setdefault(m.number, []).append(m)
    out = []
    for n, ms in sorted(by_number.items()):
        if len(ms) < 2:
            continue
        ms.sort(key=lambda m: m.name)
        listing = "; ".join(f"{m.path} in {_where(m)}" for m in ms)
        out.append(
            Problem(
                "duplicate-number",
                f"{d}: number {n} is used by {len(ms)} migrations: {listing}",
                f"keep one; in the worktree of each other one run `comity migrations renumber --dir {d}`"
                f" (or `comity migrations new SLUG --dir {d}` and move its contents)",
                {"dir": d, "number": n, "files": [{"file": m.path, "places": m.places} for m in ms]},
            )
        )
    return out


def _blobs(repo: Repo, found: dict[str, Migration]) -> dict[str, bytes]:
    want = [m.oid for m in found.values() if m.disk is None and m.oid is not None]
    objs = read_objects(repo, [o for o in want if o])
    return {k: v[2] for k, v in objs.items() if v is not None}


def graph(repo: Repo, d: str, template: Template, found: dict[str, Migration]) -> dict[str, tuple[Migration, list[str]]]:
    """node -> (migration, parents): Django names or Alembic revisions."""
    blobs = _blobs(repo, found)
    nodes: dict[str, tuple[Migration, list[str]]] = {}
    app = _app_label(d)
    for m in found.values():
        text = m.content(blobs)
        if template.kind == "alembic":
            rev, parents = alembic_ids(text)
            if rev:
                nodes[rev] = (m, parents)
        else:
            nodes[m.name.rsplit(".", 1)[0]] = (m, django_parents(text, app))
    return nodes


def several_heads(repo: Repo, d: str, template: Template, found: dict[str, Migration]) -> list[Problem]:
    if template.kind not in ("django", "alembic"):
        return []
    nodes = graph(repo, d, template, found)
    children: dict[str, set[str]] = {}
    for node, (_, parents) in nodes.items():
        for p in parents:
            children.setdefault(p, set()).add(node)
    heads = sorted(n for n in nodes if n not in children)
    if len(heads) < 2:
        return []
    shared = {p: sorted(cs) for p, cs in children.items() if len(cs) > 1}
    listing = "; ".join(f"{nodes[h][0].path} in {_where(nodes[h][0])}" for h in heads)
    parent_note = "".join(f"; {', '.join(cs)} all follow {p}" for p, cs in sorted(shared.items()))
    if template.kind == "alembic":
        fix = (f"after the other branch merges, run `comity migrations renumber --dir {d}` on yours (rewrites"
               " down_revision onto main's head), or add a merge revision (`alembic merge heads`)")
    else:
        fix = (f"after the other branch merges, run `comity migrations renumber --dir {d}` on yours,"
               " or add a merge migration (`python manage.py makemigrations --merge`)")
    return [
        Problem(
            "several-heads",
            f"{d}: {len(heads)} heads: {listing}{parent_note}",
            fix,
            {"dir": d, "heads": [{"node": h, "file": nodes[h][0].path, "places": nodes[h][0].places} for h in heads]},
        )
    ]


def check(session: Session | Numbers, repo: Repo, d: str | None = None, template: str | None = None) -> list[Problem]:
    """Duplicate numbers (and, for Django and Alembic, several heads) across every worktree
    and local branch, in ``d`` or every known migration directory."""
    numbers = LocalNumbers(session) if isinstance(session, Session) else session
    dirs = {d: layout_here(numbers, repo, d, template)} if d is not None else all_dirs(numbers, repo)
    out: list[Problem] = []
    for name, tpl in sorted(dirs.items()):
        found = survey(repo, name, tpl)
        out += duplicates(name, found)
        out += several_heads(repo, name, tpl, found)
    return out


# ----------------------------------------------------------------------- renumber


def _names_at(repo: Repo, rev: str, d: str) -> dict[str, str]:
    obj = read_objects(repo, [f"{rev}:{d}" if d else f"{rev}^{{tree}}"]).get(f"{rev}:{d}" if d else f"{rev}^{{tree}}")
    if obj is None or obj[1] != "tree":
        return {}
    return {name: oid for mode, name, oid in tree_names(obj[0], obj[2]) if not mode.startswith("4")}


def renumber(
    session: Session,
    repo: Repo,
    d: str,
    *,
    onto: str = "main",
    template: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Move this branch's new migrations of ``d`` past ``onto``'s, so they merge in order.

    New migrations are those in this worktree that neither ``onto`` nor the merge base
    has.  Numbered layouts: if any new number is not above ``onto``'s highest, every new
    file is renamed (``git mv`` when tracked) to fresh numbers in the same order, and
    Django dependencies follow.  Alembic: the first new revision's ``down_revision`` is
    rewritten to ``onto``'s head."""
    if session.agent is None and not dry_run:
        raise Invalid("agent", "renumbering takes new numbers: pass --agent NAME or set COMITY_AGENT")
    tpl = template_for(session, repo, d, template)
    try:
        target = repo.git("rev-parse", "--verify", "-q", f"{onto}^{{commit}}").decode().strip()
    except GitFailed:
        raise NotFound(f"no branch or commit {onto!r} to renumber onto; pass --onto BRANCH") from None
    base = repo.git("merge-base", "HEAD", target, check=False).decode().strip() or target
    theirs = _names_at(repo, target, d)
    old = _names_at(repo, base, d)
    folder = repo.top / d
    try:
        here = sorted(n for n in os.listdir(folder) if tpl.matches(n))
    except OSError:
        here = []
    mine = [n for n in here if n not in theirs and n not in old]
    theirs_m = [n for n in theirs if tpl.matches(n)]
    moves: list[dict[str, Any]] = []
    if not mine:
        return {"dir": d, "onto": onto, "moves": moves, "message": "no new migrations on this branch"}
    tracked = set(repo.git("ls-files", "-z", "--", d or ".").decode(errors="replace").split("\0"))

    def move(src: str, dst: str) -> None:
        rel_src = f"{d}/{src}" if d else src
        rel_dst = f"{d}/{dst}" if d else dst
        if (folder / dst).exists():
            raise StaleContext(f"{rel_dst} already exists; nothing was renamed after it", key=rel_dst)
        if rel_src in tracked:
            repo.git("mv", "--", rel_src, rel_dst)
        else:
            os.rename(folder / src, folder / dst)

    if tpl.kind == "alembic":
        tblobs = read_objects(repo, list(theirs.values()))
        their_revs: dict[str, list[str]] = {}
        for name in theirs_m:
            obj = tblobs.get(theirs[name])
            if obj is not None:
                rev, parents = alembic_ids(obj[2].decode(errors="replace"))
                if rev:
                    their_revs[rev] = parents
        children = {p for ps in their_revs.values() for p in ps}
        heads = sorted(r for r in their_revs if r not in children)
        if len(heads) != 1:
            raise StaleContext(f"{onto} has {len(heads)} heads in {d} ({', '.join(heads) or 'none'}); merge them first")
        head = heads[0]
        texts = {fname: (folder / fname).read_text() for fname in mine}
        my_revs = {alembic_ids(t)[0]: fname for fname, t in texts.items()}
        for fname, t in sorted(texts.items()):
            rev, parents = alembic_ids(t)
            outside = [p for p in parents if p not in my_revs]
            if not outside or outside == [head]:
                continue
            new_parents = [head if p not in my_revs else p for p in parents]
            new_parents = list(dict.fromkeys(new_parents))
            down = repr(new_parents[0]) if len(new_parents) == 1 else repr(tuple(new_parents))
            t2 = _DOWN.sub(lambda _m: f"down_revision = {down}", t, count=1)
            t2 = re.sub(r"^Revises:.*$", f"Revises: {', '.join(new_parents)}", t2, count=1, flags=re.M)
            moves.append({"file": f"{d}/{fname}", "down_revision": [parents, new_parents]})
            if not dry_run:
                (folder / fname).write_text(t2)
        return {"dir": d, "onto": onto, "moves": moves}

    their_max = max((tpl.number_of(n) or 0 for n in theirs_m), default=0)
    numbers = {n: tpl.number_of(n) or 0 for n in mine}
    if min(numbers.values()) > their_max:
        return {"dir": d, "onto": onto, "moves": moves, "message": f"already after {onto}'s {their_max}"}
    seen = survey(repo, d, tpl)
    floor = max([their_max, *(m.number for m in seen.values() if m.number is not None and m.name not in mine)])
    renamed: dict[str, str] = {}
    for name in sorted(mine, key=lambda x: (numbers[x], x)):
        m = tpl.regex.fullmatch(name)
        assert m is not None
        slug = m.group("slug")
        if dry_run:
            floor = n = _ts_after(floor) if tpl.numbering == "timestamp" else floor + 1
        else:
            n = allocate(session, d, tpl, floor).number
            floor = n
        new = tpl.filename(slug, n=n)
        renamed[name] = new
        moves.append({"from": f"{d}/{name}", "to": f"{d}/{new}", "number": n})
    if dry_run:
        return {"dir": d, "onto": onto, "moves": moves, "dry_run": True}
    for src, dst in renamed.items():
        move(src, dst)
    if tpl.kind == "django":
        app = _app_label(d)
        latest = max(((tpl.number_of(n) or 0, n) for n in theirs_m), default=(0, ""))[1].rsplit(".", 1)[0]
        stems = {a.rsplit(".", 1)[0]: b.rsplit(".", 1)[0] for a, b in renamed.items()}
        mine_new = set(stems.values())
        for dst in renamed.values():
            p = folder / dst
            text = p.read_text()

            def swap(m: re.Match[str]) -> str:
                a, name = m.group(1), m.group(2)
                if a != app:
                    return m.group(0)
                if name in stems:
                    name = stems[name]
                elif name not in mine_new and latest:
                    name = latest  # the branch's first migration now follows onto's latest
                return f'("{a}", "{name}")'

            p.write_text(_DEP.sub(swap, text))
    for mv in moves:
        record = {
            "file": mv["to"],
            "dir": d,
            "number": mv["number"],
            "template": tpl.kind if tpl.kind != "custom" else tpl.pattern,
            "agent": session.agent,
            "worktree": str(repo.top),
            "branch": repo.branch(),
            "renumbered_from": mv["from"],
            "time": session.now(),
        }
        session.txn(ops=[Create(f"{MIGRATION_PREFIX}{dir_key(d)}/{mv['number']}", record, label="migration")], system=True)
    return {"dir": d, "onto": onto, "moves": moves}
