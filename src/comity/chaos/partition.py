"""The ``partition`` scenario: an offline sandbox agent and a second site, cut off from
headquarters for a while, then healed; and every strategy as a team would run it across
sites.

docs/design.md's row: *agents that could not talk (offline sandbox, another machine)
diverge*.  Headquarters (``hq``) holds the authority; the ``sandbox`` (one agent) and
``site-b`` (two agents) each work against a copy of their own, kept in step with hq
every :data:`SYNC_S` seconds while the link is up.  Each remote site is cut off from hq
over a window of the run (drawn from the seed); messages across a cut link are lost.

How each strategy spans sites (:func:`adapt`), as a careful team would build it:

- ``none``: each site's file server is synced with hq's by **last writer wins** (each
  file and each task record: the later modification time wins, as file sync tools do);
- ``naive-locks``, ``careful-locks``: files synced the same way, the **lock server at
  hq**, unreachable from a cut-off site (a holder cannot refresh its lock, and nobody
  there can take one);
- ``cas``: conditional writes on each site's own file server, synced by last writer wins;
- ``pool``: each site has a relay of the **message pool**, forwarding what its agents
  publish to hq and what hq publishes to them; a message sent across a cut link is lost;
- ``comity``: each site is a **replica** of hq's store (:mod:`comity.sync`): anti-entropy
  every :data:`SYNC_S` seconds, what needs the authority forwarded to hq and failing fast
  when cut off; a write under a lease made cut off is kept provisionally and fenced on
  arrival if the lease was taken over meanwhile.

The ``divergence`` checker compares what every site holds at the end: after the heal
and the syncs that follow, every site must hold what hq holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ComityError
from ..runtime import SeededRng, Unreachable
from ..sync import Endpoint, Link, Upstream, clone, sync
from .agents import Cast
from .checkers import divergence
from .sim import Gen, Simulation
from .strategies.base import Client, FinalState, FinalTask, Plan, Strategy, TaskPlan, Unknown
from .strategies.coordinated import ComityClient, ComityStrategy, StoreServer
from .strategies.files import FileServer, FileStrategy
from .strategies.pool import PoolClient, PoolServer, PoolStrategy, World

__all__ = ["HQ", "SYNC_S", "PARTITION", "adapt", "divergence", "site_snapshot"]

HQ = "hq"
SYNC_S = 60.0  # how often a site catches up with hq while the link is up
_LOCK_OPS = frozenset({"lock_get", "locks", "lock_put", "lock_del", "lock_acquire", "lock_refresh", "lock_check", "lock_release"})


def _at(base: str, site: str) -> str:
    return base if site == HQ else f"{base}@{site}"


class Topology:
    """Where every agent and node is, and when each remote site is cut off from hq."""

    def __init__(self, sim: Simulation, windows: dict[str, tuple[float, float]]) -> None:
        self.sim = sim
        self.windows = dict(windows)  # site -> (cut at, healed at), absolute virtual time
        self.agents: dict[str, str] = {}  # agent name -> its site

    def site_of(self, endpoint: str) -> str:
        name = endpoint.split("#", 1)[0]
        if "@" in name:
            return name.split("@", 1)[1]
        return self.agents.get(name, HQ)

    def cut_off(self, site: str) -> bool:
        window = self.windows.get(site)
        return window is not None and window[0] <= self.sim.now() < window[1]

    def cut(self, src: str, dest: str) -> bool:
        a, b = self.site_of(src), self.site_of(dest)
        return a != b and (self.cut_off(a) or self.cut_off(b))

    def install(self, tick: Callable[[], None]) -> None:
        self.sim.cut = self.cut

        def again() -> None:
            tick()
            self.sim.after(SYNC_S, again)

        self.sim.after(SYNC_S, again)


def site_snapshot(final: FinalState) -> dict[str, Any]:
    """What a site holds, in a form two sites can be compared by: files, and each task's state."""
    return {
        "files": {k: final.files[k] for k in sorted(final.files)},
        "tasks": {t.title: [t.status, t.claimed_by] for t in sorted(final.tasks.values(), key=lambda t: t.title)},
    }


# ------------------------------------------------------------------ files: last writer wins


class SiteFileServer(FileServer):
    """A site's file server, remembering when each file was last written (its mtime)."""

    def __init__(self, sim: Simulation, first_id: int = 0) -> None:
        super().__init__(sim)
        self.mtime: dict[str, float] = {}
        self.next_id = first_id

    def _write(self, key: str, value: Any) -> dict[str, Any]:
        self.mtime[key] = self.now()
        return super()._write(key, value)


