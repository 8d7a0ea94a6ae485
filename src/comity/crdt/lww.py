"""LWW-Register: the write with the greatest (HLC time, replica) wins.

Shapiro, Preguiça, Baquero, Zawirski, "A comprehensive study of Convergent and
Commutative Replicated Data Types" (INRIA RR-7506, 2011), ordered by
hybrid logical clocks (Kulkarni et al., "Logical Physical Clocks", OPODIS 2014) so
that a write never loses to one it causally follows; the replica id breaks ties of
time.  The delta of ``set`` is the one-write register itself (Almeida, Shoker,
Baquero, "Delta State Replicated Data Types", JPDC 2018).  A write is ordered last by
its canonical JSON, so merge is a total-order max even if a (time, replica) repeats.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from ..causal import HLCTimestamp
from ..errors import Invalid
from ._protocol import NO_CONTEXT, UpdateContext, canonical, check_actor, expect, parse_canonical, unknown_op

__all__ = ["LWWRegister"]

Write = tuple[HLCTimestamp, str, str]  # (time, replica, canonical JSON value)


class LWWRegister:
    """value = the winning write's value, or None before any write."""

    __slots__ = ("_write",)

    type_name: ClassVar[str] = "lww"
    ops: ClassVar[Mapping[str, str]] = {
        "set": "replace the value with arg (any JSON value); needs ctx.time, the greatest (time, replica) wins",
    }

    def __init__(self, write: Write | None = None) -> None:
        self._write = write

    @property
    def time(self) -> HLCTimestamp | None:
        """The HLC time of the winning write."""
        return self._write[0] if self._write else None

    @classmethod
    def new(cls) -> Self:
        return cls()

    def value(self) -> Any:
        return json.loads(self._write[2]) if self._write else None

    def update(self, op: str, arg: Any, actor: str, ctx: UpdateContext = NO_CONTEXT) -> Self:
        if op != "set":
            raise unknown_op(self.type_name, op, self.ops)
        value = canonical(arg)
        time = ctx.time
        if not isinstance(time, HLCTimestamp):
            raise Invalid("time", "an lww register orders writes by HLC time: pass ctx=UpdateContext(time=...)")
        try:
            time.encode()
        except (TypeError, ValueError) as e:
            raise Invalid("time", str(e)) from None
        return type(self)((time, check_actor(actor), value))

    def merge(self, other: Self) -> Self:
        if other._write is None or (self._write is not None and self._write >= other._write):
            return self
        return other

    def to_json(self) -> dict[str, Any] | None:
        if self._write is None:
            return None
        time, actor, value = self._write
        return {"time": time.encode(), "actor": actor, "value": json.loads(value)}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        if obj is None:
            return cls()
        expect(obj, dict, cls.type_name)
        if set(obj) != {"time", "actor", "value"}:
            raise ValueError(f"{cls.type_name}: expected null or keys 'time', 'actor', 'value', got {sorted(obj)}")
        value = parse_canonical(obj["value"], f"{cls.type_name} value")
        actor = expect(obj["actor"], str, f"{cls.type_name} actor")
        return cls((HLCTimestamp.decode(obj["time"]), actor, value))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, LWWRegister)
        return self._write == other._write

    def __hash__(self) -> int:
        return hash(self._write)

    def __repr__(self) -> str:
        return f"LWWRegister({self._write!r})"
