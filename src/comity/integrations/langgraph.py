"""A LangGraph store over comity: :class:`ComityStore`, a ``langgraph.store.base.BaseStore``.

Install with ``pip install 'comity[langgraph]'`` and compile a graph with
``graph.compile(store=ComityStore(comity.open()))``.

``namespace + (key,)`` is the comity key ``ns1/ns2/key``.  ``BaseStore.put`` carries
no context, so the store remembers the context of each key a node read (``get`` or
``search``) during its run and passes it on ``put``.  Where LangGraph's own stores keep
the last write, comity never overwrites what the writer did not see: a ``put`` whose
node never read the key, or read it before another branch wrote it, is kept beside the
other value as a *sibling*.  Parallel branches that write one key therefore leave
siblings, which a later node sees (``item.siblings``, and ``item.value`` is
``{"$siblings": [...]}``) and resolves with a ``put`` after its ``get``.

A ``delete`` (``PutOp`` with value ``None``) removes what the node read; a key it never
read is not deleted (``StaleContext``: read it first), an absent key is a no-op.
``search`` lists keys by prefix and filters their values (no semantic ``query``).
Items' timestamps are the time of the read: comity orders by causality, not clocks
(``comity why KEY`` gives a key's history).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from ..errors import Invalid, NotFound, StaleContext
from ..store import Store, Versioned
from ..store import open as open_store
from ..store._codec import check_key

__all__ = ["ComityStore", "ComityItem", "SIBLINGS"]

SIBLINGS = "$siblings"  # item.value of a key with several values: {"$siblings": [v1, v2, ...]}
_SCOPES = 1024  # node runs whose reads are remembered (the oldest are forgotten first)


class _StoreLike(Protocol):
    def session(self, agent: str | None = None, *, name: str | None = None) -> Any: ...


class ComityItem(SearchItem):
    """An item with its comity siblings (one value normally; several after concurrent
    writes nobody resolved) and the context of the read."""

    __slots__ = ("siblings", "context")

    def __init__(
        self,
        namespace: tuple[str, ...],
        key: str,
        siblings: list[dict[str, Any]],
        context: str,
        at: datetime,
        score: float | None = None,
    ) -> None:
        value = siblings[0] if len(siblings) == 1 else {SIBLINGS: siblings}
        super().__init__(namespace, key, value, at, at, score)
        self.siblings = siblings
        self.context = context


def _as_dict(value: Any) -> dict[str, Any]:
    # LangGraph values are objects; a key written by another face may hold any JSON.
    return value if isinstance(value, dict) else {"value": value}


def _scope() -> str:
    """Which node run is asking: LangGraph's task namespace, or "" outside a graph."""
    try:
        from langgraph.config import get_config

        config = get_config()
    except (RuntimeError, ImportError):
        return ""
    configurable = config.get("configurable") or {}
    metadata = config.get("metadata") or {}
    return str(
        configurable.get("checkpoint_ns") or metadata.get("langgraph_checkpoint_ns") or configurable.get("__pregel_task_id") or ""
    )


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    pairs = zip(namespace, path) if condition.match_type == "prefix" else zip(reversed(namespace), reversed(path))
    return all(p == "*" or n == p for n, p in pairs)


