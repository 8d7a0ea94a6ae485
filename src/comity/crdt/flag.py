"""Enable-wins flag: a boolean where a concurrent enable beats a disable.

Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018), EWFlag:
a DotSet of the enables not yet disabled, in a causal context.  ``enable``
mints a dot that supersedes the enables it has seen; ``disable`` ships those dots
only, so an enable it did not see survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..causal import Dot
from ._dots import Causal, DotContext, DotSetKind, Kind
from ._protocol import UpdateContext, no_arg, unknown_op

__all__ = ["EWFlag"]

Store = frozenset[Dot]  # the enables not yet disabled


class _EWFlagKind(DotSetKind):
    def mutate(
        self, store: Store, context: DotContext, op: str, arg: Any, actor: str, ctx: UpdateContext
    ) -> tuple[Store, DotContext]:
        if op not in EWFlag.ops:
            raise unknown_op(EWFlag.type_name, op, EWFlag.ops)
        no_arg(arg, op)
        if op == "disable":
            return frozenset(), DotContext.of(store)
        dot = context.next_dot(actor)
        return frozenset([dot]), DotContext.of([dot, *store])


class EWFlag(Causal):
    """value = whether any enable is not yet disabled."""

    __slots__ = ()

    type_name: ClassVar[str] = "flag"
    ops: ClassVar[Mapping[str, str]] = {
        "enable": "set the flag (no arg); wins over a concurrent disable",
        "disable": "clear the flag (no arg), as far as this replica has seen it enabled",
    }
    kind: ClassVar[Kind[Any]] = _EWFlagKind()
