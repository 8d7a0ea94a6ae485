"""Numbered files (migrations): their layouts, and the authority that hands out numbers.

Two agents in two worktrees both writing ``migrations/0267_*.sql`` is a lost update. The
number comes from one authority, the store's sequence ``migrations/<dir>``, raised first
to a *floor* (the highest number the caller found in every worktree and local branch)
and then taken with ``Next``: no two callers get the same number.  Who took which number
is recorded in ``@migration/<dir>/<n>`` (agent, file, worktree, branch, task), the
directory's layout in ``@migration-dir/<dir>``.

This is the store's half of ``migration_new`` (:func:`take`, over a session); the
worktree's half (finding the floor on disk and in branches, creating the file) is
:mod:`comity.repo.worktree`, which reaches the authority through :class:`Numbers`: in
process (:class:`LocalNumbers`) or over HTTP (``comity.remote``), so the file is always
created where the caller works, whichever face took the number.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import quote

from ..coord.sequences import Allocation, next_number, raise_to
from ..coord.sequences import allocate as allocate_number
from ..errors import Invalid, StaleContext
from ..store import Create, Put, Session

__all__ = [
    "KINDS",
    "MIGRATION_PREFIX",
    "DIR_PREFIX",
    "Template",
    "infer_template",
    "dir_key",
    "registered_dirs",
    "register_dir",
    "record_of",
    "allocations",
    "allocate",
    "slug_of",
    "take",
    "Numbers",
    "LocalNumbers",
    "Worktree",
    "Worktrees",
]

MIGRATION_PREFIX = "@migration/"
DIR_PREFIX = "@migration-dir/"
KINDS = {
    "sql": "{n:04d}_{slug}.sql",
    "rails": "{ts}_{slug}.rb",
    "django": "{n:04d}_{slug}.py",
    "alembic": "{rev}_{slug}.py",
}
_TS = "%Y%m%d%H%M%S"
_SLUG = re.compile(r"[a-z0-9][a-z0-9_]{0,99}")
_RETRIES = 64


def dir_key(d: str) -> str:
    """A repository directory as a key segment (keys admit a restricted alphabet)."""
    return quote(d, safe="/._-").replace("%", "~") or "~root"


# ---------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class Template:
    """A file-name layout: ``{n}`` (a number), ``{ts}`` (a UTC timestamp) or ``{rev}`` (an
    Alembic revision), and ``{slug}``."""

    kind: str
    pattern: str
    regex: re.Pattern[str] = field(compare=False)

    @classmethod
    def parse(cls, value: str) -> Template:
        if value in KINDS:
            kind, pattern = value, KINDS[value]
        else:
            kind, pattern = "custom", value
        parts = []
        fields = []
        try:
            parsed = list(string.Formatter().parse(pattern))
        except ValueError as e:
            raise Invalid("template", f"{pattern!r}: {e}") from None
        for literal, name, spec, _conv in parsed:
            parts.append(re.escape(literal))
            if name is None:
                continue
            fields.append(name)
            if name == "slug":
                parts.append(r"(?P<slug>.+?)")
            elif name in ("n", "ts"):
                parts.append(r"(?P<n>[0-9]+)")
            elif name == "rev":
                parts.append(r"(?P<rev>[0-9A-Za-z]+)")
            else:
                raise Invalid("template", f"{pattern!r}: unknown field {{{name}}}; use {{n}}, {{ts}} or {{rev}}, and {{slug}}")
            if spec and name != "n":
                raise Invalid("template", f"{pattern!r}: only {{n}} takes a format, e.g. {{n:04d}}")
        numbering = [f for f in fields if f in ("n", "ts", "rev")]
        if "slug" not in fields or len(numbering) != 1 or "/" in pattern:
            raise Invalid(
                "template",
                f"{pattern!r} needs {{slug}} and one of {{n:04d}}, {{ts}}, {{rev}} (a file name, no '/'); "
                f"or one of: {', '.join(KINDS)}",
            )
        if kind == "custom" and numbering[0] == "rev":
            kind = "alembic"
        return cls(kind, pattern, re.compile("".join(parts)))

    @property
    def numbering(self) -> str:
        if "{ts}" in self.pattern:
            return "timestamp"
        if "{rev}" in self.pattern:
            return "revision"
        return "number"

    def needles(self, n: int) -> tuple[bytes, ...]:
        """Byte strings one of which a raw tree holding a file numbered ``n`` must contain
        (``" 0007_"`` …, any zero padding): trees without any are skipped unparsed."""
        parts = re.split(r"\{(?:n|ts)(?::[^}]*)?\}", self.pattern, maxsplit=1)
        if len(parts) != 2:
            return (b"",)  # not a numbered layout: every tree must be parsed
        head, after = parts[0], parts[1].split("{", 1)[0]
        digits = str(n)
        return tuple(f" {head}{'0' * pad}{digits}{after}".encode() for pad in range(max(1, 16 - len(digits))))

    def number_of(self, name: str) -> int | None:
        m = self.regex.fullmatch(name)
        if m is None or "n" not in m.groupdict():
            return None
        return int(m.group("n"))

    def matches(self, name: str) -> bool:
        return self.regex.fullmatch(name) is not None

    def filename(self, slug: str, *, n: int = 0, rev: str = "") -> str:
        return self.pattern.format(n=n, ts=n, rev=rev, slug=slug)


def infer_template(names: list[str], sample: str | None = None) -> Template:
    """Guess a directory's layout from the files in it."""
    if any(re.fullmatch(r"[0-9]{14}_.+\.rb", n) for n in names):
        return Template.parse("rails")
    py = [n for n in names if n.endswith(".py") and n != "__init__.py"]
    if py:
        if sample is not None and re.search(r"^down_revision\b", sample, re.M):
            return Template.parse("alembic")
        if any(re.fullmatch(r"[0-9]+_.+\.py", n) for n in py):
            return Template.parse("django")
        return Template.parse("alembic")
    return Template.parse("sql")