def lww_sync(a: SiteFileServer, b: SiteFileServer) -> None:
    """Make two file servers agree, each file and each task record by its latest write."""
    for key in sorted(set(a.files) | set(b.files)):
        ta, tb = a.mtime.get(key, float("-inf")), b.mtime.get(key, float("-inf"))
        if ta == tb:
            continue
        src, dst = (a, b) if ta > tb else (b, a)
        dst._write(key, copy.deepcopy(src.files[key]))
        dst.mtime[key] = src.mtime[key]
    for tid in sorted(set(a.tasks) | set(b.tasks)):
        ra, rb = a.tasks.get(tid), b.tasks.get(tid)
        if ra is not None and rb is not None and float(ra["updated_at"]) == float(rb["updated_at"]):
            continue
        if rb is None or (ra is not None and float(ra["updated_at"]) > float(rb["updated_at"])):
            src_rec, dst_srv = ra, b
        else:
            src_rec, dst_srv = rb, a
        assert src_rec is not None
        old = dst_srv.tasks.get(tid)
        rec = copy.deepcopy(src_rec)
        rec["version"] = max(int(src_rec["version"]), int(old["version"]) if old else 0) + 1
        dst_srv.tasks[tid] = rec


def _files_variant(base: type[FileStrategy]) -> type[Strategy]:
    client_base = base.client_class

    class SitedFilesClient(client_base):  # type: ignore[valid-type,misc]
        site = HQ

        def _call(self, op: str, **args: Any) -> Gen[Any]:
            # Locks live at hq (the lock server); files and tasks on the agent's own site.
            dest = "files" if op in _LOCK_OPS else _at("files", self.site)
            call: Gen[Any] = self.ctx.call(dest, op, args)
            return call

    class SitedFiles(base):  # type: ignore[valid-type,misc]
        name = base.name
        summary = base.summary
        baseline = base.baseline

        def setup(self, plan: Plan) -> None:
            self.topology = Topology(self.sim, _windows(plan))
            self.servers: dict[str, SiteFileServer] = {}
            for i, site in enumerate([HQ, *sorted(self.topology.windows)]):
                server = SiteFileServer(self.sim, first_id=1000 * i)
                self.servers[site] = server
                self.sim.add_node(_at("files", site), server)
                for key, value in plan.files.items():
                    server._write(key, copy.deepcopy(value))
                server.next_id = 0
                for t in plan.tasks:
                    work = {**t.work, "deps": list(t.deps)} if t.deps else dict(t.work)
                    server.add(t.title, work, t.assignee, None)
                server.next_id = max(server.next_id, 1000 * i)  # tasks a site adds later get ids of its own
            self.server = self.servers[HQ]
            self.topology.install(self._tick)

        def _tick(self) -> None:
            for site, server in self.servers.items():
                if site != HQ and not self.topology.cut_off(site):
                    lww_sync(self.servers[HQ], server)

        def client(self, ctx: Any) -> Client:
            c = SitedFilesClient(ctx)
            c.site = self.topology.agents[ctx.name] = str(ctx.cast.config.get("site", HQ))
            return c

        def final_state(self) -> FinalState:
            final = self.servers[HQ].final_state()
            final.sites = {site: site_snapshot(s.final_state()) for site, s in self.servers.items()}
            return final

    SitedFiles.__name__ = SitedFiles.__qualname__ = f"Sited{base.__name__}"
    return SitedFiles


# ------------------------------------------------------------------ the message pool, relayed


class PoolRelay:
    """A site's end of the pool: its own log and subscribers; what its agents publish goes to
    hq, what hq publishes comes here, both as one-way messages a cut link loses."""

    def __init__(self, sim: Simulation, site: str) -> None:
        self.sim = sim
        self.site = site
        self.address = _at("pool", site)
        self.local = PoolServer(sim)
        self.sent = 0

    def restart(self) -> None:
        pass

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if "op" not in message:  # pushed by hq: something published elsewhere
            m = message["message"]
            self.local.log.append(m)
            for sub in list(self.local.subscribers):
                n = self.local.subscribers[sub] = self.local.subscribers[sub] + 1
                self.sim.transport.send(self.address, sub, {"point": f"push:{sub}:{n}", "message": m})
            return None
        reply = self.local.handle(message)
        if message["op"] == "publish":
            self.sent += 1
            forward = {"point": f"relay:{self.site}:{self.sent}", "pid": self.address, "agent": "relay", "op": "publish", "args": message["args"]}
            self.sim.transport.send(self.address, "pool", forward)
        return reply


