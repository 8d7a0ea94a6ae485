"""Git plumbing for the repository face: argument lists, never a shell, and as few
processes as a question allows (one ``cat-file --batch`` reads every branch's tree).

Nothing here runs git inside *another* worktree: a hook inherits ``GIT_DIR`` and
``GIT_INDEX_FILE`` from the commit that runs it, so other worktrees are read from disk.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ComityError, Invalid

__all__ = [
    "GitFailed",
    "Repo",
    "Worktree",
    "Diff",
    "git",
    "parse_diff",
    "read_objects",
    "tree_names",
]


class GitFailed(ComityError):
    """A git command failed: the repository is not in the state the command needs."""

    code = "git_failed"
    exit_code = 3
    http_status = 409


def git(args: list[str], cwd: Path | str, *, input: bytes | None = None, check: bool = True) -> bytes:
    """Run ``git ARGS`` in ``cwd``; its stdout (raises GitFailed with git's message)."""
    try:
        p = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=False)
    except OSError as e:
        raise GitFailed(f"cannot run git: {e}; install git, or put it on PATH") from None
    if check and p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        raise GitFailed(f"git {' '.join(args[:3])} failed: {msg[-1] if msg else f'exit {p.returncode}'}")
    return p.stdout


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # short name, None when detached
    bare: bool = False
    prunable: bool = False


