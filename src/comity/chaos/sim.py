"""The simulator: virtual time, processes, and a transport the nemesis controls.

One thread, one event queue ordered by (virtual time, sequence number), one
:class:`~comity.runtime.VirtualClock` that the store reads as its clock.  Agents are
generators that yield *effects* (sleep, be idle, make a call, crash); the kernel
resumes them when the effect is done.  Calls travel as messages through
:class:`ChaosTransport` (a :class:`comity.runtime.Transport`) to an authority node
(the store process, the lock server, the message pool), with a seeded random
latency, and the nemesis may drop, duplicate or delay each one, or restart the
store as a request arrives.  Nothing reads the wall clock or an unseeded RNG, so a
seed gives one history (FoundationDB's deterministic simulation).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, Union

from ..runtime import Handler, SeededRng, VirtualClock
from .nemesis import MESSAGE_KINDS, REQUEST_KINDS, Fault, Nemesis

__all__ = [
    "Sleep",
    "Idle",
    "Call",
    "Crash",
    "Effect",
    "Gen",
    "Timeout",
    "Process",
    "Node",
    "Simulation",
    "ChaosTransport",
    "RPC_TIMEOUT_S",
    "START",
]

T = TypeVar("T")

START = 1_700_000_000.0  # virtual epoch of every run
RPC_TIMEOUT_S = 10.0
NET_DELAY_S = (0.005, 0.050)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Let ``seconds`` of virtual time pass (thinking, working, waiting)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do: wait ``seconds``.  When every process is idle the run may be over."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Call:
    """One round trip: send ``args`` to ``dest``; resume with the reply, or Timeout."""

    dest: str
    op: str
    args: dict[str, Any]
    call_id: str
    as_agent: str | None = None  # the name the process claims to act under (another's, when it disobeys)


@dataclass(frozen=True, slots=True)
class Crash:
    """The process dies here; a new incarnation starts ``restart_after`` s later (None: never)."""

    restart_after: float | None


Effect = Union[Sleep, Idle, Call, Crash]
Gen = Generator[Effect, Any, T]


class Timeout(Exception):
    """No reply within the call's timeout: the request or the reply was lost or late."""


class Node(Protocol):
    """An authority: handles requests, may be restarted."""

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None: ...

    def restart(self) -> None: ...


@dataclass(slots=True)
class Process:
    name: str
    incarnation: int
    role: str
    exempt: bool
    gen: Gen[None] | None = None
    alive: bool = True
    finished: bool = False
    idle: bool = False
    waiting: str | None = None
    wake: int = 0
    skew: float = 0.0
    stopped_for_good: bool = False
    push: Callable[[dict[str, Any]], None] | None = None  # where pushed messages go (the pool's client)

    @property
    def pid(self) -> str:
        return f"{self.name}#{self.incarnation}"


@dataclass(order=True, slots=True)
class _Event:
    when: float
    seq: int
    fn: Callable[[], None] = field(compare=False)


class ChaosTransport:
    """Messages between agents and authorities, under virtual time and the nemesis.

    Implements :class:`comity.runtime.Transport`.  ``send`` takes the message's fault
    point in ``message["point"]``; ``request`` is a direct, fault-free call (the
    observer's final read).  Unlike :class:`comity.runtime.SimulatedTransport`, whose
    faults are rates, every message here is a named fault point, so a schedule can
    strike one message exactly."""

    def __init__(self, sim: Simulation, rng: SeededRng) -> None:
        self.sim = sim
        self.rng = rng
        self._handlers: dict[str, Handler] = {}
        self.delivered = 0
        self.dropped = 0

    def register(self, address: str, handler: Handler) -> None:
        self._handlers[address] = handler

    def unregister(self, address: str) -> None:
        self._handlers.pop(address, None)

    def request(self, src: str, dest: str, message: Any) -> Any:
        return self._handlers[dest](message)

    def send(self, src: str, dest: str, message: Any) -> None:
        if self.sim.cut(src, dest):  # across a partition: lost
            self.dropped += 1
            return
        point = message.get("point") if isinstance(message, dict) else None
        fault: Fault | None = None
        if point is not None and self.sim.faultable(src, dest):
            kinds = REQUEST_KINDS if point.endswith(":req") and dest in self.sim.nodes else MESSAGE_KINDS
            fault = self.sim.nemesis.decide(point, kinds)
            if fault is not None:
                self.sim.record_fault(fault)
        lo, hi = NET_DELAY_S
        delay = lo + (hi - lo) * self.rng.random()
        if fault is not None and fault.kind == "drop":
            self.dropped += 1
            return
        if fault is not None and fault.kind == "delay":
            delay += fault.arg
        restart = fault is not None and fault.kind == "restart_store"
        self.sim.after(delay, lambda: self._deliver(dest, message, restart))
        if fault is not None and fault.kind == "dup":
            self.sim.after(delay + fault.arg, lambda: self._deliver(dest, message, False))

    def _deliver(self, dest: str, message: Any, restart: bool) -> None:
        if restart:
            self.sim.restart_node(dest)
        handler = self._handlers.get(dest)
        if handler is None or self.sim.is_down(dest):
            self.dropped += 1
            return
        self.delivered += 1
        handler(message)


