"""Worker threads for the MCP server's tool calls: a verb's call blocks (the store, or a
comity server over HTTP), so it runs off the event loop, and its answer is handed back.

This is what ``anyio.to_thread.run_sync`` does, without what it does per call beyond that
(a capacity limiter acquired and released, a cancel scope, a lookup of the worker, a
check for cancellation on the way in and out): under callgrind that machinery was
261,000 instructions per call against 94,000 for a queue and a future, on a server whose
whole ``read`` is about a million.  What stays the same: at most ``most`` threads (anyio's
default limit, 40), calls beyond that wait in order; a thread idle for ``idle_s`` seconds
ends; the call runs in a copy of the caller's context variables; a cancelled caller waits
for its call to finish (a write is never left half-reported) and is cancelled after.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ["Workers", "run_in_worker"]

T = TypeVar("T")

# A job: the loop to answer on, the future it answers, the context to run in, the call.
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[[], Any]]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class _Worker:
    __slots__ = ("jobs",)

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()


class Workers:
    """A bounded pool of threads, each taking one call at a time."""

    def __init__(self, most: int = 40, idle_s: float = 10.0) -> None:
        self.most = most
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # the most recently idle last: it is taken first
        self._threads = 0
        self._waiting: deque[_Job] = deque()  # calls beyond ``most`` busy threads, in order

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread; its result, or its exception raised here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop than asyncio's (trio): anyio's way
            return await anyio.to_thread.run_sync(fn, *args)
        fut: asyncio.Future[T] = loop.create_future()
        job: _Job = (loop, fut, contextvars.copy_context(), (lambda: fn(*args)) if args else fn)
        start = False
        with self._lock:
            if self._idle:
                self._idle.pop().jobs.put(job)
            elif self._threads < self.most:
                self._threads += 1
                start = True
            else:
                self._waiting.append(job)
        if start:
            threading.Thread(target=self._serve, args=(job,), name="comity-mcp-call", daemon=True).start()
        with anyio.CancelScope(shield=True):  # as to_thread: a cancelled caller still waits for its call
            answer = await fut
        return answer

    def _serve(self, job: _Job | None) -> None:
        me = _Worker()
        while True:
            if job is not None:
                loop, fut, ctx, fn = job
                try:
                    answer = (True, ctx.run(fn))
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    answer = (False, e)
                try:
                    loop.call_soon_threadsafe(_settle, fut, *answer)
                except RuntimeError:  # the loop closed: nobody waits for this answer
                    pass
                job = None
            with self._lock:
                if self._waiting:
                    job = self._waiting.popleft()
                    continue
                self._idle.append(me)
            try:
                job = me.jobs.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if me in self._idle:
                        self._idle.remove(me)
                        self._threads -= 1
                        return
                job = me.jobs.get()  # taken off the idle list just now: its job is on the way


_WORKERS = Workers()


async def run_in_worker(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on one of the process's tool-call threads."""
    return await _WORKERS.run(fn, *args)
