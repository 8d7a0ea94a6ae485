"""Instructions per put and per claim-and-complete, counted by callgrind (the load does not move them).

    python tools/store_instructions.py [PYTHON ...]

For each Python given (a version's own venv; default: this one), runs under callgrind a
loop of puts (each over the context of the last, ``comity bench store``'s 200-byte values
and keyspace, a store in /dev/shm) and a loop of claim-and-complete (16 boards of one
process in turn over 600 tasks), each at two lengths, and prints the difference per
operation: what one more operation costs, imports and setup taken off.  Needs valgrind;
takes a few minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

PUTS = """
import sys, tempfile
try:
    from comity.bench.store import _PutLoop, _open
except ImportError:  # before comity.bench was a package
    from comity.bench import _PutLoop, _open
store = _open(tempfile.mkdtemp(dir="/dev/shm") + "/s.db")
loop = _PutLoop(store, "k")
loop.run(1000)
loop.run(int(sys.argv[1]))
"""

CLAIMS = """
import sys, tempfile
try:
    from comity.bench.store import _open
except ImportError:
    from comity.bench import _open
from comity.work import Board
store = _open(tempfile.mkdtemp(dir="/dev/shm") + "/s.db")
triage = Board(store.session("triage"))
for i in range(600):
    triage.add(f"task {i}")
boards = [Board(store.session(f"a{i}")) for i in range(16)]
for j in range(int(sys.argv[1])):
    b = boards[j % 16]
    c = b.claim_next(ttl=600)
    b.done(c.task["id"], c.token)
"""


def _instructions(python: str, script: str, n: int) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
        f.write(script)
        f.flush()
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, f.name, str(n)],
            capture_output=True, text=True, check=True, cwd=tempfile.gettempdir(),
        ).stderr
    m = re.search(r"Collected : (\d+)", out)
    if m is None:
        raise SystemExit(f"callgrind printed no count for {python}:\n{out[-2000:]}")
    return int(m.group(1))


def main() -> None:
    for python in sys.argv[1:] or [sys.executable]:
        put = (_instructions(python, PUTS, 2000) - _instructions(python, PUTS, 0)) / 2000
        claim = (_instructions(python, CLAIMS, 400) - _instructions(python, CLAIMS, 100)) / 300
        print(f"{python}: {put:,.0f} instructions per put, {claim:,.0f} per claim-and-complete")


if __name__ == "__main__":
    main()
