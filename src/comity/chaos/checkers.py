"""Checkers: what must hold, judged from the history and the final state.

Outcome checkers (what users see):

=====================  ===================================================================
checker                an anomaly is
=====================  ===================================================================
``lost_update``        an acknowledged write that is gone from the final state, replaced
                       by a writer who had not seen it (traced by each value's write id
                       and the id its writer had read); for notes, an acknowledged entry
                       missing from the final list
``duplicate_work``     a task completed (acknowledged) by two different agents
``stale_action``       a claim accepted although, after the read it was based on and
                       before it was made, the task was completed, assigned to another
                       agent, or claimed by another process
``fencing_violation``  a fenced action (checkpoint, commit of work, completion)
                       accepted after another claim of the task superseded the claim it
                       was made under, or after its own claim's completion; or two
                       acknowledged completions of one task
``orphaned_task``      a task still claimed at the end: never finished or released
``impersonation``      an action accepted under another agent's name
``elle_cycle``         on the notes (a list-append workload): a dependency cycle among
                       transactions (write-write, write-read, read-write edges inferred
                       from the final list), a read that is not a prefix of the final
                       list, or an entry appended twice (Alvaro & Kingsbury, "Elle",
                       VLDB 2020)
=====================  ===================================================================

Primitive checkers (whether the mechanisms underneath kept their promises, whatever
the outcome; a checker is trusted only once it has caught a bug, see ``mutants.py``):

=====================  ===================================================================
``sequence``           a number handed to two units of work, or a later allocation not
                       greater than an earlier one; a task id handed out twice
``lease_overlap``      two agents certainly holding one task's lease (or lock, or claim)
                       at the same instant, without an explicit steal
``lease_renewal``      a renewal acknowledged with an expiry short of its TTL, or a lease
                       refused as expired while certainly still valid
``token_order``        a fencing token handed to two grants of one task, or a later
                       grant's token not greater than an earlier one's
``allocation``         one unit of work (a feature) holding two migration numbers
``durability``         after the store restarted: a number or token issued again, or an
                       acknowledged write missing from a read
=====================  ===================================================================

A lease is judged by what a correct authority must guarantee, not by what it
answers: a grant or renewal invoked at ``t`` with TTL ``d`` holds the lease at least
until ``t + d`` (the grant happened after its invocation), unless released.

Timing is judged conservatively from the history's own order: a change counts as
unseen by a read only when it was invoked after the read completed, and as made
before an action only when it completed before the action was invoked.  Operations
whose outcome is unknown (``info``) are never evidence that something was accepted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from .history import Anomaly, History, Op
from .strategies.base import FinalState

__all__ = [
    "CHECKERS", "OUTCOME", "PRIMITIVE", "check", "counts",
    "lost_update", "duplicate_work", "stale_action", "fencing_violation", "orphaned_task", "impersonation", "elle_cycle",
    "sequence", "lease_overlap", "lease_renewal", "token_order", "allocation", "durability", "divergence",
]  # fmt: skip

OK, INFO = "ok", "info"


def _inv_time(h: History, op: Op) -> float:
    return h.invocation(op).time


def lost_update(h: History, final: FinalState) -> list[Anomaly]:
    out: list[Anomaly] = []
    writes = [o for o in h.completed(("create", "commit")) if o.type in (OK, INFO)]
    by_wid = {o.value["wid"]: o for o in writes}
    by_key: dict[str, list[Op]] = defaultdict(list)
    for o in writes:
        by_key[o.value["key"]].append(o)
    for key, ops in by_key.items():
        current = final.files.get(key)
        last = current.get("wid") if isinstance(current, dict) else None
        chain: set[str] = set()
        w = last
        while isinstance(w, str) and w not in chain:
            chain.add(w)
            writer = by_wid.get(w)
            w = writer.value.get("basis") if writer is not None else None
        final_writer = by_wid.get(last) if isinstance(last, str) else None
        for o in ops:
            if o.type == OK and o.value["wid"] not in chain:
                if final_writer is None:
                    by = "nothing"
                else:
                    basis = final_writer.value.get("basis")
                    seen = f"which had read {basis}" if basis else "written without reading it"
                    by = f"{final_writer.process}'s {final_writer.f} (op {final_writer.index}), {seen}"
                out.append(Anomaly(
                    "lost_update", "overwritten",
                    f"{o.process}'s {o.f} of {key} (op {o.index}, value {o.value['wid']}) was acknowledged, but {key} ends as {last}, written by {by}",
                    [o.index] + ([final_writer.index] if final_writer else []),
                ))  # fmt: skip
    appends = [o for o in h.completed("append") if o.type in (OK, INFO)]
    for o in appends:
        if o.type != OK:
            continue
        key, item = o.value["key"], o.value["item"]
        final_list = final.files.get(key)
        if isinstance(final_list, list) and item in final_list:
            continue
        ok_time = o.time
        culprit = next(
            (x for x in appends if x.value["key"] == key and x.type == OK and _inv_time(h, x) > ok_time and item not in x.value["read"]),
            None,
        )
        why = f", dropped by {culprit.process}'s append (op {culprit.index}) written over a read without it" if culprit else ""
        out.append(Anomaly(
            "lost_update", "lost-append", f"{o.process}'s entry {item} in {key} (op {o.index}) was acknowledged but is not in the final {key}{why}",
            [o.index] + ([culprit.index] if culprit else []),
        ))  # fmt: skip
    return out


def _completions(h: History) -> dict[str, list[Op]]:
    done: dict[str, list[Op]] = defaultdict(list)
    for o in h.completed("complete", OK):
        if not o.value.get("replayed"):
            done[o.value["id"]].append(o)
    return done


def duplicate_work(h: History, final: FinalState) -> list[Anomaly]:
    out = []
    for tid, ops in _completions(h).items():
        agents = sorted({o.agent for o in ops})
        if len(agents) > 1:
            title = ops[0].value.get("title")
            out.append(Anomaly(
                "duplicate_work", "completed-twice",
                f"task {title} ({tid}) was done and completed by {len(agents)} agents: {', '.join(agents)}", [o.index for o in ops],
            ))  # fmt: skip
    return out


def stale_action(h: History, final: FinalState) -> list[Anomaly]:
    changes: dict[str, list[Op]] = defaultdict(list)
    for o in h.completed(("complete", "assign", "claim"), OK):
        changes[o.value["id"]].append(o)
    out = []
    for c in h.completed("claim", OK):
        # A client that re-read the task under a lock decided on that read, not the old one; a
        # blind retry decided on nothing it read (what it claimed over, the other checkers judge).
        basis = c.invoke if c.value.get("reread") or c.value.get("blind") else c.value.get("basis", -1)
        if not isinstance(basis, int) or basis < 0 or basis >= len(h):
            continue
        read_done = h[basis].time
        acted = _inv_time(h, c)
        # The most telling change first: closed, then assigned away, then taken.
        for ch in sorted(changes[c.value["id"]], key=lambda x: ("complete", "assign", "claim").index(x.f)):
            if ch.index == c.index or not (_inv_time(h, ch) > read_done and ch.time < acted):
                continue
            if ch.f == "complete":
                what = f"completed by {ch.process} (op {ch.index})"
            elif ch.f == "assign" and ch.value["to"] != c.agent:
                what = f"assigned to {ch.value['to']} by {ch.process} (op {ch.index})"
            elif ch.f == "claim" and ch.process != c.process:
                what = f"claimed by {ch.process} (op {ch.index})"
            else:
                continue
            out.append(Anomaly(
                "stale_action", "claim-on-stale-read",
                f"{c.process}'s claim of {c.value.get('title')} (op {c.index}) was accepted, but after the read it acted on"
                f" (op {basis}) the task was {what}", [basis, ch.index, c.index],
            ))  # fmt: skip
            break
    return out


def fencing_violation(h: History, final: FinalState) -> list[Anomaly]:
    claims: dict[str, list[Op]] = defaultdict(list)
    for o in h.completed("claim", OK):
        claims[o.value["id"]].append(o)
    out = []
    reported: set[tuple[str, int]] = set()  # one anomaly per superseded claim, at its first accepted action
    for o in h.completed(("checkpoint", "commit", "complete"), OK):
        if o.value.get("replayed"):
            continue
        tid, token = o.value["id"], o.value["token"]
        acted = _inv_time(h, o)
        grants = [c for c in claims[tid] if c.agent == o.agent and c.value.get("token") == token and c.time <= acted]
        if not grants or (o.process, grants[-1].index) in reported:
            continue
        grant = grants[-1]
        for c in claims[tid]:
            if c.index != grant.index and grant.time < c.time < acted and (c.process != grant.process or c.value.get("token") != token):
                reported.add((o.process, grant.index))
                out.append(Anomaly(
                    "fencing_violation", "superseded-token",
                    f"{o.process}'s {o.f} of {o.value.get('title')} (op {o.index}) with token {token} was accepted after"
                    f" {c.process}'s claim (op {c.index}, token {c.value.get('token')}) superseded it", [grant.index, c.index, o.index],
                ))  # fmt: skip
                break
    done_at: dict[tuple[str, str, object], Op] = {}
    for o in h.completed("complete", OK):
        done_at.setdefault((o.value["id"], o.agent, o.value.get("token")), o)
    for o in h.completed(("checkpoint", "commit"), OK):
        d = done_at.get((o.value["id"], o.agent, o.value.get("token")))
        if d is not None and d.time < _inv_time(h, o):
            out.append(Anomaly(
                "fencing_violation", "after-completion",
                f"{o.process}'s {o.f} of {o.value.get('title')} (op {o.index}) with token {o.value.get('token')} was accepted after"
                f" its own completion (op {d.index}) had released the claim", [d.index, o.index],
            ))  # fmt: skip
    for tid, ops in _completions(h).items():
        if len(ops) > 1:
            out.append(Anomaly(
                "fencing_violation", "completed-twice",
                f"task {ops[0].value.get('title')} ({tid}) was completed {len(ops)} times: "
                + ", ".join(f"{o.process} token {o.value['token']} (op {o.index})" for o in ops), [o.index for o in ops],
            ))  # fmt: skip
    return out


def orphaned_task(h: History, final: FinalState) -> list[Anomaly]:
    last_claim: dict[str, Op] = {}
    for o in h.completed("claim"):
        if o.type in (OK, INFO):
            last_claim[o.value["id"]] = o
    out = []
    for tid in sorted(final.tasks):
        t = final.tasks[tid]
        if t.status == "claimed":
            c = last_claim.get(tid)
            out.append(Anomaly(
                "orphaned_task", "never-finished",
                f"task {t.title} ({tid}) is still claimed by {t.claimed_by} at the end: never finished or released",
                [c.index] if c else [],
            ))  # fmt: skip
    return out


def impersonation(h: History, final: FinalState) -> list[Anomaly]:
    out = []
    for o in h.completed(type=OK):
        if o.value.get("as") not in (None, o.agent):
            out.append(Anomaly(
                "impersonation", "acted-as-another",
                f"{o.process}'s {o.f} (op {o.index}) was accepted as {o.value['as']}'s", [o.index],
            ))  # fmt: skip
    return out


# ------------------------------------------------------------------- Elle


def _tarjan(nodes: list[int], edges: dict[int, list[tuple[int, str]]]) -> list[list[int]]:
    """Strongly connected components with more than one node (iterative Tarjan)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on.add(v)
            succ = edges.get(v, [])
            if i < len(succ):
                work.append((v, i + 1))
                w = succ[i][0]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def _cycle_in(comp: list[int], edges: dict[int, list[tuple[int, str]]]) -> list[tuple[int, str, int]]:
    """A shortest cycle through the component's first node, as (from, edge kind, to)."""
    members = set(comp)
    start = comp[0]
    prev: dict[int, tuple[int, str]] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, kind in edges.get(v, []):
                if w not in members or w in prev:
                    continue
                prev[w] = (v, kind)
                if w == start:
                    path = []
                    node = start
                    while True:
                        p, k = prev[node]
                        path.append((p, k, node))
                        node = p
                        if node == start:
                            return list(reversed(path))
                nxt.append(w)
        frontier = nxt
    return []