# ------------------------------------------------------------------ registration


def registered_dirs(session: Session) -> dict[str, Template]:
    """Directories ``migrations new`` was used in, and their layouts."""
    out: dict[str, Template] = {}
    for v in session.scan(DIR_PREFIX):
        if len(v.values) == 1 and isinstance(v.values[0], dict):
            try:
                out[v.values[0]["dir"]] = Template.parse(v.values[0]["template"])
            except (Invalid, KeyError):
                continue
    return out


def register_dir(session: Session, d: str, template: Template) -> None:
    key = DIR_PREFIX + dir_key(d)
    for _ in range(_RETRIES):
        v = session.get(key)
        if v.values == [{"dir": d, "template": template.pattern if template.kind == "custom" else template.kind}]:
            return
        value = {"dir": d, "template": template.pattern if template.kind == "custom" else template.kind}
        try:
            session.txn(ops=[Put(key, value, context=v.context, label="register")], system=True)
            return
        except StaleContext:
            continue
    raise StaleContext(f"{key} kept changing; retry", key=key)


def allocations(session: Session, *, limit: int = 10_000) -> dict[str, list[dict[str, Any]]]:
    """Every migration number taken through comity, by directory (numbers ascending): who took
    each (agent, worktree, branch, task) and when; registered directories with none come empty."""
    out: dict[str, list[dict[str, Any]]] = {d: [] for d in sorted(registered_dirs(session))}
    for v in session.scan(MIGRATION_PREFIX, limit=limit):
        if len(v.values) == 1 and isinstance(v.values[0], dict) and "number" in v.values[0]:
            rec = v.values[0]
            out.setdefault(str(rec.get("dir", "")), []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: (int(r["number"]) if isinstance(r.get("number"), int) else 0, str(r.get("file"))))
    return out


def record_of(session: Session, d: str, n: int) -> dict[str, Any] | None:
    """Who took number ``n`` of ``d`` (agent, file, worktree, branch, task), if anyone did through comity."""
    v = session.get(f"{MIGRATION_PREFIX}{dir_key(d)}/{n}")
    return v.values[0] if len(v.values) == 1 and isinstance(v.values[0], dict) else None


# --------------------------------------------------------------------- allocation


def _ts_after(value: int) -> int:
    try:
        return int((datetime.strptime(str(value), _TS) + timedelta(seconds=1)).strftime(_TS))
    except ValueError:
        return value + 1


def _allocate_timestamp(session: Session, name: str, floor: int) -> int:
    key = "@seq/" + name
    for _ in range(_RETRIES):
        v = session.get(key)
        current = max((int(x) for x in v.values if isinstance(x, int)), default=0)
        now = int(datetime.fromtimestamp(session.now(), tz=timezone.utc).strftime(_TS))
        n = max(now, _ts_after(current), _ts_after(floor))
        try:
            session.txn(ops=[Put(key, n, context=v.context, label="next")], system=True)
            return n
        except StaleContext:
            continue
    raise StaleContext(f"sequence {name!r} kept changing; retry", key=key)


def allocate(session: Session, d: str, template: Template, floor: int, *, unit: str | None = None) -> Allocation:
    """A number for a new migration of ``d``, greater than ``floor`` and than every number
    allocated before, never handed to anyone else; with ``unit`` (a task and a slug), the
    number that unit already holds, if it holds one."""
    name = f"migrations/{dir_key(d)}"
    if template.numbering == "timestamp":
        return Allocation(_allocate_timestamp(session, name, floor))
    if unit is not None and template.numbering == "number":
        return allocate_number(session, name, floor=floor, unit=unit)
    raise_to(session, name, floor)
    return Allocation(next_number(session, name))


