"""Conflicts: what the store refused or kept side by side, with who and what each had seen.

Four kinds, all read from the log (a recent window of it, paged backwards like the feed):

- **siblings**: a key holding several values, written by writers that had not seen each
  other (``keep_both``, or a merge after a partition), waiting for a write whose context
  covers them all.  Each value's write says what its author had seen (``seen``) and which
  of the key's events it missed;
- **refused writes**: a write whose context missed newer events (or a create of a key that
  exists), kept as a ``write.refused`` note by the store (:data:`comity.store.REFUSED_KEY`);
- **fenced actions**: a checkpoint, renewal or completion under a superseded or expired
  fencing token (``task.fenced``), with the token presented and the one that superseded it;
- **refused claims**: a claim made on a stale read of a task (``task.claim-refused``).
"""

from __future__ import annotations

from typing import Any

from ..store import Session
from ..store._api import REFUSED_OP

__all__ = ["conflicts", "KINDS"]

KINDS = ("siblings", "refused_writes", "fenced", "refused_claims")
_CHUNK = 2_000
_SHOWN = ("pos", "key", "op", "agent", "session", "hlc", "seen")


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in _SHOWN if k in e}


def _missed_by(session: Session, key: str, writes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each write with the events of ``key`` by others that it had not seen."""
    history = session.log(key, limit=1000, values=False)
    out = []
    for w in writes:
        seen = w.get("seen")
        missed = [] if seen is None else [
            _brief(m) for m in history if seen < m["pos"] < w["pos"] and m["agent"] != w["agent"]
        ]  # fmt: skip
        out.append({**_brief(w), "missed": missed})
    return out


def conflicts(session: Session, *, before: int | None = None, budget: int = 20_000, limit: int = 200) -> dict[str, Any]:
    """The conflicts found in the ``budget`` events before position ``before`` (default: the
    log's head), newest first, at most ``limit`` of each kind.  ``older`` is where the next
    window starts (None at the log's start)."""
    head = session.head()
    upper = head + 1 if before is None else max(1, min(int(before), head + 1))
    lower = max(0, upper - 1 - budget)
    found: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    sibling_writes: dict[str, list[dict[str, Any]]] = {}
    cursor = upper - 1
    while cursor > lower:
        start = max(lower, cursor - _CHUNK)
        for e in reversed(session.log(after=start, limit=cursor - start, values=False)):
            op = e["op"]
            if op == REFUSED_OP and len(found["refused_writes"]) < limit:
                found["refused_writes"].append({
                    **_brief(e), "key": e.get("target"), "error": e.get("error"), "write": e.get("write"),
                    "reason": e.get("reason"), "missed": e.get("missed", []), "writers": e.get("writers", []),
                    **{k: e[k] for k in ("token", "current", "holder") if k in e},
                })  # fmt: skip
            elif op == "task.fenced" and len(found["fenced"]) < limit:
                found["fenced"].append({
                    **_brief(e), "task": e["key"].split("/", 1)[-1], "action": e.get("action"), "token": e.get("token"),
                    "current": e.get("current"), "holder": e.get("holder"), "error": e.get("error"), "reason": e.get("reason"),
                })  # fmt: skip
            elif op == "task.claim-refused" and len(found["refused_claims"]) < limit:
                found["refused_claims"].append({
                    **_brief(e), "task": e["key"].split("/", 1)[-1], "reason": e.get("reason"),
                    "missed": e.get("missed", []), "holder": e.get("holder"), "assignee": e.get("assignee"),
                })  # fmt: skip
            elif e.get("siblings") and e["key"] not in sibling_writes and len(sibling_writes) < limit:
                sibling_writes[e["key"]] = []
        cursor = start
    # Siblings: only keys that still hold several values are waiting.
    keys = list(sibling_writes)
    for v in session.get_many(keys) if keys else []:
        if len(v.values) < 2:
            continue
        # The writes that made the current values: the key's events since its last single value.
        history = session.log(v.key, limit=1000, values=False)
        writes: list[dict[str, Any]] = []
        for e in reversed(history):
            if e["op"] not in ("put", "create", "delete"):
                continue
            writes.append(e)
            if not e.get("siblings"):
                break
        writes.reverse()
        found["siblings"].append({
            "key": v.key, "count": len(v.values), "pos": history[-1]["pos"] if history else None,
            "writes": _missed_by(session, v.key, writes),
        })  # fmt: skip
    return {**found, "head": head, "window": [lower + 1, upper - 1], "older": lower + 1 if lower > 0 else None}
