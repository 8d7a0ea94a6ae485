"""Mutation testing of comity's core, one package at a time, with mutmut.

    python tools/mutation.py run causal crdt coord work store   # niced; resumes where it left off
    python tools/mutation.py report [--score]                     # the score per package (and the survivors)
    python tools/mutation.py run store --only _codec.py           # one module (or a few, comma-separated)
    python tools/mutation.py run store --only _codec.py,_txn.py:150  # _codec whole, a random sample of 150 of _txn's (--seed)
    python tools/mutation.py run store --only _codec.py --again     # only its mutants not yet killed (after new tests)
    python tools/mutation.py report store --modules [--only _codec.py]  # a row per module

Each package is mutated in a scratch directory of its own (``.mutation/<package>/``)
with only its own fast, in-process tests (``SUITES``): a mutant is run against the
tests that execute the mutated function (mutmut records which), so a package's run
costs minutes to an hour on one core, and the rest of the suite (processes, servers,
browsers) is not run.  Survivors are listed with what each changed; the ones that no
test should kill are explained in ``docs/mutation.md``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"

# package -> the tests that own its rules (fast and in-process: a mutant of code that only
# a subprocess runs is not seen by mutmut's in-process trampolines).
SUITES: dict[str, list[str]] = {
    "causal": ["tests/test_causal_vv.py", "tests/test_causal_dvvset.py", "tests/test_causal_hlc.py", "tests/test_causal_edges.py"],
    "crdt": ["tests/test_crdt_laws.py", "tests/test_crdt_store.py", "tests/test_crdt_edges.py"],
    "coord": ["tests/test_coord_leases.py", "tests/test_coord_reservations.py", "tests/test_coord_edges.py",
              "tests/test_dashboard_reads.py"],  # the dashboard's reads run liveness.phi_series and activity
    "work": ["tests/test_tasks_board.py", "tests/test_work_edges.py"],
    "store": ["tests/test_store_conformance.py", "tests/test_store_news.py", "tests/test_store_edges.py", "tests/test_store_api_edges.py",
              "tests/test_store_txn_edges.py", "tests/test_store_sqlite_edges.py",
              "tests/test_crdt_store.py",  # a CRDT's updates through the store (Update, the executor's _crdt)
              "tests/test_sync_replicas.py", "tests/test_sync_laws.py",  # replicas in one process: provisional and foreign writes
              "tests/test_store_compact.py"],  # compaction (the SQLite engine's compactable/compact)
}

# Tests of those files that only run comity in a subprocess (a mutant is not seen there, so they
# would only cost time): deselected from the package's runs.
DESELECT: dict[str, list[str]] = {
    "store": ["tests/test_crdt_store.py::test_processes_updating_one_orset_and_one_counter_lose_nothing",
              "tests/test_store_compact.py::test_compact_cli_dry_run_and_init_reports_the_size",
              # 10,000 writes of one key (a clock of one entry at scale): 7 s a mutant under mutmut's
              # tracing; the clock's entries per replica are pinned at small scale by the rest.
              "tests/test_store_conformance.py::test_metadata_of_a_key_written_by_many_agents_names_only_the_replica[sqlite]"],
}

# Hypothesis examples per test under mutation (COMITY_MUTATION_EXAMPLES overrides): the store's
# model-based history makes a store per example and runs for every mutant of the executor.
EXAMPLES: dict[str, str] = {"store": "10"}

# The modules each package's score covers (docs/mutation.md says why the others are left out:
# the PostgreSQL engine needs a server per mutant, the store-file checks and the verification
# and verb-table modules have their own owners' suites).
SCOPE: dict[str, list[str]] = {
    "causal": ["_dot.py", "_vv.py", "_dvvset.py", "_hlc.py"],
    "crdt": ["*.py"],
    "coord": ["*.py"],
    "work": ["tasks.py", "why.py"],
    "store": ["_api.py", "_txn.py", "_codec.py", "_sqlite.py", "_backend.py"],
}


def _module(mutant: str) -> str:
    return mutant.split(".x", 1)[0].rsplit(".", 1)[-1] + ".py"  # comity.store._api.xǁ… -> _api.py


def _in_scope(package: str, mutant: str, only: list[str] | None = None) -> bool:
    module = _module(mutant)
    return any(fnmatch.fnmatch(module, pattern) for pattern in SCOPE[package]) and (
        not only or any(fnmatch.fnmatch(module, pattern) for pattern in only)
    )


def _tmpdir(package: str) -> str | None:
    """Where the tests' temporary files go: a RAM filesystem when there is one
    (``MUTATION_TMPDIR`` overrides, empty for the default).  The SQLite store commits with
    ``synchronous=FULL``, so on a disk its suites wait on fsync for most of their time;
    no in-process test can see the difference, and a run is several times faster."""
    base = os.environ.get("MUTATION_TMPDIR", "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else "")
    if not base:
        return None
    where = Path(base) / f"comity-mutation-{os.getuid()}-{package}"
    where.mkdir(parents=True, exist_ok=True)
    return str(where)


def _config(package: str) -> str:
    tests = [t for t in SUITES[package] if (ROOT / t).exists()]
    quoted = ", ".join(json.dumps(t) for t in tests)
    only = ", ".join(json.dumps(f"src/comity/{package}/{p}") for p in SCOPE[package])
    deselect = "".join(f", \"--deselect\", {json.dumps(t)}" for t in DESELECT.get(package, []))
    return f"""[tool.mutmut]
