"""Where the store lives when nobody says.

Inside a git repository the embedded store is in the git *common* directory
(``git rev-parse --git-common-dir``), so every worktree of the repository shares
one store with no server at all; elsewhere it is ``./.comity``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ..errors import Invalid
from ._files import DB_SUFFIXES

__all__ = ["discover", "resolve_path", "STORE_FILE"]

STORE_FILE = "store.db"


def _git_common_dir(cwd: Path) -> Path | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--git-common-dir"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return (cwd / out.stdout.strip()).resolve()


def resolve_path(location: str | os.PathLike[str]) -> Path:
    """A path given by the user: a store file (an existing file, or a new one ending in
    ``.db``), or a directory holding ``store.db``.  A path that does not exist and looks
    like some other kind of file (``notes.txt``) is refused rather than made a directory."""
    p = Path(location).expanduser()
    if p.is_dir():
        return p / STORE_FILE
    if p.suffix in DB_SUFFIXES or os.path.lexists(p):
        return p
    if p.suffix and not p.name.startswith("."):
        raise Invalid(
            "store",
            f"{str(p)[:200]} does not exist and does not end in .db; name a store file ending in .db,"
            " or a directory to hold one",
        )
    return p / STORE_FILE


def discover(cwd: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The default store file and why it was chosen."""
    here = Path(cwd or os.getcwd())
    common = _git_common_dir(here)
    if common is not None:
        return common / "comity" / STORE_FILE, f"git common directory {common}"
    return here / ".comity" / STORE_FILE, "no git repository here"


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")  # a scheme, not a drive letter


def check_location(location: str) -> None:
    """Refuse a URL this comity cannot open (a path, or a postgres URL, passes)."""
    lowered = location.lower()
    if lowered.startswith(("postgres://", "postgresql://")):
        return
    if _URL.match(location):
        scheme = lowered.split(":", 1)[0]
        raise Invalid(
            "store",
            f"{scheme} stores are not supported by this version of comity yet; use a path "
            "(or name no store location, to use the embedded store)",
        )