class Simulation:
    """The event loop, the processes and the nodes of one run."""

    def __init__(self, clock: VirtualClock, nemesis: Nemesis, net_rng: SeededRng, on_fault: Callable[[Fault], None]) -> None:
        self.clock = clock
        self.nemesis = nemesis
        self.transport = ChaosTransport(self, net_rng)
        self.processes: dict[str, Process] = {}
        self.nodes: dict[str, Node] = {}
        self._down: dict[str, float] = {}
        self._queue: list[_Event] = []
        self._seq = 0
        self._pending_restarts = 0
        self._starters: dict[str, Callable[[Process], Gen[None]]] = {}
        self._on_fault = on_fault
        self.stopped = False
        self.quiescent_check: Callable[[], bool] = lambda: False
        self.restart_downtime: Callable[[str], float] = lambda node: 5.0
        self.on_restart: Callable[[str], None] = lambda node: None
        self.cut: Callable[[str, str], bool] = lambda src, dest: False  # a partition between two endpoints
        self.node_restarts = 0
        self.events = 0

    # ----------------------------------------------------------------- time
    def now(self) -> float:
        return self.clock.now()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Event(when, self._seq, fn))

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self.at(self.clock.now() + max(0.0, delay), fn)

    def run(self, horizon: float) -> None:
        """Process events until ``horizon`` (absolute virtual time) or a stop."""
        queue = self._queue
        clock = self.clock
        while queue and not self.stopped:
            ev = heapq.heappop(queue)
            if ev.when > horizon:
                heapq.heappush(queue, ev)
                break
            if ev.when > clock.now():
                clock.set(ev.when)
            self.events += 1
            ev.fn()
        if not self.stopped and clock.now() < horizon:
            clock.set(horizon)

    # ----------------------------------------------------------------- faults
    def record_fault(self, fault: Fault) -> None:
        self._on_fault(fault)

    def faultable(self, src: str, dest: str) -> bool:
        """Messages of exempt processes (the scenario's environment) are never faulted, nor a
        process's calls into its own handle on a store file (``local:``: no network there)."""
        if src.startswith("local:") or dest.startswith("local:"):
            return False
        for end in (src, dest):
            name = end.split("#", 1)[0]
            proc = self.processes.get(name)
            if proc is not None and proc.exempt:
                return False
        return True

    # ----------------------------------------------------------------- nodes
    def add_node(self, address: str, node: Node) -> None:
        self.nodes[address] = node
        self.transport.register(address, lambda m: self._serve(address, node, m))

    def _serve(self, address: str, node: Node, message: dict[str, Any]) -> None:
        reply = node.handle(message)
        if reply is not None and "reply_to" in message:
            self.transport.send(address, message["reply_to"], {"point": message["point"][:-3] + "rep", "call": message["call"], "reply": reply})

    def is_down(self, address: str) -> bool:
        return self._down.get(address, 0.0) > self.clock.now()

    def restart_node(self, address: str) -> None:
        """The node's process stops and starts again: what it held in memory is gone."""
        node = self.nodes.get(address)
        if node is None or self.is_down(address):
            return
        self.node_restarts += 1
        self.on_restart(address)
        node.restart()
        self._down[address] = self.clock.now() + self.restart_downtime(address)

    # ----------------------------------------------------------------- processes
    def spawn(self, name: str, role: str, starter: Callable[[Process], Gen[None]], at: float, *, exempt: bool = False) -> None:
        self._starters[name] = starter
        proc = Process(name, 0, role, exempt)
        proc.alive = False
        self.processes[name] = proc
        self._pending_restarts += 1
        self.at(at, lambda: self._start(name))

    def _start(self, name: str) -> None:
        self._pending_restarts -= 1
        old = self.processes[name]
        proc = Process(name, old.incarnation + 1, old.role, old.exempt)
        self.processes[name] = proc
        self.transport.register(proc.pid, lambda m: self._on_reply(proc, m))
        proc.gen = self._starters[name](proc)
        self._resume(proc, proc.wake, None, None)

    def _on_reply(self, proc: Process, message: dict[str, Any]) -> None:
        if "call" in message:
            if proc.alive and proc.waiting == message["call"]:
                proc.waiting = None
                self._resume(proc, proc.wake, message["reply"], None)
        elif proc.alive and proc.push is not None:  # a push (the pool's fan-out) to its client
            proc.push(message)

    def _resume(self, proc: Process, wake: int, value: Any, exc: BaseException | None) -> None:
        if not proc.alive or proc.wake != wake or proc.gen is None:
            return
        proc.wake += 1
        proc.idle = False
        try:
            eff = proc.gen.throw(exc) if exc is not None else proc.gen.send(value)
        except StopIteration:
            proc.alive = False
            proc.finished = True
            self.transport.unregister(proc.pid)
            self._maybe_quiescent()
            return
        self._dispatch(proc, eff)

    def _dispatch(self, proc: Process, eff: Effect) -> None:
        wake = proc.wake
        if isinstance(eff, Call):
            proc.waiting = eff.call_id
            point = f"msg:{eff.call_id}:req"
            self.transport.send(proc.pid, eff.dest, {"point": point, "call": eff.call_id, "reply_to": proc.pid, "pid": proc.pid, "agent": eff.as_agent or proc.name, "op": eff.op, "args": eff.args})
            self.after(RPC_TIMEOUT_S, lambda: self._timeout(proc, wake, eff.call_id))
        elif isinstance(eff, Sleep):
            self.after(eff.seconds, lambda: self._resume(proc, wake, None, None))
        elif isinstance(eff, Idle):
            proc.idle = True
            self.after(eff.seconds, lambda: self._resume(proc, wake, None, None))
            self._maybe_quiescent()
        elif isinstance(eff, Crash):
            self.kill(proc, eff.restart_after)
        else:  # pragma: no cover - an agent yielded something that is not an effect
            raise TypeError(f"{proc.pid} yielded {eff!r}, not an effect")

    def _timeout(self, proc: Process, wake: int, call_id: str) -> None:
        if proc.alive and proc.wake == wake and proc.waiting == call_id:
            proc.waiting = None
            self._resume(proc, wake, None, Timeout(call_id))

    def kill(self, proc: Process, restart_after: float | None) -> None:
        proc.alive = False
        proc.wake += 1
        proc.waiting = None
        gen, proc.gen = proc.gen, None
        if gen is not None:
            gen.close()
        self.transport.unregister(proc.pid)
        if restart_after is None:
            proc.stopped_for_good = True
        else:
            self._pending_restarts += 1
            self.after(restart_after, lambda: self._start(proc.name))
        self._maybe_quiescent()

    def live_workers(self, role: str) -> int:
        """Processes of ``role`` that are alive or will be restarted."""
        return sum(1 for p in self.processes.values() if p.role == role and not p.stopped_for_good and not p.finished)

    def _maybe_quiescent(self) -> None:
        if self.stopped or self._pending_restarts:
            return
        for p in self.processes.values():
            if p.alive and not p.idle:
                return
        if self.quiescent_check():
            self.stopped = True
