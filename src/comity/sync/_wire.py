"""What travels between replicas: guarded transactions, events, key states, lease rows, errors.

Everything is plain JSON.  Values and details are sent parsed (not as JSON text inside
JSON), so a message is about the size of what it carries.  Anything that arrives is
checked as input from outside: a malformed message is :class:`~comity.errors.Invalid`
naming the field, never a crash or a corrupted store.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from ..causal import DVVSet, HLCTimestamp
from ..errors import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Step, Unavailable
from ..store import (
    Absent,
    Acquire,
    Create,
    Delete,
    EventRow,
    Holds,
    KeyRow,
    LeaseRow,
    Next,
    Note,
    Put,
    Release,
    Renew,
    Unchanged,
    Update,
)
from ..store._codec import compact_json

__all__ = [
    "encode_steps",
    "decode_steps",
    "event_out",
    "event_in",
    "state_out",
    "state_in",
    "lease_out",
    "lease_in",
    "error_out",
    "error_in",
    "size_of",
]

_STEPS: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (Unchanged, Absent, Holds, Put, Create, Delete, Update, Next, Note, Acquire, Renew, Release)
}


def size_of(message: Any) -> int:
    """The bytes ``message`` takes as compact JSON: what replication counts as sent."""
    return len(compact_json(message).encode())


# ------------------------------------------------------------------ transactions


def encode_steps(steps: list[Any]) -> list[dict[str, Any]]:
    return [{"t": type(s).__name__, **{f.name: getattr(s, f.name) for f in fields(s)}} for s in steps]


def decode_steps(items: Any, what: str) -> list[Any]:
    if not isinstance(items, list):
        raise Invalid(what, "must be a list of guards or operations")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("t") not in _STEPS:
            raise Invalid(f"{what}[{i}]", f"must be an object whose 't' is one of {', '.join(_STEPS)}")
        cls = _STEPS[item["t"]]
        args = {k: v for k, v in item.items() if k != "t"}
        try:
            out.append(cls(**args))
        except TypeError as e:
            raise Invalid(f"{what}[{i}]", f"bad fields for {item['t']}: {e}") from None
    return out


# ------------------------------------------------------------------------ events


def _parsed(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def event_out(e: EventRow) -> list[Any]:
    """An event as it travels: its origin (replica, position) names it everywhere."""
    return [e.key, e.op, e.agent, e.session, e.replica, e.counter, e.hlc, e.request_id,
            e.value is not None, _parsed(e.value), _parsed(e.detail), e.seen, e.origin]  # fmt: skip


def event_in(item: Any, i: int) -> EventRow:
    where = f"events[{i}]"
    if not isinstance(item, list) or len(item) != 13:
        raise Invalid(where, "must be a list of 13 fields (key, op, agent, session, replica, counter, hlc, ...)")
    key, op, agent, session, replica, counter, hlc, request_id, has_value, value, detail, seen, origin = item
    for name, v in (("key", key), ("op", op), ("agent", agent), ("session", session), ("replica", replica), ("request_id", request_id)):
        if not isinstance(v, str) or not v and name in ("key", "op", "replica"):
            raise Invalid(f"{where}.{name}", f"must be a string, got {v!r:.60}")
    for name, v in (("counter", counter), ("origin", origin)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise Invalid(f"{where}.{name}", f"must be an integer >= 0, got {v!r:.60}")
    if origin < 1:
        raise Invalid(f"{where}.origin", "must be a log position (>= 1)")
    if seen is not None and (isinstance(seen, bool) or not isinstance(seen, int)):
        raise Invalid(f"{where}.seen", "must be a log position or null")
    try:
        HLCTimestamp.decode(hlc)
    except ValueError as e:
        raise Invalid(f"{where}.hlc", str(e)) from None
    if detail is not None and not isinstance(detail, dict):
        raise Invalid(f"{where}.detail", "must be an object or null")
    return EventRow(
        key, op, agent, session, replica, counter, hlc, request_id,
        compact_json(value) if has_value else None, None if detail is None else compact_json(detail),
        0, seen, 0, origin,
    )  # fmt: skip


# -------------------------------------------------------------------- key states


def state_out(row: KeyRow) -> list[Any]:
    return [json.loads(row.clock), row.hlc]


def state_in(key: Any, item: Any) -> tuple[DVVSet, str]:
    where = f"states[{key!r:.80}]"
    if not isinstance(key, str) or not key:
        raise Invalid("states", "keys must be non-empty strings")
    if not isinstance(item, list) or len(item) != 2:
        raise Invalid(where, "must be [dvvset, hlc]")
    try:
        clock = DVVSet.from_json(item[0])
        HLCTimestamp.decode(item[1])
    except ValueError as e:
        raise Invalid(where, str(e)) from None
    for w in clock.values():
        if not isinstance(w, list) or len(w) > 2 or (len(w) == 2 and not isinstance(w[1], (str, dict))):
            raise Invalid(where, f"holds a value that is not a comity value: {w!r:.80}")
    return clock, item[1]


# ------------------------------------------------------------------------ leases


def lease_out(row: LeaseRow) -> list[Any]:
    return [row.resource, row.holder, row.token, row.expires, row.hlc]


def lease_in(item: Any, i: int) -> LeaseRow:
    where = f"leases[{i}]"
    if not isinstance(item, list) or len(item) != 5:
        raise Invalid(where, "must be [resource, holder, token, expires, hlc]")
    resource, holder, token, expires, hlc = item
    if not isinstance(resource, str) or not resource or not (holder is None or isinstance(holder, str)):
        raise Invalid(where, "resource must be a string and holder a string or null")
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise Invalid(f"{where}.token", "must be an integer >= 0")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise Invalid(f"{where}.expires", "must be a number")
    if not isinstance(hlc, str):
        raise Invalid(f"{where}.hlc", "must be a string")
    return LeaseRow(resource, holder, token, float(expires), 0, hlc)


# ------------------------------------------------------------------------ errors

_ERRORS: dict[str, type[ComityError]] = {
    "stale_context": StaleContext,
    "fenced": Fenced,
    "lease_expired": LeaseExpired,
    "not_found": NotFound,
    "unavailable": Unavailable,
}


def error_out(e: ComityError) -> dict[str, Any]:
    return {"ok": False, "error": e.to_json()}


def error_in(body: Any, where: str) -> ComityError:
    """The error a peer answered with, as the error type it names (so exit codes carry over),
    with its next steps."""
    if not isinstance(body, dict):
        return ComityError(f"{where} answered with a malformed error")
    code = str(body.get("error", ""))
    message = str(body.get("message") or code or "error")
    details = {k: v for k, v in body.items() if k not in ("error", "message", "next")}
    raw = body.get("next")
    steps = [x for x in (Step.from_json(s) for s in raw) if x is not None] if isinstance(raw, list) else []
    if code == "invalid":
        name = str(details.pop("field", None) or "sync")
        prefix = f"{name}: "
        return Invalid(name, message[len(prefix) :] if message.startswith(prefix) else message, next=steps, **details)
    if code in ("unauthorized", "forbidden"):
        return Invalid("auth", f"{where} refused the token: {message}")
    if code == "stale_context":
        return StaleContext(
            message, key=details.pop("key", None), news=details.pop("news", None), rejected=details.pop("rejected", None),
            next=steps, **details,
        )  # fmt: skip
    cls = _ERRORS.get(code)
    if cls is not None:
        return cls(message, next=steps, **details)
    return ComityError(f"{where}: {message}", next=steps, **details)
