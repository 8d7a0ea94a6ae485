"""The log as it grows, pushed to every open page: one reader thread, many subscribers.

One thread per dashboard waits for the log's head to move (PostgreSQL: its LISTEN/NOTIFY
change feed, ``wait_for_change``; SQLite: a read of the head every ``poll`` seconds, a
primary-key lookup, since another process's commit sends no signal), reads the new
events once, and hands them to each subscriber's asyncio queue.  It runs only while a
page is subscribed.  A subscriber that falls too far behind is dropped: its page's
``EventSource`` reconnects with ``Last-Event-ID`` and catches up from the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from ...store import Store
from ...work.feed import preview

__all__ = ["Tail", "Subscriber"]

log = logging.getLogger("comity.dashboard")

_BATCH = 1000
_QUEUE_MAX = 256  # batches a subscriber may have waiting before it is dropped


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[list[dict[str, Any]] | None] = field(default_factory=lambda: asyncio.Queue(_QUEUE_MAX))
    dropped: bool = False


def slim(e: dict[str, Any]) -> dict[str, Any]:
    """An event as a page gets it: no value (a preview instead)."""
    out = {k: v for k, v in e.items() if k != "value"}
    out["preview"] = preview(e)
    return out


class Tail:
    def __init__(self, store: Store, *, poll: float = 0.05) -> None:
        self.store = store
        self.poll = poll
        self._session = store.session()
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._head = 0

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> tuple[Subscriber, int]:
        """A new subscriber and the head it starts after (events past it will be delivered)."""
        sub = Subscriber(loop)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._head = self._session.head()
                self._stop = threading.Event()  # each reader thread has its own: an old one may still be waking up
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="comity-dashboard-tail", daemon=True)
                self._thread.start()
            self._subs.add(sub)
            return sub, self._head

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)
            if not self._subs:
                self._stop.set()
                self._thread = None

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            subs, self._subs = list(self._subs), set()
        for s in subs:
            self._deliver(s, None)

    def _deliver(self, sub: Subscriber, batch: list[dict[str, Any]] | None) -> None:
        def put() -> None:
            try:
                sub.queue.put_nowait(batch)
            except asyncio.QueueFull:
                sub.dropped = True  # the page reconnects and catches up from the log

        try:
            sub.loop.call_soon_threadsafe(put)
        except RuntimeError:  # its loop is closed: the page is gone
            sub.dropped = True

    def _wait(self, after: int, stop: threading.Event) -> int:
        waiter = getattr(self.store.backend, "wait_for_change", None)
        if waiter is not None:
            return int(waiter(after, 1.0))
        stop.wait(self.poll)
        return self._session.head()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                head = self._wait(self._head, stop)
                if stop.is_set():
                    return
                while head > self._head:
                    events = self._session.log(after=self._head, limit=_BATCH)
                    if not events:
                        break
                    self._head = events[-1]["pos"]
                    batch = [slim(e) for e in events]
                    with self._lock:
                        subs = list(self._subs)
                    for s in subs:
                        self._deliver(s, batch)
            except Exception:  # a store that is briefly unavailable: try again
                log.warning("comity dashboard: reading the log failed; retrying", exc_info=True)
                stop.wait(1.0)
