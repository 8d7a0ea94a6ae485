"""The harness catches comity's own bugs.

Two deliberately broken variants of the comity strategy (the store is untouched: the
variant's store process ignores what the store refuses, or hides from it what the
agent saw): one with fencing switched off, one with context checks switched off.
The checkers must report each, and the shrinker must bring a failing schedule down
to a handful of faults.
"""

from __future__ import annotations

from typing import Any

from comity.chaos import run
from comity.chaos.explore import shrink
from comity.chaos.strategies import ComityStrategy, StoreServer
from comity.errors import Fenced, LeaseExpired
from comity.store import Put
from comity.work import Agent, task_key


class UnfencedServer(StoreServer):
    """Fencing off: a superseded or expired token is not refused; the write goes through."""

    def _unfenced(self, agent: Agent, task_id: str, change: Any, label: str) -> None:
        key = task_key(task_id)
        v = agent.session.get(key)
        agent.session.txn(ops=[Put(key, change(dict(v.values[0])), context=v.context, label=label)], system=True)

    def serve(self, agent: Agent, op: str, a: dict[str, Any]) -> Any:
        try:
            return super().serve(agent, op, a)
        except (Fenced, LeaseExpired):
            me = agent.session.agent
            if op == "checkpoint":
                self._unfenced(agent, a["id"], lambda r: {**r, "checkpoints": [*r["checkpoints"], {"agent": me, "note": a["note"]}]}, "task.checkpoint")
                return None
            if op == "complete":
                self._unfenced(agent, a["id"], lambda r: {**r, "status": "done", "completed_by": me, "done_token": a["token"]}, "task.done")
                return False
            if op == "commit":
                agent.session.put(a["key"], a["value"], context=a["context"])
                return None
            raise


class NoFencing(ComityStrategy):
    name = "comity-without-fencing"
    server_class = UnfencedServer


class BlindServer(StoreServer):
    """Context checks off: a write goes over whatever is there now, not over what the
    agent read; a claim carries no context."""

    def serve(self, agent: Agent, op: str, a: dict[str, Any]) -> Any:
        if op == "write":
            agent.session.put(a["key"], a["value"], context=agent.session.get(a["key"]).context)
            return None
        if op == "claim":
            a = {**a, "context": None}
        return super().serve(agent, op, a)


class NoContextChecks(ComityStrategy):
    name = "comity-without-context-checks"
    server_class = BlindServer


def _first_failure(scenario: str, strategy: type[ComityStrategy], checker: str) -> int:
    for seed in range(20):
        if run(scenario, strategy, seed).failed(checker):
            return seed
    raise AssertionError(f"{strategy.name}: no {checker} in 20 seeds of {scenario}")


def test_fencing_switched_off_is_caught_and_shrunk() -> None:
    assert not run("zombie_commit", "comity", 0).anomalies  # the real thing, same seed
    seed = _first_failure("zombie_commit", NoFencing, "fencing_violation")
    failing = run("zombie_commit", NoFencing, seed)
    kinds = {a.kind for a in failing.anomalies if a.checker == "fencing_violation"}
    assert kinds & {"superseded-token", "completed-twice"}
    s = shrink("zombie_commit", NoFencing, seed, failing.schedule.faults, "fencing_violation")
    assert len(failing.schedule.faults) > 5
    assert 1 <= len(s.faults) <= 3, [f.describe() for f in s.faults]
    assert s.result.failed("fencing_violation")
    # The shrunk schedule is a replay: the same faults give the same failing history.
    assert run("zombie_commit", NoFencing, seed, faults=s.faults).history_hash == s.result.history_hash
    # Without the fault, the broken variant passes: fencing is what the fault needed.
    assert not run("zombie_commit", NoFencing, seed, faults=[]).failed("fencing_violation")


def test_context_checks_switched_off_are_caught_and_shrunk() -> None:
    assert not run("stale_context", "comity", 0).anomalies
    seed = _first_failure("stale_context", NoContextChecks, "lost_update")
    failing = run("stale_context", NoContextChecks, seed)
    assert failing.failed("elle_cycle") or failing.failed("lost_update")
    s = shrink("stale_context", NoContextChecks, seed, failing.schedule.faults, "lost_update")
    # Concurrent writers lose each other's notes without any fault at all once context
    # checks are off: the shrinker removes every fault.
    assert len(s.faults) <= 3
    assert s.result.failed("lost_update")
    lost = [a for a in s.result.anomalies if a.checker == "lost_update"]
    assert lost and all(len(a.ops) == 2 for a in lost), "each lost entry is shown with the write that dropped it"
