"""OR-Map: a map from field names to nested CRDTs, with observed-remove of fields.

Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018), ORMap:
a DotMap from each field to its value's dot store, all sharing the map's one
causal context.  Updating a field runs the nested delta-mutator in that shared
context; removing a field ships the dots it has seen, so its value resets to bottom
there while a concurrent update (dots the remover never saw) survives.  A field is
keyed by (name, type), as in riak_dt_map, so concurrent creations of one name with
two types both survive (value() then shows them as ``name@type``).

The causal types nest as their own dot stores.  Counters and the LWW register are
not dot stores; a field of theirs is a DotFun from one dot per replica to that
replica's own contributions (for counters, as the causal counter "ccounter" of
Baquero's delta-enabled-crdts library), so a remove resets what it observed and a
replica that counts again after a reset never needs its entry to go backwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from functools import reduce
from typing import Any, ClassVar

from ..causal import Dot
from ..errors import Invalid
from ._dots import Causal, DotContext, Kind, dot_from_json, dot_to_json, join_dot_funs, join_dot_maps
from ._protocol import CRDT, UpdateContext, expect, unknown_op
from .flag import EWFlag
from .gcounter import GCounter
from .lww import LWWRegister
from .mvreg import MVRegister
from .orset import ORSet
from .pncounter import PNCounter

__all__ = ["ORMap"]

Field = tuple[str, str]  # (name, type_name)
Store = dict[Field, Any]  # field -> its value's dot store (never empty)
PerReplica = dict[Dot, CRDT]  # one live dot per replica -> that replica's contributions


def _merge(a: CRDT, b: CRDT) -> CRDT:
    return a.merge(b)


class _PerReplicaKind(Kind[PerReplica]):
    """A non-causal CRDT as a dot store, so that an ORMap can reset it."""

    def __init__(self, cls: type[CRDT]) -> None:
        self.cls = cls

    def empty(self) -> PerReplica:
        return {}

    def join(self, a: PerReplica, ac: DotContext, b: PerReplica, bc: DotContext) -> PerReplica:
        return join_dot_funs(a, ac, b, bc, _merge)

    def dots(self, store: PerReplica) -> Iterable[Dot]:
        return store.keys()

    def value(self, store: PerReplica) -> Any:
        return reduce(_merge, store.values(), self.cls.new()).value()

    def mutate(
        self, store: PerReplica, context: DotContext, op: str, arg: Any, actor: str, ctx: UpdateContext
    ) -> tuple[PerReplica, DotContext]:
        mine = [d for d in store if d.replica == actor]
        own = reduce(_merge, (store[d] for d in mine), self.cls.new())
        own = own.merge(own.update(op, arg, actor, ctx))
        dot = context.next_dot(actor)
        return {dot: own}, DotContext.of([dot, *mine])

    def store_to_json(self, store: PerReplica) -> list[list[Any]]:
        return [[*dot_to_json(d), store[d].to_json()] for d in sorted(store)]

    def store_from_json(self, obj: Any) -> PerReplica:
        store: PerReplica = {}
        for item in expect(obj, list, f"{self.cls.type_name} field"):
            if not isinstance(item, list) or len(item) != 3:
                raise ValueError(f"{self.cls.type_name} field: each entry is [replica, counter, state], got {item!r:.80}")
            dot = dot_from_json(item[:2], f"{self.cls.type_name} field")
            if dot in store:
                raise ValueError(f"{self.cls.type_name} field: dot {dot} appears twice")
            store[dot] = self.cls.from_json(item[2])
        return store


_UPDATE_KEYS = {"field", "type", "op", "arg"}


def _parse_update(arg: Any) -> tuple[str, str, str, Any]:
    shape = '{"field": name, "type": type name, "op": op, "arg": arg}'
    if not isinstance(arg, dict) or not {"field", "type", "op"} <= arg.keys() <= _UPDATE_KEYS:
        raise Invalid("arg", f"update takes {shape}, got {arg!r:.80}")
    name, type_name, op = arg["field"], arg["type"], arg["op"]
    if not isinstance(name, str):
        raise Invalid("arg", f"the field name must be a string, got {name!r:.80}")
    if type_name not in _KINDS:
        raise Invalid("arg", f"unknown CRDT type {type_name!r} for field {name!r}; use one of: {', '.join(_KINDS)}")
    if not isinstance(op, str):
        raise Invalid("arg", f"the op of field {name!r} must be a string, got {op!r:.80}")
    return name, type_name, op, arg.get("arg")


class _ORMapKind(Kind[Store]):
    def empty(self) -> Store:
        return {}

    def join(self, a: Store, ac: DotContext, b: Store, bc: DotContext) -> Store:
        return join_dot_maps(a, ac, b, bc, lambda field: _KINDS[field[1]])

    def dots(self, store: Store) -> Iterable[Dot]:
        return (d for (_, t), s in store.items() for d in _KINDS[t].dots(s))

    def value(self, store: Store) -> dict[str, Any]:
        types = Counter(name for name, _ in store)
        return {
            name if types[name] == 1 else f"{name}@{t}": _KINDS[t].value(store[name, t])
            for name, t in sorted(store)
        }

    def mutate(
        self, store: Store, context: DotContext, op: str, arg: Any, actor: str, ctx: UpdateContext
    ) -> tuple[Store, DotContext]:
        if op == "remove":
            if not isinstance(arg, str):
                raise Invalid("arg", f"remove takes a field name (a string), got {arg!r:.80}")
            return {}, DotContext.of(self.dots({f: s for f, s in store.items() if f[0] == arg}))
        if op != "update":
            raise unknown_op(ORMap.type_name, op, ORMap.ops)
        name, type_name, nested_op, nested_arg = _parse_update(arg)
        field, inner = (name, type_name), _KINDS[type_name]
        held = sorted(t for n, t in store if n == name)
        if held and type_name not in held:
            raise Invalid("arg", f"field {name!r} holds a {held[0]}; update it as one, or remove the field first")
        try:
            delta, delta_context = inner.mutate(
                store.get(field, inner.empty()), context, nested_op, nested_arg, actor, ctx
            )
        except Invalid as e:
            if e.field not in ("op", "arg"):
                raise
            raise Invalid("arg", f"field {name!r} ({type_name}): {e.message}") from None
        return ({} if inner.is_empty(delta) else {field: delta}), delta_context

    def store_to_json(self, store: Store) -> list[list[Any]]:
        return [[name, t, _KINDS[t].store_to_json(store[name, t])] for name, t in sorted(store)]

    def store_from_json(self, obj: Any) -> Store:
        store: Store = {}
        for item in expect(obj, list, "ormap store"):
            if not isinstance(item, list) or len(item) != 3:
                raise ValueError(f"ormap store: each field is [name, type, store], got {item!r:.80}")
            name = expect(item[0], str, "ormap field name")
            t = expect(item[1], str, "ormap field type")
            if t not in _KINDS:
                raise ValueError(f"ormap field {name!r}: unknown CRDT type {t!r}")
            if (name, t) in store:
                raise ValueError(f"ormap store: field ({name!r}, {t!r}) appears twice")
            inner = _KINDS[t].store_from_json(item[2])
            if _KINDS[t].is_empty(inner):
                raise ValueError(f"ormap field {name!r}: an empty field is absent, not listed")
            store[name, t] = inner
        return store


class ORMap(Causal):
    """value = {field name: nested value}; a name held with two types shows as ``name@type``."""

    __slots__ = ()

    type_name: ClassVar[str] = "ormap"
    ops: ClassVar[Mapping[str, str]] = {
        "update": 'apply a nested op: arg {"field": name, "type": type name, "op": op, "arg": arg}',
        "remove": "reset the field named arg to absent, as far as this replica has seen it",
    }
    kind: ClassVar[Kind[Any]] = _ORMapKind()


_KINDS: dict[str, Kind[Any]] = {cls.type_name: _PerReplicaKind(cls) for cls in (GCounter, PNCounter, LWWRegister)}
_KINDS.update((cls.type_name, cls.kind) for cls in (MVRegister, ORSet, EWFlag, ORMap))
