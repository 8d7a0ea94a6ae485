"""Delta-state CRDTs: one module per type, all behind the :class:`CRDT` Protocol.

Pure values, no I/O: time reaches them only as an HLC timestamp in
:class:`UpdateContext`.  ``update`` returns a delta (Almeida, Shoker, Baquero, "Delta
State Replicated Data Types", JPDC 2018); the new state is ``state.merge(delta)``.
Actors are replica ids, never agent names.  Laws: ``tests/test_crdt_laws.py``.
"""

from __future__ import annotations

from ..errors import Invalid
from ._protocol import CRDT, UpdateContext
from .bcounter import BCounter, OutOfRights
from .flag import EWFlag
from .gcounter import GCounter
from .lww import LWWRegister
from .mvreg import MVRegister
from .ormap import ORMap
from .orset import ORSet
from .pncounter import PNCounter

__all__ = [
    "CRDT",
    "UpdateContext",
    "GCounter",
    "PNCounter",
    "LWWRegister",
    "MVRegister",
    "ORSet",
    "EWFlag",
    "ORMap",
    "BCounter",
    "OutOfRights",
    "TYPES",
    "crdt_type",
]

TYPES: dict[str, type[CRDT]] = {
    cls.type_name: cls for cls in (GCounter, PNCounter, LWWRegister, MVRegister, ORSet, EWFlag, ORMap, BCounter)
}


def crdt_type(name: str) -> type[CRDT]:
    """The CRDT class named ``name`` (its ``type_name``); Invalid if there is none."""
    try:
        return TYPES[name]
    except (KeyError, TypeError):
        raise Invalid("type", f"unknown CRDT type {name!r}; use one of: {', '.join(TYPES)}") from None
