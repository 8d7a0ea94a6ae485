"""Dots and the outcome of comparing causal histories."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["Dot", "Ordering"]


class Dot(NamedTuple):
    """One event: the ``counter``-th event issued by ``replica`` (counters start at 1)."""

    replica: str
    counter: int


class Ordering(enum.Enum):
    """How one causal history relates to another (``a.compare(b)`` reads "a is ... b")."""

    EQUAL = "equal"
    BEFORE = "before"
    AFTER = "after"
    CONCURRENT = "concurrent"
