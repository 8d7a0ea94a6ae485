"""The seams: time, randomness and transport, real and simulated.

Core code never calls ``time.time()``, ``random``, ``uuid4()`` or a socket
directly; it is handed a :class:`Clock`, an :class:`Rng` and a
:class:`Transport`.  The simulator supplies virtual ones, so the same seed gives
the same history (FoundationDB's deterministic simulation, trio's MockClock).
"""

from __future__ import annotations

import heapq
import json
import socket
import urllib.parse
from abc import ABC, abstractmethod
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Clock",
    "SystemClock",
    "VirtualClock",
    "Rng",
    "SystemRng",
    "SeededRng",
    "Transport",
    "Handler",
    "InProcessTransport",
    "HttpTransport",
    "SimulatedTransport",
    "Unreachable",
]


# --------------------------------------------------------------------------- time


@runtime_checkable
class Clock(Protocol):
    """Where time comes from.  ``now`` is wall-clock seconds since the epoch."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The process's real clocks."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class VirtualClock:
    """A clock that moves only when told to: tests of expiry advance it instead of sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a virtual clock never runs backwards; use skew in the nemesis instead")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            if when < self._now:
                raise ValueError("a virtual clock never runs backwards")
            self._now = when


# --------------------------------------------------------------------- randomness


@runtime_checkable
class Rng(Protocol):
    """Where randomness and ids come from."""

    def random(self) -> float: ...

    def randint(self, a: int, b: int) -> int: ...

    def token_bytes(self, n: int) -> bytes: ...

    def new_id(self, prefix: str = "") -> str: ...


class _RngBase(ABC):
    @abstractmethod
    def _bytes(self, n: int) -> bytes: ...

    def token_bytes(self, n: int) -> bytes:
        return self._bytes(n)

    def new_id(self, prefix: str = "") -> str:
        """A 128-bit random id in lowercase hex, optionally prefixed."""
        return prefix + self._bytes(16).hex()


class SystemRng(_RngBase):
    """Operating-system randomness, for production ids and secrets."""

    def random(self) -> float:
        return secrets.randbits(53) / (1 << 53)

    def randint(self, a: int, b: int) -> int:
        return a + secrets.randbelow(b - a + 1)

    def _bytes(self, n: int) -> bytes:
        return os.urandom(n)


class SeededRng(_RngBase):
    """Deterministic randomness: the same seed gives the same ids and choices."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._r = random.Random(seed)

    def random(self) -> float:
        return self._r.random()

    def randint(self, a: int, b: int) -> int:
        return self._r.randint(a, b)

    def _bytes(self, n: int) -> bytes:
        return self._r.getrandbits(8 * n).to_bytes(n, "big")

    def fork(self, label: str) -> SeededRng:
        """An independent stream derived from this one's seed and a label."""
        h = 1469598103934665603
        for ch in f"{self.seed}/{label}".encode():
            h = ((h ^ ch) * 1099511628211) % (1 << 64)
        return SeededRng(h)


# ---------------------------------------------------------------------- transport

Handler = Callable[[Any], Any]


class Unreachable(Exception):
    """The destination could not be reached (partition, crash, loss)."""


@runtime_checkable
class Transport(Protocol):
    """How a client reaches a store, or one replica another.

    ``request`` sends a message to a named address and returns the reply or
    raises :class:`Unreachable`.  ``send`` is one-way and may be lost.
    """

    def register(self, address: str, handler: Handler) -> None: ...

    def request(self, src: str, dest: str, message: Any) -> Any: ...

    def send(self, src: str, dest: str, message: Any) -> None: ...


