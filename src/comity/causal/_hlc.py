"""Hybrid logical clocks.

Kulkarni, Demirbas, Madappa, Avva, Leone, "Logical Physical Clocks" (OPODIS 2014).
A timestamp ``(wall_ms, logical)`` stays within the clock skew of physical time, yet
is strictly increasing at each node and respects causality across nodes: an event's
timestamp exceeds that of every event it has heard of.  Physical time comes from a
:class:`~comity.runtime.Clock`, so the simulator can stall, skew or rewind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # annotations only: the kernel imports no clock machinery
    from ..runtime import Clock

__all__ = ["HLC", "HLCTimestamp"]

# Fixed widths for encode(): 15 decimal digits of milliseconds (until year ~33658),
# 10 of logical counter.  Zero padding makes string order equal timestamp order.
_WALL_DIGITS = 15
_LOGICAL_DIGITS = 10
_WALL_MAX = 10**_WALL_DIGITS - 1
_LOGICAL_MAX = 10**_LOGICAL_DIGITS - 1
_ENCODED_LEN = _WALL_DIGITS + 1 + _LOGICAL_DIGITS
assert (_WALL_DIGITS, _LOGICAL_DIGITS) == (15, 10), "HLCTimestamp.encode spells these widths out"


class HLCTimestamp(NamedTuple):
    """An HLC time; tuple order is the HLC order."""

    wall_ms: int
    logical: int

    def encode(self) -> str:
        """Fixed-width ``"WWWWWWWWWWWWWWW.LLLLLLLLLL"`` that sorts as the timestamps do."""
        wall_ms, logical = self
        if not (0 <= wall_ms <= _WALL_MAX and 0 <= logical <= _LOGICAL_MAX):
            raise ValueError(f"HLC timestamp {tuple(self)} is outside the encodable range")
        return f"{wall_ms:015d}.{logical:010d}"  # _WALL_DIGITS, _LOGICAL_DIGITS (a literal spec is parsed once)

    @classmethod
    def decode(cls, s: str) -> HLCTimestamp:
        """Parse :meth:`encode` output; ValueError if ``s`` is not one."""
        if (
            not isinstance(s, str)
            or len(s) != _ENCODED_LEN
            or s[_WALL_DIGITS] != "."
            or not (s[:_WALL_DIGITS].isascii() and s[:_WALL_DIGITS].isdigit())
            or not (s[_WALL_DIGITS + 1 :].isascii() and s[_WALL_DIGITS + 1 :].isdigit())
        ):
            raise ValueError(
                f"not an encoded HLC timestamp: {s!r} (expected {_WALL_DIGITS} digits, '.', {_LOGICAL_DIGITS} digits)"
            )
        return cls(int(s[:_WALL_DIGITS]), int(s[_WALL_DIGITS + 1 :]))


class HLC:
    """One node's hybrid logical clock.  Not thread-safe: its owner serializes calls."""

    __slots__ = ("_clock", "_max_drift_ms", "_last")

    def __init__(self, clock: Clock, max_drift_ms: int | None = None, *, last: HLCTimestamp | None = None) -> None:
        """``last`` resumes after a restart: every later timestamp exceeds it."""
        if max_drift_ms is not None and max_drift_ms < 0:
            raise ValueError(f"max_drift_ms must be >= 0 or None, got {max_drift_ms}")
        self._clock = clock
        self._max_drift_ms = max_drift_ms
        self._last = last if last is not None else HLCTimestamp(0, 0)

    @property
    def last(self) -> HLCTimestamp:
        """The greatest timestamp issued or received so far (``(0, 0)`` initially)."""
        return self._last

    def _physical_ms(self) -> int:
        return int(self._clock.now() * 1000)

    def now(self) -> HLCTimestamp:
        """A local or send event (the paper's Figure 5, "send or local event")."""
        pt = self._physical_ms()
        l, c = self._last
        ts = HLCTimestamp(pt, 0) if pt > l else HLCTimestamp(l, c + 1)
        self._last = ts
        return ts

    def update(self, remote: HLCTimestamp) -> HLCTimestamp:
        """A receive event: the result exceeds ``remote`` and every earlier result.

        With ``max_drift_ms`` set, a remote time further ahead of physical time than
        that is refused (ValueError) and the clock is left unchanged.
        """
        pt = self._physical_ms()
        lm, cm = remote
        if self._max_drift_ms is not None and lm - pt > self._max_drift_ms:
            raise ValueError(
                f"remote HLC time {lm} ms is {lm - pt} ms ahead of physical time {pt} ms, "
                f"beyond max_drift_ms={self._max_drift_ms}; check the sender's clock"
            )
        l0, c0 = self._last
        l = max(l0, lm, pt)
        if l == l0 and l == lm:
            c = max(c0, cm) + 1
        elif l == l0:
            c = c0 + 1
        elif l == lm:
            c = cm + 1
        else:
            c = 0
        ts = HLCTimestamp(l, c)
        self._last = ts
        return ts