@dataclass(slots=True)
class Repo:
    """Where one worktree of a repository is: its root, its git dir, the common dir."""

    top: Path
    git_dir: Path
    common: Path
    _worktrees: list[Worktree] | None = field(default=None, repr=False)

    @classmethod
    def find(cls, cwd: str | os.PathLike[str] | None = None) -> Repo:
        here = Path(cwd or os.getcwd())
        try:
            p = subprocess.run(
                ["git", "rev-parse", "--path-format=absolute", "--show-toplevel", "--git-dir", "--git-common-dir"],
                cwd=here,
                capture_output=True,
                check=False,
            )
        except OSError as e:
            raise GitFailed(f"cannot run git: {e}; install git, or put it on PATH") from None
        lines = _text(p.stdout).splitlines()
        if p.returncode != 0 or len(lines) != 3:
            raise Invalid("repository", f"{here} is not inside a git worktree; run this in one (git init, git worktree add)")
        return cls(Path(lines[0]), Path(lines[1]), Path(lines[2]))

    @property
    def store_path(self) -> Path:
        """Where ``comity.open()`` puts the embedded store for this repository."""
        return self.common / "comity" / "store.db"

    def git(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
        return git(list(args), self.top, input=input, check=check)

    def rel(self, path: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> str:
        """A path the user typed (relative to ``cwd``) as a path relative to the repository root."""
        p = Path(path)
        if not p.is_absolute():
            p = Path(cwd or os.getcwd()) / p
        p = Path(os.path.normpath(p))
        top = Path(os.path.normpath(self.top))
        try:
            rel = p.relative_to(top)
        except ValueError:
            # The worktree may be reached through a symlink: compare real paths.
            try:
                rel = p.resolve().relative_to(top.resolve())
            except ValueError:
                raise Invalid("dir", f"{path} is outside this worktree ({self.top})") from None
        out = rel.as_posix()
        return "" if out == "." else out

    def branch(self) -> str | None:
        out = _text(self.git("symbolic-ref", "--short", "-q", "HEAD", check=False)).strip()
        return out or None

    def worktrees(self) -> list[Worktree]:
        """Every worktree of the repository (``git worktree list --porcelain``)."""
        if self._worktrees is None:
            out: list[Worktree] = []
            block: dict[str, str] = {}
            for line in [*_text(self.git("worktree", "list", "--porcelain")).splitlines(), ""]:
                if not line:
                    if "worktree" in block:
                        br = block.get("branch")
                        out.append(
                            Worktree(
                                Path(block["worktree"]),
                                block.get("HEAD"),
                                br.removeprefix("refs/heads/") if br else None,
                                "bare" in block,
                                "prunable" in block,
                            )
                        )
                    block = {}
                    continue
                k, _, v = line.partition(" ")
                block[k] = v
            self._worktrees = out
        return self._worktrees

    def branches(self) -> list[tuple[str, str]]:
        """Local branches: (short name, commit)."""
        out = _text(self.git("for-each-ref", "--format=%(refname:short)%00%(objectname)", "refs/heads"))
        rows = []
        for line in out.splitlines():
            name, _, oid = line.partition("\0")
            if name and oid:
                rows.append((name, oid))
        return rows

    def is_here(self, wt: Worktree) -> bool:
        return os.path.normpath(wt.path) == os.path.normpath(self.top)


def read_objects(repo: Repo, specs: list[str]) -> dict[str, tuple[str, str, bytes] | None]:
    """``git cat-file --batch`` over ``specs`` (``REV:path``…) in one process:
    spec -> (oid, type, contents), or None when it names nothing."""
    if not specs:
        return {}
    unique = list(dict.fromkeys(specs))
    data = repo.git("cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
    out: dict[str, tuple[str, str, bytes] | None] = {}
    i = 0
    for spec in unique:
        nl = data.index(b"\n", i)
        header = data[i:nl].decode(errors="replace").split(" ")
        i = nl + 1
        if len(header) != 3 or header[-1] in ("missing", "ambiguous"):
            out[spec] = None
            continue
        oid, kind, size = header[0], header[1], int(header[2])
        out[spec] = (oid, kind, data[i : i + size])
        i += size + 1
    return out


_ENTRY: dict[int, re.Pattern[bytes]] = {}


def tree_names(oid: str, body: bytes, contains: tuple[bytes, ...] | None = None) -> list[tuple[str, str, str]]:
    """A raw tree object's entries: (mode, name, oid); only names containing one of
    ``contains``, if given (filtered before decoding: a hook reads many large trees)."""
    width = len(oid) // 2  # 20 bytes for SHA-1, 32 for SHA-256
    entry = _ENTRY.get(width)
    if entry is None:
        # Entries are "<mode> <name>\0<raw oid>", back to back: matched from the start, each
        # match ends where the next begins, so raw oid bytes are never read as names.
        entry = _ENTRY[width] = re.compile(rb"([0-7]+) ([^\0]*)\0(.{%d})" % width, re.S)
    if contains is None:
        return [(m[1].decode(), m[2].decode(errors="replace"), m[3].hex()) for m in entry.finditer(body)]
    return [
        (m[1].decode(), m[2].decode(errors="replace"), m[3].hex())
        for m in entry.finditer(body)
        if any(c in m[2] for c in contains)
    ]


@dataclass(slots=True)
class Diff:
    """One file's side of a unified diff: the lines it adds and removes."""

    path: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _unquote(p: str) -> str:
    if len(p) >= 2 and p[0] == p[-1] == '"':
        raw = p[1:-1].encode("latin-1", errors="backslashreplace").decode("unicode_escape")
        return raw.encode("latin-1", errors="replace").decode("utf-8", errors="replace")
    return p


def parse_diff(text: bytes) -> dict[str, Diff]:
    """Per path, the added and removed lines of ``git diff``/``git show`` output (any -U)."""
    out: dict[str, Diff] = {}
    old: str | None = None
    cur: Diff | None = None
    in_hunk = False
    for raw in text.split(b"\n"):
        line = raw.decode("utf-8", errors="replace")
        if line.startswith("diff --git "):
            cur, old, in_hunk = None, None, False
        elif not in_hunk and line.startswith("--- "):
            name = _unquote(line[4:])
            old = None if name == "/dev/null" else name[2:]
        elif not in_hunk and line.startswith("+++ "):
            name = _unquote(line[4:])
            path = old if name == "/dev/null" else name[2:]
            if path is not None:
                cur = out.setdefault(path, Diff(path))
        elif line.startswith("@@"):
            in_hunk = cur is not None
        elif in_hunk and cur is not None:
            if line.startswith("+"):
                cur.added.append(line[1:])
            elif line.startswith("-"):
                cur.removed.append(line[1:])
    return out


def posix(path: str) -> str:
    return PurePosixPath(path).as_posix()
