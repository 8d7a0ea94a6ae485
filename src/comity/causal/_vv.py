"""Version vectors: one counter per replica, never per client (docs/design.md, principle 3).

Fidge (1988), Mattern (1989); Parker et al., "Detection of Mutual Inconsistency in
Distributed Systems" (1983).  A vector maps each replica to the number of its events
seen; entries with counter 0 are omitted, so equal histories have one representation.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping
from typing import Any

from ._dot import Dot, Ordering

__all__ = ["VersionVector"]


class VersionVector:
    """An immutable, hashable version vector."""

    __slots__ = ("_d", "_hash")

    _d: dict[str, int]  # sorted by replica, no zero counters (canonical form)
    _hash: int | None

    def __init__(self, mapping: Mapping[str, int] | None = None) -> None:
        d: dict[str, int] = {}
        if mapping:
            for replica, counter in mapping.items():
                _check_item(replica, counter, "VersionVector")
                if counter:
                    d[replica] = counter
        self._d = dict(sorted(d.items())) if len(d) > 1 else d
        self._hash = None

    @classmethod
    def _wrap(cls, d: dict[str, int]) -> VersionVector:
        # Fast path for internal callers: ``d`` is already sorted and zero-free.
        vv = object.__new__(cls)
        vv._d = d
        vv._hash = None
        return vv

    # ------------------------------------------------------------------ reading

    def get(self, replica: str) -> int:
        """How many events of ``replica`` this history includes."""
        return self._d.get(replica, 0)

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def items(self) -> ItemsView[str, int]:
        """``(replica, counter)`` pairs, sorted by replica."""
        return self._d.items()

    def contains(self, dot: Dot) -> bool:
        """Whether the event ``dot`` is part of this history."""
        return 0 < dot.counter <= self._d.get(dot.replica, 0)

    # -------------------------------------------------------------- comparison

    def compare(self, other: VersionVector) -> Ordering:
        """Where ``self`` stands relative to ``other``: BEFORE means self < other."""
        le = ge = True
        od = other._d
        for replica, n in self._d.items():
            m = od.get(replica, 0)
            if n < m:
                ge = False
            elif n > m:
                le = False
        if ge:
            sd = self._d
            for replica in od:
                if replica not in sd:  # counters are > 0, so other has more
                    ge = False
                    break
        if le:
            return Ordering.EQUAL if ge else Ordering.BEFORE
        return Ordering.AFTER if ge else Ordering.CONCURRENT

    def descends(self, other: VersionVector) -> bool:
        """Whether ``self`` includes every event of ``other`` (self >= other)."""
        sd = self._d
        return all(sd.get(replica, 0) >= m for replica, m in other._d.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return NotImplemented
        return self._d == other._d

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash(tuple(self._d.items()))
        return h

    # ----------------------------------------------------------------- building

    def merge(self, other: VersionVector) -> VersionVector:
        """The least upper bound: pointwise max."""
        if not other._d:
            return self
        if not self._d:
            return other
        d = dict(self._d)
        grew = False
        for replica, m in other._d.items():
            n = d.get(replica)
            if n is None:
                d[replica] = m
                grew = True
            elif m > n:
                d[replica] = m
        return VersionVector._wrap(dict(sorted(d.items())) if grew else d)

    def increment(self, replica: str) -> tuple[VersionVector, Dot]:
        """The history extended by the next event of ``replica``, and that event's dot."""
        n = self._d.get(replica, 0) + 1
        d = dict(self._d)
        d[replica] = n
        if n == 1:
            d = dict(sorted(d.items()))
        return VersionVector._wrap(d), Dot(replica, n)

    # ------------------------------------------------------------ serialization

    def to_json(self) -> dict[str, int]:
        """``{replica: counter}``, sorted by replica, zero counters omitted."""
        return dict(self._d)

    @classmethod
    def from_json(cls, obj: Any) -> VersionVector:
        """Parse :meth:`to_json` output; ValueError says what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(
                f"version vector must be a JSON object of replica -> counter, got {type(obj).__name__}"
            )
        return cls(obj)

    def __repr__(self) -> str:
        return f"VersionVector({self._d!r})"


def _check_item(replica: object, counter: object, what: str) -> None:
    if not isinstance(replica, str):
        raise ValueError(f"{what}: replica id must be a string, got {replica!r}")
    # bool is an int subclass; a JSON true is not a counter.
    if type(counter) is not int:
        raise ValueError(f"{what}: counter of replica {replica!r} must be an integer, got {counter!r}")
    if counter < 0:
        raise ValueError(f"{what}: counter of replica {replica!r} must be >= 0, got {counter}")
