"""Shared fixtures: a store per backend, the virtual clock it runs on, and the CLI.

The store conformance suite is parametrized over ``BACKENDS``.  A backend is a name and
a factory ``(directory, clock, rng, **open_kwargs) -> Store``: SQLite, and PostgreSQL
when ``COMITY_TEST_POSTGRES_URL`` names a server (else its cases are skipped, saying so).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import comity
import comity.store
from comity.runtime import Clock, Rng, SeededRng, VirtualClock

Factory = Callable[..., comity.Store]


# PostgreSQL: each store is a fresh schema of the database at COMITY_TEST_POSTGRES_URL
# (named after the store's path, so the same name reopens it), dropped after the test.
# Without the variable the postgres cases are skipped, with a reason saying so.
PG_URL = os.environ.get("COMITY_TEST_POSTGRES_URL") or None
PG_SKIP: str | None = None
if PG_URL is None:
    PG_SKIP = "PostgreSQL tests skipped: set COMITY_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)"
elif importlib.util.find_spec("psycopg") is None or importlib.util.find_spec("psycopg_pool") is None:
    PG_SKIP = "PostgreSQL tests skipped: psycopg is not installed (pip install -e '.[dev]')"


_RUN = os.urandom(8).hex()  # a schema left by a crashed run is never reopened by a later one


def pg_schema(where: Path | str) -> str:
    """The schema that stands for the store at ``where``: unique per test and name."""
    return "t_" + hashlib.sha1(f"{_RUN}:{where}".encode()).hexdigest()[:24]


def pg_url(schema: str) -> str:
    """The store URL of ``schema``.  Tests do not crash the server, so they do not wait for
    each commit's WAL flush (``synchronous_commit=off``); comity never sets that itself."""
    assert PG_URL is not None
    url = PG_URL + ("&" if "?" in PG_URL else "?") + "schema=" + schema
    if "options=" not in PG_URL:
        url += "&options=-c%20synchronous_commit%3Doff"
    return url


def drop_pg_schemas(schemas: Iterable[str]) -> None:
    import psycopg

    assert PG_URL is not None
    names = ", ".join(f'"{schema}"' for schema in schemas)
    if names:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {names} CASCADE")  # one commit for them all


def _sqlite(where: Path, clock: Clock, rng: Rng, **kw: Any) -> comity.Store:
    return comity.open(where, clock=clock, rng=rng, **kw)


def _postgres(where: Path, clock: Clock, rng: Rng, **kw: Any) -> comity.Store:
    return comity.open(pg_url(pg_schema(where)), clock=clock, rng=rng, **kw)


FACTORIES: dict[str, Factory] = {"sqlite": _sqlite, "postgres": _postgres}

BACKENDS: list[Any] = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skip(reason=PG_SKIP)) if PG_SKIP else "postgres",
]


def count_transactions(store: comity.Store) -> list[bool]:
    """Every transaction ``store``'s backend begins from now on, as its ``write`` flag."""
    begun: list[bool] = []
    real = store.backend.transaction

    def counted(*, write: bool) -> Any:
        begun.append(write)
        return real(write=write)

    store.backend.transaction = counted  # type: ignore[method-assign]
    return begun


