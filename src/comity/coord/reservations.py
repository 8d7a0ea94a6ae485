"""Path reservations: who is working where, exclusive or shared, with a TTL.

Overlap is judged conservatively both ways: two patterns overlap if some path could
match both (``src/**`` overlaps ``src/app.py``; a directory overlaps what is under it;
two wildcards in one segment overlap unless their literal ends disagree).  All of a
store's reservations live in one system key, changed only by context-checked writes,
so two agents can never both be granted overlapping exclusive reservations: the second
write's context misses the first, and it is re-evaluated against it.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from typing import Any

from ..errors import Invalid, NotFound, StaleContext, Step
from ..store import Put, Session

__all__ = ["Reservation", "overlaps", "reserve", "release", "reservations", "RESERVATIONS_KEY", "DEFAULT_TTL_S"]

RESERVATIONS_KEY = "@reservations"
DEFAULT_TTL_S = 3600.0  # a path reservation's length, on every face (comity.work.verbs shows it)
_WILD = set("*?[")
_MAX_RETRIES = 50
_MAX_PATTERN = 512


@dataclass(frozen=True, slots=True)
class Reservation:
    pattern: str
    holder: str
    shared: bool
    token: int
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "holder": self.holder, "shared": self.shared, "token": self.token, "expires": self.expires}


def normalize(pattern: object, field: str = "paths") -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise Invalid(field, "each path or glob must be a non-empty string, e.g. 'src/app.py' or 'src/**'")
    p = pattern.strip().replace("\\", "/")
    if p.startswith("/"):
        raise Invalid(field, f"{pattern[:60]!r} is absolute; use a path relative to the repository root")
    while p.startswith("./"):
        p = p[2:]
    p = "/".join(seg for seg in p.split("/") if seg not in ("", "."))
    if len(p) > _MAX_PATTERN or not p:
        raise Invalid(field, f"{pattern[:60]!r} is empty or longer than {_MAX_PATTERN} characters")
    if ".." in p.split("/") or any(ord(c) < 32 for c in p):
        raise Invalid(field, f"{pattern[:60]!r}: use a path relative to the repository, without '..'")
    return p


def _wildcards(seg: str) -> list[tuple[int, int]]:
    """Where ``seg``'s wildcards are, as fnmatch reads them: ``*``, ``?``, and ``[...]`` up to
    the ``]`` that closes it (a ``]`` first in the class, after ``[`` or ``[!``, is a member,
    as in ``[]a]``; a ``[`` never closed is a literal)."""
    spans = []
    i = 0
    while i < len(seg):
        if seg[i] in "*?":
            spans.append((i, i + 1))
        elif seg[i] == "[":
            j = i + 1
            if seg[j : j + 1] == "!":
                j += 1
            if seg[j : j + 1] == "]":
                j += 1
            j = seg.find("]", j)
            if j != -1:
                spans.append((i, j + 1))
                i = j
        i += 1
    return spans


def _literal_ends(seg: str) -> tuple[str, str]:
    """The literal text before ``seg``'s first wildcard and after its last one."""
    spans = _wildcards(seg)
    if not spans:  # only an unclosed '[': all literal
        return seg, seg
    return seg[: spans[0][0]], seg[spans[-1][1] :]


def _segment_overlaps(x: str, y: str) -> bool:
    wx, wy = bool(_WILD & set(x)), bool(_WILD & set(y))
    if not wx and not wy:
        return x == y
    if not wx:
        return fnmatch.fnmatchcase(x, y)
    if not wy:
        return fnmatch.fnmatchcase(y, x)
    (px, sx), (py, sy) = _literal_ends(x), _literal_ends(y)
    return (px.startswith(py) or py.startswith(px)) and (sx.endswith(sy) or sy.endswith(sx))


def overlaps(a: str, b: str) -> bool:
    """Could some path be matched by both ``a`` and ``b``?  (Errs towards yes.)"""
    A, B = tuple(a.split("/")), tuple(b.split("/"))

    @functools.cache
    def go(i: int, j: int) -> bool:
        if i < len(A) and A[i] == "**":
            return go(i + 1, j) or (j < len(B) and go(i, j + 1))
        if j < len(B) and B[j] == "**":
            return go(i, j + 1) or (i < len(A) and go(i + 1, j))
        if i == len(A) or j == len(B):
            return True  # one names a directory the other lies under
        return _segment_overlaps(A[i], B[j]) and go(i + 1, j + 1)

    return go(0, 0)


def _load(session: Session) -> tuple[dict[str, Any], str, float]:
    v = session.get(RESERVATIONS_KEY)
    state = v.values[0] if len(v.values) == 1 else {"next_token": 1, "entries": []}
    return state, v.context, session.now()


def _live(state: dict[str, Any], now: float) -> list[Reservation]:
    return [Reservation(**e) for e in state["entries"] if e["expires"] > now]


def _save(session: Session, state: dict[str, Any], context: str, label: str, request: tuple[str, str] | None) -> dict[str, Any] | None:
    """Write the reservations if nobody changed them since ``context``: the state as written
    (a retry racing the first attempt gets the first's), or None to re-evaluate."""
    rid, digest = (None, None) if request is None else request
    try:
        r = session.txn(ops=[Put(RESERVATIONS_KEY, state, context=context, label=label)], system=True, request_id=rid, digest=digest)
    except StaleContext:
        return None  # someone else changed the reservations since we read them: re-evaluate
    written: dict[str, Any] = r.results[0]["values"][0]
    return written


def _prior(session: Session, request: tuple[str, str] | None) -> dict[str, Any] | None:
    """The reservations as a recorded request left them, if it was applied (a retry)."""
    if request is None:
        return None
    got = session.recorded(request[0])
    if got is None:
        return None
    if got[0] != request[1]:
        raise Invalid("request_id", f"{request[0][:60]!r} was already used for a different request; use a new id for a new request")
    state: dict[str, Any] = got[1]["results"][0]["values"][0]
    return state


def reservations(session: Session) -> list[Reservation]:
    """The live reservations, judged by the authority's clock."""
    state, _, now = _load(session)
    return _live(state, now)


def reserve(
    session: Session, paths: list[str], *, ttl: float = DEFAULT_TTL_S, shared: bool = False, request: tuple[str, str] | None = None
) -> list[Reservation]:
    """Reserve every path or glob in ``paths`` for this session's agent, or none of them.

    Refused (StaleContext) if one overlaps another agent's live exclusive reservation,
    or, when exclusive, any other agent's live reservation.  ``request`` (an id and the
    digest of the call) answers a retry with what the first attempt granted."""
    if session.agent is None:
        raise Invalid("agent", "reserving paths needs an agent name")
    if not isinstance(paths, list) or not paths:
        raise Invalid("paths", "give at least one path or glob")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= 7 * 24 * 3600:
        raise Invalid("ttl", f"must be seconds in (0, 604800], got {ttl!r}")
    wanted = list(dict.fromkeys(normalize(p) for p in paths))
    me = session.agent
    prior = _prior(session, request)
    if prior is not None:
        return _granted(prior, me, wanted)
    for _ in range(_MAX_RETRIES):
        state, context, now = _load(session)
        live = _live(state, now)
        for p in wanted:
            for r in live:
                if r.holder != me and overlaps(p, r.pattern) and not (shared and r.shared):
                    kind = "shared" if r.shared else "exclusive"
                    raise StaleContext(
                        f"{p!r} overlaps {r.holder}'s {kind} reservation {r.pattern!r} (token {r.token},"
                        f" {r.expires - now:.0f}s left); work elsewhere, or ask {r.holder} to release it",
                        key=RESERVATIONS_KEY,
                        conflict=r.to_json(),
                        next=[Step("reservations", {}, "see who holds what, and work elsewhere")],
                    )
        token = int(state["next_token"])
        mine = {(r.pattern, r.holder): r for r in live}
        granted = []
        for p in wanted:
            old = mine.pop((p, me), None)
            granted.append(Reservation(p, me, shared, old.token if old else token, now + ttl))
            if old is None:
                token += 1
        entries = [r.to_json() for r in mine.values()] + [g.to_json() for g in granted]
        written = _save(session, {"next_token": token, "entries": entries}, context, "reserve", request)
        if written is not None:
            return _granted(written, me, wanted)
    raise StaleContext("reservations kept changing under contention; retry", key=RESERVATIONS_KEY)


def _granted(state: dict[str, Any], me: str, wanted: list[str]) -> list[Reservation]:
    mine = {e["pattern"]: Reservation(**e) for e in state["entries"] if e["holder"] == me}
    return [mine[p] for p in wanted if p in mine]


def release(session: Session, paths: list[str], *, request: tuple[str, str] | None = None) -> list[str]:
    """Release this agent's reservations of exactly these patterns; NotFound if it held none.
    ``request`` answers a retry with what the first attempt released."""
    if session.agent is None:
        raise Invalid("agent", "releasing paths needs an agent name")
    if not isinstance(paths, list) or not paths:
        raise Invalid("paths", "give at least one path or glob")
    wanted = {normalize(p) for p in paths}
    prior = _prior(session, request)
    if prior is not None:
        return list(prior.get("released", {}).get(session.agent, []))
    for _ in range(_MAX_RETRIES):
        state, context, now = _load(session)
        live = _live(state, now)
        gone = [r.pattern for r in live if r.holder == session.agent and r.pattern in wanted]
        if not gone:
            raise NotFound(
                f"{session.agent} holds no reservation on {sorted(wanted)}", next=[Step("reservations", {}, "see who holds what")]
            )
        keep = [r.to_json() for r in live if not (r.holder == session.agent and r.pattern in wanted)]
        # What was released is kept in the state, by agent, so that a retry can be told it.
        released = {**state.get("released", {}), session.agent: gone}
        if _save(session, {"next_token": state["next_token"], "entries": keep, "released": released}, context, "release", request) is not None:
            return gone
    raise StaleContext("reservations kept changing under contention; retry", key=RESERVATIONS_KEY)
