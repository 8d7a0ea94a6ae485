"""The one Protocol every CRDT implements, and the checks their mutators share.

Delta-state CRDTs after Almeida, Shoker, Baquero, "Delta State Replicated Data Types"
(JPDC 2018): ``update`` is a delta-mutator, returning a small state ``d`` such that
the new state is ``self.merge(d)``; deltas travel between replicas and merge as states do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from ..causal import HLCTimestamp
from ..errors import Invalid

__all__ = ["UpdateContext", "CRDT", "NO_CONTEXT"]


@dataclass(frozen=True, slots=True)
class UpdateContext:
    """What an update may need beyond its op and arg: the HLC time of the write."""

    time: HLCTimestamp | None = None


NO_CONTEXT = UpdateContext()


class CRDT(Protocol):
    """A state-based CRDT with delta-mutators.  States are immutable; ``==`` is structural."""

    type_name: ClassVar[str]
    ops: ClassVar[Mapping[str, str]]  # op name -> one line of help naming its arg

    @classmethod
    def new(cls) -> Self:
        """The bottom state."""
        ...

    def value(self) -> Any:
        """What a reader sees, as a JSON-compatible Python value."""
        ...

    def update(self, op: str, arg: Any, actor: str, ctx: UpdateContext = NO_CONTEXT) -> Self:
        """The delta of applying ``op(arg)`` at replica ``actor``; Invalid on bad op or arg."""
        ...

    def merge(self, other: Self) -> Self:
        """The least upper bound of two states (or of a state and a delta)."""
        ...

    def to_json(self) -> Any:
        """A JSON-compatible encoding of the full state."""
        ...

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        """Parse :meth:`to_json` output; ValueError says what is wrong."""
        ...


# --------------------------------------------------------------- shared checks


def check_actor(actor: object) -> str:
    if not isinstance(actor, str) or not actor:
        raise Invalid("actor", f"the actor must be a non-empty replica id, got {actor!r}")
    return actor


def unknown_op(type_name: str, op: object, ops: Mapping[str, str]) -> Invalid:
    return Invalid("op", f"unknown op {op!r} for a {type_name}; use one of: {', '.join(ops)}")


def canonical(value: Any, what: str = "arg") -> str:
    """The identity of a JSON value: sorted keys, no spaces.  Invalid if not JSON."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Invalid(what, f"must be a JSON value (null, bool, number, string, list, object): {e}") from None


def parse_canonical(value: Any, what: str) -> str:
    """:func:`canonical` for ``from_json``: ValueError if not JSON."""
    try:
        return canonical(value, what)
    except Invalid as e:
        raise ValueError(e.message) from None


# Counters stay within what a signed 64-bit integer holds, so every later operation, every
# JSON reader and every SQL column can still take them (a 4,300-digit increment once left a
# counter no later increment could change).
COUNT_MAX = 2**63 - 1


def positive_int(arg: Any, op: str) -> int:
    if arg is None:
        return 1
    if type(arg) is not int or arg < 1 or arg > COUNT_MAX:
        raise Invalid("arg", f"{op} takes a positive integer up to {COUNT_MAX} (default 1), got {arg!r:.40}")
    return arg


def bounded_sum(current: int, n: int, op: str) -> int:
    """``current + n``, refused when it would pass :data:`COUNT_MAX`."""
    if current + n > COUNT_MAX:
        raise Invalid("arg", f"{op} {n} would take this replica's count past {COUNT_MAX}; use a smaller step or another key")
    return current + n


def no_arg(arg: Any, op: str) -> None:
    if arg is not None:
        raise Invalid("arg", f"{op} takes no arg (pass null), got {arg!r}")


def expect(obj: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``obj`` if it is a ``kind``, else ValueError naming ``what`` was expected."""
    if not isinstance(obj, kind) or (isinstance(obj, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"{what}: expected {names}, got {obj!r:.80}")
    return obj
