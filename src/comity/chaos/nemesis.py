"""The nemesis: what goes wrong, and where.

Faults happen at *fault points*, named so that the same run reaches the same names:

=================================  =====================================================
point                              kinds
=================================  =====================================================
``msg:P:K:R:A:req`` / ``…:rep``    ``drop``, ``dup``, ``delay``; on requests also
                                   ``restart_store`` (the store process restarts as the
                                   request arrives).  P is a process (agent#incarnation),
                                   K its K-th operation, R the round trip within it, A the
                                   attempt.
``push:P:N``                       ``drop``, ``dup``, ``delay`` of the N-th message the
                                   pool pushes to P
``op:P:K``                         before P's K-th operation: ``crash`` (restarts after
                                   ``arg`` s), ``crash_stop``, ``pause`` (``arg`` s: a
                                   zombie when it outlives a lease); after it:
                                   ``crash_after``, ``retry`` (the agent does it twice);
                                   about its inputs: ``lost_context`` (it acts on its
                                   oldest snapshot), ``hallucinate`` (wrong work reported
                                   as done); after a refusal: ``ignore_refusal``,
                                   ``blind_retry``, ``steal``, ``impersonate``; at a
                                   checkpoint: ``withhold`` (skips it); in a review:
                                   ``bad_review`` (passes wrong work)
``think:P:J``                      ``stall``: P's J-th step of work takes ``arg`` s longer
``proc:P``                         ``skew``: P's clock is off by ``arg`` s
=================================  =====================================================

A random nemesis decides at each point from the scenario's :class:`Profile` and its
own random stream, and records what it injected: that list is the *schedule*.  A
scripted nemesis injects exactly a given schedule and nothing else, so a schedule
replays a failure, and the explorer can inject one fault, or two, at chosen points
(Meiklejohn et al., "Service-level fault injection testing" (Filibuster), SoCC 2021).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime import SeededRng

__all__ = ["Fault", "Schedule", "Profile", "Nemesis", "KINDS", "MESSAGE_KINDS", "OP_KINDS", "DISOBEDIENCE", "MAST_KINDS", "HAZARD"]

MESSAGE_KINDS = ("drop", "dup", "delay")
REQUEST_KINDS = (*MESSAGE_KINDS, "restart_store")
OP_KINDS = ("crash", "crash_stop", "pause", "crash_after", "retry", "lost_context", "hallucinate")
DISOBEDIENCE = ("ignore_refusal", "blind_retry", "steal", "impersonate", "withhold", "bad_review")
# Agent faults taken from MAST's failure modes (mast.py) that the faults above do not already model.
MAST_KINDS = ("overrun", "reset", "derail", "quit")
HAZARD = 0.25  # a mode present in an agent's run strikes at each of its opportunities with this chance, once
KINDS = (*REQUEST_KINDS, *OP_KINDS, *DISOBEDIENCE, *MAST_KINDS, "stall", "skew")


@dataclass(frozen=True, slots=True)
class Fault:
    point: str
    kind: str
    arg: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"point": self.point, "kind": self.kind, "arg": round(self.arg, 6)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fault:
        if d.get("kind") not in KINDS:
            raise ValueError(f"unknown fault kind {d.get('kind')!r}; kinds are {', '.join(KINDS)}")
        return cls(str(d["point"]), str(d["kind"]), float(d.get("arg", 0.0)))

    def describe(self) -> str:
        what = {
            "drop": "lose message", "dup": "duplicate message", "delay": f"delay message {self.arg:.0f}s",
            "restart_store": f"restart the store ({self.arg:.0f}s down) as", "crash": f"crash (restart after {self.arg:.0f}s) before",
            "crash_stop": "crash for good before", "pause": f"pause {self.arg:.0f}s before", "crash_after": f"crash (restart after {self.arg:.0f}s) right after",
            "retry": "agent repeats", "lost_context": "agent acts on its oldest snapshot at", "hallucinate": "wrong work reported done at",
            "stall": f"stall {self.arg:.0f}s at", "skew": f"skew clock {self.arg:+.0f}s of",
            "ignore_refusal": "agent ignores the refusal at", "blind_retry": "agent retries its claim blind at",
            "steal": "agent steals the task at", "impersonate": "agent acts under another's name at",
            "withhold": "agent skips its checkpoint at", "bad_review": "reviewer passes wrong work at",
            "overrun": "agent writes again after finishing at", "reset": f"conversation reset (restart after {self.arg:.0f}s, no transcript) before",
            "derail": f"agent derails {self.arg:.0f}s at", "quit": "agent drops its task at",
        }[self.kind]  # fmt: skip
        return f"{what} {self.point}"


@dataclass(slots=True)
class Schedule:
    """A run to reproduce: scenario, strategy, seed, and the faults to inject (exactly)."""

    scenario: str
    strategy: str
    seed: int
    faults: list[Fault] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "strategy": self.strategy, "seed": self.seed, "faults": [f.to_json() for f in self.faults]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Schedule:
        try:
            return cls(str(d["scenario"]), str(d["strategy"]), int(d["seed"]), [Fault.from_json(f) for f in d.get("faults", [])])
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a chaos schedule: missing or bad {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclass(frozen=True, slots=True)
class Profile:
    """How often each kind of fault strikes a point of its kind, and how big it is."""

    p: dict[str, float] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)  # at most this many of a kind per run
    # Per agent and run: the chance that the agent shows this kind of fault at all (MAST's modes
    # are measured per trace); one that shows it strikes once, at one of its opportunities.
    per_agent: dict[str, float] = field(default_factory=dict)
    # Replayed traces: each agent of a run takes one (the kinds of fault it shows), drawn from these.
    traces: tuple[frozenset[str], ...] = ()

    def limit(self, kind: str) -> int:
        return self.limits.get(kind, DEFAULT_LIMITS.get(kind, 1 << 30))

    def probability(self, kind: str) -> float:
        return self.p.get(kind, 0.0)

    def span(self, kind: str) -> tuple[float, float]:
        return self.ranges.get(kind, DEFAULT_RANGES.get(kind, (0.0, 0.0)))

    def typical(self, kind: str) -> float:
        """The size a systematic search injects: the top of the range (the fault at its worst)."""
        return self.span(kind)[1]

    def quiet(self) -> bool:
        return not any(v > 0 for v in (*self.p.values(), *self.per_agent.values()))

    def uses(self, kind: str) -> bool:
        return self.probability(kind) > 0 or self.per_agent.get(kind, 0.0) > 0


# A run is a working afternoon, not a disaster movie: the faults that take an agent out
# for a long while are few per run (Jepsen's nemeses likewise strike a few times a test).
DEFAULT_LIMITS: dict[str, int] = {
    "pause": 2, "stall": 2, "crash": 4, "crash_stop": 1, "crash_after": 2, "restart_store": 3,
    "retry": 6, "lost_context": 6, "hallucinate": 6,
    "ignore_refusal": 2, "blind_retry": 2, "steal": 2, "impersonate": 2, "withhold": 2, "bad_review": 2,
}  # fmt: skip

DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "delay": (2.0, 40.0),
    "dup": (0.01, 20.0),
    "restart_store": (1.0, 20.0),
    "crash": (30.0, 600.0),
    "crash_after": (30.0, 600.0),
    "pause": (400.0, 5400.0),
    "stall": (400.0, 3600.0),
    "derail": (600.0, 3600.0),
    "reset": (30.0, 600.0),
    "skew": (-1800.0, 1800.0),
}


class Nemesis:
    """Decides, at each fault point, whether a fault strikes: at random from a profile,
    or exactly from a schedule.  Records every point it was asked about (the fault
    points of the run) and every fault it injected (the schedule)."""

    def __init__(self, profile: Profile, rng: SeededRng | None = None, schedule: list[Fault] | None = None) -> None:
        self.profile = profile
        self.rng = rng
        self.scripted: dict[str, list[Fault]] | None = None
        if schedule is not None:
            self.scripted = {}
            for f in schedule:
                self.scripted.setdefault(f.point, []).append(f)
        self.points: list[tuple[str, tuple[str, ...]]] = []
        self.injected: list[Fault] = []
        self.used: dict[str, int] = {}
        self._asked: dict[tuple[str, tuple[str, ...]], int] = {}
        self._present: dict[tuple[str, str], bool] = {}  # (agent, kind): shows this fault in this run (until it struck)
        self._trace_of: dict[str, frozenset[str]] = {}
        self.record_points = False

    def decide(self, point: str, kinds: tuple[str, ...]) -> Fault | None:
        """The fault (at most one) that strikes ``point``, among ``kinds``.

        A point reached again (a duplicated request's second reply) is a new point,
        ``point/1``, so a schedule names each occurrence exactly."""
        seen = self._asked.get((point, kinds), 0)
        self._asked[(point, kinds)] = seen + 1
        if seen:
            point = f"{point}/{seen}"
        if self.record_points:
            self.points.append((point, kinds))
        if self.scripted is not None:
            for f in self.scripted.get(point, ()):
                if f.kind in kinds:
                    self.injected.append(f)
                    return f
            return None
        if self.rng is None:
            return None
        for kind in kinds:
            p = self.profile.probability(kind)
            if p > 0:
                hit = self.rng.random() < p
            elif kind in self.profile.per_agent:
                hit = self._agent_strikes(point, kind)
            else:
                continue
            if hit and self.used.get(kind, 0) < self.profile.limit(kind):
                self.used[kind] = self.used.get(kind, 0) + 1
                lo, hi = self.profile.span(kind)
                arg = lo + (hi - lo) * self.rng.random() if hi > lo else lo
                fault = Fault(point, kind, round(arg, 3))
                self.injected.append(fault)
                return fault
        return None

    def _agent_strikes(self, point: str, kind: str) -> bool:
        assert self.rng is not None
        parts = point.split(":")
        agent = parts[1].split("#", 1)[0] if len(parts) > 1 else point
        key = (agent, kind)
        present = self._present.get(key)
        if present is None:
            if self.profile.traces:
                if agent not in self._trace_of:
                    self._trace_of[agent] = self.profile.traces[self.rng.randint(0, len(self.profile.traces) - 1)]
                present = self._present[key] = kind in self._trace_of[agent]
            else:
                present = self._present[key] = self.rng.random() < self.profile.per_agent[kind]
        if not present or self.rng.random() >= HAZARD:
            return False
        self._present[key] = False  # once per agent and run
        return True
