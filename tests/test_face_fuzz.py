"""Generated bad input through every face, on both backends (issue 14's fuzz suite).

Hypothesis builds calls from the verb table (every agent verb, each parameter either a
plausible value for its kind, a hostile one, or any JSON at all; required ones dropped,
unknown ones added) and sends each through Python, the CLI (argv built from it, and argv
generated from the CLI's own commands and options), the HTTP API and MCP over stdio and
streamable HTTP.  Whatever comes in, a face must answer one of comity's codes, and:

- never a bug: no 5xx, no traceback, no CLI exit 1, no MCP error without comity's code;
- a request refused as bad input (``invalid``) leaves the log exactly where it was;
- any other refusal (stale, fenced, not found, lease expired) adds at most comity's own
  record of it: ``write.refused`` on ``@refused``, ``task.fenced`` or ``task.claim-refused``
  on the task (what the dashboard's Conflicts view reads), never a change to anyone's data;
- a verb that does not mutate leaves the log where it was, answered or refused.

(tests/test_server_fuzz.py runs schemathesis over the OpenAPI document in process; this
suite runs real processes and watches the store's log across each call.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mcp.server.mcpserver")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import BACKENDS, drop_pg_schemas, pg_schema, pg_url  # noqa: E402
from faces_support import FACES, CliFace, Face, Outcome, Unsupported, comity, open_face  # noqa: E402

import comity as comity_lib  # noqa: E402
from comity.store._api import REFUSED_KEY, REFUSED_OP  # noqa: E402
from comity.work.verbs import VERB, Param  # noqa: E402

pytestmark = pytest.mark.slow

# The agent verbs a fuzzer may call on a shared store.  Left out: verbs that run commands
# or touch a git worktree (verify, migration_*), admin verbs (policy_set, key_register) and
# the server-side halves of other verbs (migration_take, seq_reserve); each has its own tests.
FUZZED = [
    "info", "whoami", "read", "write", "create", "delete", "update", "news", "log", "keys",
    "task_add", "task_list", "task_ready", "task_show", "task_assign", "task_claim", "task_claim_next",
    "task_renew", "task_checkpoint", "task_complete", "task_release", "task_fail", "seq_next",
    "reserve_paths", "release_paths", "reservations", "agents", "why", "change_show", "change_list", "refute",
]  # fmt: skip

# What a face may answer (anything else, "internal" above all, is a bug).
CODES = {"ok", "invalid", "stale_context", "fenced", "lease_expired", "not_found"}

# Examples per face and backend: a CLI call is a process (about a second on a loaded machine).
EXAMPLES = {"python": 120, "cli": 20, "http": 60, "mcp_stdio": 60, "mcp_http": 50}
EXAMPLES = {k: int(v * float(os.environ.get("COMITY_FUZZ_SCALE", "1"))) or 1 for k, v in EXAMPLES.items()}


# ------------------------------------------------------------------ generators

_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)  # fmt: skip
ANY_JSON = st.recursive(
    _SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6
)

HOSTILE_TEXT = st.sampled_from([
    "", " ", "a" * 5000, "../../etc/passwd", "/abs/path", "@auth/alice", "@refused", "@task/T-1", "b\u043eb",
    "\uff43\uff41\uff52\uff4f\uff4c", "e\u0301", "\u202eevil", "x\ny", "tab\there", "💥", "T-1'; DROP TABLE events; --",
    "%s%s%n", "${HOME}", "-h", "--help", "nul\x00byte", "lone\ud800surrogate",
])  # fmt: skip
TEXT = st.one_of(HOSTILE_TEXT, st.text(max_size=20))

# Plausible values by parameter name: enough hits on real keys, tasks and tokens that the
# state-changing paths (claims, fenced actions, stale writes) run too, not only validation.
NAMED: dict[str, st.SearchStrategy[Any]] = {
    "key": st.sampled_from(["fz/a", "fz/b", "fz/ctr", "fz/set", "notes/x", "fz/" + "k" * 300]) | TEXT,
    "prefix": st.sampled_from(["", "fz/", "@", "@auth/", "notes"]) | TEXT,
    "target": st.sampled_from(["T-1", "T-2", "fz/a", "@auth/alice"]) | TEXT,
    "id": st.sampled_from(["T-1", "T-2", "T-3", "T-999999", "t-1", "T-0", "T--1", "C-1"]) | TEXT,
    "agent": st.sampled_from(["alice", "bob", "zed", "b\u043eb", "\uff43arol", "A" * 200]) | TEXT,
    "token": st.sampled_from([1, 2, 3, 0, -1, 2**63, 2**64]) | st.integers(),
    "ttl": st.sampled_from([0.001, 1, 30, 3600, 0, -1, 1e308, 10**400]) | st.floats(),
    "limit": st.sampled_from([1, 50, 0, -1, 10**9, 2**63]) | st.integers(),
    "after": st.sampled_from([0, 1, -1, 2**63]) | st.integers(),
    "state": st.sampled_from(["open", "claimed", "done", "failed", "submitted", "bogus", "OPEN"]),
    "op": st.sampled_from(["inc", "dec", "add", "remove", "set", "enable", "disable", "assign", "bogus"]),
    "type": st.sampled_from(["gcounter", "pncounter", "orset", "lww", "mvregister", "flag", "ormap", "bogus"]),
    "context": st.sampled_from(["", "x", "A" * 70_000 + ".AAAA", "W10.AAAAAAAAAAAAAAAA", "not-a-context"]) | TEXT,
    "paths": st.lists(st.sampled_from(["src/a.py", "src/**", "/etc/passwd", "../x", "", "*"]) | TEXT, max_size=3),
    "name": st.sampled_from(["migrations", "fz", "", "a" * 300]) | TEXT,
    "request_id": st.sampled_from(["r-1", "r-1", "", "x" * 200]) | TEXT,
}


def _of_kind(p: Param) -> st.SearchStrategy[Any]:
    """A value for ``p``: of its kind, and more often one of the plausible ones for its name."""
    base = p.base
    if base == "str":
        s: st.SearchStrategy[Any] = TEXT
    elif base == "int":
        s = st.integers(min_value=-(2**70), max_value=2**70)
    elif base == "number":
        s = st.floats() | st.integers(min_value=-(2**70), max_value=2**70)
    elif base == "bool":
        s = st.booleans()
    elif base.startswith("list["):
        s = st.lists(TEXT, max_size=3)
    elif base == "object":
        s = st.dictionaries(st.text(max_size=6), ANY_JSON, max_size=3)
    else:  # json
        s = ANY_JSON
    if p.name in NAMED:
        return st.one_of(NAMED[p.name], NAMED[p.name], NAMED[p.name], s)
    return s


# Values a careful agent would send, by parameter name: half the calls use only these, so
# the paths past validation (claims, fenced actions, stale writes, CRDT merges) run too.
PLAUSIBLE: dict[str, list[Any]] = {
    "key": ["fz/a", "fz/b", "fz/ctr", "fz/new", "notes/x"], "prefix": ["", "fz/", "notes"], "target": ["T-1", "T-2", "fz/a"],
    "id": ["T-1", "T-2", "T-3", "T-4", "C-1"], "agent": ["alice", "bob", "carol"], "token": [1, 2, 3, 4],
    "ttl": [30, 60.5, 3600], "limit": [1, 10, 50], "after": [0, 3, 10], "state": ["open", "claimed", "done", "failed"],
    "op": ["inc", "dec", "add", "remove", "set"], "type": ["gcounter", "pncounter", "orset", "lww"],
    "value": [1, "x", {"v": 2}, [1, 2], None], "arg": [1, 2, "x"], "title": ["fix the parser"], "body": ["details"],
    "note": ["half way"], "result": ["done: see commit"], "reason": ["it fails on main"], "paths": [["src/a.py"], ["src/**"]],
    "name": ["migrations", "fz"], "steal": [False, True], "shared": [False, True], "keep_both": [False, True],
    "deleted": [False, True], "context": ["W10.AAAAAAAAAAAAAAAA"], "assignee": ["alice", "bob"], "deps": [["T-1"]],
    "labels": [["bug"]], "detail": ["stuck"],
}  # fmt: skip


@st.composite
def calls(draw: st.DrawFn, verbs: list[str]) -> tuple[str, dict[str, Any]]:
    """A verb and its arguments: either what a careful agent might send, or each argument
    plausible, hostile, of the wrong type, missing or unknown."""
    verb = draw(st.sampled_from(verbs))
    args: dict[str, Any] = {}
    careful = draw(st.booleans())
    for p in VERB[verb].params:
        present = draw(st.integers(0, 19)) < (19 if p.required else 8)
        if careful and (p.required or draw(st.integers(0, 2)) == 0) and p.name in PLAUSIBLE:
            args[p.name] = draw(st.sampled_from(PLAUSIBLE[p.name]))
        elif not careful and present:
            args[p.name] = draw(st.one_of(_of_kind(p), _of_kind(p), _of_kind(p), ANY_JSON))
    if not careful and draw(st.integers(0, 9)) == 0:
        args[draw(st.sampled_from(["bogus", "Key", "__proto__", "agent", "session"]))] = draw(ANY_JSON)
    return verb, args


# ------------------------------------------------------------------ the store and its faces


@pytest.fixture(scope="module", params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    where = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    loc = str(where / "s.db") if request.param == "sqlite" else pg_url(pg_schema(where))
    r = comity("init", location=loc)
    assert r.returncode == 0, r
    # Something to hit: keys, a counter, tasks (one claimed), a sequence, a refused write.
    with comity_lib.open(loc) as store:
        from comity.work import Agent

        alice, bob = Agent(store.session("alice")), Agent(store.session("bob"))
        alice.write("fz/a", {"v": 1})
        bob.create("fz/b", [1, 2])
        alice.update("fz/ctr", "inc", 1, type="gcounter")
        for title in ("one", "two", "three"):
            alice.task_add(title)
        bob.task_claim("T-2")
        alice.seq_next("fz")
    yield loc
    if request.param == "postgres":
        drop_pg_schemas([pg_schema(where)])


class Log:
    """The store's log as a second connection sees it."""

    def __init__(self, location: str) -> None:
        self.store = comity_lib.open(location)
        self.session = self.store.session()

    def head(self) -> int:
        return self.session.head()

    def since(self, pos: int) -> list[dict[str, Any]]:
        return self.session.log(after=pos, limit=10_000, values=False)

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def log(location: str) -> Iterator[Log]:
    reader = Log(location)
    yield reader
    reader.close()