def slug_of(value: str) -> str:
    """What a new file is about, as its name carries it: lower-case letters, digits, underscores."""
    s = re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")
    if not _SLUG.fullmatch(s):
        raise Invalid("slug", f"{value!r}: use letters, digits and underscores, e.g. add_users_email (up to 100)")
    return s



def layout_of(template: Template) -> str:
    """How a layout is named in records and answers: its kind, or its pattern."""
    return template.pattern if template.kind == "custom" else template.kind


# ---------------------------------------------------------------------- the authority


def take(
    session: Session,
    d: str,
    slug: str,
    *,
    template: str | None = None,
    guess: str | None = None,
    floor: int = 0,
    unit: str | None = None,
    revision: str | None = None,
    worktree: str | None = None,
    branch: str | None = None,
    task: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One number for a new file of ``d``, above ``floor`` and every number taken before,
    recorded as the caller's (``@migration/<dir>/<n>``): the record names the file, so a
    git hook can tell it from a file whose number nobody took.

    The layout is ``template`` if given (and is remembered for ``d``), else the one
    remembered, else ``guess`` (what the caller's files look like), else ``sql``.  With
    ``unit`` (a task and a slug, or a request), the unit keeps one number however often it
    asks: the answer then has ``held`` and the record first written."""
    if session.agent is None:
        raise Invalid("agent", "taking a migration number needs an agent name")
    slug = slug_of(slug)
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
        raise Invalid("floor", f"must be a non-negative integer, got {floor!r}")
    if template is not None:
        tpl = Template.parse(template)
    else:
        tpl = registered_dirs(session).get(d) or Template.parse(guess or "sql")
    if tpl.numbering == "revision":
        if not revision or not re.fullmatch(r"[0-9A-Za-z]{1,40}", revision):
            raise Invalid("revision", "an Alembic layout needs the new revision's id: 1 to 40 letters and digits")
    else:
        revision = None
    register_dir(session, d, tpl)
    got = allocate(session, d, tpl, floor, unit=unit)
    n = got.number
    if got.held:
        rec = record_of(session, d, n)
        if rec is not None:
            return {**rec, "held": True}
    name = tpl.filename(slug, n=n, rev=revision or "")
    record: dict[str, Any] = {
        **(detail or {}),
        "file": f"{d}/{name}" if d else name,
        "dir": d,
        "number": n,
        "template": layout_of(tpl),
        "agent": session.agent,
        "worktree": worktree,
        "branch": branch,
        "task": task,
        "time": session.now(),
    }
    if revision:
        record["revision"] = revision
    session.txn(ops=[Create(f"{MIGRATION_PREFIX}{dir_key(d)}/{n}", record, label="migration")], system=True)
    return {**record, "held": got.held}


class Numbers(Protocol):
    """The authority ``migration_new`` takes numbers from: the store in this process
    (:class:`LocalNumbers`), or a comity server (``comity.remote``)."""

    @property
    def agent(self) -> str | None: ...

    def dirs(self) -> dict[str, str]:
        """Every directory numbers were taken in, and its layout."""
        ...

    def take(self, d: str, slug: str, **kw: Any) -> dict[str, Any]:
        """:func:`take` with the same arguments."""
        ...


class LocalNumbers:
    """The authority in this process: the store session itself."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def agent(self) -> str | None:
        return self.session.agent

    def dirs(self) -> dict[str, str]:
        return {d: layout_of(t) for d, t in registered_dirs(self.session).items()}

    def take(self, d: str, slug: str, **kw: Any) -> dict[str, Any]:
        return take(self.session, d, slug, **kw)


class Worktree(Protocol):
    """A git worktree as the migration verbs need it: where the caller works.  The real one
    is ``comity.repo.worktree.GitWorktree``; the verbs cannot reach one from a server that
    does not run beside the caller's files."""

    @property
    def path(self) -> str: ...

    def new_migration(
        self, numbers: Numbers, slug: str, d: str | None, *, template: str | None, task: str | None, unit: str | None
    ) -> dict[str, Any]: ...

    def check_migrations(self, numbers: Numbers, d: str | None, *, template: str | None) -> list[dict[str, Any]]: ...


class Worktrees(Protocol):
    """Which worktree a call works in: the ``worktree`` argument (an absolute path), or
    None for the one this process runs in."""

    def __call__(self, path: str | None) -> Worktree: ...
