"""What one agent's claim-and-complete costs on PostgreSQL: statements, transactions, time.

    python tools/claim_statements.py [--store-url postgresql://…] [--tasks N]

One agent claims the next task and completes it, N times, on a board in a fresh schema of
the database (dropped afterwards), and prints JSON: psycopg ``execute`` calls and
transactions per claim-and-complete (the same on any load), and the wall time, the
client's CPU and the server processes' CPU per claim-and-complete (from /proc; these move
with the load: take them on a quiet machine).  With ``--trace`` it prints each statement
of one claim-and-complete instead.  Run it with each version's own venv to compare them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _server_cpu(url: str) -> float:
    """CPU seconds used so far by the database's client backends (other than this query's)."""
    import psycopg

    with psycopg.connect(url) as c:
        pids = [r[0] for r in c.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")]  # fmt: skip
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().split()
        except OSError:  # ended meanwhile, or another machine's server
            continue
        total += int(f[13]) + int(f[14])
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store-url", default=os.environ.get("COMITY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--trace", action="store_true", help="print the statements of one claim-and-complete")
    args = ap.parse_args()

    import psycopg

    from comity.bench import store as bench
    from comity.work import Board

    engine = bench._engine(args.store_url, Path("/tmp"))
    try:
        store = bench._open(engine.target("board"))
        triage = Board(store.session("triage"))
        for i in range(args.tasks):
            triage.add(f"task {i}")
        agent = Board(store.session("agent-0"))
        for _ in range(20):  # psycopg prepares a statement from its fifth execution
            c = agent.claim_next(ttl=600)
            agent.done(c.task["id"], c.token)

        seen: list[str] = []
        for cls in (psycopg.Cursor, psycopg.Connection):
            real = cls.execute

            def counted(self: Any, query: Any, *a: Any, _real: Any = real, **kw: Any) -> Any:
                seen.append(" ".join(str(query).split()))
                return _real(self, query, *a, **kw)

            cls.execute = counted  # type: ignore[method-assign]
        if args.trace:
            c = agent.claim_next(ttl=600)
            seen.append("-- done")
            agent.done(c.task["id"], c.token)
            print("\n".join(q[:160] for q in seen))
            return
        n = args.tasks - 21
        server0, wall0, cpu0 = _server_cpu(args.store_url), time.perf_counter(), time.process_time()
        for _ in range(n):
            c = agent.claim_next(ttl=600)
            agent.done(c.task["id"], c.token)
        wall, cpu, server = time.perf_counter() - wall0, time.process_time() - cpu0, _server_cpu(args.store_url) - server0
        begins = sum(1 for q in seen if q.startswith("BEGIN"))
        print(json.dumps({
            "statements": round(len(seen) / n, 1),
            "transactions": round(begins / n, 1),
            "wall_ms": round(wall / n * 1000, 2),
            "client_cpu_ms": round(cpu / n * 1000, 2),
            "server_cpu_ms": round(server / n * 1000, 2),
            "claims": n,
        }))  # fmt: skip
        store.close()
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