@pytest.fixture(scope="module", params=FACES)
def face(request: pytest.FixtureRequest, location: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Face]:
    workdir = tmp_path_factory.mktemp("face")
    with open_face(request.param, location, workdir) as f:
        f.workdir = workdir  # type: ignore[attr-defined]
        yield f
    # A server that answered well but wrote a traceback to its log had a bug all the same.
    for served in workdir.glob("*.log"):
        text = served.read_text(errors="replace")
        assert "Traceback" not in text, f"{served}: {text[-3000:]}"


def _refusal_record(e: dict[str, Any]) -> bool:
    """comity's own note of a refusal: a stale write, a fenced task action, a refused claim."""
    return (e["key"] == REFUSED_KEY and e["op"] == REFUSED_OP) or (
        e["key"].startswith("@task/") and e["op"] in ("task.fenced", "task.claim-refused")
    )


def judge(log: Log, face: Face, verb: str, args: dict[str, Any], before: int, out: Outcome) -> None:
    said = (face.name, verb, args if len(repr(args)) < 600 else repr(args)[:600], out.raw[:1500] or out.message[:1500])
    assert out.code in CODES, said
    if out.code == "invalid":
        assert out.message, said  # it says what was wrong
    moved = log.since(before)
    if out.code == "invalid":
        assert moved == [], ("bad input moved the log", said, moved)
    elif not out.ok:
        assert all(_refusal_record(e) for e in moved), ("a refusal changed the store", said, moved)
    if not VERB[verb].mutating:
        assert moved == [], ("a verb that reads moved the log", said, moved)


