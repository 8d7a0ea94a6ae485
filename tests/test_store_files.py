"""The store file as a careless or unlucky user meets it: reads never create a store, a file
that is there but is not a comity store (empty, a README, another program's database) is
refused and left as it was, a damaged store says so (exit 5, naming the file and what to
do), `init` and `check` look before calling a store healthy, a salvage rebuilds what is
readable, new stores are private (0600), and `comity log | head -1` is not an error."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import COMITY, clean_env

import comity
from comity.errors import Unavailable
from comity.store import Create

Run = Callable[..., subprocess.CompletedProcess[str]]

READ_COMMANDS = [
    ["get", "k"], ["log"], ["keys"], ["news"], ["task", "list"], ["task", "ready"], ["task", "show", "T-1"],
    ["reservations"], ["agents"], ["why", "k"], ["check"],
]  # fmt: skip


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def run(*args: str, store: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMITY, "--store", store, *args], env=clean_env(), capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd)  # fmt: skip


# ------------------------------------------------------------------ reads never create


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: " ".join(a))
def test_a_read_never_creates_a_store(tmp_path: Path, args: list[str]) -> None:
    where = tmp_path / "no" / "such" / "dir" / "x.db"
    r = run(*args, store=str(where))
    assert r.returncode == 5, (r.returncode, r.stdout, r.stderr)
    assert f"no store at {where}" in r.stderr and "comity init" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "no").exists()


def test_a_read_of_a_missing_directory_store_creates_nothing(tmp_path: Path) -> None:
    r = run("get", "x", store=str(tmp_path / "nowhere"))
    assert r.returncode == 5 and "no store at" in r.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_write_or_init_creates_the_store(tmp_path: Path) -> None:
    where = tmp_path / "new" / "s.db"
    assert run("--agent", "alice", "put", "k", '"v"', store=str(where)).returncode == 0
    assert run("get", "k", store=str(where)).stdout == '"v"\n'
    assert run("init", store=str(tmp_path / "fresh")).returncode == 0
    assert (tmp_path / "fresh" / "store.db").is_file()


def test_a_read_of_a_missing_postgres_store_creates_no_schema(postgres_url: str) -> None:
    import psycopg

    from comity.store._postgres import split_url

    conninfo, schema, _ = split_url(postgres_url)
    r = run("get", "k", store=postgres_url)
    assert r.returncode == 5 and "no store" in r.stderr and "comity init" in r.stderr
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone() == (None,)
    assert run("init", store=postgres_url).returncode == 0
    assert run("get", "k", store=postgres_url).returncode == 0


def test_the_python_api_opens_without_creating_when_asked(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="no store at"):
        comity.open(tmp_path / "x.db", create=False)
    assert not (tmp_path / "x.db").exists()


# ------------------------------------------------------------------ files that are not stores


def test_a_text_file_is_refused_for_reads_and_writes_and_left_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n")
    before = digest(readme)
    for args in (["get", "k"], ["--agent", "a", "put", "k", "1"], ["init"]):
        r = run(*args, store=str(readme))
        assert r.returncode == 5, (args, r.stderr)
        assert "README.md is not a comity store" in r.stderr
    assert readme.is_file() and digest(readme) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_a_path_that_is_not_there_and_not_a_db_file_is_refused(tmp_path: Path) -> None:
    r = run("--agent", "a", "put", "k", "1", store=str(tmp_path / "notes.txt"))
    assert r.returncode == 2 and "does not end in .db" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_is_never_replaced_by_a_new_store(tmp_path: Path) -> None:
    empty = tmp_path / "store.db"
    empty.touch()
    for args in (["get", "k"], ["--agent", "a", "put", "k", "1"], ["init"], ["check"]):
        r = run(*args, store=str(empty))
        assert r.returncode == 5, (args, r.stdout, r.stderr)
        assert "is empty (0 bytes)" in r.stderr and "backup" in r.stderr
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]
    with pytest.raises(Unavailable, match="empty"):
        comity.open(empty)


def test_another_programs_database_is_refused_and_unchanged(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        db.execute("INSERT INTO users (email) VALUES ('a@example.com')")
    before = digest(other)
    for args in (["get", "k"], ["--agent", "a", "put", "k", "1"], ["init"]):
        r = run(*args, store=str(other))
        assert r.returncode == 5 and "not a comity store" in r.stderr, (args, r.stderr)
    assert digest(other) == before


# ------------------------------------------------------------------ private files


def test_a_new_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    where = tmp_path / "d" / "s.db"
    with comity.open(where) as s:
        s.session("alice").create("k", 1)
        for p in [where, Path(f"{where}-wal"), Path(f"{where}-shm")]:
            if p.exists():
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p, oct(p.stat().st_mode))
    assert stat.S_IMODE(where.parent.stat().st_mode) == 0o700
    assert not [p for p in where.parent.iterdir() if ".new-" in p.name]  # no build left behind


def test_processes_creating_one_store_at_once_agree_on_it(tmp_path: Path) -> None:
    where = tmp_path / "race" / "s.db"
    procs = [
        subprocess.Popen([*COMITY, "--store", str(where), "--agent", f"a{i}", "seq", "next", "n"], env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(6)
    ]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(int(o[0]) for o in outs) == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in where.parent.iterdir() if not p.name.startswith("s.db")) == []


# ------------------------------------------------------------------ damage


def _damaged_copy(tmp_path: Path, n: int = 1500) -> tuple[Path, Path]:
    good = tmp_path / "good.db"
    with comity.open(good) as s:
        se = s.session("alice")
        for start in range(0, n, 100):  # many events, few commits
            se.txn(ops=[Create(f"k/{i:05d}", "x" * 120) for i in range(start, min(n, start + 100))])
    with sqlite3.connect(good) as db:  # a leaf page in the middle of the event log
        pages = [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' ORDER BY pageno")]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    bad = tmp_path / "bad.db"
    bad.write_bytes(good.read_bytes())
    with open(bad, "r+b") as f:
        f.seek(size * (pages[len(pages) // 2] - 1))
        f.write(b"\xde\xad\xbe\xef" * (size // 4))
    return good, bad


def test_a_damaged_store_is_exit_5_naming_the_file_and_what_to_do(tmp_path: Path) -> None:
    _, bad = _damaged_copy(tmp_path)
    r = run("log", "--limit", "10000", store=str(bad))
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert f"the store at {bad} is damaged" in r.stderr and "check" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    r = run("--agent", "alice", "put", "k/00700", '"y"', store=str(bad))
    assert r.returncode in (3, 5), r.stderr  # refused by the state, or by the damage: never a bug


def test_init_and_check_look_before_calling_a_store_healthy(tmp_path: Path) -> None:
    good, bad = _damaged_copy(tmp_path)
    assert run("init", store=str(good)).returncode == 0
    ok = run("check", "--json", store=str(good))
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    before = digest(bad)
    r = run("init", store=str(bad))
    assert r.returncode == 5 and "problem" in r.stderr and "fix:" in r.stderr
    r = run("check", "--json", store=str(bad))
    assert r.returncode == 5
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["problems"]
    assert all(p["what"] and p["fix"] and p["next"][0]["args"] == {"salvage_to": "NEW.db"} for p in report["problems"])
    assert "next: comity check --salvage-to NEW.db" in r.stderr
    assert digest(bad) == before  # checking changes nothing


def test_a_salvage_rebuilds_what_is_readable_and_the_result_works(tmp_path: Path) -> None:
    _, bad = _damaged_copy(tmp_path)
    new = tmp_path / "salvaged.db"
    r = run("check", "--salvage-to", str(new), store=str(bad))
    assert r.returncode == 0, r.stderr
    assert "salvaged" in r.stderr and "unreadable" in r.stderr
    with comity.open(bad, create=False) as old_meta:
        old_id = old_meta.store_id
    with comity.open(new, create=False) as s:
        assert s.store_id == old_id  # contexts and tokens issued by the old store stay valid
        se = s.session("alice")
        assert se.get("k/00000").values == ["x" * 120]
        w = se.put("after/salvage", 1)
        assert w.pos > 0
    assert run("check", store=str(new)).returncode == 0


# ------------------------------------------------------------------ pipes


def test_log_into_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    where = tmp_path / "s.db"
    with comity.open(where) as s:
        se = s.session("alice")
        for start in range(0, 3000, 100):
            se.txn(ops=[Create(f"k/{i}", "v" * 40) for i in range(start, start + 100)])
    p = subprocess.Popen([*COMITY, "--store", str(where), "log", "--limit", "10000"], env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()  # what `| head -1` does
    err = p.stderr.read()
    p.wait(60)
    assert first.strip().startswith(b"1 ")
    assert p.returncode == 0, (p.returncode, err)
    assert err == b"", err


def test_a_second_store_opened_and_closed_beside_an_open_one_damages_nothing(tmp_path: Path) -> None:
    """Opening a store reads its file's header to refuse what is not a store; closing that
    descriptor would drop every POSIX lock the process holds on the file, the open store's
    SQLite locks included, and another process would then reset the WAL under it (the file
    was damaged: "database disk image is malformed").  A file this process has open is
    left to SQLite."""
    path = tmp_path / "s.db"
    assert run("init", store=str(path)).returncode == 0
    first = comity.open(path)
    first.session("a").put("a", 1)
    with comity.open(path) as second:  # as a test, a dashboard or a library user might
        s = second.session("b")
        for i in range(250):
            s.put(f"b{i}", i)
    for i in range(3):  # another process writes, and, the last to close (it thinks), checkpoints
        r = run("--agent", "c", "task", "add", f"t{i}", store=str(path))
        assert r.returncode == 0, r.stderr
    assert len(first.session().log("@task/T-3")) == 1
    first.session("a").put("a", 2, context=first.session().get("a").context)
    first.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
