"""One agent writing through a partition, as its own process: ``python sync_writer.py STORE AGENT OUT STOP``.

STORE is a replica file or a server's URL (then ``COMITY_AUTH`` is the agent's token).
Until the file STOP exists it loops over: read a shared key and write it over that
read (kept beside a newer value as a sibling when the write is stale, as after a
partition), count, take a sequence number, spend a bounded counter.  Every acknowledged
result is appended to OUT as a JSON line, flushed before the next call: what the test
checks the merged state against.  Refusals and an unreachable authority are logged too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import comity
from comity.coord import next_number


def main() -> None:
    where, agent, out_path, stop = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    remote = where.startswith("http")
    store: Any = comity.open(where, auth=os.environ["COMITY_AUTH"]) if remote else comity.open(where)
    session = store.session(agent)
    info = store.info()
    replica = info["replica_id"]
    with out_path.open("a") as out:

        def log(**record: Any) -> None:
            out.write(json.dumps({"agent": agent, "replica": replica, **record}) + "\n")
            out.flush()

        i = 0
        while not stop.exists():
            i += 1
            key = f"shared/k{i % 4}"
            try:
                v = session.get(key)
                value = {"by": agent, "i": i}
                try:
                    w = session.put(key, value, context=v.context)
                except comity.StaleContext:
                    w = session.put(key, value, context=v.context, keep_both=True)
                log(op="put", key=key, value=value, saw=v.context, context=w.context)
                session.update("counters/hits", "inc", 1, type="gcounter")
                log(op="inc")
            except comity.Unavailable as e:
                log(op="unavailable", what="write", message=e.message[:200])
            try:
                if remote:
                    n = session.remote.seq_next("mig")["value"]
                else:
                    n = next_number(session, "mig")
                log(op="seq", value=n)
            except comity.Unavailable:
                log(op="unavailable", what="seq")
            try:
                session.update("budget", "dec", 1)
                log(op="dec")
            except (comity.Unavailable, comity.StaleContext) as e:
                log(op="refused", what="dec", error=e.code)
    store.close()


if __name__ == "__main__":
    main()