def elle_cycle(h: History, final: FinalState) -> list[Anomaly]:
    txns = [o for o in h.completed(("append", "read")) if o.type in (OK, INFO)]
    keys = sorted({o.value["key"] for o in txns if o.f == "append"})
    out: list[Anomaly] = []
    edges: dict[int, list[tuple[int, str]]] = defaultdict(list)
    nodes: list[int] = []
    for key in keys:
        final_list = final.files.get(key)
        flist = [str(x) for x in final_list] if isinstance(final_list, list) else []
        seen: dict[str, int] = {}
        for x in flist:
            seen[x] = seen.get(x, 0) + 1
        for x in sorted(seen):
            if seen[x] > 1:
                who = [o.index for o in txns if o.f == "append" and o.value["item"] == x]
                out.append(Anomaly("elle_cycle", "duplicate-element", f"{x} appears {seen[x]} times in {key}: appended once, applied twice", who))
        writer: dict[str, int] = {}
        for o in txns:
            if o.f == "append" and o.value["key"] == key and o.value["item"] in seen and o.value["item"] not in writer:
                writer[o.value["item"]] = o.index
        for a, b in zip(flist, flist[1:]):
            if a in writer and b in writer and writer[a] != writer[b]:
                edges[writer[a]].append((writer[b], "ww"))
        for o in txns:
            if o.value["key"] != key:
                continue
            if o.f == "append" and o.type == INFO and o.value["item"] not in writer:
                continue  # unknown and not applied: it did not happen
            if o.f == "read" and o.type != OK:
                continue
            read = [str(x) for x in (o.value["read"] if o.f == "append" else o.value.get("items", []))]
            nodes.append(o.index)
            if flist[: len(read)] != read:
                out.append(Anomaly(
                    "elle_cycle", "incompatible-order",
                    f"{o.process}'s {o.f} (op {o.index}) read {key} as {read}, which is not a prefix of its final value {flist}", [o.index],
                ))  # fmt: skip
                continue
            if read and read[-1] in writer and writer[read[-1]] != o.index:
                edges[writer[read[-1]]].append((o.index, "wr"))
            if len(read) < len(flist):
                nxt = writer.get(flist[len(read)])
                if nxt is not None and nxt != o.index:
                    edges[o.index].append((nxt, "rw"))
    for comp in _tarjan(sorted(set(nodes)), edges):
        cycle = _cycle_in(comp, edges)
        kinds = [k for _, k, _ in cycle]
        rw = kinds.count("rw")
        name = "G0" if set(kinds) == {"ww"} else "G1c" if rw == 0 else "G-single" if rw == 1 else "G2"
        steps = " ".join(f"op {a} -{k}->" for a, k, _ in cycle) + (f" op {cycle[0][0]}" if cycle else "")
        out.append(Anomaly("elle_cycle", name, f"a {name} cycle among {len(comp)} transactions: {steps}", comp))
    return out


