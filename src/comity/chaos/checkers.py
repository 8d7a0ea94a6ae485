"""Checkers: what must hold, judged from the history and the final state.

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
                       was made under; or two acknowledged completions of one task
``orphaned_task``      a task still claimed at the end: never finished or released
``elle_cycle``         on the notes (a list-append workload): a dependency cycle among
                       transactions (write-write, write-read, read-write edges inferred
                       from the final list), a read that is not a prefix of the final
                       list, or an entry appended twice (Alvaro & Kingsbury, "Elle",
                       VLDB 2020)
=====================  ===================================================================

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

__all__ = ["CHECKERS", "check", "lost_update", "duplicate_work", "stale_action", "fencing_violation", "orphaned_task", "elle_cycle", "counts"]

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
        basis = c.value.get("basis", -1)
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


CHECKERS: dict[str, Callable[[History, FinalState], list[Anomaly]]] = {
    "lost_update": lost_update,
    "duplicate_work": duplicate_work,
    "stale_action": stale_action,
    "fencing_violation": fencing_violation,
    "orphaned_task": orphaned_task,
    "elle_cycle": elle_cycle,
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
