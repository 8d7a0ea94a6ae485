"""Run a workload: N worker processes against one real store, a nemesis, then the checker.

The nemesis (seeded) injects, every ``interval`` seconds on average, one of the enabled
faults: ``kill`` (SIGKILL a worker, start a new process in its place), ``stop`` (SIGSTOP
a worker for longer than a lease, then SIGCONT), and on PostgreSQL ``terminate``
(``pg_terminate_backend`` of every connection this run opened: each has the run's
``application_name``, so nothing else on the server is touched).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import store as store_mod
from .history import read_history
from .workloads import WORKLOADS, Final

__all__ = ["run", "FAULTS", "Config"]

FAULTS = ("kill", "stop", "terminate")
LEASE_S = 1.0


@dataclass(slots=True)
class Config:
    workload: str
    location: str  # a SQLite file, or a postgresql:// URL (a fresh schema is made in it)
    processes: int = 4
    seconds: float = 10.0
    faults: tuple[str, ...] = ("kill",)
    seed: int = 0
    interval: float = 1.0  # mean seconds between faults
    lease_s: float = LEASE_S
    keep: bool = False  # keep the store and histories (their directory is in the result)
    tasks: int | None = None


@dataclass(slots=True)
class _Proc:
    slot: int
    role: str
    number: int
    popen: subprocess.Popen[bytes]
    history: Path
    stopped_until: float = 0.0
    restarts: int = 0
    histories: list[Path] = field(default_factory=list)


def _pg_location(url: str, run_id: str) -> tuple[str, str]:
    """The URL with a fresh schema and this run's application_name."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("schema", "application_name")]
    schema = f"jepsen_{run_id}"
    query += [("schema", schema), ("application_name", f"comity_jepsen_{run_id}")]
    return urlunsplit(parts._replace(query=urlencode(query))), schema