# ------------------------------------------------------------ primitives


def sequence(h: History, final: FinalState) -> list[Anomaly]:
    out: list[Anomaly] = []
    by_seq: dict[str, list[Op]] = defaultdict(list)
    for o in h.completed("next", OK):
        by_seq[o.value["seq"]].append(o)
    for seq, ops in sorted(by_seq.items()):
        holders: dict[int, dict[str, Op]] = defaultdict(dict)
        first: dict[str, Op] = {}
        for o in ops:
            unit = str(o.value.get("unit", o.index))
            holders[o.value["n"]].setdefault(unit, o)
            first.setdefault(unit, o)
        for n, units in sorted(holders.items()):
            if len(units) > 1:
                who = ", ".join(f"{u} ({o.process}, op {o.index})" for u, o in sorted(units.items()))
                out.append(Anomaly("sequence", "issued-twice", f"{seq} number {n} was handed to {len(units)} units of work: {who}",
                                   [o.index for o in units.values()]))  # fmt: skip
        firsts = sorted(first.values(), key=lambda o: o.time)
        for a in firsts:
            later = next((b for b in firsts if _inv_time(h, b) > a.time and b.value["n"] <= a.value["n"]), None)
            if later is not None and len(holders[later.value["n"]]) == 1:  # (a number issued twice is reported above)
                out.append(Anomaly(
                    "sequence", "not-increasing",
                    f"{seq}: {later.process} got {later.value['n']} (op {later.index}) after {a.process} had got {a.value['n']} (op {a.index})",
                    [a.index, later.index],
                ))  # fmt: skip
                break
    ids: dict[str, list[Op]] = defaultdict(list)
    for o in h.completed("add", OK):
        ids[str(o.value.get("id"))].append(o)
    for tid, ops in sorted(ids.items()):
        titles = {str(o.value.get("title")) for o in ops}
        if len(titles) > 1:
            out.append(Anomaly("sequence", "id-issued-twice", f"task id {tid} was given to {len(titles)} tasks: {', '.join(sorted(titles))}",
                               [o.index for o in ops]))  # fmt: skip
    return out