class SitedPoolClient(PoolClient):
    site = HQ

    def _sync(self) -> Gen[None]:
        if self.synced:
            return
        log = yield from self.ctx.call(_at("pool", self.site), "sync", {})
        fresh = World()
        for m in log:
            fresh.apply(m)
        self.world, self.synced = fresh, True

    def _publish(self, m: dict[str, Any]) -> Gen[None]:
        yield from self._sync()
        m = {**m, "at": self.ctx.now()}
        yield from self.ctx.call(_at("pool", self.site), "publish", {"message": m})
        self.world.apply(m)


class SitedPool(PoolStrategy):
    name = PoolStrategy.name
    summary = PoolStrategy.summary
    baseline = PoolStrategy.baseline

    def setup(self, plan: Plan) -> None:
        super().setup(plan)
        self.topology = Topology(self.sim, _windows(plan))
        self.relays: dict[str, PoolRelay] = {}
        for site in sorted(self.topology.windows):
            relay = PoolRelay(self.sim, site)
            relay.local.log = list(self.server.log)
            self.relays[site] = relay
            self.sim.add_node(relay.address, relay)
            self.server.subscribers[relay.address] = 0
        self.topology.install(lambda: None)  # no anti-entropy: a pool only relays

    def client(self, ctx: Any) -> Client:
        c = SitedPoolClient(ctx)
        c.site = self.topology.agents[ctx.name] = str(ctx.cast.config.get("site", HQ))
        return c

    def final_state(self) -> FinalState:
        final = super().final_state()
        sites = {HQ: site_snapshot(final)}
        for site, relay in self.relays.items():
            world = World()
            for m in relay.local.log:
                world.apply(m)
            sites[site] = site_snapshot(_world_state(world))
        final.sites = sites
        return final


def _world_state(world: World) -> FinalState:
    tasks = {t["id"]: FinalTask(t["id"], t["title"], t["status"], t["assignee"], t["claimed_by"], t["work"]) for t in world.known_tasks()}
    return FinalState(tasks, dict(world.files))


# ------------------------------------------------------------------ comity: replicas


class SiteLink:
    """The link between a site's replica and hq's store: a transport that fails while the
    site is cut off (a synchronous call otherwise: the simulation's nodes answer at once)."""

    def __init__(self, topology: Topology, site: str, hq: Callable[[], StoreServer]) -> None:
        self.topology = topology
        self.site = site
        self.hq = hq

    def register(self, address: str, handler: Any) -> None:
        pass

    def request(self, src: str, dest: str, message: Any) -> Any:
        if self.topology.cut_off(self.site) or self.topology.sim.is_down("store"):
            raise Unreachable(f"{self.site} is cut off from {HQ}")
        return Endpoint(self.hq().store).handle(message)

    def send(self, src: str, dest: str, message: Any) -> None:
        try:
            self.request(src, dest, message)
        except Unreachable:
            pass


class ReplicaServer(StoreServer):
    """A site's store process: a replica of hq's store, reaching it over a :class:`SiteLink`."""

    def __init__(self, path: Path, clock: Any, rng: SeededRng, link: SiteLink) -> None:
        self.link = link
        super().__init__(path, clock, rng)

    def _open(self) -> Any:
        store = super()._open()
        store.authority = Upstream(store, transport=self.link)
        return store

    def serve(self, agent: Any, op: str, a: dict[str, Any]) -> Any:
        if op == "commit":  # the fenced write; kept here under a token only hq can judge: not yet an outcome
            w = agent.write(a["key"], a["value"], context=a["context"], task=a["id"], token=a["token"], request_id=a["rid"])
            return {"provisional": True} if w.get("provisional") else None
        return super().serve(agent, op, a)


class SitedComityClient(ComityClient):
    site = HQ

    def _call(self, op: str, **args: Any) -> Gen[Any]:
        return self.ctx.call(_at("store", self.site), op, args)

    def commit(self, grant: Any, key: str, value: Any, basis: Any) -> Gen[None]:
        r = yield from self._call("commit", id=grant.task.id, token=grant.token, key=key, value=value, context=basis.context, rid=self.ctx.request_id())
        if isinstance(r, dict) and r.get("provisional"):
            raise Unknown("commit")  # whether it counts is for hq to decide when it arrives


