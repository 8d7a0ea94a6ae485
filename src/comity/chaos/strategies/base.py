"""What every coordination strategy offers the agent models, so a scenario runs unchanged.

A strategy is an authority node in the simulation (the store process, a lock and file
server, a message pool) and a client library each agent uses to reach it.  The
client's verbs are generators: each round trip yields a :class:`~comity.chaos.sim.Call`
through the agent's context, so the nemesis can strike it.

To add a strategy: subclass :class:`Strategy` (its authority node and final state)
and :class:`Client` (the verbs), and register the class in ``STRATEGIES``
(``strategies/__init__.py``); set ``baseline = False`` only for comity's own
variants.  A client that grants leases says so with ``lease_ttl``, and answers a
claim and a checkpoint with the lease's expiry by the authority's clock, so the
primitive checkers can judge its grants.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...runtime import SeededRng
from ..sim import Effect, Gen, Simulation

if TYPE_CHECKING:
    from ..agents import AgentCtx

__all__ = [
    "Refused",
    "Unknown",
    "Snapshot",
    "TaskView",
    "BoardView",
    "Grant",
    "TaskPlan",
    "Plan",
    "FinalTask",
    "FinalState",
    "Client",
    "Strategy",
    "LOCK_TTL_S",
    "LEASE_TTL_S",
    "STALE_AFTER_S",
    "nothing",
]

LEASE_TTL_S = 300.0  # comity's task leases: renewed by every checkpoint (progress is liveness)
LOCK_TTL_S = 300.0  # the locks baseline's lock files: as long as a lease, refreshed by the holder at each checkpoint
STALE_AFTER_S = 600.0  # the baselines' rule of thumb: a claimed task without progress this long is presumed dead


class Refused(Exception):
    """The strategy said no: ``code`` is ``stale_context``, ``fenced``, ``lease_expired``,
    ``not_found``, ``locked`` or ``unavailable``."""

    def __init__(self, code: str, message: str = "", **details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


class Unknown(Exception):
    """Every attempt timed out: the operation may or may not have happened."""


@dataclass(slots=True)
class Snapshot:
    """What an agent read of a key: the value (None when absent) and the strategy's basis
    for a later write (comity's context; nothing for the baselines)."""

    key: str
    value: Any
    context: Any = None
    read_op: int = -1
    time: float = 0.0

    @property
    def wid(self) -> str | None:
        return self.value.get("wid") if isinstance(self.value, dict) else None

    @property
    def items(self) -> list[Any]:
        return list(self.value) if isinstance(self.value, list) else []


@dataclass(slots=True)
class TaskView:
    id: str
    title: str
    status: str  # open, claimed, done, failed
    assignee: str | None
    claimed_by: str | None
    plan: dict[str, Any]
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    stale: bool = False  # claimed, but its holder is presumed dead (by the strategy's rule)
    context: Any = None
    read_op: int = -1


@dataclass(slots=True)
class BoardView:
    tasks: list[TaskView]
    read_op: int = -1
    time: float = 0.0


@dataclass(slots=True)
class Grant:
    task: TaskView
    token: int
    handoff: list[dict[str, Any]] = field(default_factory=list)
    expires: float | None = None  # by the authority's clock (virtual time); None: no lease
    reread: bool = False  # the client re-read the task under a lock and decided on that read


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A task of a scenario: its title (unique), what doing it involves, who it is for."""

    title: str
    work: dict[str, Any]
    assignee: str | None = None
    deps: tuple[str, ...] = ()


@dataclass(slots=True)
class Plan:
    """The initial state of a scenario: tasks on the board, files, sequences."""

    tasks: list[TaskPlan] = field(default_factory=list)
    files: dict[str, Any] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    # Remote sites and when each is cut off from hq: site -> (cut at, healed at), virtual
    # seconds from the start (the partition scenario; see chaos/partition.py).
    sites: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(slots=True)
class FinalTask:
    id: str
    title: str
    status: str
    assignee: str | None
    claimed_by: str | None
    work: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "claimed_by": self.claimed_by}


@dataclass(slots=True)
class FinalState:
    """The truth at the end of a run, read from the authority by an observer."""

    tasks: dict[str, FinalTask]
    files: dict[str, Any]
    sites: dict[str, Any] = field(default_factory=dict)  # across sites: what each site holds (for `divergence`)

    def by_title(self) -> dict[str, list[FinalTask]]:
        out: dict[str, list[FinalTask]] = {}
        for t in self.tasks.values():
            out.setdefault(t.title, []).append(t)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": {k: self.tasks[k].to_json() for k in sorted(self.tasks)},
            "files": {k: self.files[k] for k in sorted(self.files)},
        }


def nothing(value: Any) -> Generator[Effect, Any, Any]:
    """A verb that needs no round trip (a read of a local view) as a generator."""
    if False:  # pragma: no cover
        yield
    return value


class Client(ABC):
    """One agent incarnation's handle on a strategy.  Verbs raise :class:`Refused` or
    :class:`Unknown`; state a client keeps (held locks, a pool view) dies with it."""

    lease_ttl: ClassVar[float | None] = None  # the TTL of the leases its claims take (None: no leases)
    # Requests the authority answers the same when sent again (reads; writes under a request
    # id): a refusal of any other resent request may be a refusal of its own first attempt.
    retry_safe: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ctx: AgentCtx) -> None:
        self.ctx = ctx

    @property
    def me(self) -> str:
        """The name this client acts under: its agent's, or another's when the agent disobeys."""
        return self.ctx.acting_as or self.ctx.name

    @abstractmethod
    def read(self, key: str) -> Gen[Snapshot]: ...

    def read_for_update(self, key: str) -> Gen[Snapshot]:
        """A read the agent means to write back (the locks baseline locks here)."""
        return self.read(key)

    @abstractmethod
    def append(self, key: str, item: Any, basis: Snapshot) -> Gen[list[Any] | None]:
        """Write ``basis``'s list plus ``item`` back to ``key``; returns the list it wrote
        over when that is not ``basis``'s (a client that re-reads under a lock)."""

    @abstractmethod
    def create(self, key: str, value: Any) -> Gen[None]: ...

    @abstractmethod
    def next_number(self, sequence: str, prefix: str, unit: str) -> Gen[int]:
        """The next number for files named ``prefix`` NNNN, for the unit of work ``unit``."""

    @abstractmethod
    def ready(self) -> Gen[BoardView]:
        """The tasks this agent may take now, by the strategy's rules."""

    @abstractmethod
    def board(self) -> Gen[BoardView]: ...

    @abstractmethod
    def add_task(self, title: str, work: dict[str, Any], assignee: str | None) -> Gen[str]: ...

    @abstractmethod
    def assign(self, task: TaskView, agent: str) -> Gen[None]: ...

    @abstractmethod
    def claim(self, task: TaskView, *, blind: bool = False, steal: bool = False) -> Gen[Grant]:
        """Claim ``task`` as read; ``blind``: without checking what was read (a retry that
        ignores the refusal it got); ``steal``: take it from its holder (``--steal``)."""

    @abstractmethod
    def checkpoint(self, grant: Grant, note: str) -> Gen[float | None]:
        """Record progress (and renew the lease: returns its new expiry, if it has one)."""

    @abstractmethod
    def commit(self, grant: Grant, key: str, value: Any, basis: Snapshot) -> Gen[None]:
        """Write the task's work product ``value`` to ``key``, over ``basis``, as the task's holder."""

    @abstractmethod
    def complete(self, grant: Grant, result: dict[str, Any]) -> Gen[bool]:
        """Mark the task done; returns True when this was a replay of an earlier completion."""

    @abstractmethod
    def release(self, grant: Grant) -> Gen[None]: ...


class Strategy(ABC):
    """A coordination strategy: its authority node(s) in ``sim`` and its clients."""

    name: ClassVar[str]
    summary: ClassVar[str]
    baseline: ClassVar[bool] = True  # False for comity and its variants: the report's margins compare the two sides

    def __init__(self, sim: Simulation, rng: SeededRng, workdir: Path) -> None:
        self.sim = sim
        self.rng = rng
        self.workdir = workdir

    @abstractmethod
    def setup(self, plan: Plan) -> None: ...

    @abstractmethod
    def client(self, ctx: AgentCtx) -> Client: ...

    @abstractmethod
    def final_state(self) -> FinalState: ...

    def observe(self) -> FinalState:
        """The state now, in the middle of a run, without changing what happens next."""
        return self.final_state()

    def close(self) -> None:
        """Release what the strategy holds (the store's file)."""
