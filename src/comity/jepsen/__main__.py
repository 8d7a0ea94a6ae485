"""``python -m comity.jepsen [WORKLOAD …] [--store sqlite|URL] [--processes N] [--seconds S]
[--faults kill,stop,terminate] [--seed N] [--json]``: run workloads, print the verdicts."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

from .runner import FAULTS, Config, run
from .workloads import WORKLOADS


def _row(r: dict[str, Any]) -> str:
    faults = ", ".join(f"{k} {v}" for k, v in r["faults"].items()) or "none"
    verdict = "ok" if r["valid"] else f"INVALID ({r['anomaly_count']})"
    return f"{r['workload']:13s} {r['backend']:8s} {r['processes']:2d} procs {r['seconds']:5.0f}s  ops {r['ops']['invoke']:6d}  faults: {faults:40s} {verdict}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m comity.jepsen", description=__doc__)
    p.add_argument("workloads", nargs="*", help=f"workloads to run (default: all): {', '.join(WORKLOADS)}")
    p.add_argument("--store", default="sqlite", help="sqlite (a fresh file) or a postgresql:// URL (a fresh schema in it)")
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--faults", default=None, help=f"comma-separated, from {', '.join(FAULTS)} (default: all the backend has)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--interval", type=float, default=1.0, help="mean seconds between faults")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    p.add_argument("--keep", action="store_true", help="keep the store and histories")
    a = p.parse_args(argv)
    names = a.workloads or list(WORKLOADS)
    bad = [n for n in names if n not in WORKLOADS]
    if bad:
        p.error(f"unknown workload(s) {bad}; choose from {', '.join(WORKLOADS)}")
    faults = tuple(f for f in (a.faults.split(",") if a.faults else FAULTS) if f)
    ok = True
    for name in names:
        location = a.store if a.store != "sqlite" else os.path.join(tempfile.mkdtemp(prefix="comity-jepsen-"), "store.db")
        r = run(Config(name, location, processes=a.processes, seconds=a.seconds, faults=faults, seed=a.seed,
                       interval=a.interval, keep=a.keep))  # fmt: skip
        ok &= bool(r["valid"])
        print(json.dumps(r) if a.json else _row(r), flush=True)
        if not r["valid"] and not a.json:
            for line in r["anomalies"]:
                print(f"    {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
