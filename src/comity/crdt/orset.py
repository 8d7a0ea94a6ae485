"""Add-wins observed-remove set (AWSet / optimized OR-Set), with a compact causal context.

Bieniusa, Zawirski, Preguiça, Shapiro, Baquero, Balegas, Duarte, "An optimized
conflict-free replicated set" (arXiv:1210.3368, 2012), in the delta form of Almeida,
Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018) (AWSet): a DotMap
from each element to the dots of its adds, in a causal context.  ``add`` mints a dot
and supersedes the element's dots the adder has seen; ``remove`` ships only those
dots, in a context, so a concurrent add (a dot the remover never saw) wins.
Elements are JSON values, identified by their canonical JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ..causal import Dot
from ..errors import Invalid
from ._dots import Causal, DotContext, DotSetKind, Kind, dots_from_json, dots_to_json, join_dot_maps
from ._protocol import UpdateContext, canonical, expect, parse_canonical, unknown_op

__all__ = ["ORSet"]

Store = dict[str, frozenset[Dot]]  # element as canonical JSON -> dots of the adds that keep it

_DOT_SET = DotSetKind()


def _elements(arg: Any, op: str) -> list[str]:
    if not isinstance(arg, (list, tuple)):
        raise Invalid("arg", f"{op} takes a list of JSON values, got {arg!r:.80}")
    return list(dict.fromkeys(canonical(a) for a in arg))


class _ORSetKind(Kind[Store]):
    def empty(self) -> Store:
        return {}

    def join(self, a: Store, ac: DotContext, b: Store, bc: DotContext) -> Store:
        return join_dot_maps(a, ac, b, bc, lambda _: _DOT_SET)

    def dots(self, store: Store) -> Iterable[Dot]:
        return (d for dots in store.values() for d in dots)

    def value(self, store: Store) -> list[Any]:
        return [json.loads(e) for e in sorted(store)]

    def mutate(
        self, store: Store, context: DotContext, op: str, arg: Any, actor: str, ctx: UpdateContext
    ) -> tuple[Store, DotContext]:
        if op in ("add", "remove"):
            elements = [canonical(arg)]
        elif op in ("add_all", "remove_all"):
            elements = _elements(arg, op)
        else:
            raise unknown_op(ORSet.type_name, op, ORSet.ops)
        seen = [d for e in elements for d in store.get(e, ())]
        if op.startswith("remove"):
            return {}, DotContext.of(seen)
        first = context.next_dot(actor).counter
        added = {e: frozenset([Dot(actor, first + i)]) for i, e in enumerate(elements)}
        return added, DotContext.of([*seen, *(d for dots in added.values() for d in dots)])

    def store_to_json(self, store: Store) -> list[list[Any]]:
        return [[json.loads(e), dots_to_json(store[e])] for e in sorted(store)]

    def store_from_json(self, obj: Any) -> Store:
        store: Store = {}
        for item in expect(obj, list, "orset store"):
            if not isinstance(item, list) or len(item) != 2:
                raise ValueError(f"orset store: each element is [value, dots], got {item!r:.80}")
            element = parse_canonical(item[0], "orset element")
            if element in store:
                raise ValueError(f"orset store: element {element} appears twice")
            dots = dots_from_json(item[1], "orset element dots")
            if not dots:
                raise ValueError(f"orset store: element {element} has no dots")
            store[element] = dots
        return store


class ORSet(Causal):
    """value = the elements, sorted by canonical JSON."""

    __slots__ = ()

    type_name: ClassVar[str] = "orset"
    ops: ClassVar[Mapping[str, str]] = {
        "add": "add arg (any JSON value); a concurrent remove does not undo it",
        "remove": "remove arg (any JSON value), as far as this replica has seen it added",
        "add_all": "add every JSON value in the list arg",
        "remove_all": "remove every JSON value in the list arg",
    }
    kind: ClassVar[Kind[Any]] = _ORSetKind()
