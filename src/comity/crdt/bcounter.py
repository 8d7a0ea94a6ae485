"""Bounded counter: a counter that never goes below zero, its rights split between replicas.

Balegas, Serra, Preguiça, Fonte, Gonçalves, Shapiro, Baquero, Najafzadeh,
"Extending Eventually Consistent Cloud Databases for Enforcing Numeric Invariants"
(SRDS 2015), the bounded counter of Antidote: each replica may decrement only by the
*rights* it holds (its increments, plus rights transferred to it, minus rights it
transferred away and its decrements), so every replica checks the bound alone, with
no coordination, and the sum of everyone's rights (the value) never goes below zero
whatever the partitions.  Rights move between replicas with ``transfer``; a replica
takes a share from its upstream while connected and spends it offline.  Each entry is
written by one replica only and only grows, so merge is the pointwise max.  The delta
of a mutator (Almeida, Shoker, Baquero, "Delta State Replicated Data Types", JPDC 2018)
is the whole new state, not the changed entry: a decrement is safe only together with
the increments and transfers that gave its replica the rights it spent, and a replica
that merged the decrement without them would see the value below zero.  Full states
merged in any order keep the bound (the join of two valid states is valid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from ..causal import VersionVector
from ..errors import Invalid
from ._protocol import NO_CONTEXT, UpdateContext, check_actor, expect, positive_int, unknown_op

__all__ = ["BCounter", "OutOfRights"]

_SEP = "\x1f"  # joins (from, to) into one version-vector entry; replica ids never hold it


class OutOfRights(Exception):
    """A decrement or transfer larger than the rights its replica holds."""

    def __init__(self, actor: str, have: int, need: int, value: int) -> None:
        super().__init__(f"replica {actor} holds {have} of the counter's rights; {need} needed (value {value})")
        self.actor = actor
        self.have = have
        self.need = need
        self.value = value


class BCounter:
    """value = increments - decrements >= 0; ``rights(r)`` = what replica r may still take away."""

    __slots__ = ("_inc", "_dec", "_moved")

    type_name: ClassVar[str] = "bcounter"
    ops: ClassVar[Mapping[str, str]] = {
        "inc": "add arg, a positive integer (default 1); the rights go to this replica",
        "dec": "subtract arg (default 1), only as far as this replica's rights go: never below 0",
        "transfer": 'give {"to": REPLICA, "n": N} of this replica\'s rights to another replica',
    }

    def __init__(
        self, inc: VersionVector | None = None, dec: VersionVector | None = None, moved: VersionVector | None = None
    ) -> None:
        self._inc = inc if inc is not None else VersionVector()
        self._dec = dec if dec is not None else VersionVector()
        self._moved = moved if moved is not None else VersionVector()  # "from\x1fto" -> rights moved, ever

    @classmethod
    def new(cls) -> Self:
        return cls()

    def value(self) -> int:
        return sum(n for _, n in self._inc.items()) - sum(n for _, n in self._dec.items())

    def rights(self, replica: str) -> int:
        """What ``replica`` may decrement or transfer now."""
        got = given = 0
        for pair, n in self._moved.items():
            src, dst = pair.split(_SEP, 1)
            if dst == replica:
                got += n
            if src == replica:
                given += n
        return self._inc.get(replica) - self._dec.get(replica) + got - given

    def shares(self) -> dict[str, int]:
        """Every replica's rights (those with any)."""
        names = set(self._inc) | set(self._dec)
        for pair in self._moved:
            names.update(pair.split(_SEP, 1))
        return {r: self.rights(r) for r in sorted(names) if self.rights(r)}

    def update(self, op: str, arg: Any, actor: str, ctx: UpdateContext = NO_CONTEXT) -> Self:
        if op not in self.ops:
            raise unknown_op(self.type_name, op, self.ops)
        actor = check_actor(actor)
        if op == "inc":
            n = positive_int(arg, op)
            return self.merge(type(self)(VersionVector({actor: self._inc.get(actor) + n})))
        if op == "dec":
            n = positive_int(arg, op)
            self._spend(actor, n)
            return self.merge(type(self)(None, VersionVector({actor: self._dec.get(actor) + n})))
        if not isinstance(arg, dict) or set(arg) != {"to", "n"}:
            raise Invalid("arg", 'transfer takes {"to": REPLICA, "n": N}')
        to, n = arg["to"], positive_int(arg["n"], op)
        if not isinstance(to, str) or not to or _SEP in to or to == actor:
            raise Invalid("arg", f"transfer needs another replica's id in 'to', got {to!r}")
        self._spend(actor, n)
        pair = actor + _SEP + to
        return self.merge(type(self)(None, None, VersionVector({pair: self._moved.get(pair) + n})))

    def _spend(self, actor: str, n: int) -> None:
        have = self.rights(actor)
        if n > have:
            raise OutOfRights(actor, max(have, 0), n, self.value())

    def merge(self, other: Self) -> Self:
        return type(self)(self._inc.merge(other._inc), self._dec.merge(other._dec), self._moved.merge(other._moved))

    def to_json(self) -> dict[str, Any]:
        moved = [[*pair.split(_SEP, 1), n] for pair, n in self._moved.items()]
        return {"inc": self._inc.to_json(), "dec": self._dec.to_json(), "moved": moved}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        expect(obj, dict, cls.type_name)
        if set(obj) != {"inc", "dec", "moved"}:
            raise ValueError(f"{cls.type_name}: expected keys 'inc', 'dec' and 'moved', got {sorted(obj)}")
        moved: dict[str, int] = {}
        for item in expect(obj["moved"], list, f"{cls.type_name} moved"):
            if not isinstance(item, list) or len(item) != 3 or not all(isinstance(x, str) and x and _SEP not in x for x in item[:2]):
                raise ValueError(f"{cls.type_name}: each transfer is [from, to, n], got {item!r:.80}")
            moved[item[0] + _SEP + item[1]] = item[2]
        try:
            return cls(VersionVector.from_json(obj["inc"]), VersionVector.from_json(obj["dec"]), VersionVector(moved))
        except ValueError as e:
            raise ValueError(f"{cls.type_name}: {e}") from None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, BCounter)
        return self._inc == other._inc and self._dec == other._dec and self._moved == other._moved

    def __hash__(self) -> int:
        return hash((self._inc, self._dec, self._moved))

    def __repr__(self) -> str:
        return f"BCounter(value={self.value()}, shares={self.shares()!r})"
