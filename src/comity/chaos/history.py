"""Histories, recorded as Jepsen records them.

Every operation an agent attempts is two entries: an ``invoke`` when it starts and,
when it ends, ``ok`` (it happened), ``fail`` (it certainly did not) or ``info`` (the
agent cannot know: a timeout).  Each entry has the process (one incarnation of an
agent: a crash and restart is a new process), the function ``f``, a JSON ``value``
and the simulated ``time``.  The nemesis's faults are entries of process
``nemesis``.  (Kingsbury, Jepsen's ``knossos.history``; Alvaro & Kingsbury, "Elle",
VLDB 2020.)

A history is hashed from its canonical JSON, so the same seed gives the same hash
in any process, whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Op", "History", "Anomaly"]

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"


@dataclass(slots=True)
class Op:
    """One entry of a history.  A completion's ``value`` includes its invocation's."""

    index: int
    process: str
    type: str
    f: str
    value: dict[str, Any]
    time: float
    invoke: int | None = None  # for a completion: the index of its invocation

    @property
    def agent(self) -> str:
        return self.process.split("#", 1)[0]

    def to_json(self) -> dict[str, Any]:
        out = {"index": self.index, "process": self.process, "type": self.type, "f": self.f, "value": self.value, "time": round(self.time, 6)}
        if self.invoke is not None:
            out["invoke"] = self.invoke
        return out

    def line(self) -> str:
        """One readable line: ``  12  impl-1#1  ok    claim  {"task": "bug-1", ...}  t=310.2``."""
        body = json.dumps(self.value, sort_keys=True, separators=(",", ":"), default=str)
        if len(body) > 160:
            body = body[:157] + "..."
        return f"{self.index:>5}  {self.process:<12} {self.type:<6} {self.f:<11} {body}  t={self.time:.1f}"


@dataclass(slots=True)
class Anomaly:
    """What a checker found, with the operations that show it."""

    checker: str
    kind: str
    explanation: str
    ops: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"checker": self.checker, "kind": self.kind, "explanation": self.explanation, "ops": self.ops}


class History:
    """An append-only list of :class:`Op`, with invocations paired to completions."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._completion: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __getitem__(self, i: int) -> Op:
        return self.ops[i]

    def invoke(self, process: str, f: str, value: dict[str, Any], time: float) -> int:
        i = len(self.ops)
        self.ops.append(Op(i, process, INVOKE, f, value, time))
        return i

    def complete(self, invoke: int, type: str, result: dict[str, Any], time: float) -> int:
        inv = self.ops[invoke]
        i = len(self.ops)
        self.ops.append(Op(i, inv.process, type, inv.f, {**inv.value, **result}, time, invoke))
        self._completion[invoke] = i
        return i

    def note(self, process: str, f: str, value: dict[str, Any], time: float) -> int:
        """A standalone ``info`` entry (the nemesis's faults, the final read)."""
        i = len(self.ops)
        self.ops.append(Op(i, process, INFO, f, value, time))
        return i

    def completion(self, invoke: int) -> Op | None:
        j = self._completion.get(invoke)
        return None if j is None else self.ops[j]

    def invocation(self, op: Op) -> Op:
        return op if op.invoke is None else self.ops[op.invoke]

    def completed(self, f: str | tuple[str, ...] | None = None, type: str | None = None) -> list[Op]:
        """Completions (not invocations), optionally of ``f`` and of one ``type``."""
        fs = (f,) if isinstance(f, str) else f
        return [
            o for o in self.ops
            if o.invoke is not None and (fs is None or o.f in fs) and (type is None or o.type == type)
        ]  # fmt: skip

    def to_json(self) -> list[dict[str, Any]]:
        return [o.to_json() for o in self.ops]

    def canonical(self) -> bytes:
        return "\n".join(json.dumps(o.to_json(), sort_keys=True, separators=(",", ":"), default=str) for o in self.ops).encode()

    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()
