"""Shared fixtures: a store per backend, the virtual clock it runs on, and the CLI.

The store conformance suite is parametrized over ``BACKENDS``.  A backend is a name and
a factory ``(directory, clock, rng, **open_kwargs) -> Store``; a second engine joins the
suite by adding an entry to ``FACTORIES``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import comity
import comity.store
from comity.runtime import Clock, Rng, SeededRng, VirtualClock

Factory = Callable[..., comity.Store]


def _sqlite(where: Path, clock: Clock, rng: Rng, **kw: Any) -> comity.Store:
    return comity.open(where, clock=clock, rng=rng, **kw)


FACTORIES: dict[str, Factory] = {"sqlite": _sqlite}

# PostgreSQL joins once comity.store has a backend for it; until then a set
# COMITY_TEST_POSTGRES_URL is ignored (the param is simply not there yet).
_PG_URL = os.environ.get("COMITY_TEST_POSTGRES_URL")
if _PG_URL and hasattr(comity.store, "PostgresBackend"):

    def _postgres(where: Path, clock: Clock, rng: Rng, **kw: Any) -> comity.Store:
        # Each test needs its own empty store: give the backend a fresh schema or
        # database per call here when it lands (``where.name`` is unique per store).
        return comity.open(_PG_URL, clock=clock, rng=rng, **kw)

    FACTORIES["postgres"] = _postgres

BACKENDS = list(FACTORIES)


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

    def make(name: str = "s.db", **kw: Any) -> comity.Store:
        kw.setdefault("clock", clock)
        s = factory(tmp_path / name, rng=SeededRng(next(seeds)), **kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


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