@pytest.fixture
def clock() -> VirtualClock:
    """The authority's clock for the ``store`` fixture: advance it, never sleep."""
    return VirtualClock()


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock) -> Iterator[Factory]:
    """``make_store(name="s.db", **open_kwargs)``: a store of this backend, on ``clock``.

    Every call gets its own seed, so two stores (or a store reopened) never share ids;
    the same ``name`` reopens the same store."""
    factory = FACTORIES[request.param]
    seeds = itertools.count(1)
    opened: list[comity.Store] = []
    places: set[Path] = set()

    def make(name: str = "s.db", **kw: Any) -> comity.Store:
        kw.setdefault("clock", clock)
        places.add(tmp_path / name)
        s = factory(tmp_path / name, rng=SeededRng(next(seeds)), **kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()
    if request.param == "postgres":
        drop_pg_schemas(pg_schema(p) for p in places)


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema for this test (skipped without a server)."""
    if PG_SKIP:
        pytest.skip(PG_SKIP)
    schema = pg_schema(tmp_path)
    yield pg_url(schema)
    drop_pg_schemas([schema])


@pytest.fixture
def store(make_store: Factory) -> comity.Store:
    return make_store()


# ------------------------------------------------------------------------- the CLI

_BIN = Path(sys.executable).with_name("comity")
COMITY = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "comity.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would pick a store, agent, session or git dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMITY_", "GIT_"))}
    env.update(extra)
    return env


@pytest.fixture
def cli_env() -> Callable[..., dict[str, str]]:
    """``cli_env(**extra)``: a clean environment for a subprocess (see :func:`clean_env`)."""
    return clean_env


# A barrier for racing processes: each imports comity, says it is ready, and waits for the
# go file, so the race is between the operations and not between interpreter start-ups.
_TOGETHER = r"""
import os, sys, time
ready, go = sys.argv[1], sys.argv[2]
import comity.cli
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
comity.cli.main(sys.argv[3:])
"""


def cli_together(
    argvs: list[list[str]],
    *,
    env: dict[str, str] | list[dict[str, str]],
    cwd: Path | list[Path],
    timeout: float = 60,
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``comity ARGV`` for each argv in its own process (``env`` and ``cwd`` one for all,
    or one each), released together by a barrier; returns each one's exit code and output."""
    envs = env if isinstance(env, list) else [env] * len(argvs)
    cwds = cwd if isinstance(cwd, list) else [cwd] * len(argvs)
    barrier = Path(tempfile.mkdtemp(prefix="together-"))
    go = barrier / "go"
    ready = [barrier / f"ready-{i}" for i in range(len(argvs))]
    procs = [
        subprocess.Popen([sys.executable, "-c", _TOGETHER, str(r), str(go), *argv], env=e, cwd=c,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r, argv, e, c in zip(ready, argvs, envs, cwds)
    ]
    try:
        deadline = time.monotonic() + timeout
        while not all(r.exists() for r in ready):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            assert time.monotonic() < deadline, "the racers never got ready"
            time.sleep(0.005)
        go.touch()
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(barrier, ignore_errors=True)
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.fixture
def comity_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``comity_cli(*args, store=..., cwd=..., env=...)`` runs the real ``comity`` command.

    ``store`` defaults to ``tmp_path/cli.db`` (None: let comity discover one)."""
    default = str(tmp_path / "cli.db")

    def run(*args: str, store: str | None = default, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        e = clean_env(**(env or {}))
        if store is not None:
            e["COMITY_STORE"] = store
        return subprocess.run([*COMITY, *args], cwd=cwd or tmp_path, env=e, capture_output=True, text=True,
                              timeout=timeout, check=False)

    return run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it loudly when the PostgreSQL cases did not run, and how to run them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "PostgreSQL tests skipped" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("=", f"{len(skipped)} PostgreSQL cases were SKIPPED", yellow=True, bold=True)
        terminalreporter.write_line(
            "Only SQLite was tested. To run them: set COMITY_TEST_POSTGRES_URL (e.g. "
            "postgresql://postgres@127.0.0.1:5432/test), or `make test-postgres` (the Makefile says what it needs)."
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The faces' conformance suite on the compacted store runs through the faces named in
    ``faces_conformance.COMPACTED_FACES`` (its other cases are deselected, not skipped).

    Mutation testing (tools/mutation.py) runs every test once per mutant: it caps
    Hypothesis at ``COMITY_MUTATION_EXAMPLES`` examples per test, derandomized so a
    mutant's verdict does not depend on the run, and runs the tests fastest first by the
    durations mutmut recorded (``mutmut-stats.json`` where it runs them), so that a mutant
    a quick test kills is not first run through the slow ones (mutmut stops at the first
    failure); a failing example is not shrunk.  Unset (make test), nothing changes."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("world") == "compacted" and params.get("kind") not in ("python", "http"):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    cap = os.environ.get("COMITY_MUTATION_EXAMPLES")
    if not cap:
        return
    from hypothesis import Phase, settings

    try:
        recorded = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    if recorded:
        items.sort(key=lambda item: recorded.get(item.nodeid, 0.0))  # stable: file order among equals

    for item in items:
        fn = getattr(item, "obj", None)
        current = getattr(fn, "_hypothesis_internal_use_settings", None)
        if current is not None and fn is not None:
            fn._hypothesis_internal_use_settings = settings(  # type: ignore[attr-defined]
                current,
                max_examples=min(current.max_examples, int(cap)),
                derandomize=True,
                database=None,
                # No shrinking: a mutant is killed by the first failing example; shrinking it
                # (thousands of runs of a model-based history) only spent mutmut's time limit,
                # so a mutant a test had already caught was counted a timeout.
                phases=(Phase.explicit, Phase.generate),
            )