source_paths = ["src"]
only_mutate = [{only}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-x", "-o", "addopts="{deselect}]
pytest_add_cli_args_test_selection = [{quoted}]
timeout_multiplier = 5.0
use_git_change_detection = false

[tool.pytest.ini_options]
testpaths = ["tests"]
markers = ["slow: multi-process or heavy tests"]
"""


def _prepare(package: str) -> Path:
    where = WORK / package
    where.mkdir(parents=True, exist_ok=True)
    (where / "pyproject.toml").write_text(_config(package))
    for name in ("src", "tests"):
        link = where / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    return where


def run(packages: list[str], children: int, only: list[str] | None = None, seed: int = 1, again: bool = False) -> int:
    """Mutate ``packages``; with ``only`` (module names or patterns: ``_codec.py``), only
    those modules' mutants are run (mutmut runs named mutants again even when it has a
    result for them, so a second ``--only`` run redoes the module).  ``_txn.py:150`` runs a
    random sample of 150 of the module's mutants (the same ones for the same ``seed``): for
    a module too big to run whole, a score that estimates the whole (the report says how
    many were run).  With ``again``, only those not killed yet (survivors, those no test
    ran, those not yet run): after new tests, without redoing the rest."""
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        print("mutmut is not installed: pip install -e '.[mutation]'", file=sys.stderr)
        return 2
    for package in packages:
        where = _prepare(package)
        wanted: list[tuple[str, int | None]] = []
        for entry in only or []:
            module, _, count = entry.partition(":")
            module = module if module.endswith(".py") or "*" in module else module + ".py"
            if not any(fnmatch.fnmatch(module, p) for p in SCOPE[package]):
                print(f"{package}: {module} is not in its scope {SCOPE[package]}", file=sys.stderr)
                return 2
            wanted.append((module, int(count) if count else None))
        sampled = any(n is not None for _, n in wanted)
        known = results(package) if (again or sampled) else {}
        if sampled and not known:
            print(f"{package}: no mutants yet to sample from (a first run makes them)", file=sys.stderr)
            return 2
        names: list[str] = []
        for module, n in wanted:
            if n is None and not again:
                names.append(f"comity.{package}.{module.removesuffix('.py')}.*")
                continue
            mine = sorted(name for name in known if fnmatch.fnmatch(_module(name), module))
            if n is not None:
                mine = sorted(random.Random(f"{seed}:{module}").sample(mine, min(n, len(mine))))
                print(f"== {package}: {module}: a sample of {len(mine)} of its mutants (seed {seed})", flush=True)
            if again:
                mine = [name for name in mine if known[name] not in KILLED]
            names += mine
        if (again or sampled) and not names:
            print(f"{package}: every mutant asked for is killed", flush=True)
            continue
        if again:
            print(f"== {package}: again, the {len(names)} mutants not killed", flush=True)
        print(f"== {package}: mutating src/comity/{package}/ ({', '.join(only or ['every module'])})"
              f" against {' '.join(SUITES[package])}", flush=True)
        env = {**os.environ, "COMITY_MUTATION_EXAMPLES": os.environ.get("COMITY_MUTATION_EXAMPLES", EXAMPLES.get(package, "30"))}
        tmp = _tmpdir(package)
        if tmp:
            env["TMPDIR"] = tmp
        # No traceback for a failing test: mutmut reads only the exit code, and pytest renders
        # each frame from its module's source, which for a mutated module is megabytes to parse
        # (50 s for one caught mutant of the store's _api under load, past mutmut's time limit,
        # so it was counted a timeout).  Passed in the environment, not in mutmut's pytest
        # arguments, which mutmut fingerprints: changing those throws away every verdict.
        env["PYTEST_ADDOPTS"] = f"{os.environ.get('PYTEST_ADDOPTS', '')} --tb=no".strip()
        code = subprocess.call(["nice", "-n", "15", str(mutmut), "run", "--max-children", str(children), *names], cwd=where, env=env)
        if code != 0:
            print(f"mutmut exited {code} for {package}", file=sys.stderr)
            return code
    return 0


def results(package: str, only: list[str] | None = None) -> dict[str, str]:
    """mutant name -> status ('killed', 'survived', 'no tests', 'timeout', ...)."""
    where = WORK / package
    if not (where / "mutants").exists():
        return {}
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=where, capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name and _in_scope(package, name, only):
            found[name] = status
    return found


KILLED = ("killed", "timeout", "segfault", "caught by type check")
PENDING = ("not checked", "check was interrupted by user")


def report(packages: list[str], *, survivors: bool = True, only: list[str] | None = None, modules: bool = False) -> int:
    """The score per package (killed over mutants checked) and, with ``survivors``, each
    survivor's name and status; with ``modules``, a row per module as well."""
    rows = []
    tk = tn = tp = 0
    for package in packages:
        res = results(package, only)
        if modules:
            for module in sorted({_module(name) for name in res}):
                mine = [s for name, s in res.items() if _module(name) == module]
                done = [s for s in mine if s not in PENDING]
                k = sum(1 for s in done if s in KILLED)
                none = sum(1 for s in done if s == "no tests")
                pct = f"{100 * k / len(done):.1f}%" if done else "-"
                rows.append(f"| {package} `{module.removesuffix('.py')}` | {k} | {len(done) - k} ({none}) | {len(done)} | {pct}"
                            + (f" ({len(mine) - len(done)} not yet run)" if len(mine) > len(done) else "") + " |")
        if not res:
            rows.append(f"| {package} | | | | not run |")
            continue
        pending = sum(1 for s in res.values() if s in PENDING)
        killed = sum(1 for s in res.values() if s in KILLED)
        n = len(res) - pending
        tk, tn, tp = tk + killed, tn + n, tp + pending
        score = f"{100 * killed / n:.1f}%" if n else "-"
        rows.append(f"| {package} | {killed} | {n - killed} | {n} | {score}" + (f" ({pending} not yet run)" if pending else "") + " |")
        if survivors:
            for name, status in sorted(res.items()):
                if status not in KILLED and status not in PENDING:
                    print(f"  {status:10s} {name}")
    print("| package | killed | survived | mutants | score |\n|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    if tn:
        print(f"| **core** | {tk} | {tn - tk} | {tn} | {100 * tk / tn:.1f}%" + (f" ({tp} not yet run)" if tp else "") + " |")
    return 0


OPTIONS = ("--only", "--seed", "--again", "--score", "--modules")


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    if not argv or argv[0] not in ("run", "report", "clean"):
        print(__doc__)
        return 2
    args = argv[1:]
    unknown_options = [a for a in args if a.startswith("-") and a not in OPTIONS]
    if unknown_options:  # never start hours of mutation on an option it does not know
        print(f"unknown option(s) {unknown_options}; the options are {', '.join(OPTIONS)} (--help says what they do)", file=sys.stderr)
        return 2
    only: list[str] | None = None
    if "--only" in args:
        i = args.index("--only")
        if i + 1 >= len(args):
            print("--only needs module names: --only _codec.py,_txn.py", file=sys.stderr)
            return 2
        only = [m for m in args[i + 1].split(",") if m]
        args = args[:i] + args[i + 2 :]
    numbers: dict[str, int] = {}
    for option in ("--seed",):
        if option in args:
            i = args.index(option)
            if i + 1 >= len(args) or not args[i + 1].isdigit():
                print(f"{option} needs a number", file=sys.stderr)
                return 2
            numbers[option] = int(args[i + 1])
            args = args[:i] + args[i + 2 :]
    packages = [a for a in args if not a.startswith("--")] or list(SUITES)
    unknown = [p for p in packages if p not in SUITES]
    if unknown:
        print(f"unknown package(s) {unknown}; choose from {list(SUITES)}", file=sys.stderr)
        return 2
    if argv[0] == "run":
        return run(packages, int(os.environ.get("MUTATION_CHILDREN", "1")), only, numbers.get("--seed", 1), again="--again" in args)
    if argv[0] == "clean":
        for p in packages:
            shutil.rmtree(WORK / p, ignore_errors=True)
        return 0
    modules = [m.partition(":")[0] for m in only] if only else None
    modules = [m if m.endswith(".py") or "*" in m else m + ".py" for m in modules] if modules else None
    return report(packages, survivors="--score" not in argv, only=modules, modules="--modules" in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