class InProcessTransport:
    """Direct calls between objects in one process: no loss, no delay."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, address: str, handler: Handler) -> None:
        self._handlers[address] = handler

    def _handler(self, dest: str) -> Handler:
        try:
            return self._handlers[dest]
        except KeyError:
            raise Unreachable(f"no endpoint registered at {dest!r}") from None

    def request(self, src: str, dest: str, message: Any) -> Any:
        return self._handler(dest)(message)

    def send(self, src: str, dest: str, message: Any) -> None:
        self._handler(dest)(message)


class HttpTransport:
    """Requests to comity servers: ``dest`` is a server's URL, the message is POSTed as JSON to
    ``{dest}/v1/admin/sync`` with a bearer token, and the JSON answer is the reply (an answer that
    is a comity error comes back as ``{"ok": false, "error": …}``).  A server that cannot be
    reached, or does not answer within ``timeout`` seconds, is :class:`Unreachable`.
    Addresses registered with :meth:`register` are served in this process instead."""

    def __init__(self, *, auth: str | None = None, timeout: float = 60.0, path: str = "/v1/admin/sync") -> None:
        self.auth = auth
        self.timeout = timeout
        self.path = path
        self._local: dict[str, Handler] = {}

    def register(self, address: str, handler: Handler) -> None:
        self._local[address] = handler

    def request(self, src: str, dest: str, message: Any) -> Any:
        if dest in self._local:
            return self._local[dest](message)
        import http.client  # here: every CLI call imports this module, few send anything

        parts = urllib.parse.urlsplit(dest.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unreachable(f"{dest!r} is not a server URL (http://HOST:PORT)")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        body = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json", "Comity-Replica": src}
        if self.auth:
            headers["Authorization"] = f"Bearer {self.auth}"
        try:
            port = parts.port
        except ValueError:
            raise Unreachable(f"{dest!r} has a bad port") from None
        conn = cls(parts.hostname, port, timeout=self.timeout)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request("POST", parts.path.rstrip("/") + self.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{type(e).__name__}: {e}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if resp.status == 200 and isinstance(answer, dict):
            return answer
        if isinstance(answer, dict) and "error" in answer:
            return {"ok": False, "error": answer}
        raise Unreachable(f"{dest} answered HTTP {resp.status} without a comity answer (is a proxy in front of it?)")

    def send(self, src: str, dest: str, message: Any) -> None:
        try:
            self.request(src, dest, message)
        except Unreachable:
            pass  # one-way messages may be lost


@dataclass(order=True)
class _Pending:
    deliver_at: float
    seq: int
    src: str = field(compare=False)
    dest: str = field(compare=False)
    message: Any = field(compare=False)


class SimulatedTransport:
    """Messages under virtual time with injected faults, decided by a seeded RNG.

    One-way messages are queued with a random delay and delivered by
    :meth:`run_until`; they may be lost, duplicated or reordered.  Requests are
    synchronous (a call and its reply) and fail with :class:`Unreachable` across
    a partition or when lost.  Every decision comes from ``rng``, so a run is
    reproducible from its seed.
    """

    def __init__(
        self,
        clock: VirtualClock,
        rng: SeededRng,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        min_delay: float = 0.001,
        max_delay: float = 0.050,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.loss = loss
        self.duplicate = duplicate
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._handlers: dict[str, Handler] = {}
        self._queue: list[_Pending] = []
        self._seq = 0
        self._cut: set[frozenset[str]] = set()
        self.trace: list[tuple[float, str, str, str]] = []

    def register(self, address: str, handler: Handler) -> None:
        self._handlers[address] = handler

    def partition(self, a: str, b: str) -> None:
        self._cut.add(frozenset((a, b)))

    def heal(self) -> None:
        self._cut.clear()

    def _blocked(self, src: str, dest: str) -> bool:
        return frozenset((src, dest)) in self._cut or dest not in self._handlers

    def request(self, src: str, dest: str, message: Any) -> Any:
        if self._blocked(src, dest) or self.rng.random() < self.loss:
            self.trace.append((self.clock.now(), "unreachable", src, dest))
            raise Unreachable(f"{dest!r} unreachable from {src!r}")
        self.trace.append((self.clock.now(), "request", src, dest))
        return self._handlers[dest](message)

    def send(self, src: str, dest: str, message: Any) -> None:
        copies = 0 if self.rng.random() < self.loss else 1
        if copies and self.rng.random() < self.duplicate:
            copies = 2
        for _ in range(copies):
            delay = self.min_delay + (self.max_delay - self.min_delay) * self.rng.random()
            self._seq += 1
            heapq.heappush(self._queue, _Pending(self.clock.now() + delay, self._seq, src, dest, message))
        if not copies:
            self.trace.append((self.clock.now(), "lost", src, dest))

    def pending(self) -> int:
        return len(self._queue)

    def run_until(self, when: float) -> int:
        """Deliver every queued message due by ``when``, advancing the clock; returns how many."""
        delivered = 0
        while self._queue and self._queue[0].deliver_at <= when:
            p = heapq.heappop(self._queue)
            if p.deliver_at > self.clock.now():
                self.clock.set(p.deliver_at)
            if self._blocked(p.src, p.dest):
                self.trace.append((self.clock.now(), "dropped", p.src, p.dest))
                continue
            self.trace.append((self.clock.now(), "deliver", p.src, p.dest))
            self._handlers[p.dest](p.message)
            delivered += 1
        if when > self.clock.now():
            self.clock.set(when)
        return delivered