class SitedComity(ComityStrategy):
    name = ComityStrategy.name
    summary = ComityStrategy.summary
    baseline = ComityStrategy.baseline

    def setup(self, plan: Plan) -> None:
        super().setup(plan)
        self.topology = Topology(self.sim, _windows(plan))
        self.replicas: dict[str, ReplicaServer] = {}
        for site in sorted(self.topology.windows):
            path = self.workdir / f"{site}.db"
            clone(str(self.server.path), path, clock=self.sim.clock, rng=self.rng.fork(f"clone/{site}"))
            link = SiteLink(self.topology, site, lambda: self.server)
            replica = ReplicaServer(path, self.sim.clock, self.rng.fork(f"replica/{site}"), link)
            self.replicas[site] = replica
            self.sim.add_node(_at("store", site), replica)
        self.topology.install(self._tick)

    def _tick(self) -> None:
        for site, replica in self.replicas.items():
            if self.topology.cut_off(site) or self.sim.is_down(_at("store", site)) or self.sim.is_down("store"):
                continue
            try:
                sync(replica.store, Link(replica.link, replica.store.replica_id, "hq"))
            except ComityError:
                pass  # a failed exchange is retried at the next tick

    def client(self, ctx: Any) -> Client:
        c = SitedComityClient(ctx)
        c.site = self.topology.agents[ctx.name] = str(ctx.cast.config.get("site", HQ))
        return c

    def final_state(self) -> FinalState:
        final = self.server.final_state()
        final.sites = {HQ: site_snapshot(final)}
        for site, replica in self.replicas.items():
            final.sites[site] = site_snapshot(replica.final_state())
        return final

    def observe(self) -> FinalState:
        final = self.server.observe()
        final.sites = {}
        return final

    def close(self) -> None:
        for replica in self.replicas.values():
            replica.store.close()
        super().close()


def adapt(strategy: type[Strategy]) -> type[Strategy]:
    """The strategy as a team would run it across sites (see the module docstring)."""
    if issubclass(strategy, ComityStrategy):
        if strategy is ComityStrategy:
            return SitedComity
        if strategy.name == "comity-embedded":
            # comity's other ways of being run: across sites, each site is a replica of hq's store as well
            return type(f"Sited{strategy.__name__}", (SitedComity,), {
                "name": strategy.name, "summary": f"{strategy.summary}; across sites, each remote site a replica of hq's store",
            })  # fmt: skip
        return strategy  # comity's mutants run as they are
    if issubclass(strategy, PoolStrategy):
        return SitedPool
    if issubclass(strategy, FileStrategy):
        return _files_variant(strategy)
    raise TypeError(f"no way to run {strategy.name} across sites")


def _windows(plan: Plan) -> dict[str, tuple[float, float]]:
    from .sim import START

    return {site: (START + a, START + b) for site, (a, b) in plan.sites.items()}


# ------------------------------------------------------------------ the scenario


def _u(rng: SeededRng, lo: int, hi: int) -> int:
    return rng.randint(lo, hi)


def _uniform(rng: SeededRng, lo: float, hi: float) -> float:
    return round(lo + (hi - lo) * rng.random(), 3)


def _partition(rng: SeededRng) -> Any:
    from .scenarios import Setup, _task_units

    tasks = [TaskPlan(f"task-{i}", {"kind": "feature", "steps": _u(rng, 2, 4)}) for i in range(1, _u(rng, 7, 10) + 1)]
    # Migrations need the authority's numbering: those tasks are hq's.
    for i in range(2):
        tasks.append(TaskPlan(f"schema-{i + 1}", {"kind": "feature", "steps": _u(rng, 2, 3), "migration": True}, f"hq-{i + 1}"))
    files = {f"migrations/{k:04d}": {"wid": f"seed.{k}", "unit": f"old-{k}", "by": "history"} for k in (265, 266)}
    sandbox_cut = _uniform(rng, 300, 900)
    site_b_cut = _uniform(rng, 600, 1800)
    sites = {
        "sandbox": (sandbox_cut, sandbox_cut + _uniform(rng, 2400, 5400)),  # an hour or so offline
        "site-b": (site_b_cut, site_b_cut + _uniform(rng, 900, 2700)),
    }
    cast = [
        Cast("hq-1", "implementer", _uniform(rng, 0, 30)),
        Cast("hq-2", "implementer", _uniform(rng, 0, 30)),
        Cast("sandbox-1", "implementer", _uniform(rng, 0, 30), {"site": "sandbox"}),
        Cast("site-b-1", "implementer", _uniform(rng, 0, 30), {"site": "site-b"}),
        Cast("site-b-2", "implementer", _uniform(rng, 0, 30), {"site": "site-b"}),
    ]
    return Setup(Plan(tasks, files, sites=sites), cast, _task_units(tasks))


def _scenario() -> Any:
    from .scenarios import HORIZON_S, Scenario, _profile

    return Scenario(
        "partition",
        "agents that could not talk (an offline sandbox, another site) diverge",
        ("divergence", "lost_update", "duplicate_work", "fencing_violation"),
        "an agent in a sandbox and two agents at a second site work on the board with two at hq; each remote site is"
        " cut off from hq for a while, then healed",
        _partition,
        _profile(),
        HORIZON_S,
        adapt=adapt,
    )


PARTITION = _scenario()

