"""Liveness: who is making progress, and whom to suspect.

An LLM agent can be alive and stuck (its context exhausted, waiting on a human), so
progress is judged by its own actions, not by a heartbeat.  A phi-accrual detector
(Hayashibara, Défago, Yared, Katayama, "The φ Accrual Failure Detector", SRDS 2004)
over the intervals between the agent's actions gives a suspicion level φ; an agent
is suspected only past a floor: enough samples, and silent for longer than its lease
TTL.  Hosts that can (an MCP server process) also send heartbeats, which show a
crashed process.  Suspicion never revokes anything: expiry does, and fencing tokens
decide whose write counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..store import Note, Session
from ..store._txn import check_ttl
from .leases import DEFAULT_TTL_S as _LEASE_TTL_S

__all__ = ["PhiAccrual", "AgentStatus", "agents", "activity", "recent_events", "phi_series", "heartbeat", "HEARTBEAT_OP", "AGENT_PREFIX"]

AGENT_PREFIX = "@agent/"
HEARTBEAT_OP = "heartbeat"
DEFAULT_TTL_S = _LEASE_TTL_S  # an agent silent for a lease's length is no longer listed


@dataclass(frozen=True, slots=True)
class PhiAccrual:
    """φ = -log10(P(no action for ``elapsed`` | past intervals)), intervals ~ Normal(μ, σ)."""

    threshold: float = 8.0
    window: int = 100
    min_samples: int = 5
    min_std_s: float = 1.0

    def phi(self, intervals: Sequence[float], elapsed: float) -> float:
        recent = list(intervals)[-self.window :]
        if not recent:
            return 0.0
        mean = sum(recent) / len(recent)
        var = sum((x - mean) ** 2 for x in recent) / len(recent)
        # A floor on σ keeps a metronomic agent from being suspected for a moment's delay.
        std = max(math.sqrt(var), self.min_std_s, 0.1 * mean)
        p_later = 0.5 * math.erfc((elapsed - mean) / (std * math.sqrt(2)))
        return -math.log10(max(p_later, 1e-300))

    def suspects(self, intervals: Sequence[float], elapsed: float, ttl: float) -> bool:
        """Suspected: enough samples, φ over the threshold, and silent past ``ttl``."""
        return len(intervals) >= self.min_samples and elapsed > ttl and self.phi(intervals, elapsed) >= self.threshold


@dataclass(slots=True)
class AgentStatus:
    agent: str
    actions: int
    last_action: float | None
    last_heartbeat: float | None
    phi: float
    suspected: bool
    holds: list[dict[str, Any]] = field(default_factory=list)
    silent_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "actions": self.actions,
            "last_action": self.last_action,
            "last_heartbeat": self.last_heartbeat,
            "silent_s": None if self.silent_s is None else round(self.silent_s, 3),
            "phi": round(self.phi, 3),
            "suspected": self.suspected,
            "holds": self.holds,
        }


def _wall(hlc: str) -> float:
    return int(hlc.split(".", 1)[0]) / 1000.0


def recent_events(session: Session, window_events: int = 10_000) -> list[dict[str, Any]]:
    """The last ``window_events`` events of the log, without values: what :func:`agents` and
    :func:`activity` judge.  A caller that wants both reads it once and hands it to each."""
    head = session.head()
    return session.log(after=max(0, head - window_events), limit=window_events, values=False)


def heartbeat(session: Session) -> int:
    """Record that this session's host process is alive; returns the event's position."""
    if session.agent is None:
        from ..errors import Invalid

        raise Invalid("agent", "a heartbeat needs an agent name")
    r = session.txn(ops=[Note(AGENT_PREFIX + session.agent, HEARTBEAT_OP, {})], system=True)
    return r.pos


def agents(
    session: Session,
    *,
    detector: PhiAccrual | None = None,
    ttl: float = DEFAULT_TTL_S,
    window_events: int = 10_000,
    events: list[dict[str, Any]] | None = None,
) -> list[AgentStatus]:
    """Every agent seen in the recent log: its progress, its φ, whether it is suspected
    (never before ``ttl`` seconds of silence), and the leases it holds, judged by the
    authority's clock.  ``events``: the window, if the caller read it already
    (:func:`recent_events`)."""
    check_ttl(ttl, "ttl")
    detector = detector or PhiAccrual()
    if events is None:
        events = recent_events(session, window_events)
    leases, now = session.leases("")
    actions: dict[str, list[float]] = {}
    beats: dict[str, float] = {}
    counted: set[str] = set()
    for e in events:
        t = _wall(e["hlc"])
        if e["op"] == HEARTBEAT_OP:
            beats[e["agent"]] = t
        elif e["request_id"] not in counted:
            # One action is one transaction: a claim writes several events, all one request.
            counted.add(e["request_id"])
            actions.setdefault(e["agent"], []).append(t)
    holds: dict[str, list[dict[str, Any]]] = {}
    for lease in leases:
        if lease.holder is not None and lease.expires > now:
            holds.setdefault(lease.holder, []).append(
                {"resource": lease.resource, "token": lease.token, "expires_in_s": round(lease.expires - now, 3)}
            )
    out = []
    for name in sorted(set(actions) | set(beats) | set(holds)):
        times = sorted(actions.get(name, []))
        intervals = [b - a for a, b in zip(times, times[1:])]
        last = times[-1] if times else None
        elapsed = (now - last) if last is not None else None
        phi = detector.phi(intervals, elapsed) if elapsed is not None else 0.0
        suspected = elapsed is not None and detector.suspects(intervals, elapsed, ttl)
        out.append(AgentStatus(name, len(times), last, beats.get(name), phi, suspected, holds.get(name, []), elapsed))
    return out


def phi_series(detector: PhiAccrual, times: Sequence[float], start: float, end: float, points: int = 40) -> list[tuple[float, float]]:
    """φ as the detector would have judged it at ``points`` moments from ``start`` to ``end``,
    each from the actions (``times``, sorted) before that moment: suspicion over time."""
    if points < 2 or end <= start:
        return []
    out: list[tuple[float, float]] = []
    i = 0
    for k in range(points):
        t = start + (end - start) * k / (points - 1)
        while i < len(times) and times[i] <= t:
            i += 1
        before = times[:i]
        if not before:
            out.append((t, 0.0))
            continue
        intervals = [b - a for a, b in zip(before, before[1:])]
        out.append((t, detector.phi(intervals, t - before[-1])))
    return out


def activity(
    session: Session,
    *,
    detector: PhiAccrual | None = None,
    window_events: int = 10_000,
    points: int = 40,
    sessions_max: int = 20,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What each agent did in the recent log: its last action, its sessions (each with its
    events and last action), and φ over the window (``points`` samples).  The companion of
    :func:`agents` for a dashboard: ``{"now", "start", "agents": {name: {...}}}``.
    ``events``: the window, if the caller read it already (:func:`recent_events`)."""
    detector = detector or PhiAccrual()
    if events is None:
        events = recent_events(session, window_events)
    now = session.now()
    per: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {}
    counted: set[str] = set()
    start = now
    for e in events:
        t = _wall(e["hlc"])
        start = min(start, t)
        a = per.setdefault(e["agent"], {"last_action": None, "last_heartbeat": None, "sessions": {}})
        if e["op"] == HEARTBEAT_OP:
            a["last_heartbeat"] = t
            continue
        brief = {"pos": e["pos"], "op": e["op"], "key": e["key"], "time": t}
        a["last_action"] = brief
        s = a["sessions"].setdefault(e["session"], {"session": e["session"], "events": 0, "first": t})
        s["events"] += 1
        s["last"] = brief
        if e["request_id"] not in counted:
            counted.add(e["request_id"])
            times.setdefault(e["agent"], []).append(t)
    out: dict[str, Any] = {}
    for name, a in sorted(per.items()):
        ts = sorted(times.get(name, []))
        sessions = sorted(a["sessions"].values(), key=lambda s: -s["last"]["pos"])
        out[name] = {
            "last_action": a["last_action"],
            "last_heartbeat": a["last_heartbeat"],
            "sessions": sessions[:sessions_max],
            "sessions_total": len(sessions),
            "phi": [(round(t, 3), round(p, 3)) for t, p in phi_series(detector, ts, start, now, points)],
        }
    return {"now": now, "start": start, "window_events": len(events), "agents": out}