class _Grant:
    """One acknowledged claim of a task: the lease it took, its renewals, its end."""

    __slots__ = ("resource", "agent", "token", "claim", "ttl", "steal", "renewals", "ends", "refusals")

    def __init__(self, claim: Op, inv: float) -> None:
        self.resource: str = claim.value["id"]
        self.agent = claim.agent
        self.token = claim.value.get("token")
        self.claim = claim
        ttl = claim.value.get("ttl")
        self.ttl = float(ttl) if isinstance(ttl, (int, float)) else float("inf")
        self.steal = bool(claim.value.get("steal"))
        self.renewals: list[tuple[float, float, Op]] = [(inv, claim.time, claim)]  # (invoked, acknowledged, op)
        self.ends: list[float] = []  # invocation times of what may have released it
        self.refusals: list[tuple[float, float, Op]] = []  # fenced actions refused as expired

    def certain_end(self, t: float) -> float:
        """Until when the lease was certainly held, by what was acknowledged by ``t``."""
        return max(inv + self.ttl for inv, ack, _ in self.renewals if ack <= t)

    def held_at(self, t: float) -> bool:
        return self.claim.time <= t < self.certain_end(t) and not any(e <= t for e in self.ends)


def _grants(h: History) -> dict[str, list[_Grant]]:
    grants: dict[tuple[str, str, object], _Grant] = {}
    out: dict[str, list[_Grant]] = defaultdict(list)
    for o in h.completed("claim", OK):
        key = (o.value["id"], o.agent, o.value.get("token"))
        if key not in grants:
            g = grants[key] = _Grant(o, _inv_time(h, o))
            out[g.resource].append(g)
    for o in h.completed(("checkpoint", "commit", "complete", "release")):
        found = grants.get((o.value["id"], o.agent, o.value.get("token")))
        if found is None:
            continue
        g = found
        inv = _inv_time(h, o)
        if o.f == "checkpoint" and o.type == OK and "ttl" in o.value:
            g.renewals.append((inv, o.time, o))
        if o.f in ("complete", "release") and o.type in (OK, INFO):
            g.ends.append(inv)
        if o.type == "fail" and o.value.get("error") == "lease_expired":
            g.refusals.append((inv, o.time, o))
    return out


