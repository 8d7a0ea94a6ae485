"""Causal contexts and dot stores: the machinery shared by the causal CRDTs.

Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018): a causal CRDT is a *dot store* (DotSet, DotFun or DotMap) paired with a *causal
context*, the set of dots it has seen.  A dot seen but absent from the store was
removed; that is how removes travel without tombstones.  The context is kept compact:
a version vector for the contiguous prefix of each replica's dots, plus
a "dot cloud" of the dots not yet contiguous with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from ..causal import Dot, VersionVector
from ._protocol import NO_CONTEXT, UpdateContext, check_actor, expect

__all__ = ["DotContext", "Kind", "DotSetKind", "Causal", "join_dot_sets", "join_dot_funs", "join_dot_maps"]

S = TypeVar("S")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class DotContext:
    """An immutable, compact set of dots: ``vv`` (contiguous prefixes) plus ``cloud``."""

    __slots__ = ("_vv", "_cloud")

    def __init__(self, vv: VersionVector | None = None, cloud: Iterable[Dot] = ()) -> None:
        prefix = dict(vv.items()) if vv is not None else {}
        dots = set(cloud)
        # Sorted by (replica, counter), so a run of consecutive dots folds in one pass.
        for dot in sorted(dots):
            if dot.counter == prefix.get(dot.replica, 0) + 1:
                prefix[dot.replica] = dot.counter
        self._vv = VersionVector(prefix)
        self._cloud = frozenset(d for d in dots if d.counter > prefix.get(d.replica, 0))

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> DotContext:
        """The context holding exactly ``dots``."""
        return cls(None, dots)

    @property
    def vv(self) -> VersionVector:
        return self._vv

    @property
    def cloud(self) -> frozenset[Dot]:
        return self._cloud

    def contains(self, dot: Dot) -> bool:
        return self._vv.contains(dot) or dot in self._cloud

    def next_dot(self, actor: str) -> Dot:
        """A dot of ``actor`` this context has not seen: ``actor`` mints it from its own state."""
        top = max((d.counter for d in self._cloud if d.replica == actor), default=0)
        return Dot(actor, max(top, self._vv.get(actor)) + 1)

    def add(self, dot: Dot) -> DotContext:
        return self if self.contains(dot) else DotContext(self._vv, self._cloud | {dot})

    def merge(self, other: DotContext) -> DotContext:
        if not other._cloud and self._vv.descends(other._vv):
            return self
        if not self._cloud and other._vv.descends(self._vv):
            return other
        return DotContext(self._vv.merge(other._vv), self._cloud | other._cloud)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DotContext):
            return NotImplemented
        return self._vv == other._vv and self._cloud == other._cloud

    def __hash__(self) -> int:
        return hash((self._vv, self._cloud))

    def __repr__(self) -> str:
        return f"DotContext({self._vv.to_json()!r}, cloud={sorted(self._cloud)!r})"

    def to_json(self) -> dict[str, Any]:
        return {"vv": self._vv.to_json(), "cloud": dots_to_json(self._cloud)}

    @classmethod
    def from_json(cls, obj: Any) -> DotContext:
        expect(obj, dict, "causal context")
        if set(obj) != {"vv", "cloud"}:
            raise ValueError(f"causal context: expected keys 'vv' and 'cloud', got {sorted(obj)}")
        return cls(VersionVector.from_json(obj["vv"]), dots_from_json(obj["cloud"], "causal context cloud"))


def dot_to_json(dot: Dot) -> list[Any]:
    return [dot.replica, dot.counter]


def dot_from_json(obj: Any, what: str = "dot") -> Dot:
    if not isinstance(obj, list) or len(obj) != 2:
        raise ValueError(f"{what}: a dot is [replica, counter], got {obj!r:.80}")
    replica, counter = obj
    expect(replica, str, f"{what} replica")
    if expect(counter, int, f"{what} counter") < 1:
        raise ValueError(f"{what}: counters start at 1, got {counter}")
    return Dot(replica, counter)


def dots_to_json(dots: Iterable[Dot]) -> list[list[Any]]:
    return [dot_to_json(d) for d in sorted(dots)]


def dots_from_json(obj: Any, what: str) -> frozenset[Dot]:
    dots = [dot_from_json(d, what) for d in expect(obj, list, what)]
    if len(set(dots)) != len(dots):
        raise ValueError(f"{what}: a dot appears twice")
    return frozenset(dots)


# ----------------------------------------------------------------- dot stores


def join_dot_sets(a: frozenset[Dot], ac: DotContext, b: frozenset[Dot], bc: DotContext) -> frozenset[Dot]:
    """DotSet join: keep dots both have, and dots the other side has not seen."""
    return (a & b) | {d for d in a if not bc.contains(d)} | {d for d in b if not ac.contains(d)}


def join_dot_funs(
    a: Mapping[Dot, V], ac: DotContext, b: Mapping[Dot, V], bc: DotContext, join: Callable[[V, V], V]
) -> dict[Dot, V]:
    """DotFun join: as for DotSet, joining the values of dots both sides hold."""
    out = {d: join(v, b[d]) if d in b else v for d, v in a.items() if d in b or not bc.contains(d)}
    out.update((d, v) for d, v in b.items() if d not in a and not ac.contains(d))
    return out


def join_dot_maps(
    a: Mapping[K, V], ac: DotContext, b: Mapping[K, V], bc: DotContext, kind: Callable[[K], Kind[V]]
) -> dict[K, V]:
    """DotMap join: join each key's inner store in the shared contexts; drop the empty ones."""
    out: dict[K, V] = {}
    for key in a.keys() | b.keys():
        inner = kind(key)
        empty = inner.empty()
        joined = inner.join(a.get(key, empty), ac, b.get(key, empty), bc)
        if not inner.is_empty(joined):
            out[key] = joined
    return out


