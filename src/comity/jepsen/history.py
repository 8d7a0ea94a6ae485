"""Histories as Jepsen records them: each operation is an ``invoke`` and then one of
``ok`` (it happened), ``fail`` (it did not) or ``info`` (nobody knows: the connection
died, the process was killed).  Each process appends its own JSON lines, flushed per
line, so a SIGKILL loses at most a line cut short, which the reader drops: an invoke
whose completion never got written is indeterminate, as it should be."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Op", "Recorder", "read_history", "completed"]


@dataclass(slots=True)
class Op:
    """One line of a history."""

    process: int
    index: int  # the operation's number within its process
    type: str  # invoke | ok | fail | info
    f: str  # what was tried: read, cas, create, next, claim, done, update, news, ...
    value: Any = None
    time: int = 0  # monotonic nanoseconds of the host
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"p": self.process, "i": self.index, "type": self.type, "f": self.f, "value": self.value, "t": self.time}
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Op:
        return cls(int(d["p"]), int(d["i"]), str(d["type"]), str(d["f"]), d.get("value"), int(d.get("t", 0)), d.get("error"))


@dataclass(slots=True)
class Recorder:
    """A process's history writer: ``invoke`` returns the op's index, ``complete`` ends it."""

    process: int
    out: TextIO
    _next: int = 0
    pending: dict[int, str] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike[str], process: int) -> Recorder:
        return cls(process, open(path, "a", buffering=1, encoding="utf-8"))  # line-buffered

    def _write(self, op: Op) -> None:
        self.out.write(json.dumps(op.to_json(), separators=(",", ":")) + "\n")

    @property
    def next_index(self) -> int:
        """The index the next invoke will get (request ids are made from it)."""
        return self._next

    def invoke(self, f: str, value: Any = None) -> int:
        i = self._next
        self._next += 1
        self.pending[i] = f
        self._write(Op(self.process, i, "invoke", f, value, time.monotonic_ns()))
        return i

    def complete(self, i: int, type: str, value: Any = None, error: str | None = None) -> None:
        assert type in ("ok", "fail", "info"), type
        f = self.pending.pop(i)
        self._write(Op(self.process, i, type, f, value, time.monotonic_ns(), error))

    def note(self, f: str, value: Any) -> None:
        """A fact the checker needs that is not an operation (a session's start position)."""
        i = self.invoke(f, value)
        self.complete(i, "ok", value)

    def close(self) -> None:
        self.out.close()


def read_history(paths: Iterable[Path]) -> list[Op]:
    """Every process's lines, in host time order; a line cut short by a kill is dropped."""
    ops: list[Op] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                ops.append(Op.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
    ops.sort(key=lambda o: (o.time, o.process, o.index, o.type != "invoke"))
    return ops


def completed(history: list[Op]) -> Iterator[tuple[Op, Op]]:
    """(invoke, completion) pairs; an invoke with no completion (its process was killed)
    is paired with an ``info`` of its own value."""
    open_: dict[tuple[int, int], Op] = {}
    for op in history:
        key = (op.process, op.index)
        if op.type == "invoke":
            open_[key] = op
        else:
            inv = open_.pop(key, None)
            if inv is not None:
                yield inv, op
    for inv in open_.values():
        yield inv, Op(inv.process, inv.index, "info", inv.f, inv.value, inv.time, "no completion: the process was killed")
