"""The allocator for numbered artifacts (migrations): one number per unit of work, however
often the unit asks and from however many processes, above a floor, never reissued.
On both backends; the race with real OS processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import comity
from comity.coord import allocate, next_number


def test_a_unit_holds_one_number_and_numbers_stay_above_the_floor(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    first = allocate(alice, "migrations/db", floor=266, unit="T-1/add_users")
    assert (first.number, first.held) == (267, False)
    again = allocate(bob, "migrations/db", floor=266, unit="T-1/add_users")  # the successor asks
    assert (again.number, again.held) == (267, True) and again.record is not None and again.record["agent"] == "alice"
    assert allocate(bob, "migrations/db", floor=0, unit="T-2/add_orders").number == 268
    assert allocate(bob, "migrations/db", floor=300).number == 301  # a file numbered 300 appeared: floor above it
    assert next_number(alice, "migrations/db") == 302  # the floor never lowers the sequence


RACER = r"""
import json, os, sys, time
import comity
from comity.coord import allocate
path, unit, ready, go = sys.argv[1:5]
store = comity.open(path)
s = store.session("agent-" + str(os.getpid()))
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
print(json.dumps([unit, allocate(s, "migrations/db", floor=10, unit=unit).number]))
"""


def test_processes_racing_for_units_get_one_number_per_unit(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    comity.open(path).close()
    go = tmp_path / "go"
    procs, ready = [], []
    for i in range(8):
        flag = tmp_path / f"ready-{i}"
        ready.append(flag)
        procs.append(subprocess.Popen([sys.executable, "-c", RACER, str(path), f"T-{i % 3}/m", str(flag), str(go)], stdout=subprocess.PIPE, text=True))
    while not all(f.exists() for f in ready):
        if any(p.poll() is not None for p in procs):
            break
    go.touch()
    got = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    by_unit: dict[str, set[int]] = {}
    for unit, n in got:
        by_unit.setdefault(unit, set()).add(n)
    assert all(len(ns) == 1 for ns in by_unit.values()), by_unit  # one number per unit
    numbers = [next(iter(ns)) for ns in by_unit.values()]
    assert len(set(numbers)) == 3 and min(numbers) > 10  # distinct across units, above the floor
