"""tools/mutation.py's command line: help and unknown options never start a run (a run of
every package takes hours of both cores)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "mutation.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)


def test_help_prints_the_usage_and_runs_nothing() -> None:
    for args in (["--help"], ["run", "--help"], ["run", "store", "-h"]):
        r = _run(*args)
        assert r.returncode == 0 and "python tools/mutation.py run" in r.stdout, (args, r)


def test_an_unknown_option_is_refused_by_name_before_anything_runs() -> None:
    r = _run("run", "store", "--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr and "--only" in r.stderr
    r = _run("run", "nosuchpackage")
    assert r.returncode == 2 and "nosuchpackage" in r.stderr
