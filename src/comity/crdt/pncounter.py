"""PN-Counter: a counter that goes both ways, as two G-Counters (increments, decrements).

Shapiro, Preguiça, Baquero, Zawirski, "A comprehensive study of Convergent and
Commutative Replicated Data Types" (INRIA RR-7506, 2011); delta mutators after
Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018): a delta carries only the changed replica's entry of one side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from ..causal import VersionVector
from ._protocol import NO_CONTEXT, UpdateContext, bounded_sum, check_actor, expect, positive_int, unknown_op

__all__ = ["PNCounter"]


class PNCounter:
    """value = the sum of increments minus the sum of decrements."""

    __slots__ = ("_inc", "_dec")

    type_name: ClassVar[str] = "pncounter"
    ops: ClassVar[Mapping[str, str]] = {
        "inc": "add arg, a positive integer (default 1)",
        "dec": "subtract arg, a positive integer (default 1)",
    }

    def __init__(self, inc: VersionVector | None = None, dec: VersionVector | None = None) -> None:
        self._inc = inc if inc is not None else VersionVector()
        self._dec = dec if dec is not None else VersionVector()

    @classmethod
    def new(cls) -> Self:
        return cls()

    def value(self) -> int:
        return sum(n for _, n in self._inc.items()) - sum(n for _, n in self._dec.items())

    def update(self, op: str, arg: Any, actor: str, ctx: UpdateContext = NO_CONTEXT) -> Self:
        if op not in self.ops:
            raise unknown_op(self.type_name, op, self.ops)
        n = positive_int(arg, op)
        actor = check_actor(actor)
        if op == "inc":
            return type(self)(VersionVector({actor: bounded_sum(self._inc.get(actor), n, op)}), None)
        return type(self)(None, VersionVector({actor: bounded_sum(self._dec.get(actor), n, op)}))

    def merge(self, other: Self) -> Self:
        return type(self)(self._inc.merge(other._inc), self._dec.merge(other._dec))

    def to_json(self) -> dict[str, Any]:
        return {"inc": self._inc.to_json(), "dec": self._dec.to_json()}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        expect(obj, dict, cls.type_name)
        if set(obj) != {"inc", "dec"}:
            raise ValueError(f"{cls.type_name}: expected keys 'inc' and 'dec', got {sorted(obj)}")
        try:
            return cls(VersionVector.from_json(obj["inc"]), VersionVector.from_json(obj["dec"]))
        except ValueError as e:
            raise ValueError(f"{cls.type_name}: {e}") from None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, PNCounter)
        return self._inc == other._inc and self._dec == other._dec

    def __hash__(self) -> int:
        return hash((self._inc, self._dec))

    def __repr__(self) -> str:
        return f"PNCounter(inc={self._inc.to_json()!r}, dec={self._dec.to_json()!r})"