def _compare(value: Any, wanted: Any) -> bool:
    """LangGraph's filter semantics: exact match, nested objects, and $eq $ne $gt $gte $lt $lte."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(value, op, arg) for op, arg in wanted.items())
        return isinstance(value, dict) and all(_compare(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return isinstance(value, (list, tuple)) and len(value) == len(wanted) and all(_compare(a, b) for a, b in zip(value, wanted))
    return bool(value == wanted)


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    try:
        a, b = float(value), float(arg)
    except (TypeError, ValueError):
        return False
    if op == "$gt":
        return a > b
    if op == "$gte":
        return a >= b
    if op == "$lt":
        return a < b
    if op == "$lte":
        return a <= b
    raise ValueError(f"unsupported filter operator {op!r}; use $eq $ne $gt $gte $lt $lte")


class ComityStore(BaseStore):
    """A LangGraph ``BaseStore`` whose writes never overwrite what their node did not read."""

    def __init__(self, store: Store | _StoreLike | str | os.PathLike[str] | None = None, *, agent: str = "langgraph", prefix: str = "") -> None:
        """``store``: a comity store (or its location for :func:`comity.open`); ``agent``: who
        writes; ``prefix``: prepended to every key (e.g. ``"graphs/support/"``)."""
        self._owned = store is None or isinstance(store, (str, os.PathLike))
        self.store: Any = open_store(store) if store is None or isinstance(store, (str, os.PathLike)) else store
        self.session: Any = self.store.session(agent)  # a Session, or a remote one with the same methods
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_key(prefix.rstrip("/"), "prefix")
        self.prefix = prefix
        self._lock = threading.RLock()
        self._read: OrderedDict[str, dict[str, str]] = OrderedDict()  # node run -> key -> context

    def close(self) -> None:
        if self._owned:
            self.store.close()

    # ------------------------------------------------------------ keys
    def key_of(self, namespace: tuple[str, ...], key: str) -> str:
        """The comity key of a LangGraph item: ``prefix + "ns1/ns2/key"``."""
        parts = [*namespace, key]
        for p in parts:
            if not isinstance(p, str) or not p or "/" in p:
                raise InvalidNamespaceError(
                    f"{namespace!r}/{key!r}: namespace labels and keys must be non-empty strings without '/' (it separates them in comity keys)"
                )
        full = self.prefix + "/".join(parts)
        try:
            return check_key(full)
        except Invalid as e:
            raise InvalidNamespaceError(f"{namespace!r}/{key!r} makes the comity key {full!r}, which is refused: {e.message}") from None

    def _split(self, full: str) -> tuple[tuple[str, ...], str] | None:
        if full.startswith("@") or not full.startswith(self.prefix):
            return None
        parts = full[len(self.prefix) :].split("/")
        if len(parts) < 2:
            return None  # not written through LangGraph: items live in a namespace
        return tuple(parts[:-1]), parts[-1]

    def _contexts(self, scope: str) -> dict[str, str]:
        seen = self._read.get(scope)
        if seen is None:
            seen = self._read[scope] = {}
            while len(self._read) > _SCOPES:
                self._read.popitem(last=False)
        else:
            self._read.move_to_end(scope)
        return seen

    def _item(self, v: Versioned, namespace: tuple[str, ...], key: str, seen: dict[str, str]) -> ComityItem | None:
        seen[v.key] = v.context
        if not v.values:
            return None
        return ComityItem(namespace, key, [_as_dict(x) for x in v.values], v.context, datetime.now(timezone.utc))

    # ------------------------------------------------------------ ops
    def _get(self, op: GetOp, seen: dict[str, str]) -> Item | None:
        key = self.key_of(op.namespace, op.key)
        return self._item(self.session.get(key), op.namespace, op.key, seen)

    def _put(self, op: PutOp, seen: dict[str, str]) -> None:
        key = self.key_of(op.namespace, op.key)
        context = seen.get(key)
        if op.value is None:
            try:
                w = self.session.delete(key, context=context)
            except NotFound:
                return
            except StaleContext as e:
                hint = "read it in this node (store.get) before deleting it" if context is None else "read it again and decide"
                raise StaleContext(f"{e.message.split(';')[0]}; not deleted: {hint}", key=key, news=e.news) from None
        else:
            # Stale or never read: kept beside the newer value as a sibling, never over it.
            w = self.session.put(key, dict(op.value), context=context, keep_both=True)
        seen[key] = w.context

    def _search(self, op: SearchOp, seen: dict[str, str]) -> list[SearchItem]:
        if op.namespace_prefix:
            prefix = self.key_of(op.namespace_prefix[:-1], op.namespace_prefix[-1]) + "/"
        else:
            prefix = self.prefix
        scan = getattr(self.session, "scan", None)
        found: list[Versioned] = (
            scan(prefix) if scan is not None else [self.session.get(k) for k in self.session.keys(prefix, limit=100_000)]
        )
        items: list[SearchItem] = []
        for v in sorted(found, key=lambda v: v.key):
            where = self._split(v.key)
            if where is None:
                continue
            item = self._item(v, where[0], where[1], seen)
            if item is None:
                continue
            if op.filter and not all(_compare(item.value.get(k), w) for k, w in op.filter.items()):
                continue
            items.append(item)
        return items[op.offset : op.offset + op.limit]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        namespaces: set[tuple[str, ...]] = set()
        for full in self.session.keys(self.prefix, limit=1_000_000):
            where = self._split(full)
            if where is None:
                continue
            ns = where[0]
            if op.match_conditions and not all(_matches(c, ns) for c in op.match_conditions):
                continue
            namespaces.add(ns[: op.max_depth] if op.max_depth is not None else ns)
        return sorted(namespaces)[op.offset : op.offset + op.limit]

    def _batch(self, ops: Iterable[Op], scope: str) -> list[Result]:
        results: list[Result] = []
        with self._lock:
            seen = self._contexts(scope)
            for op in ops:
                if isinstance(op, GetOp):
                    results.append(self._get(op, seen))
                elif isinstance(op, PutOp):
                    self._put(op, seen)
                    results.append(None)
                elif isinstance(op, SearchOp):
                    results.append(self._search(op, seen))
                elif isinstance(op, ListNamespacesOp):
                    results.append(self._list_namespaces(op))
                else:
                    raise ValueError(f"unknown store operation: {type(op).__name__}")
        return results

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._batch(ops, _scope())

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        # The store is blocking (SQLite, PostgreSQL, HTTP): run it off the event loop.
        return await asyncio.to_thread(self._batch, list(ops), _scope())