def _terminate_backends(url: str, run_id: str) -> int:
    import psycopg

    base = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(base.query) if k not in ("schema", "application_name", "options")]
    conninfo = urlunsplit(base._replace(query=urlencode(query)))
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"comity_jepsen_{run_id}",),
        ).fetchone()
    return int(row[0]) if row else 0


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    base = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(base.query) if k not in ("schema", "application_name", "options")]
    with psycopg.connect(urlunsplit(base._replace(query=urlencode(query))), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _final(location: str, keys: list[str]) -> Final:
    with store_mod.open(location) as st:
        s = st.session()
        log: list[dict[str, Any]] = []
        while True:
            page = s.log(after=log[-1]["pos"] if log else 0, limit=10_000)
            if not page:
                break
            log += page
        final = Final(log)
        for k in keys:
            final.values[k] = s.get(k).values
        for v in s.scan("jepsen/"):
            final.values.setdefault(v.key, v.values)
        for v in s.scan("@task/"):
            if v.values:
                final.tasks[v.key.removeprefix("@task/")] = v.values[0]
    return final


def run(cfg: Config) -> dict[str, Any]:
    """Run ``cfg`` and return the checker's verdict with what happened."""
    workload = WORKLOADS[cfg.workload]
    faults = tuple(cfg.faults)
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; choose from {FAULTS}")
    postgres = store_mod.is_postgres_url(cfg.location) if hasattr(store_mod, "is_postgres_url") else cfg.location.startswith("postgres")
    if "terminate" in faults and not postgres:
        faults = tuple(f for f in faults if f != "terminate")  # SQLite has no server backends
    rng = random.Random(cfg.seed)
    run_id = f"{os.getpid()}_{int(time.time() * 1000) % 10**9}_{cfg.seed}"
    work = Path(tempfile.mkdtemp(prefix=f"comity-jepsen-{cfg.workload}-"))
    if postgres:
        location, schema = _pg_location(cfg.location, run_id)
    else:
        location, schema = (cfg.location if cfg.location.endswith(".db") else str(work / "store.db")), ""
    procs: list[_Proc] = []
    counts: Counter[str] = Counter()
    started = time.time()
    try:
        with store_mod.open(location) as st:  # set the store up once: workers race on work, not on creation
            if workload.setup is not None:
                workload.setup(st, cfg.tasks or max(20, int(cfg.seconds * cfg.processes * 4)))
        numbers = iter(range(1, 1_000_000))
        go = work / "go"
        deadline_file = work / "deadline"

        def spawn(slot: int, role: str) -> _Proc:
            n = next(numbers)
            history = work / f"history-{n}.jsonl"
            args = {
                "workload": cfg.workload, "location": location, "process": n, "slot": slot, "role": role,
                "seed": cfg.seed * 1000 + n, "history": str(history), "lease_s": cfg.lease_s, "signals": str(work),
            }  # fmt: skip
            popen = subprocess.Popen([sys.executable, "-m", "comity.jepsen.worker", json.dumps(args)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(work / f"stderr-{n}.txt", "wb"))  # fmt: skip
            return _Proc(slot, role, n, popen, history, histories=[history])

        for slot, role in enumerate(workload.roles(cfg.processes)):
            procs.append(spawn(slot, role))
        # Start together: each worker has imported comity and opened the store.
        ready_by = time.monotonic() + 120
        while not all((work / f"ready-{p.number}").exists() for p in procs):
            dead = [p for p in procs if p.popen.poll() is not None]
            if dead:
                raise RuntimeError(f"worker {dead[0].number} died before starting: {(work / f'stderr-{dead[0].number}.txt').read_text()[-2000:]}")
            if time.monotonic() > ready_by:
                raise RuntimeError("workers never got ready")
            time.sleep(0.01)
        deadline = time.time() + cfg.seconds
        deadline_file.write_text(repr(deadline))
        go.touch()
        histories: list[Path] = [p.history for p in procs]
        next_fault = time.time() + rng.expovariate(1 / cfg.interval) if faults else float("inf")
        while time.time() < deadline:
            now = time.time()
            for p in procs:
                if p.stopped_until and now >= p.stopped_until:
                    os.kill(p.popen.pid, signal.SIGCONT)
                    p.stopped_until = 0.0
            if now >= next_fault:
                fault = rng.choice(faults)
                if fault == "kill":
                    victims = [p for p in procs if p.role in workload.kill_roles and not p.stopped_until and p.popen.poll() is None]
                    if victims:
                        p = rng.choice(victims)
                        p.popen.kill()
                        p.popen.wait()
                        fresh = spawn(p.slot, p.role)
                        (work / f"ready-go-{fresh.number}").touch()
                        procs[procs.index(p)] = fresh
                        histories.append(fresh.history)
                        counts["kill"] += 1
                elif fault == "stop":
                    victims = [p for p in procs if not p.stopped_until and p.popen.poll() is None]
                    if victims:
                        p = rng.choice(victims)
                        os.kill(p.popen.pid, signal.SIGSTOP)
                        p.stopped_until = now + cfg.lease_s * 1.5
                        counts["stop"] += 1
                else:
                    counts["terminate"] += 1
                    counts["backends_terminated"] += _terminate_backends(cfg.location, run_id)
                next_fault = now + rng.expovariate(1 / cfg.interval)
            time.sleep(0.01)
        for p in procs:
            if p.stopped_until:
                os.kill(p.popen.pid, signal.SIGCONT)
                p.stopped_until = 0.0
        writers = [p for p in procs if p.role != "observer"]
        for p in writers:
            _wait(p, 60)
        (work / "writers-done").touch()
        for p in procs:
            _wait(p, 120)
        history = read_history(histories)
        final = _final(location, workload.keys())
        verdict = workload.check(history, final)
        types = Counter(op.type for op in history)
        failed = [p.number for p in procs if p.popen.returncode not in (0, None)]
        if failed:
            verdict["valid"] = False
            verdict.setdefault("anomalies", []).append(
                f"worker {failed[0]} exited {procs[[p.number for p in procs].index(failed[0])].popen.returncode}: "
                + (work / f"stderr-{failed[0]}.txt").read_text()[-1500:]
            )
        return {
            "workload": cfg.workload,
            "backend": "postgres" if postgres else "sqlite",
            "processes": cfg.processes,
            "seconds": cfg.seconds,
            "seed": cfg.seed,
            "faults": dict(counts),
            "ops": {"invoke": types["invoke"], "ok": types["ok"], "fail": types["fail"], "info": types["info"]},
            "events": len(final.log),
            **verdict,
            "elapsed_s": round(time.time() - started, 2),
            **({"directory": str(work)} if cfg.keep else {}),
        }
    finally:
        for p in procs:
            if p.popen.poll() is None:
                if p.stopped_until:
                    os.kill(p.popen.pid, signal.SIGCONT)
                p.popen.kill()
                p.popen.wait()
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
            if postgres and schema:
                try:
                    _drop_schema(cfg.location, schema)
                except Exception:  # noqa: BLE001 - a leftover schema is named after the run
                    pass


def _wait(p: _Proc, timeout: float) -> None:
    try:
        p.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        p.popen.kill()
        p.popen.wait()