def lease_overlap(h: History, final: FinalState) -> list[Anomaly]:
    out: list[Anomaly] = []
    for resource, gs in sorted(_grants(h).items()):
        gs.sort(key=lambda g: g.claim.time)
        for j, g2 in enumerate(gs):
            if g2.steal:
                continue
            t = g2.claim.time
            for g1 in gs[:j]:
                if g1.agent != g2.agent and g1.held_at(t):
                    out.append(Anomaly(
                        "lease_overlap", "two-holders",
                        f"{g2.claim.process} was granted {g2.claim.value.get('title')} (op {g2.claim.index}, token {g2.token}) while"
                        f" {g1.claim.process}'s grant (op {g1.claim.index}, token {g1.token}) certainly held it until"
                        f" t={g1.certain_end(t):.1f}", [g1.claim.index, g2.claim.index],
                    ))  # fmt: skip
                    break
    return out


def lease_renewal(h: History, final: FinalState) -> list[Anomaly]:
    out: list[Anomaly] = []
    grants = _grants(h)
    steals: dict[str, list[Op]] = defaultdict(list)
    for o in h.completed("claim"):
        if o.value.get("steal") and o.type in (OK, INFO):
            steals[o.value["id"]].append(o)
    for resource, gs in sorted(grants.items()):
        for g in gs:
            for inv, ack, r in g.renewals[1:]:
                expires = r.value.get("expires")
                if isinstance(expires, (int, float)) and expires < inv + g.ttl - 1e-6:
                    out.append(Anomaly(
                        "lease_renewal", "not-extended",
                        f"{r.process}'s renewal of {r.value.get('title')} (op {r.index}) was acknowledged with its lease ending at"
                        f" t={expires:.1f}, short of t={inv + g.ttl:.1f} (invoked at {inv:.1f}, TTL {g.ttl:.0f}s)", [r.index],
                    ))  # fmt: skip
            for inv, ack, r in g.refusals:
                if ack < g.certain_end(inv) and not any(e <= ack for e in g.ends):
                    if any(_inv_time(h, s) <= ack for s in steals[resource]):
                        continue  # taken explicitly: a steal ends a lease by design
                    out.append(Anomaly(
                        "lease_renewal", "ended-early",
                        f"{r.process}'s {r.f} of {r.value.get('title')} (op {r.index}) was refused as {r.value.get('error')} at"
                        f" t={ack:.1f}, but its lease (op {g.claim.index}) certainly held until t={g.certain_end(inv):.1f}",
                        [g.claim.index, r.index],
                    ))  # fmt: skip
                    break
    return out


