"""Dotted version vector sets: a key's concurrent values (siblings) with their history.

Preguiça, Baquero, Almeida, Fonte, Gonçalves, "Dotted Version Vectors: Logical Clocks
for Optimistic Replication" (2010, arXiv:1011.5808), in the compact *set* form of the
reference implementation ``dvvset.erl`` (Almeida, Gonçalves; used by Riak).  Each
function below ports the Erlang function of the same name, clause for clause.

Representation (dvvset.erl's ``{entries(), values()}``):

* ``entries``: ``(replica, counter, values)`` sorted by replica.  ``counter`` is the
  number of that replica's events in the history; ``values`` are the live values among
  them, newest first, and contiguous: the value at position ``i`` has dot
  ``(replica, counter - i)``.  Dots ``<= counter - len(values)`` are superseded.
* ``anonymous``: values with no dot (a client's new value before a replica assigns one,
  or the result of :meth:`reconcile`).  A clock whose history strictly dominates
  another's discards the other's anonymous values (dvvset:sync/2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._dot import Dot
from ._vv import VersionVector

__all__ = ["DVVSet"]

Entry = tuple[str, int, tuple[Any, ...]]
Entries = tuple[Entry, ...]


class DVVSet:
    """An immutable dotted version vector set (a "clock" in dvvset.erl)."""

    __slots__ = ("_entries", "_anonymous")

    _entries: Entries
    _anonymous: tuple[Any, ...]

    def __init__(self, entries: Iterable[tuple[str, int, Iterable[Any]]] = (), anonymous: Iterable[Any] = ()) -> None:
        self._entries = _checked_entries(entries, "DVVSet")
        self._anonymous = tuple(anonymous)

    @classmethod
    def _make(cls, entries: Entries, anonymous: tuple[Any, ...]) -> DVVSet:
        # Internal fast path: the caller guarantees the representation invariants.
        c = object.__new__(cls)
        c._entries = entries
        c._anonymous = anonymous
        return c

    @property
    def entries(self) -> Entries:
        """``(replica, counter, values newest first)``, sorted by replica."""
        return self._entries

    @property
    def anonymous(self) -> tuple[Any, ...]:
        """Values without a dot."""
        return self._anonymous

    # ------------------------------------------------------------ constructors

    @classmethod
    def empty(cls) -> DVVSet:
        """No history, no values."""
        return cls._make((), ())

    @classmethod
    def new(cls, value: Any) -> DVVSet:
        """dvvset:new/1: one anonymous value, no history."""
        return cls._make((), (value,))

    @classmethod
    def new_with(cls, context: VersionVector, value: Any) -> DVVSet:
        """dvvset:new/2: one anonymous value with the history ``context`` (a client's write)."""
        return cls._make(tuple([(r, n, ()) for r, n in context.items()]), (value,))

    # -------------------------------------------------------------------- sync

    def sync(self, other: DVVSet) -> DVVSet:
        """dvvset:sync/2: merge histories, dropping values either side has superseded."""
        if _greater(other._entries, self._entries):  # self < other
            anonymous = other._anonymous
        elif _greater(self._entries, other._entries):  # other < self
            anonymous = self._anonymous
        else:
            # Concurrent or equal histories: keep every distinct anonymous value.
            # dvvset.erl goes through an (unordered) set; keep first-seen order instead.
            anonymous = _union(self._anonymous, other._anonymous)
        return DVVSet._make(_sync_entries(self._entries, other._entries), anonymous)

    @classmethod
    def sync_all(cls, clocks: Iterable[DVVSet]) -> DVVSet:
        """dvvset:sync/1: fold :meth:`sync` over ``clocks`` (empty for none)."""
        acc: DVVSet | None = None
        for c in clocks:
            acc = c if acc is None else acc.sync(c)
        return cls.empty() if acc is None else acc

    # ----------------------------------------------------------------- history

    def join(self) -> VersionVector:
        """dvvset:join/1: the history as a version vector (the context a read returns)."""
        return VersionVector._wrap({r: n for r, n, _ in self._entries if n})

    def less(self, other: DVVSet) -> bool:
        """dvvset:less/2: ``self``'s history is strictly older than ``other``'s."""
        return _greater(other._entries, self._entries)

    def equal(self, other: DVVSet) -> bool:
        """dvvset:equal/2: same history (replicas, counters and value counts); values ignored."""
        e1, e2 = self._entries, other._entries
        if len(e1) != len(e2):
            return False
        for (r1, n1, l1), (r2, n2, l2) in zip(e1, e2):
            if r1 != r2 or n1 != n2 or len(l1) != len(l2):
                return False
        return True

    def covered_by(self, vv: VersionVector) -> bool:
        """No anonymous values and every value's dot is in ``vv``.

        True iff a write with context ``vv`` supersedes every current value.
        """
        if self._anonymous:
            return False
        # Live dots of an entry are (n - len(l), n]; the greatest is n.
        return all(not l or n <= vv.get(r) for r, n, l in self._entries)

    # ----------------------------------------------------------------- updates

    def update(self, replica: str) -> DVVSet:
        """dvvset:update/2: give the single anonymous value the next dot of ``replica``."""
        value = _single_anonymous(self._anonymous, "update")
        return DVVSet._make(_event(self._entries, replica, value), ())

    def update_with(self, server: DVVSet, replica: str) -> DVVSet:
        """dvvset:update/3: ``self`` is a client clock ``new_with(ctx, v)``, ``server`` the
        replica's clock; the result supersedes what ``ctx`` covered and keeps the rest."""
        value = _single_anonymous(self._anonymous, "update_with")
        synced = DVVSet._make(self._entries, ()).sync(server)
        return DVVSet._make(_event(synced._entries, replica, value), synced._anonymous)

    def event(self, context: VersionVector, value: Any, replica: str) -> DVVSet:
        """What ``replica``, holding ``self``, stores when a client that read ``context``
        writes ``value``: ``DVVSet.new_with(context, value).update_with(self, replica)``."""
        client = tuple([(r, n, ()) for r, n in context.items()])
        if not self._anonymous:
            # What sync keeps of two clocks without anonymous values: none, whichever
            # history dominates (a store's clocks, which only hold dotted values).
            return DVVSet._make(_event(_sync_entries(client, self._entries), replica, value), ())
        synced = DVVSet._make(client, ()).sync(self)
        return DVVSet._make(_event(synced._entries, replica, value), synced._anonymous)

    # ------------------------------------------------------------------ values

    def values(self) -> list[Any]:
        """dvvset:values/1: anonymous values, then each entry's values."""
        out = list(self._anonymous)
        for _, _, l in self._entries:
            out.extend(l)
        return out

    def dotted_values(self) -> list[tuple[Dot, Any]]:
        """Each entry value with its dot (anonymous values have none)."""
        return [(Dot(r, n - i), v) for r, n, l in self._entries for i, v in enumerate(l)]

    def size(self) -> int:
        """dvvset:size/1: number of values, anonymous included."""
        return len(self._anonymous) + sum(len(l) for _, _, l in self._entries)

    def ids(self) -> list[str]:
        """dvvset:ids/1: the replicas in the history."""
        return [r for r, _, _ in self._entries]

    def map(self, f: Callable[[Any], Any]) -> DVVSet:
        """dvvset:map/2: apply ``f`` to every value, keeping the history."""
        return DVVSet._make(
            tuple([(r, n, tuple([f(v) for v in l])) for r, n, l in self._entries]),
            tuple([f(v) for v in self._anonymous]),
        )

    def reconcile(self, f: Callable[[list[Any]], Any]) -> DVVSet:
        """dvvset:reconcile/2: the same history with the single anonymous value ``f(values())``."""
        value = f(self.values())
        # = new_with(join(), value), keeping zero-counter entries as dvvset.erl does.
        return DVVSet._make(tuple([(r, n, ()) for r, n, _ in self._entries]), (value,))

    def last(self, key: Callable[[Any], Any]) -> Any:
        """dvvset:last/2: the value with the greatest ``key`` (see :meth:`lww`)."""
        return self._find_entry(key)[2]

    def lww(self, key: Callable[[Any], Any]) -> DVVSet:
        """dvvset:lww/2: the same history with only the value of greatest ``key``.

        As in dvvset.erl the candidates are the newest value of each entry and every
        anonymous value; ties go to the later candidate (entries, then anonymous).  The
        winner stays in place, or becomes the sole anonymous value if it was one.
        """
        anonymous, winner_replica, value = self._find_entry(key)
        if anonymous:
            return DVVSet._make(tuple([(r, n, ()) for r, n, _ in self._entries]), (value,))
        return DVVSet._make(
            tuple([(r, n, (value,) if r == winner_replica else ()) for r, n, _ in self._entries]),
            (),
        )

    def _find_entry(self, key: Callable[[Any], Any]) -> tuple[bool, str | None, Any]:
        # dvvset:find_entry/2,5 and find_entry2/5 with F(A, B) = key(A) =< key(B).
        found = False
        anonymous = False
        replica: str | None = None
        value: Any = None
        best: Any = None
        for r, _, l in self._entries:
            if not l:
                continue
            k = key(l[0])
            if not found or best <= k:
                found, replica, value, best = True, r, l[0], k
        for v in self._anonymous:
            k = key(v)
            if not found or best <= k:
                found, anonymous, value, best = True, True, v, k
        if not found:
            raise ValueError("a DVVSet with no values has no last value")
        return anonymous, replica, value

    # ------------------------------------------------------------ serialization

    def to_json(self) -> dict[str, Any]:
        """``{"e": [[replica, counter, [values...]], ...], "a": [values...]}``; "a" omitted when empty."""
        out: dict[str, Any] = {"e": [[r, n, list(l)] for r, n, l in self._entries]}
        if self._anonymous:
            out["a"] = list(self._anonymous)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> DVVSet:
        """Parse :meth:`to_json` output; ValueError says what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(f"DVVSet JSON must be an object with keys 'e' and 'a', got {type(obj).__name__}")
        extra = set(obj) - {"e", "a"}
        if extra:
            raise ValueError(f"DVVSet JSON has unknown keys {sorted(map(str, extra))}; expected 'e' and 'a'")
        if "e" not in obj:
            raise ValueError("DVVSet JSON lacks 'e' (the entries list)")
        entries = obj["e"]
        if not isinstance(entries, (list, tuple)):
            raise ValueError(f"DVVSet JSON 'e' must be a list, got {type(entries).__name__}")
        anonymous = obj.get("a", ())
        if not isinstance(anonymous, (list, tuple)):
            raise ValueError(f"DVVSet JSON 'a' must be a list, got {type(anonymous).__name__}")
        return cls._make(_checked_entries(entries, "DVVSet JSON"), tuple(anonymous))

    @classmethod
    def from_stored_json(cls, obj: dict[str, Any]) -> DVVSet:
        """Load :meth:`to_json` output this process's store wrote itself, without re-validating
        it (the store's hot path); anything from outside goes through :meth:`from_json`."""
        return cls._make(tuple([(r, n, tuple(l)) for r, n, l in obj["e"]]), tuple(obj.get("a", ())))

    # ------------------------------------------------------------------ python

    def __eq__(self, other: object) -> bool:
        """Structural equality (dvvset.erl's ``=:=`` on clocks); see :meth:`equal` for histories."""
        if not isinstance(other, DVVSet):
            return NotImplemented
        return self._entries == other._entries and self._anonymous == other._anonymous

    def __hash__(self) -> int:
        # Values may be unhashable (JSON objects): hash the shape, which equal clocks share.
        return hash((tuple([(r, n, len(l)) for r, n, l in self._entries]), len(self._anonymous)))

    def __repr__(self) -> str:
        return f"DVVSet({[(r, n, list(l)) for r, n, l in self._entries]!r}, {list(self._anonymous)!r})"


# ------------------------------------------------------------------ internals


def _greater(e1: Entries, e2: Entries) -> bool:
    """dvvset:greater/3: history ``e1`` strictly dominates ``e2``."""
    i = j = 0
    n1, n2 = len(e1), len(e2)
    strict = False
    while True:
        if i == n1:
            return strict if j == n2 else False
        if j == n2:
            return True  # e1 has replicas e2 lacks (counter 0 entries included, as in erl)
        r1, c1, _ = e1[i]
        r2, c2, _ = e2[j]
        if r1 == r2:
            if c1 > c2:
                strict = True
            elif c1 < c2:
                return False
            i += 1
            j += 1
        elif r1 < r2:
            strict = True
            i += 1
        else:
            return False


def _sync_entries(e1: Entries, e2: Entries) -> Entries:
    """dvvset:sync2/2: merge two sorted entry lists."""
    if not e1:
        return e2
    if not e2:
        return e1
    out: list[Entry] = []
    i = j = 0
    n1, n2 = len(e1), len(e2)
    while i < n1 and j < n2:
        h1, h2 = e1[i], e2[j]
        if h1[0] < h2[0]:
            out.append(h1)
            i += 1
        elif h1[0] > h2[0]:
            out.append(h2)
            j += 1
        else:
            out.append(h1 if h1 is h2 else _merge(h1, h2))
            i += 1
            j += 1
    out.extend(e1[i:])
    out.extend(e2[j:])
    return tuple(out)


def _merge(h1: Entry, h2: Entry) -> Entry:
    """dvvset:merge/5.  An entry supersedes dots <= counter - len(values); the result
    keeps the larger counter and the larger superseded prefix."""
    r, n1, l1 = h1
    _, n2, l2 = h2
    ll1, ll2 = len(l1), len(l2)
    if n1 >= n2:
        if n1 - ll1 >= n2 - ll2:
            return h1
        return (r, n1, l1[: n1 - n2 + ll2])
    if n2 - ll2 >= n1 - ll1:
        return h2
    return (r, n2, l2[: n2 - n1 + ll1])


def _event(entries: Entries, replica: str, value: Any) -> Entries:
    """dvvset:event/3: record ``value`` as the next dot of ``replica``."""
    for i, (r, n, l) in enumerate(entries):
        if r == replica:
            return entries[:i] + ((r, n + 1, (value, *l)),) + entries[i + 1 :]
        if r > replica:
            return entries[:i] + ((replica, 1, (value,)),) + entries[i:]
    return entries + ((replica, 1, (value,)),)


def _union(v1: tuple[Any, ...], v2: tuple[Any, ...]) -> tuple[Any, ...]:
    # Values may be unhashable, and anonymous lists are short: dedupe by ==.
    if not v2:
        return v1 if len(v1) < 2 else _dedupe(v1)
    return _dedupe(v1 + v2)


def _dedupe(vs: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in vs:
        if v not in out:
            out.append(v)
    return tuple(out)


def _single_anonymous(anonymous: tuple[Any, ...], op: str) -> Any:
    if len(anonymous) != 1:
        raise ValueError(
            f"DVVSet.{op} needs a client clock with exactly one anonymous value "
            f"(from DVVSet.new or new_with), got {len(anonymous)}"
        )
    return anonymous[0]


def _checked_entries(entries: Iterable[Any], what: str) -> Entries:
    out: list[Entry] = []
    prev: str | None = None
    for i, e in enumerate(entries):
        if not isinstance(e, (list, tuple)) or len(e) != 3:
            raise ValueError(f"{what}: entry {i} must be [replica, counter, [values...]], got {e!r}")
        r, n, l = e
        if not isinstance(r, str):
            raise ValueError(f"{what}: entry {i}: replica id must be a string, got {r!r}")
        if type(n) is not int or n < 0:
            raise ValueError(f"{what}: entry {i} ({r!r}): counter must be an integer >= 0, got {n!r}")
        if isinstance(l, (str, bytes, dict)) or not isinstance(l, Iterable):
            raise ValueError(f"{what}: entry {i} ({r!r}): values must be a list, got {type(l).__name__}")
        values = tuple(l)
        if len(values) > n:
            raise ValueError(
                f"{what}: entry {i} ({r!r}) holds {len(values)} values but its counter is {n}; "
                "each value needs its own dot"
            )
        if prev is not None and r <= prev:
            raise ValueError(f"{what}: entries must be sorted by replica without repeats; {r!r} follows {prev!r}")
        prev = r
        out.append((r, n, values))
    return tuple(out)
