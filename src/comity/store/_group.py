"""Group commit: write transactions that arrive together share one commit.

A durable commit costs an fsync, and the disk does one about as fast as it does one
carrying many transactions.  So when several sessions of one process write at once (the
threads of ``comity serve`` or ``comity mcp --http``, or an embedded store used by several
sessions), the writer whose turn it is takes every transaction waiting behind it and
applies them one after another inside one database transaction, each under its own
savepoint: a transaction that fails (a stale context, a superseded token, a bug) is
rolled back to its savepoint alone, and the others go on.  Then one commit, one fsync;
each caller gets its answer only after it.  Nothing waits on purpose: a batch is what
arrived while the previous one was being committed (the classic leader/follower group
commit), so a lone writer pays nothing but a lock.

What each caller sees is what it would see alone, in the order the batch ran them:
positions are issued in that order, each transaction's guards are judged against the
state the ones before it left, and a failure of the engine itself (a full disk, damage)
or of the commit fails every transaction of the batch, none of which is then
acknowledged or applied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._backend import Backend, Tx

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Item(Generic[T]):
    __slots__ = ("work", "result", "error", "done")

    def __init__(self, work: Callable[[Tx], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Runs write transactions of one backend, batching those that arrive together.

    ``engine_errors``: exceptions of the engine itself; one of them fails the whole batch
    (the database transaction may be unusable), anything else fails only its own
    transaction.  A backend whose transactions have no savepoints runs each alone."""

    def __init__(self, backend: Backend, engine_errors: tuple[type[BaseException], ...] = (), *, batching: bool = True) -> None:
        self.backend = backend
        self.engine_errors = engine_errors
        self.batching = batching
        self._mutex = threading.Lock()  # the condition's own lock: a lone writer takes it without the condition's Python layer
        self._cond = threading.Condition(self._mutex)
        self._queue: list[_Item[Any]] = []
        self._busy = False
        self._waiting = 0  # callers waiting in ``_cond`` for a batch to end
        self.commits = 0  # database transactions committed (or tried) by this group
        self.transactions = 0  # write transactions run through it
        self.largest = 0  # the most transactions one commit carried

    def run(self, work: Callable[[Tx], T]) -> T:
        """Run ``work(tx)`` in a write transaction; returns once it is committed (durable)."""
        if not self.batching:
            with self.backend.transaction(write=True) as tx:
                return work(tx)
        with self._mutex:
            alone = not self._busy and not self._queue
            if alone:
                self._busy = True
        if alone:
            # Nobody is committing and nobody waits: this writer's transaction is its own batch,
            # run as `_apply` runs a batch of one, without an item to hand it over.
            self.commits += 1  # self._count(1), spelled out: a lone writer's path
            self.transactions += 1
            if not self.largest:
                self.largest = 1
            try:
                with self.backend.transaction(write=True) as tx:
                    return work(tx)
            finally:
                with self._mutex:
                    self._busy = False
                    if self._waiting:
                        self._cond.notify_all()
        item: _Item[T] = _Item(work)
        with self._cond:
            self._queue.append(item)
            while self._busy and not item.done:
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            if not item.done:
                self._busy = True
                batch, self._queue = self._queue, []
            else:
                batch = []
        if batch:
            try:
                self._apply(batch)
            finally:
                with self._cond:
                    self._busy = False
                    for it in batch:
                        it.done = True
                    if self._waiting:
                        self._cond.notify_all()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def _count(self, n: int) -> None:
        """One commit carrying ``n`` write transactions."""
        self.commits += 1
        self.transactions += n
        self.largest = max(self.largest, n)

    def _apply(self, batch: list[_Item[Any]]) -> None:
        self._count(len(batch))
        if len(batch) == 1:
            it = batch[0]
            try:
                with self.backend.transaction(write=True) as tx:
                    it.result = it.work(tx)
            except BaseException as e:  # noqa: BLE001 - handed to its caller
                it.error = e
            return
        try:
            with self.backend.transaction(write=True) as tx:
                for it in batch:
                    with tx.savepoint() as sp:  # type: ignore[attr-defined]
                        try:
                            it.result = it.work(tx)
                        except self.engine_errors:
                            raise
                        except Exception as e:  # noqa: BLE001 - this transaction's own failure
                            sp.rollback()
                            it.error = e
        except BaseException as e:  # noqa: BLE001 - the engine or the commit failed: nothing of the batch holds
            for it in batch:
                if it.error is None:
                    it.result = None
                    it.error = e
            if not isinstance(e, Exception):
                raise