class Kind(ABC, Generic[S]):
    """How one causal type's dot store joins, reads, mutates and serializes.

    A causal CRDT is a store of its kind plus a context; an ORMap field is a store alone,
    sharing the map's context (the paper's ORMap embedding).
    """

    @abstractmethod
    def empty(self) -> S: ...

    @abstractmethod
    def join(self, a: S, ac: DotContext, b: S, bc: DotContext) -> S: ...

    @abstractmethod
    def dots(self, store: S) -> Iterable[Dot]: ...

    def is_empty(self, store: S) -> bool:
        return not store

    @abstractmethod
    def value(self, store: S) -> Any: ...

    @abstractmethod
    def mutate(
        self, store: S, context: DotContext, op: str, arg: Any, actor: str, ctx: UpdateContext
    ) -> tuple[S, DotContext]:
        """The delta (store, context) of ``op(arg)`` at ``actor``; Invalid on bad input."""

    @abstractmethod
    def store_to_json(self, store: S) -> Any: ...

    @abstractmethod
    def store_from_json(self, obj: Any) -> S: ...


class DotSetKind(Kind[frozenset[Dot]]):
    """A DotSet: an OR-Set element's adds, a flag's enables."""

    def empty(self) -> frozenset[Dot]:
        return frozenset()

    def join(self, a: frozenset[Dot], ac: DotContext, b: frozenset[Dot], bc: DotContext) -> frozenset[Dot]:
        return join_dot_sets(a, ac, b, bc)

    def dots(self, store: frozenset[Dot]) -> Iterable[Dot]:
        return store

    def value(self, store: frozenset[Dot]) -> bool:
        return bool(store)

    def mutate(
        self, store: frozenset[Dot], context: DotContext, op: str, arg: Any, actor: str, ctx: UpdateContext
    ) -> tuple[frozenset[Dot], DotContext]:
        raise TypeError("a bare dot set has no ops; its owner mutates it")

    def store_to_json(self, store: frozenset[Dot]) -> Any:
        return dots_to_json(store)

    def store_from_json(self, obj: Any) -> frozenset[Dot]:
        return dots_from_json(obj, "dot set")


class Causal:
    """Base of the causal CRDTs: a dot store of the class's ``kind`` and a causal context."""

    __slots__ = ("_store", "_context")

    type_name: ClassVar[str]
    ops: ClassVar[Mapping[str, str]]
    kind: ClassVar[Kind[Any]]

    def __init__(self, store: Any, context: DotContext) -> None:
        self._store = store
        self._context = context

    @property
    def context(self) -> DotContext:
        """Every dot this state has seen (the causal context)."""
        return self._context

    @classmethod
    def new(cls) -> Self:
        return cls(cls.kind.empty(), DotContext())

    def value(self) -> Any:
        return self.kind.value(self._store)

    def update(self, op: str, arg: Any, actor: str, ctx: UpdateContext = NO_CONTEXT) -> Self:
        store, context = self.kind.mutate(self._store, self._context, op, arg, check_actor(actor), ctx)
        return type(self)(store, context)

    def merge(self, other: Self) -> Self:
        store = self.kind.join(self._store, self._context, other._store, other._context)
        return type(self)(store, self._context.merge(other._context))

    def to_json(self) -> dict[str, Any]:
        return {"store": self.kind.store_to_json(self._store), "context": self._context.to_json()}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        expect(obj, dict, cls.type_name)
        if set(obj) != {"store", "context"}:
            raise ValueError(f"{cls.type_name}: expected keys 'store' and 'context', got {sorted(obj)}")
        store = cls.kind.store_from_json(obj["store"])
        context = DotContext.from_json(obj["context"])
        unseen = [d for d in cls.kind.dots(store) if not context.contains(d)]
        if unseen:
            raise ValueError(f"{cls.type_name}: dots {sorted(unseen)[:3]} are in the store but not the context")
        return cls(store, context)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Causal)
        return self._store == other._store and self._context == other._context

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r}, {self._context!r})"
