"""One worker process of a run (started by the runner, never by hand):
``python -m comity.jepsen.worker '{json config}'``."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from .. import store as store_mod
from ..errors import Unavailable
from .history import Recorder
from .workloads import WORKLOADS, Worker


def _open(location: str) -> store_mod.Store:
    """Open the store, as an agent would: a connection cut while opening is tried again."""
    for attempt in range(100):
        try:
            return store_mod.open(location)
        except Unavailable:
            if attempt == 99:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    signals = Path(cfg["signals"])
    n = cfg["process"]
    st = _open(cfg["location"])
    rec = Recorder.open(cfg["history"], n)
    (signals / f"ready-{n}").touch()
    # The first processes start together; a replacement (after a kill) starts at once.
    while not (signals / "go").exists() and not (signals / f"ready-go-{n}").exists():
        time.sleep(0.001)
    deadline = float((signals / "deadline").read_text())
    w = Worker(st, n, cfg["slot"], cfg["role"], random.Random(cfg["seed"]), rec, deadline, cfg["lease_s"], signals)
    try:
        WORKLOADS[cfg["workload"]].worker(w)
    finally:
        rec.close()
        st.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
