"""MV-Register: a register that keeps concurrent writes as siblings.

Shapiro, Preguiça, Baquero, Zawirski, "A comprehensive study of Convergent and
Commutative Replicated Data Types" (INRIA RR-7506, 2011), in the causal form of
Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018): a DotFun from each write's dot to its value, in a causal context.
``set`` mints a dot and its delta's context covers every value the writer has seen,
so a causally later write replaces them and concurrent writes survive side by side.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ..causal import Dot
from ._dots import Causal, DotContext, Kind, dot_from_json, dot_to_json, join_dot_funs
from ._protocol import UpdateContext, canonical, expect, parse_canonical, unknown_op

__all__ = ["MVRegister"]

Store = dict[Dot, str]  # dot of a write -> its value as canonical JSON


def _same(a: str, b: str) -> str:
    return a  # one dot, one write: both sides hold the same value


class _MVRegisterKind(Kind[Store]):
    def empty(self) -> Store:
        return {}

    def join(self, a: Store, ac: DotContext, b: Store, bc: DotContext) -> Store:
        return join_dot_funs(a, ac, b, bc, _same)

    def dots(self, store: Store) -> Iterable[Dot]:
        return store.keys()

    def value(self, store: Store) -> list[Any]:
        return [json.loads(v) for v in sorted(set(store.values()))]

    def mutate(
        self, store: Store, context: DotContext, op: str, arg: Any, actor: str, ctx: UpdateContext
    ) -> tuple[Store, DotContext]:
        if op != "set":
            raise unknown_op(MVRegister.type_name, op, MVRegister.ops)
        value = canonical(arg)
        dot = context.next_dot(actor)
        return {dot: value}, DotContext.of([dot, *store])

    def store_to_json(self, store: Store) -> list[list[Any]]:
        return [[*dot_to_json(d), json.loads(v)] for d, v in sorted(store.items())]

    def store_from_json(self, obj: Any) -> Store:
        store: Store = {}
        for item in expect(obj, list, "mvreg store"):
            if not isinstance(item, list) or len(item) != 3:
                raise ValueError(f"mvreg store: each write is [replica, counter, value], got {item!r:.80}")
            dot = dot_from_json(item[:2], "mvreg write")
            if dot in store:
                raise ValueError(f"mvreg store: dot {dot} appears twice")
            store[dot] = parse_canonical(item[2], "mvreg value")
        return store


class MVRegister(Causal):
    """value = the concurrent values (siblings), distinct, sorted by canonical JSON."""

    __slots__ = ()

    type_name: ClassVar[str] = "mvreg"
    ops: ClassVar[Mapping[str, str]] = {
        "set": "replace every value this replica has seen with arg (any JSON value); concurrent sets stay as siblings",
    }
    kind: ClassVar[Kind[Any]] = _MVRegisterKind()
