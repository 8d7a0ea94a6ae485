"""``comity-embedded``: comity as most teams run it, with no server at all.

Every agent process opens the store's SQLite file itself (the file in the git common
directory, shared by every worktree) and runs each transaction in its own process,
on its own clock: the nemesis's clock skew of that process is the clock its
transactions judge leases by.  On one host the processes' clocks agree, and the skew
stands for a clock that steps (NTP, a laptop waking up); the harness keeps the
simulator's skews (up to half an hour) to show what comity promises then: leases may
overlap (a process whose clock runs ahead takes a lease its holder still counts on),
and no write under a superseded token is accepted (principle 4 of docs/design.md).  There is
no network between an agent and the file and no store process to restart; and there is
no authentication: the embedded store trusts the processes that can open its file, so
an agent that acts under another's name is not refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...runtime import SeededRng
from ..sim import Gen, Simulation
from .base import Client, FinalState, Plan, Strategy
from .coordinated import ComityClient, ComityStrategy, StoreServer

__all__ = ["EmbeddedComityStrategy", "SkewedClock", "LOCAL"]

LOCAL = "local:"  # a process's own handle on the store file: no network in between


class SkewedClock:
    """A process's clock: the simulation's, off by the process's skew."""

    def __init__(self, base: Any, skew: float) -> None:
        self.base, self.skew = base, skew

    def now(self) -> float:
        return float(self.base.now()) + self.skew

    def monotonic(self) -> float:
        return float(self.base.monotonic())


class LocalStore(StoreServer):
    """One agent process's own opening of the store file."""

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        # No authentication on the embedded store: whoever opens the file acts under the name it gives.
        agent = self.agent(message["pid"], message["agent"])
        try:
            return {"value": self.serve(agent, message["op"], message["args"])}
        except Exception as e:
            from ... import errors

            if isinstance(e, errors.ComityError) and not isinstance(e, errors.Invalid):
                body = e.to_json()
                return {"error": body.pop("error"), "message": body.pop("message"), **{k: v for k, v in body.items() if k in ("holder", "key")}}
            raise


class EmbeddedClient(ComityClient):
    def _call(self, op: str, **args: Any) -> Gen[Any]:
        return self.ctx.call(LOCAL + self.ctx.pid, op, args)


class EmbeddedComityStrategy(ComityStrategy):
    name = "comity-embedded"
    summary = "comity's embedded store: each agent process opens the SQLite file itself, on its own clock; no server, no network, no auth"
    baseline = False
    client_class = EmbeddedClient

    def __init__(self, sim: Simulation, rng: SeededRng, workdir: Path) -> None:
        super().__init__(sim, rng, workdir)
        self.opened: dict[str, LocalStore] = {}

    def setup(self, plan: Plan) -> None:
        self.seed(self.server.store, plan)  # the file, as the repository's first agent created it

    def client(self, ctx: Any) -> Client:
        pid = ctx.pid
        address = LOCAL + pid
        local = LocalStore(self.server.path, SkewedClock(self.sim.clock, ctx.proc.skew), self.rng.fork(f"local/{pid}"))
        self.opened[pid] = local

        def serve(message: dict[str, Any]) -> None:
            reply = local.handle(message)
            if reply is not None and "reply_to" in message:
                self.sim.transport.send(address, message["reply_to"], {"point": message["point"][:-3] + "rep", "call": message["call"], "reply": reply})

        self.sim.transport.register(address, serve)
        return self.client_class(ctx)

    def final_state(self) -> FinalState:
        return self.server.final_state()

    def close(self) -> None:
        for local in self.opened.values():
            local.store.close()
        super().close()