def _encodable(v: Any, *, nul: bool = True) -> bool:
    """Whether every string in ``v`` is UTF-8 (and, unless ``nul``, has no NUL byte)."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return nul or "\x00" not in v
    if isinstance(v, dict):
        return all(_encodable(k, nul=nul) and _encodable(x, nul=nul) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_encodable(x, nul=nul) for x in v)
    return True


def _finite(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    if isinstance(v, list):
        return all(_finite(x) for x in v)
    return True


# ------------------------------------------------------------------ the suite


def test_generated_calls_are_answered_or_refused_cleanly(face: Face, location: str, log: Log) -> None:
    sent: list[str] = []
    codes: dict[str, int] = {}

    @given(call=calls(FUZZED))
    @settings(max_examples=EXAMPLES[face.name], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def fuzz(call: tuple[str, dict[str, Any]]) -> None:
        verb, args = call
        if face.name != "python" and not _finite(args):
            return  # NaN and infinities are not JSON; a JSON client cannot send them
        if face.name == "cli" and not _encodable(args, nul=False):
            return  # a command line carries neither NUL bytes nor lone surrogates
        if face.name.startswith("mcp") and not _encodable(args):
            return  # the MCP SDK's client cannot serialize a lone surrogate (a raw one is tested below)
        before = log.head()
        try:
            out = face.call(verb, args)
        except Unsupported:
            return
        except KeyError:
            return  # the CLI's command needs an argument this call left out: the argv fuzz below sends those
        sent.append(verb)
        codes[out.code] = codes.get(out.code, 0) + 1
        judge(log, face, verb, args, before, out)

    fuzz()
    assert len(set(sent)) >= (5 if face.name == "cli" else 12), f"{face.name} reached too few verbs: {sorted(set(sent))}"
    assert codes.get("ok") and codes.get("invalid"), f"{face.name}: the cases must be answered and refused alike: {codes}"
    print(face.name, dict(sorted(codes.items())), len(set(sent)), "verbs")


# The CLI's commands an agent uses, and the options each takes (from click itself).
_COMMANDS = [
    ["get"], ["put"], ["create"], ["update"], ["delete"], ["log"], ["keys"], ["news"], ["task", "add"],
    ["task", "list"], ["task", "ready"], ["task", "show"], ["task", "assign"], ["task", "claim"], ["task", "renew"],
    ["task", "checkpoint"], ["task", "done"], ["task", "release"], ["task", "fail"], ["seq", "next"], ["reserve"],
    ["release"], ["reservations"], ["agents"], ["why"], ["decisions"], ["change", "show"], ["change", "list"],
]  # fmt: skip


def _options(path: list[str]) -> list[str]:
    import click

    from comity.cli import cli

    cmd: Any = cli
    for name in path:
        cmd = cmd.commands[name]
    return sorted({o for p in cmd.params if isinstance(p, click.Option) for o in p.opts})


ARG_TEXT = st.one_of(
    st.sampled_from(["T-1", "T-2", "fz/a", "fz/ctr", "1", "-1", "0", "1e999", "nan", '"x"', "{", "[1,", "null", "inc", "--", "-",
                     "src/a.py", "@auth/alice", "b\u043eb", "a" * 3000]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=10),
)  # fmt: skip


_OPTIONS = {tuple(path): _options(path) for path in _COMMANDS}


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(_COMMANDS))
    opts = _OPTIONS[tuple(path)]
    argv = ["--agent", draw(st.sampled_from(["alice", "bob", "b\u043eb", "", "x" * 300]))]
    argv += list(path)
    for _ in range(draw(st.integers(0, 5))):
        if opts and draw(st.booleans()):
            argv.append(draw(st.sampled_from(opts)))
        argv.append(draw(ARG_TEXT))
    if draw(st.booleans()):
        argv.append("--json")
    return argv


@pytest.mark.parametrize("backend_face", ["cli"])
def test_generated_command_lines_exit_with_a_meaning(backend_face: str, location: str, log: Log) -> None:
    """argv from the CLI's own commands and options, shuffled with hostile words: exit 0, 2,
    3 or 4 (never 1, never a traceback), and exit 2 leaves the log where it was."""
    cli = CliFace(location, "alice", session=None)
    seen: set[int] = set()

    @given(argv=argvs())
    @settings(max_examples=EXAMPLES["cli"], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def fuzz(argv: list[str]) -> None:
        if "-h" in argv or "--help" in argv:
            return
        before = log.head()
        out = cli.run(argv)
        rc = int(out.raw.split("\n", 1)[0].split()[1])
        seen.add(rc)
        assert rc in (0, 2, 3, 4) and "Traceback" not in out.raw, (argv, out.raw[:2000])
        moved = log.since(before)
        if rc == 2:
            assert moved == [], ("bad input moved the log", argv, moved)
        elif rc != 0:
            assert all(_refusal_record(e) for e in moved), ("a refusal changed the store", argv, moved)

    fuzz()
    assert 2 in seen, "the argv fuzz never sent bad input"


def test_the_fuzz_reaches_every_fuzzed_verb() -> None:
    """The generator can produce each verb, and each is in the verb table."""
    assert set(FUZZED) <= set(VERB)
    found: set[str] = set()

    @given(call=calls(FUZZED))
    @settings(max_examples=600, derandomize=True, database=None)
    def gen(call: tuple[str, dict[str, Any]]) -> None:
        found.add(call[0])

    gen()
    assert found == set(FUZZED)
