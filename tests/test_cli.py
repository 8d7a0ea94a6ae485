"""The ``comity`` command as a user or an agent runs it: a real process, its stdout,
stderr and exit code.  Results go to stdout, news and messages to stderr; every error
is one line and one documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from comity.cli import cli

Run = Callable[..., subprocess.CompletedProcess[str]]


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


def as_json(r: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(r).stdout)


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout


def test_get_json_shape(comity_cli: Run) -> None:
    ok(comity_cli("init"))  # a read never creates the store
    absent = as_json(comity_cli("get", "files/a.txt", "--json"))
    assert set(absent) == {"key", "values", "context", "news", "stale"}  # the verb's answer, as on every face
    assert absent["key"] == "files/a.txt" and absent["values"] == [] and absent["news"] == []
    ok(comity_cli("--agent", "alice", "put", "files/a.txt", '{"x": [1, "two"]}', "--context", absent["context"]))
    v = as_json(comity_cli("get", "files/a.txt", "--json"))
    assert v["values"] == [{"x": [1, "two"]}] and isinstance(v["context"], str)


def test_plain_get_prints_values_on_stdout_and_the_context_on_stderr(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "k", '"hello"'))
    r = ok(comity_cli("get", "k"))
    assert r.stdout == '"hello"\n'
    ctx = as_json(comity_cli("get", "k", "--json"))["context"]
    assert f"context: {ctx}" in r.stderr
    assert "(absent)" in ok(comity_cli("get", "nothing")).stdout


@pytest.mark.parametrize("value", ["{bad", "hello", "", "[1,", "NaN-ish"])
def test_malformed_json_value_is_exit_2_naming_json_value(comity_cli: Run, value: str) -> None:
    ok(comity_cli("init"))
    r = comity_cli("--agent", "alice", "put", "k", value)
    assert r.returncode == 2
    assert "JSON_VALUE" in r.stderr and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    no_traceback(r)
    assert as_json(comity_cli("log", "--json")) == []


def test_write_without_agent_is_exit_2_naming_agent(comity_cli: Run) -> None:
    for args in (["put", "k", "1"], ["create", "k", "1"], ["delete", "k"]):
        r = comity_cli(*args)
        assert r.returncode == 2, r
        assert "agent" in r.stderr and "--agent" in r.stderr
        no_traceback(r)
    r = comity_cli("put", "k", "1", "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["field"] == "agent"
    assert as_json(comity_cli("log", "--json")) == []
    # the environment names the agent too
    ok(comity_cli("create", "k", "1", env={"COMITY_AGENT": "envy"}))
    assert as_json(comity_cli("log", "--json"))[0]["agent"] == "envy"


def test_stale_put_is_exit_3_naming_who_wrote(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "k", "1"))
    old = as_json(comity_cli("get", "k", "--json"))["context"]
    ok(comity_cli("--agent", "bob", "put", "k", "2", "--context", old))
    before = as_json(comity_cli("log", "--json"))
    r = comity_cli("--agent", "alice", "put", "k", "3", "--context", old)
    assert r.returncode == 3
    assert r.stdout == ""
    assert "bob" in r.stderr and "'k'" in r.stderr
    assert "news: bob put k" in r.stderr
    no_traceback(r)
    j = comity_cli("--agent", "alice", "put", "k", "3", "--context", old, "--json")
    assert j.returncode == 3
    err = json.loads(j.stdout)
    assert err["error"] == "stale_context" and err["rejected"] == 3 and err["key"] == "k"
    assert [n["agent"] for n in err["news"]] == ["bob"]
    # blind writes and creates of an existing key are refused the same way
    blind = comity_cli("--agent", "carol", "put", "k", "4")
    assert blind.returncode == 3 and "bob" in blind.stderr
    again = comity_cli("--agent", "carol", "create", "k", "4")
    assert again.returncode == 3 and "bob" in again.stderr
    after = as_json(comity_cli("log", "--json"))
    # nothing written but the records of the refusals (`write.refused`, for the dashboard's conflicts)
    assert after[: len(before)] == before and {(e["op"], e["target"]) for e in after[len(before) :]} == {("write.refused", "k")}
    assert as_json(comity_cli("get", "k", "--json"))["values"] == [2]


def test_keep_both_and_delete(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "k", "1"))
    old = as_json(comity_cli("get", "k", "--json"))["context"]
    ok(comity_cli("--agent", "bob", "put", "k", "2", "--context", old))
    r = ok(comity_cli("--agent", "alice", "put", "k", "3", "--context", old, "--keep-both"))
    assert "2 siblings" in r.stdout
    v = as_json(comity_cli("get", "k", "--json"))
    assert sorted(v["values"]) == [2, 3]
    stale = comity_cli("--agent", "alice", "delete", "k", "--context", old)
    assert stale.returncode == 3
    assert comity_cli("--agent", "alice", "delete", "k").returncode == 3
    ok(comity_cli("--agent", "alice", "delete", "k", "--context", v["context"]))
    assert as_json(comity_cli("get", "k", "--json"))["values"] == []
    ok(comity_cli("--agent", "bob", "create", "k", "4"))
    assert [e["op"] for e in as_json(comity_cli("log", "k", "--json"))] == ["create", "put", "put", "delete", "create"]


def test_log_json_is_a_list_of_events_in_order(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "a", "1"))
    ok(comity_cli("--agent", "bob", "create", "b", '"two"'))
    log = as_json(comity_cli("log", "--json"))
    assert [(e["key"], e["agent"], e["value"]) for e in log] == [("a", "alice", 1), ("b", "bob", "two")]
    assert [e["pos"] for e in log] == sorted({e["pos"] for e in log})
    assert [e["key"] for e in as_json(comity_cli("log", "b", "--json"))] == ["b"]
    assert as_json(comity_cli("log", "--after", str(log[0]["pos"]), "--json")) == log[1:]


def test_bad_input_is_exit_2_with_json_error_on_stdout(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "k", "1"))
    cases = [
        ("get", "has space", "--json"),
        ("get", "/abs", "--json"),
        ("--agent", "alice", "put", "k", "2", "--context", "garbage", "--json"),
        ("--agent", "two words", "put", "z", "1", "--json"),
        ("log", "--limit", "0", "--json"),
    ]
    for args in cases:
        r = comity_cli(*args)
        assert r.returncode == 2, (args, r)
        err = json.loads(r.stdout)
        assert err["error"] == "invalid" and err["field"] and err["message"], err
        assert err["field"] in r.stderr
        no_traceback(r)
    assert len(as_json(comity_cli("log", "--json"))) == 1


def test_value_size_cap_from_the_environment(comity_cli: Run) -> None:
    env = {"COMITY_MAX_VALUE_BYTES": "8"}
    ok(comity_cli("--agent", "alice", "put", "k", '"123456"', env=env))
    r = comity_cli("--agent", "alice", "put", "j", '"1234567"', env=env)
    assert r.returncode == 2 and "value" in r.stderr and "8 bytes" in r.stderr
    assert [e["key"] for e in as_json(comity_cli("log", "--json"))] == ["k"]


def test_usage_errors_are_exit_2(comity_cli: Run) -> None:
    for args in (("put", "k"), ("frobnicate",), ("get",), ("log", "--after", "soon")):
        r = comity_cli(*args)
        assert r.returncode == 2, (args, r)
        no_traceback(r)


def test_an_unreachable_store_is_exit_5(comity_cli: Run, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, it is a file of sixty-four bytes or more!!")
    r = comity_cli("get", "k", store=str(junk))
    assert r.returncode == 5 and "junk.db" in r.stderr
    no_traceback(r)


def test_unsupported_store_urls_are_bad_input(comity_cli: Run) -> None:
    r = comity_cli("get", "k", store="mysql://db.example/comity")
    assert r.returncode == 2 and "store" in r.stderr
    no_traceback(r)


def test_news_goes_to_stderr_never_stdout(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "k", '"v1"'))
    ok(comity_cli("--session", "bob-s", "--agent", "bob", "get", "k"))  # bob's session reads k
    ctx = as_json(comity_cli("get", "k", "--json"))["context"]
    ok(comity_cli("--agent", "alice", "put", "k", '"v2"', "--context", ctx))
    r = ok(comity_cli("--session", "bob-s", "--agent", "bob", "get", "k"))
    assert r.stdout == '"v2"\n'
    assert "news: alice put k" in r.stderr
    # shown once per named session
    again = ok(comity_cli("--session", "bob-s", "--agent", "bob", "get", "k"))
    assert "news:" not in again.stderr
    # news on a write goes to stderr too
    ctx = as_json(comity_cli("get", "k", "--json"))["context"]
    ok(comity_cli("--agent", "alice", "put", "k", '"v3"', "--context", ctx))
    w = ok(comity_cli("--session", "bob-s", "--agent", "bob", "put", "k", '"v4"', "--keep-both"))
    assert "news: alice put k" in w.stderr and "news" not in w.stdout


def test_news_command_with_a_named_session(comity_cli: Run) -> None:
    ok(comity_cli("init"))
    first = as_json(comity_cli("--session", "watcher", "news", "--json"))
    assert set(first) == {"events", "truncated", "position"} and first["events"] == []
    ok(comity_cli("--agent", "alice", "create", "k", "1"))
    ok(comity_cli("--agent", "alice", "create", "j", "1"))
    n = as_json(comity_cli("--session", "watcher", "news", "--json"))
    assert [(e["agent"], e["key"]) for e in n["events"]] == [("alice", "k"), ("alice", "j")]
    assert n["position"] == n["events"][-1]["pos"] and not n["truncated"]
    assert as_json(comity_cli("--session", "watcher", "news", "--json"))["events"] == []
    plain = ok(comity_cli("--session", "watcher", "news"))
    assert "nothing new" in plain.stdout


def test_news_command_with_a_large_limit_shows_everything(comity_cli: Run, tmp_path: Path) -> None:
    # Regression: `news --limit 1000` showed at most 257 events and skipped the rest.
    import comity
    from comity.store import Put

    ok(comity_cli("init"))
    ok(comity_cli("--session", "watcher", "news"))  # the session starts here
    with comity.open(tmp_path / "cli.db") as store:
        store.session("alice").txn(ops=[Put(f"n/{i}", i) for i in range(300)])
    n = as_json(comity_cli("--session", "watcher", "news", "--limit", "1000", "--json"))
    assert len(n["events"]) == 300 or n["truncated"], (len(n["events"]), n["truncated"])


def test_keys_limit_is_not_eaten_by_sequences(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "notes", "1"))
    for name in ("a", "b", "c"):
        ok(comity_cli("--agent", "alice", "seq", "next", name))
    assert ok(comity_cli("keys")).stdout.split() == ["notes"]
    assert ok(comity_cli("keys", "--limit", "2")).stdout.split() == ["notes"]


def test_keys_does_what_its_help_says_about_deleted_keys(comity_cli: Run) -> None:
    ok(comity_cli("--agent", "alice", "create", "gone", "1"))
    ctx = as_json(comity_cli("get", "gone", "--json"))["context"]
    ok(comity_cli("--agent", "alice", "delete", "gone", "--context", ctx))
    claims_listed = "are listed" in " ".join(ok(comity_cli("keys", "--help")).stdout.split())
    listed = "gone" in ok(comity_cli("keys")).stdout.split()
    assert claims_listed == listed


def test_help_lists_the_exit_codes(comity_cli: Run) -> None:
    r = ok(comity_cli("--help"))
    assert "Exit codes" in r.stdout
    for code, words in [("0", "done"), ("1", "internal"), ("2", "bad input"), ("3", "refused"),
                        ("4", "nothing there"), ("5", "unavailable")]:
        assert any(line.split()[:1] == [code] and words in line for line in r.stdout.splitlines()), (code, r.stdout)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out: list[tuple[tuple[str, ...], click.Command]] = []
    for name, cmd in group.commands.items():
        out.append(((*prefix, name), cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
    return out


def test_every_command_has_help_text() -> None:
    commands = _commands(cli)
    assert {"init", "get", "put", "create", "delete", "log", "news"} <= {path[0] for path, _ in commands}
    runner = CliRunner()
    for path, cmd in commands:
        assert (cmd.help or "").strip(), f"`comity {' '.join(path)}` has no help text"
        r = runner.invoke(cli, [*path, "--help"])
        assert r.exit_code == 0 and (cmd.help or "").split()[0] in r.output, path


def test_init_outside_git_uses_dot_comity(comity_cli: Run, tmp_path: Path) -> None:
    here = tmp_path / "plain"
    here.mkdir()
    r = ok(comity_cli("init", store=None, cwd=here, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)}))
    expected = here / ".comity" / "store.db"
    assert str(expected) in r.stdout and "no git" in r.stdout
    assert expected.exists()


def _git(cwd: Path, *args: str) -> str:
    r = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                       capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"], "HOME": str(cwd)})
    return r.stdout.strip()


def test_worktrees_of_one_repository_share_one_store(comity_cli: Run, tmp_path: Path) -> None:
    repo, other = tmp_path / "repo", tmp_path / "repo-wt"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "initial")
    _git(repo, "worktree", "add", "-q", str(other))
    (repo / "sub").mkdir()
    common = (repo / _git(repo, "rev-parse", "--git-common-dir")).resolve()
    expected = common / "comity" / "store.db"
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}

    locations = []
    for cwd in (repo, other, repo / "sub"):
        r = ok(comity_cli("init", store=None, cwd=cwd, env=env))
        assert str(expected) in r.stdout, (cwd, r.stdout)
        locations.append(as_json(comity_cli("init", "--json", store=None, cwd=cwd, env=env))["location"])
    assert locations == [str(expected)] * 3
    # and it really is one store: a write in one worktree is read in the other
    ok(comity_cli("--agent", "alice", "create", "k", '"from repo"', store=None, cwd=repo, env=env))
    v = as_json(comity_cli("get", "k", "--json", store=None, cwd=other, env=env))
    assert v["values"] == ["from repo"]
    assert not (repo / ".comity").exists() and not (other / ".comity").exists()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('"\\ud800"', id="lone-surrogate"),
        pytest.param("[" * 5000 + "]" * 5000, id="deeply-nested"),
    ],
)
def test_json_python_cannot_store_is_bad_input_not_a_crash(comity_cli: Run, value: str) -> None:
    # Regression: both were exit 1, "internal error" (UnicodeEncodeError, RecursionError).
    r = comity_cli("--agent", "alice", "put", "k", value)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "JSON_VALUE" in r.stderr or "value" in r.stderr
