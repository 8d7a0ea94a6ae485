"""The store file: what is at a path before comity opens it, and how a new one is made.

A store file is only ever one comity made.  A new store is built whole under a temporary
name beside its final one (created with mode 0600: it holds the context-sealing secret
and the agents' token hashes) and hard-linked into place, so the final path never holds
a half-made or empty store.  Hence a file that is there but is empty, is not SQLite, or
is an SQLite database without comity's schema was not made by comity (or was damaged):
it is refused, never replaced by a new store, and the error names the file and says what
to do.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from ..errors import Step, Unavailable

# The next steps these errors name: commands of the CLI (registered as forms by comity.cli),
# since a store file is opened where a process starts.
INIT = Step("init", why="create the store there")
CHECK = Step("check", why="see what is wrong and how to recover")

__all__ = ["SQLITE_HEADER", "StoreFileError", "no_store", "damaged", "classify", "link_into_place", "DB_SUFFIXES", "held", "let_go"]

# The store files this process holds SQLite connections to (real path: how many).  Closing
# any descriptor of a file drops every POSIX lock the process holds on it, SQLite's own
# included; SQLite then believes it holds a lock it does not, and another process may take
# the file as unused, checkpoint and reset the WAL under the connection, and the file is
# damaged ("How To Corrupt An SQLite Database File", section 2.2: a second store opened and
# closed in a process that had one open did exactly that).  So a held file is never opened
# here to read its header: only SQLite opens it.
_held: dict[str, int] = {}
_held_lock = threading.Lock()


def held(path: Path) -> None:
    """A connection of this process now has ``path`` open."""
    key = os.path.realpath(path)
    with _held_lock:
        _held[key] = _held.get(key, 0) + 1


def let_go(path: Path) -> None:
    """A connection of this process that had ``path`` open has closed."""
    key = os.path.realpath(path)
    with _held_lock:
        n = _held.get(key, 0) - 1
        if n > 0:
            _held[key] = n
        else:
            _held.pop(key, None)


def _held_here(path: Path) -> bool:
    with _held_lock:
        return os.path.realpath(path) in _held

SQLITE_HEADER = b"SQLite format 3\x00"
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class StoreFileError(Unavailable):
    """The file at a store's path cannot be used as a store (absent, empty, foreign, damaged).

    ``details["problem"]`` says which: ``absent``, ``empty``, ``foreign``, ``damaged``."""


def no_store(path: Path | str) -> StoreFileError:
    return StoreFileError(
        f"no store at {path} (a read never creates one); create it first", next=[INIT], location=str(path), problem="absent"
    )


def damaged(path: Path | str, error: BaseException | str) -> StoreFileError:
    reason = str(error).strip() or type(error).__name__
    return StoreFileError(
        f"the store at {path} is damaged ({reason}); nothing was written. Stop the processes using it and keep"
        " a copy of the file; checking it says what is wrong and how to recover (restore a backup, or salvage"
        " what is still readable into a new store)",
        next=[CHECK],
        location=str(path),
        problem="damaged",
    )


def classify(path: Path) -> None:
    """Refuse what is at ``path`` if it cannot be a comity store (it exists)."""
    if path.is_dir():
        raise StoreFileError(
            f"{path} is a directory, not a store file; name the directory itself (comity uses store.db in it)"
            " or a file ending in .db",
            location=str(path),
            problem="foreign",
        )
    if _held_here(path):
        return  # an SQLite connection of this process has it open: it was a store when that opened
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise StoreFileError(f"cannot read the store at {path}: {e.strerror or e}", location=str(path), problem="unreadable") from None
    if not head:
        raise StoreFileError(
            f"{path} is empty (0 bytes), so it is not a comity store, and comity will not replace it with a new,"
            " empty one. If it was your store, it was truncated: restore it from a backup. If it is nothing,"
            " remove it, then create the store",
            location=str(path),
            problem="empty",
        )
    if head != SQLITE_HEADER:
        raise StoreFileError(
            f"{path} is not a comity store (not an SQLite database); comity will not touch it. Name a store"
            " file comity created, or a directory to hold one",
            location=str(path),
            problem="foreign",
        )


def foreign_database(path: Path, what: str) -> StoreFileError:
    return StoreFileError(
        f"{path} is an SQLite database but not a comity store ({what}); comity will not change it. Name"
        " another file for the store, or a directory to hold one",
        location=str(path),
        problem="foreign",
    )


def has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


def new_private_file(path: Path) -> None:
    """Create ``path`` empty, readable and writable by its owner only (SQLite gives the
    -wal and -shm files it makes beside it the same mode)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)


def make_dirs(directory: Path) -> None:
    """The store's directory, if missing: private (0700), as the store is."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def link_into_place(built: Path, path: Path) -> bool:
    """Move a store built at ``built`` to ``path`` unless something is there already (then
    another process won the race; the caller opens that one).  Returns whether ours is it."""
    try:
        os.link(built, path)
        won = True
    except FileExistsError:
        won = False
    except OSError:
        # A filesystem without hard links: rename, which is atomic but not exclusive, so look first.
        if path.exists():
            won = False
        else:
            os.replace(built, path)
            won = True
    try:
        built.unlink()
    except FileNotFoundError:
        pass
    for suffix in ("-wal", "-shm"):
        try:
            Path(str(built) + suffix).unlink()
        except FileNotFoundError:
            pass
    _sync_dir(path.parent)
    return won


def _sync_dir(directory: Path) -> None:
    """Make the new directory entry durable (the store's own commits already are)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
