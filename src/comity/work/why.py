"""`comity why`: the causal history of a task or key.

Every write that carried a context records the log position of the read it was based
on (``seen``) and, by dot, what it had seen of the key (``saw``).  So for each action
the history can say what its author had seen, and which earlier actions on the same
task or key it had not: those two were concurrent (neither saw the other), the
situation that version vectors exist to detect.  Across replicas log positions mean
nothing (each log numbers its own), so an action that came from another replica is
judged by its dots alone: "bob's put on replica r2 did not see alice's put".  A value
written on a cut-off replica under a lease a successor took meanwhile shows as fenced.
"""

from __future__ import annotations

from typing import Any

from ..store import Session
from ..store._codec import check_key
from .tasks import TASK_PREFIX, parse_task_id, task_key

__all__ = ["why"]

_LEASE = "@lease/"


def _name(op: str) -> str:
    return op.split(".", 1)[1] if op.startswith("task.") else op


def _target_key(target: str) -> str:
    try:
        return task_key(parse_task_id(target, "target"))
    except Exception:
        return check_key(target, "target", system=True)


def _saw(e: dict[str, Any], m: dict[str, Any]) -> bool | None:
    """Whether the author of ``e`` had seen ``m`` (None: nothing tells)."""
    saw = e.get("saw")
    if isinstance(saw, dict) and m["key"] == e["key"] and m["dot"][1] > 0:
        return bool(m["dot"][1] <= saw.get(m["dot"][0], 0))
    if e.get("seen") is not None and "origin_pos" not in e:
        return bool(m["pos"] <= e["seen"])  # e was written here: its read position is in this log
    return None


def _who(e: dict[str, Any], here: str) -> str:
    where = "" if e["dot"][0] == here else f" on replica {e['dot'][0]}"
    return f"{e['agent']}'s {_name(e['op'])} (pos {e['pos']}{where})"


def why(session: Session, target: str, *, limit: int = 1000) -> dict[str, Any]:
    """The causal history of a task or key; for a change (``C-4``), also its provenance:
    what it was built on and what was built on it, transitively, with their states."""
    if isinstance(target, str) and target.strip().upper().startswith("C-"):
        from .changes import Changes, change_key, parse_change_id

        cid = parse_change_id(target, "target")
        prov = Changes(session).provenance(cid)
        found = why(session, change_key(cid), limit=limit)
        found.update(target=target, built_on=prov["built_on"], built_upon_by=prov["built_upon_by"],
                   commits=prov["commits"], keys=prov["keys"], state=prov["change"]["state"])
        for b in prov["built_on"]:
            if b["state"] in ("refuted", "tainted"):
                found["explanations"].append(f"{cid} is built on {b['id']} by {b['author']}, which is {b['state']}")
        return found
    key = _target_key(target)
    events = session.log(key, limit=limit)
    if key.startswith(TASK_PREFIX):
        events += session.log(_LEASE + key, limit=limit)
        events.sort(key=lambda e: e["pos"])
    if not events:
        from ..errors import NotFound

        raise NotFound(f"nothing is known about {target!r}", target=target)
    here = session.store.replica_id
    history: list[dict[str, Any]] = []
    explanations: list[str] = []
    for i, e in enumerate(events):
        item = {k: v for k, v in e.items() if k not in ("value", "session", "dot")}
        if e["dot"][0] != here:
            item["replica"] = e["dot"][0]
        seen = e.get("seen")
        if seen is not None and "origin_pos" not in e:
            item["had_seen_up_to"] = seen
        judged = [(m, _saw(e, m)) for m in events[:i] if m["agent"] != e["agent"] and not m["op"].startswith("sync.")]
        if any(s is not None for _, s in judged):
            missed = [m for m, s in judged if s is False]
            item["did_not_see"] = [m["pos"] for m in missed]
            for m in missed:
                outcome = " (refused)" if e["op"].endswith("refused") else " (kept both as siblings)" if e.get("siblings") else ""
                explanations.append(f"{_who(e, here)} did not see {_who(m, here)}: they were concurrent{outcome}")
        for f in e.get("fenced", []) if e["op"] == "sync.fence" else []:
            lost = "; ".join(
                f"{x['resource']} token {x['token']} was superseded by token {x['current']} ({x['holder'] or 'released'})"
                for x in f.get("fenced_by", [])
            )
            explanations.append(
                f"{f['agent']}'s write on replica {f['dot'][0]} was fenced when it arrived: {lost}; it is kept in"
                f" {f['conflict']} and was not applied"
            )
        if e["op"] == "sync.fenced":
            explanations.append(
                f"{e.get('writer')}'s write of {e.get('fenced_key')} on replica {(e.get('writer_dot') or ['?'])[0]} under"
                f" token {e.get('token')} was fenced when it arrived: token {e.get('current')} ({e.get('holder') or 'released'})"
                f" had superseded it; it is kept in {e.get('conflict')} and was not applied"
            )
        history.append(item)
    out: dict[str, Any] = {"target": target, "key": key, "history": history, "explanations": explanations}
    if key.startswith(TASK_PREFIX):
        from .changes import Changes

        changes = Changes(session).find(task=key[len(TASK_PREFIX):])
        out["changes"] = [{"id": c["id"], "state": c["state"], "author": c["author"], "commit": c.get("commit"),
                           "built_on": c["built_on"]["changes"], "tainted_by": c.get("tainted_by", [])} for c in changes]
        for c in changes:
            if c["state"] == "refuted":
                explanations.append(f"{c['id']} by {c['author']} was refuted by {c['refuted'].get('by')}: {c['refuted'].get('reason')}")
            elif c["state"] == "tainted":
                explanations.append(f"{c['id']} by {c['author']} is built on refuted work ({', '.join(c['tainted_by'])})")
    return out
