"""Path reservations: the overlap relation, exclusive and shared reservations, expiry on
a virtual clock, and real processes racing for overlapping paths."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import comity
from comity import Invalid, NotFound, StaleContext
from comity.coord import overlaps, release, reservations, reserve
from comity.runtime import VirtualClock

# ------------------------------------------------------------------------ overlaps

POSITIVE = [
    ("src/**", "src/app.py"),
    ("src/**", "src/a/b/c.py"),
    ("src/**", "src"),
    ("**", "anything/at/all"),
    ("src/*.py", "src/app.py"),
    ("src/a?p.py", "src/app.py"),
    ("src/[ab]pp.py", "src/app.py"),
    ("src/**/test_*.py", "src/a/b/test_x.py"),
    ("src/**/test_*.py", "src/test_x.py"),
    ("src", "src/a/b.py"),  # a directory overlaps what is under it
    ("src/a", "src/a/b/c"),
    ("docs/*.md", "docs/**"),
    ("src/*.py", "src/app*"),
    ("src/a*", "src/*b"),
    ("*/x.py", "src/x.py"),
    ("src/app.py", "src/app.py"),
]

NEGATIVE = [
    ("src/a/*", "src/b/x"),
    ("src/app.py", "src/app.pyc"),
    ("src", "srcx/a.py"),
    ("src/*.py", "src/app.js"),
    ("src/*.py", "lib/app.py"),
    ("src/a*", "src/b*"),
    ("src/*a", "src/*b"),
    ("docs/**", "src/**"),
    ("src/**/test_*.py", "lib/test_x.py"),
    ("src/x.py", "src/y.py"),
]


@pytest.mark.parametrize(("a", "b"), POSITIVE)
def test_overlapping_examples(a: str, b: str) -> None:
    assert overlaps(a, b) and overlaps(b, a)


@pytest.mark.parametrize(("a", "b"), NEGATIVE)
def test_disjoint_examples(a: str, b: str) -> None:
    assert not overlaps(a, b) and not overlaps(b, a)


# Segment-wise globs: '*', '?' and '[...]' stay within one segment; '**' spans segments.
_CHARS = "abc"
_lit_seg = st.text(alphabet=_CHARS + "._", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))
_lit_path = st.lists(_lit_seg, min_size=1, max_size=4)


def _seg_match(path: list[str], glob: list[str]) -> bool:
    """Reference matcher: does the literal ``path`` match ``glob`` segment-wise?"""
    if not glob:
        return not path
    if glob[0] == "**":
        return _seg_match(path, glob[1:]) or (bool(path) and _seg_match(path[1:], glob))
    return bool(path) and fnmatch.fnmatchcase(path[0], glob[0]) and _seg_match(path[1:], glob[1:])


@st.composite
def _glob_of(draw: st.DrawFn, path: list[str]) -> list[str]:
    """A glob built from ``path`` so that it matches it."""
    out: list[str] = []
    i = 0
    while i < len(path):
        kind = draw(st.sampled_from(["keep", "keep", "star", "substar", "qmark", "class", "globstar", "empty-globstar"]))
        seg = path[i]
        if kind == "globstar":  # '**' for one or more segments
            n = draw(st.integers(1, len(path) - i))
            out.append("**")
            i += n
            continue
        if kind == "empty-globstar":  # '**' for zero segments
            out += ["**", seg]
            i += 1
            continue
        if kind == "star":
            seg = "*"
        elif kind == "substar":
            a = draw(st.integers(0, len(seg)))
            b = draw(st.integers(a, len(seg)))
            seg = seg[:a] + "*" + seg[b:]
        elif kind == "qmark":
            k = draw(st.integers(0, len(seg) - 1))
            seg = seg[:k] + "?" + seg[k + 1 :]
        elif kind == "class":
            k = draw(st.integers(0, len(seg) - 1))
            other = draw(st.sampled_from(_CHARS))
            cls = draw(st.sampled_from([f"[{seg[k]}{other}]", f"[{other}{seg[k]}]"] + ([f"[!{other}]"] if other != seg[k] else [])))
            seg = seg[:k] + cls + seg[k + 1 :]
        out.append(seg)
        i += 1
    # collapse repeated '**' (equivalent, and what a person would write)
    collapsed: list[str] = []
    for s in out:
        if not (s == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(s)
    return collapsed


@st.composite
def _path_and_glob(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    path = draw(_lit_path)
    return path, draw(_glob_of(path))


@settings(max_examples=400, deadline=None)
@given(_path_and_glob())
def test_a_literal_path_overlaps_every_glob_that_matches_it(pg: tuple[list[str], list[str]]) -> None:
    path, glob = pg
    assert _seg_match(path, glob), (path, glob)  # the example is built right
    p, g = "/".join(path), "/".join(glob)
    assert overlaps(p, g) and overlaps(g, p), (p, g)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_two_globs_matching_one_path_overlap(data: st.DataObject) -> None:
    """Soundness: if some path matches both, they overlap (never a false 'no')."""
    path = data.draw(_lit_path)
    g1 = "/".join(data.draw(_glob_of(path)))
    g2 = "/".join(data.draw(_glob_of(path)))
    assert overlaps(g1, g2) and overlaps(g2, g1), (path, g1, g2)


@settings(max_examples=300, deadline=None)
@given(_lit_path, _lit_path)
def test_literal_paths_overlap_exactly_when_one_lies_under_the_other(a: list[str], b: list[str]) -> None:
    n = min(len(a), len(b))
    assert overlaps("/".join(a), "/".join(b)) == (a[:n] == b[:n])


@settings(max_examples=200, deadline=None)
@given(_lit_path, st.data())
def test_a_directory_overlaps_everything_under_it(path: list[str], data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(path)))
    assert overlaps("/".join(path[:k]), "/".join(path))
    assert overlaps("/".join(path[:k]) + "/**", "/".join(path))


_any_seg = st.one_of(
    _lit_seg,
    st.sampled_from(["*", "**", "?", "a*", "*a", "a?c", "[ab]", "[!a]b", "*.c", "b*c", "a**"]),
)
_any_pattern = st.lists(_any_seg, min_size=1, max_size=5).map("/".join)


@settings(max_examples=500, deadline=None)
@given(_any_pattern, _any_pattern)
def test_overlaps_is_symmetric(a: str, b: str) -> None:
    assert overlaps(a, b) == overlaps(b, a)


@settings(max_examples=200, deadline=None)
@given(_any_pattern)
def test_overlaps_is_reflexive(a: str) -> None:
    assert overlaps(a, a)


# -------------------------------------------------------------------- reservations


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def store(make_store: Callable[..., comity.Store], vclock: VirtualClock) -> comity.Store:
    """A store of each backend (conftest), on the virtual clock."""
    return make_store(clock=vclock)


def held(store: comity.Store) -> set[tuple[str, str, bool]]:
    return {(r.pattern, r.holder, r.shared) for r in reservations(store.session())}


def test_exclusive_reservation_refuses_another_agents_overlap_naming_the_holder(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    (r,) = reserve(alice, ["src/**"], ttl=600)
    assert (r.pattern, r.holder, r.shared) == ("src/**", "alice", False)
    for p in (["src/app.py"], ["src/a/b/c.py"], ["src"], ["**"]):
        with pytest.raises(StaleContext) as ei:
            reserve(bob, p)
        assert ei.value.exit_code == 3
        assert "alice" in ei.value.message
        assert ei.value.details["conflict"]["holder"] == "alice"
        assert ei.value.details["conflict"]["pattern"] == "src/**"
    with pytest.raises(StaleContext):  # shared is refused too, against an exclusive one
        reserve(bob, ["src/app.py"], shared=True)
    reserve(bob, ["docs/**", "lib/x.py"])  # elsewhere is fine
    assert held(store) == {("src/**", "alice", False), ("docs/**", "bob", False), ("lib/x.py", "bob", False)}


def test_reserve_is_all_or_nothing(store: comity.Store) -> None:
    reserve(store.session("alice"), ["src/app.py"])
    before = held(store)
    with pytest.raises(StaleContext):
        reserve(store.session("bob"), ["docs/a.md", "src/*.py"])
    assert held(store) == before


def test_shared_with_shared_is_fine_shared_with_exclusive_is_not(store: comity.Store) -> None:
    alice, bob, carol = store.session("alice"), store.session("bob"), store.session("carol")
    reserve(alice, ["src/**"], shared=True)
    reserve(bob, ["src/app.py"], shared=True)
    assert held(store) == {("src/**", "alice", True), ("src/app.py", "bob", True)}
    with pytest.raises(StaleContext) as ei:  # exclusive vs another's shared
        reserve(carol, ["src/app.py"])
    assert ei.value.details["conflict"]["holder"] in ("alice", "bob")
    reserve(carol, ["lib/**"])
    with pytest.raises(StaleContext) as ei:  # shared vs another's exclusive
        reserve(alice, ["lib/a.py"], shared=True)
    assert "carol" in ei.value.message


def test_own_re_reserve_renews_and_own_overlaps_are_fine(store: comity.Store, vclock: VirtualClock) -> None:
    alice = store.session("alice")
    (first,) = reserve(alice, ["src/**"], ttl=100)
    vclock.advance(60)
    (again,) = reserve(alice, ["src/**"], ttl=100)
    assert again.token == first.token and again.expires == first.expires + 60
    (inner,) = reserve(alice, ["src/app.py"], ttl=100)  # overlapping my own: fine
    assert inner.token != first.token
    vclock.advance(60)  # 120 s after the first: alive only because of the renewal
    assert ("src/**", "alice", False) in held(store)
    with pytest.raises(StaleContext):
        reserve(store.session("bob"), ["src/b.py"])


def test_expiry_by_the_store_clock_frees_a_reservation(store: comity.Store, vclock: VirtualClock) -> None:
    reserve(store.session("alice"), ["src/**"], ttl=100)
    vclock.advance(99.999)
    with pytest.raises(StaleContext):
        reserve(store.session("bob"), ["src/a.py"])
    vclock.advance(0.001)
    assert held(store) == set()
    (r,) = reserve(store.session("bob"), ["src/a.py"])
    assert r.holder == "bob"
    with pytest.raises(NotFound):  # alice's expired reservation is gone
        release(store.session("alice"), ["src/**"])


def test_release(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    reserve(alice, ["src/**", "docs/x.md"])
    with pytest.raises(NotFound):
        release(bob, ["src/**"])  # not bob's
    with pytest.raises(NotFound):
        release(alice, ["lib/**"])  # never held
    with pytest.raises(NotFound):
        release(alice, ["src/app.py"])  # release is by exact pattern
    assert release(alice, ["./src/**"]) == ["src/**"]  # normalized
    assert held(store) == {("docs/x.md", "alice", False)}
    reserve(bob, ["src/app.py"])
    with pytest.raises(NotFound):
        release(alice, ["src/**"])  # already released


def test_tokens_of_new_reservations_increase(store: comity.Store) -> None:
    a = reserve(store.session("alice"), ["a", "b"])
    b = reserve(store.session("bob"), ["c"])
    release(store.session("alice"), ["a"])
    c = reserve(store.session("carol"), ["a"])
    tokens = [r.token for r in a + b + c]
    assert tokens == sorted(set(tokens))


@pytest.mark.parametrize("bad", [[], [""], ["  "], ["../x"], ["a/../../b"], ["x" * 600], [5], "src/**", ["a\x01b"]])
def test_bad_paths_are_invalid_and_change_nothing(store: comity.Store, bad: Any) -> None:
    reserve(store.session("alice"), ["keep/**"])
    head = store.session().head()
    with pytest.raises(Invalid) as ei:
        reserve(store.session("bob"), bad)
    assert ei.value.field == "paths"
    with pytest.raises(Invalid):
        release(store.session("alice"), bad)
    assert store.session().head() == head


@pytest.mark.parametrize("bad", ["/etc/passwd", "/src/app.py", "//src/**"])
def test_absolute_paths_are_invalid(store: comity.Store, bad: str) -> None:
    """Refused, not silently made relative ('/repo/src/app.py' would not overlap 'src/app.py')."""
    head = store.session().head()
    with pytest.raises(Invalid) as ei:
        reserve(store.session("bob"), [bad])
    assert ei.value.field == "paths"
    assert store.session().head() == head


@pytest.mark.parametrize("ttl", [0, -1, 7 * 24 * 3600 + 1, True, float("nan"), "60"])
def test_bad_ttl_is_invalid(store: comity.Store, ttl: Any) -> None:
    head = store.session().head()
    with pytest.raises(Invalid) as ei:
        reserve(store.session("bob"), ["src/**"], ttl=ttl)
    assert ei.value.field == "ttl"
    assert store.session().head() == head


def test_reserving_needs_an_agent(store: comity.Store) -> None:
    with pytest.raises(Invalid) as ei:
        reserve(store.session(), ["src/**"])
    assert ei.value.field == "agent"


# ----------------------------------------------------------------- real processes

_RACER = textwrap.dedent(
    """
    import json, sys
    import comity
    from comity import StaleContext
    from comity.coord import reserve
    path, agent, kind, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    patterns = ["r{i}/**", "r{i}/a.py", "r{i}", "r{i}/*.py"]
    store = comity.open(path)
    session = store.session(agent)
    print("ready", flush=True)
    sys.stdin.readline()
    won, lost = [], {}
    for i in range(rounds):
        try:
            reserve(session, [patterns[kind % len(patterns)].format(i=i)], ttl=600)
            won.append(i)
        except StaleContext as e:
            lost[i] = e.details["conflict"]["holder"]
    print(json.dumps({"won": won, "lost": lost}), flush=True)
    """
)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}


def test_processes_racing_for_overlapping_paths_exactly_one_wins_each(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    comity.open(db).close()
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    n, rounds = 4, 30
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), f"w{k}", str(k), str(rounds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env(),
            cwd=tmp_path,
        )
        for k in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # start them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = {}
    for k, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, err
        results[f"w{k}"] = json.loads(out.strip().splitlines()[-1])
    for i in range(rounds):
        winners = [a for a, r in results.items() if i in r["won"]]
        assert len(winners) == 1, (i, results)
        for a, r in results.items():
            if a != winners[0]:
                assert r["lost"][str(i)] == winners[0]
    store = comity.open(db)
    try:
        live = reservations(store.session())
        assert len(live) == rounds
        assert {r.pattern.split("/")[0] for r in live} == {f"r{i}" for i in range(rounds)}
    finally:
        store.close()


def test_cli_reserve_race_and_exit_codes(tmp_path: Path, comity_cli: Callable[..., Any]) -> None:
    from conftest import clean_env, cli_together

    db = str(tmp_path / "cli.db")
    assert comity_cli("init").returncode == 0
    env = clean_env(COMITY_STORE=db)
    paths = ["src/**", "src/app.py", "src", "src/*.py"]
    done = cli_together([["--agent", f"w{k}", "reserve", p, "--json"] for k, p in enumerate(paths)], env=env, cwd=tmp_path)
    outs = [(d.stdout, d.stderr) for d in done]
    codes = [d.returncode for d in done]
    assert sorted(codes) == [0, 3, 3, 3], (codes, outs)
    winner = f"w{codes.index(0)}"
    for code, (out, err) in zip(codes, outs):
        if code == 3:
            assert json.loads(out)["conflict"]["holder"] == winner
            assert winner in err

    listed = comity_cli("reservations", "--json")
    assert listed.returncode == 0
    assert [(r["holder"], r["shared"]) for r in json.loads(listed.stdout)] == [(winner, False)]
    assert comity_cli("--agent", "nobody", "release", "src/**", "--json").returncode == 4
    assert comity_cli("--agent", "w9", "reserve", "../x").returncode == 2
    assert comity_cli("--agent", "w9", "reserve", "x", "--ttl", "0").returncode == 2
    r = comity_cli("--agent", winner, "release", paths[codes.index(0)], "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"released": [paths[codes.index(0)]]}
    assert json.loads(comity_cli("reservations", "--json").stdout) == []