def token_order(h: History, final: FinalState) -> list[Anomaly]:
    out: list[Anomaly] = []
    for resource, gs in sorted(_grants(h).items()):
        with_tokens = [g for g in gs if isinstance(g.token, int)]
        seen: dict[int, _Grant] = {}
        for g in with_tokens:
            other = seen.get(g.token)  # type: ignore[arg-type]
            if other is not None and other.agent != g.agent:
                out.append(Anomaly(
                    "token_order", "token-reused",
                    f"token {g.token} for {g.claim.value.get('title')} was granted to {other.claim.process} (op {other.claim.index})"
                    f" and to {g.claim.process} (op {g.claim.index})", [other.claim.index, g.claim.index],
                ))  # fmt: skip
                break
            seen.setdefault(g.token, g)  # type: ignore[arg-type]
        else:
            for a in with_tokens:
                b = next((b for b in with_tokens if _inv_time(h, b.claim) > a.claim.time and b.token <= a.token), None)  # type: ignore[operator]
                if b is not None:
                    out.append(Anomaly(
                        "token_order", "not-increasing",
                        f"{b.claim.process}'s claim of {b.claim.value.get('title')} (op {b.claim.index}) got token {b.token} after"
                        f" {a.claim.process}'s (op {a.claim.index}) had got {a.token}", [a.claim.index, b.claim.index],
                    ))  # fmt: skip
                    break
    return out


def allocation(h: History, final: FinalState) -> list[Anomaly]:
    by_unit: dict[str, list[str]] = defaultdict(list)
    for key, v in sorted(final.files.items()):
        if key.startswith("migrations/") and isinstance(v, dict) and v.get("by") != "history":
            by_unit[str(v.get("unit"))].append(key)
    out = []
    creates: dict[str, list[int]] = defaultdict(list)
    for o in h.completed("create", OK):
        creates[o.value["key"]].append(o.index)
    for unit, keys in sorted(by_unit.items()):
        if len(keys) > 1:
            out.append(Anomaly("allocation", "two-numbers", f"{unit} holds {len(keys)} migration numbers: {', '.join(keys)}",
                               [i for k in keys for i in creates.get(k, [])[:1]]))  # fmt: skip
    return out


