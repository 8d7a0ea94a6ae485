"""The log as a feed: the latest events, filtered by agent, key prefix or task, paged backwards.

A dashboard (or a script) shows the newest events first and never the whole log: a page
is read backwards from a position in chunks until it holds ``limit`` matching events or
``budget`` events were looked at, and says where the next (older) page starts.  The same
:func:`matches` decides what a live stream passes on, so a filtered page and a filtered
stream agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import Invalid
from ..store import Session
from ..store._api import check_agent
from .tasks import parse_task_id, task_key

__all__ = ["Filter", "matches", "recent", "preview"]

_CHUNK = 2_000
_PREVIEW = 160
_LEASE = "@lease/"


@dataclass(frozen=True, slots=True)
class Filter:
    """What to show: events of ``agent``, of keys under ``prefix``, of task ``task`` (its
    record, its lease, its changes); each left out matches everything."""

    agent: str | None = None
    prefix: str | None = None
    task: str | None = None

    @classmethod
    def parse(cls, agent: str | None = None, prefix: str | None = None, task: str | None = None) -> Filter:
        agent = check_agent(agent, "agent") if agent else None
        if prefix is not None and (not isinstance(prefix, str) or len(prefix) > 1024):
            raise Invalid("prefix", "must be a key prefix of at most 1024 characters")
        return cls(agent or None, prefix or None, parse_task_id(task, "task") if task else None)

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "prefix": self.prefix, "task": self.task}


def matches(event: dict[str, Any], f: Filter) -> bool:
    """Whether ``event`` (as the log answers it) passes the filter ``f``."""
    if f.agent is not None and event.get("agent") != f.agent:
        return False
    key = str(event.get("key", ""))
    if f.prefix is not None and not key.startswith(f.prefix):
        return False
    if f.task is not None:
        tk = task_key(f.task)
        if key not in (tk, _LEASE + tk) and event.get("task") != f.task:
            return False
    return True


def preview(event: dict[str, Any], width: int = _PREVIEW) -> str:
    """A one-line preview of an event's value, at most ``width`` characters."""
    if "value" not in event:
        return ""
    text = json.dumps(event["value"], ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def recent(
    session: Session,
    f: Filter = Filter(),
    *,
    before: int | None = None,
    limit: int = 100,
    budget: int = 20_000,
) -> dict[str, Any]:
    """Up to ``limit`` events passing ``f``, newest first, from those before position
    ``before`` (default: all), looking at no more than ``budget`` events.

    Answers ``{"events", "head", "older"}``: ``older`` is the position to pass as ``before``
    for the next page (None when the log's start was reached)."""
    if not 1 <= limit <= 1000:
        raise Invalid("limit", f"must be in [1, 1000], got {limit!r}")
    head = session.head()
    upper = head + 1 if before is None else max(0, min(int(before), head + 1))
    found: list[dict[str, Any]] = []
    looked = 0
    cursor = upper  # events with pos < cursor are still to look at
    while cursor > 1 and len(found) < limit and looked < budget:
        start = max(0, cursor - 1 - _CHUNK)
        chunk = session.log(after=start, limit=cursor - 1 - start, values=False) if cursor - 1 > start else []
        looked += len(chunk)
        for e in reversed(chunk):
            if matches(e, f):
                found.append(e)
                if len(found) >= limit:
                    cursor = e["pos"]
                    break
        else:
            cursor = start + 1
    # Values only for the events shown: the scan above decoded none.
    for e in found:
        full = session.log(after=e["pos"] - 1, limit=1)
        e["preview"] = preview(full[0]) if full and full[0]["pos"] == e["pos"] else ""
    return {"events": found, "head": head, "older": cursor if cursor > 1 else None, "filter": f.to_json()}
