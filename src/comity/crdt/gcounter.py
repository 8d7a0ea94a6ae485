"""G-Counter: a grow-only counter, one monotonic entry per replica.

Shapiro, Preguiça, Baquero, Zawirski, "A comprehensive study of Convergent and
Commutative Replicated Data Types" (INRIA RR-7506, 2011); delta mutator after
Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018): the delta of ``inc`` is the incrementing replica's new entry alone.
The entries are a :class:`~comity.causal.VersionVector`, whose merge is the pointwise max.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from ..causal import VersionVector
from ._protocol import NO_CONTEXT, UpdateContext, bounded_sum, check_actor, positive_int, unknown_op

__all__ = ["GCounter"]


class GCounter:
    """value = the sum of every replica's entry."""

    __slots__ = ("_counts",)

    type_name: ClassVar[str] = "gcounter"
    ops: ClassVar[Mapping[str, str]] = {"inc": "add arg, a positive integer (default 1)"}

    def __init__(self, counts: VersionVector | None = None) -> None:
        self._counts = counts if counts is not None else VersionVector()

    @property
    def counts(self) -> VersionVector:
        """Each replica's total increments."""
        return self._counts

    @classmethod
    def new(cls) -> Self:
        return cls()

    def value(self) -> int:
        return sum(n for _, n in self._counts.items())

    def update(self, op: str, arg: Any, actor: str, ctx: UpdateContext = NO_CONTEXT) -> Self:
        if op != "inc":
            raise unknown_op(self.type_name, op, self.ops)
        n = positive_int(arg, op)
        actor = check_actor(actor)
        return type(self)(VersionVector({actor: bounded_sum(self._counts.get(actor), n, op)}))

    def merge(self, other: Self) -> Self:
        return type(self)(self._counts.merge(other._counts))

    def to_json(self) -> dict[str, int]:
        return self._counts.to_json()

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        try:
            return cls(VersionVector.from_json(obj))
        except ValueError as e:
            raise ValueError(f"{cls.type_name}: {e}") from None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, GCounter)
        return self._counts == other._counts

    def __hash__(self) -> int:
        return hash(self._counts)

    def __repr__(self) -> str:
        return f"GCounter({self._counts.to_json()!r})"
