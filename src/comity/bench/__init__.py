"""``comity bench …``: every benchmark, each printing JSON with a ratio against a baseline
measured in the same run (never a timed assertion in a test).

- :mod:`.store`: put, get and create against a plain upsert on the same engine
  (``bench store``); N processes draining M tasks against a plain ``UPDATE`` queue
  (``bench claims``).
- :mod:`.mcp`: tool-call latency through ``comity mcp`` over stdio against the SDK's own
  no-op tool (``bench mcp``).
- :mod:`.hooks`: commit time with the pre-commit hook against the same commits without it
  (``bench hooks``).
- :mod:`.dashboard`: time to first render of each dashboard view against the JSON
  ``task_list``, and event-to-page latency over server-sent events against the write
  (``bench dashboard``).
- :mod:`.chaos`: simulated busy-afternoon schedules per second under comity against the
  ``none`` strategy (``bench chaos``).
- :mod:`.sync`: bytes and time to sync k changed keys of a replica against copying the
  whole store (``bench sync``).

The modules are imported when their command runs: the CLI starts without them.
"""

from __future__ import annotations

__all__: list[str] = []