def durability(h: History, final: FinalState) -> list[Anomaly]:
    restarts = [o for o in h if o.type == INFO and o.f == "restart"]
    if not restarts:
        return []
    out: list[Anomaly] = []
    nexts = h.completed("next", OK)
    claims = h.completed("claim", OK)
    writes = [o for o in h.completed(("create", "commit"), OK)]
    appends = h.completed("append", OK)
    reads = h.completed("read", OK)
    for r in restarts:
        tr = r.time
        before: dict[str, Op] = {}
        for o in nexts:
            if o.time < tr and (o.value["seq"] not in before or o.value["n"] > before[o.value["seq"]].value["n"]):
                before[o.value["seq"]] = o
        for o in nexts:
            b = before.get(o.value["seq"])
            if b is not None and _inv_time(h, o) > tr and o.value["n"] <= b.value["n"] and o.value.get("unit") != b.value.get("unit"):
                held = [x for x in nexts if x.value.get("unit") == o.value.get("unit") and x.time < tr]
                if not held:
                    out.append(Anomaly("durability", "number-reissued",
                                       f"{o.process} got {o.value['seq']} number {o.value['n']} (op {o.index}) after the store restarted"
                                       f" (op {r.index}), though {b.value['n']} was issued before it (op {b.index})", [b.index, r.index, o.index]))  # fmt: skip
        top: dict[str, Op] = {}
        for o in claims:
            if o.time < tr and isinstance(o.value.get("token"), int):
                t = top.get(o.value["id"])
                if t is None or o.value["token"] > t.value["token"]:
                    top[o.value["id"]] = o
        for o in claims:
            t = top.get(o.value["id"])
            if t is not None and _inv_time(h, o) > tr and isinstance(o.value.get("token"), int) and o.value["token"] <= t.value["token"] and o.agent != t.agent:
                out.append(Anomaly("durability", "token-reissued",
                                   f"{o.process}'s claim of {o.value.get('title')} got token {o.value['token']} (op {o.index}) after the store"
                                   f" restarted (op {r.index}), though token {t.value['token']} was granted before (op {t.index})",
                                   [t.index, r.index, o.index]))  # fmt: skip
        for rd in reads:
            if _inv_time(h, rd) <= tr:
                continue
            key = rd.value["key"]
            if "items" in rd.value:
                items = [str(x) for x in rd.value["items"]]
                for a in appends:
                    if a.value["key"] != key or a.time >= tr or str(a.value["item"]) in items:
                        continue
                    overwriters = [x for x in appends if x.value["key"] == key and x.index != a.index and _inv_time(h, x) > _inv_time(h, a)
                                   and x.time < _inv_time(h, rd) and str(a.value["item"]) not in [str(i) for i in x.value.get("read", [])]]
                    if not overwriters:
                        out.append(Anomaly("durability", "write-lost",
                                           f"{a.process}'s entry {a.value['item']} in {key} (op {a.index}) was acknowledged before the store"
                                           f" restarted (op {r.index}); {rd.process}'s read after it (op {rd.index}) does not have it",
                                           [a.index, r.index, rd.index]))  # fmt: skip
                        break
            elif rd.value.get("wid") is None:
                lost = next((w for w in writes if w.value["key"] == key and w.time < tr), None)
                if lost is not None:
                    out.append(Anomaly("durability", "write-lost",
                                       f"{lost.process}'s {lost.f} of {key} (op {lost.index}) was acknowledged before the store restarted"
                                       f" (op {r.index}); {rd.process}'s read after it (op {rd.index}) found nothing", [lost.index, r.index, rd.index]))  # fmt: skip
    return out


def divergence(h: History, final: FinalState) -> list[Anomaly]:
    """After the heal: every site must hold what hq holds (files, and each task's state)."""
    if len(final.sites) < 2:
        return []
    ref = final.sites.get("hq") or next(iter(final.sites.values()))
    out = []
    for site, snap in sorted(final.sites.items()):
        if snap == ref:
            continue
        files = sorted(k for k in set(ref["files"]) | set(snap["files"]) if ref["files"].get(k) != snap["files"].get(k))
        tasks = sorted(k for k in set(ref["tasks"]) | set(snap["tasks"]) if ref["tasks"].get(k) != snap["tasks"].get(k))
        what = ", ".join([*(f"file {k}" for k in files[:3]), *(f"task {k}" for k in tasks[:3])])
        more = len(files) + len(tasks) - min(3, len(files)) - min(3, len(tasks))
        out.append(Anomaly(
            "divergence", "after-heal",
            f"after the heal, {site} still differs from hq: {what}{f' and {more} more' if more > 0 else ''}", [],
        ))  # fmt: skip
    return out


OUTCOME = ("lost_update", "duplicate_work", "stale_action", "fencing_violation", "orphaned_task", "impersonation", "elle_cycle", "divergence")
PRIMITIVE = ("sequence", "lease_overlap", "lease_renewal", "token_order", "allocation", "durability")

# The registry: add a checker here (a function of the history and the final state) and
# every report, run and mutant run judges by it.
CHECKERS: dict[str, Callable[[History, FinalState], list[Anomaly]]] = {
    "lost_update": lost_update,
    "duplicate_work": duplicate_work,
    "stale_action": stale_action,
    "fencing_violation": fencing_violation,
    "orphaned_task": orphaned_task,
    "impersonation": impersonation,
    "elle_cycle": elle_cycle,
    "sequence": sequence,
    "lease_overlap": lease_overlap,
    "lease_renewal": lease_renewal,
    "token_order": token_order,
    "allocation": allocation,
    "durability": durability,
    "divergence": divergence,
}


def check(h: History, final: FinalState, only: tuple[str, ...] | None = None) -> list[Anomaly]:
    out: list[Anomaly] = []
    for name, fn in CHECKERS.items():
        if only is None or name in only:
            out += fn(h, final)
    return out


def counts(anomalies: list[Anomaly]) -> dict[str, int]:
    out = {name: 0 for name in CHECKERS}
    for a in anomalies:
        out[a.checker] += 1
    return out
