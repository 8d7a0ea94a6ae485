"""The workloads: what each process does (a generator of operations against the real
store, recorded as it goes) and the offline checker that judges the history together
with the store's log once every process has stopped.

Every checker looks at primitives as well as outcomes: the log's own record of each key
(consecutive values under compare-and-set, one create per key, consecutive sequence
numbers, one accepted completion per task under the current token) and the history's
real-time order (a read that began after a write was acknowledged sees it).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..coord import next_number
from ..errors import ComityError, Fenced, LeaseExpired, NotFound, StaleContext, Unavailable
from ..store import Session, Store
from ..work import Board
from .history import Op, Recorder, completed

__all__ = ["WORKLOADS", "Workload", "Final", "Worker"]

T = TypeVar("T")
RETRIES = 8  # an op whose answer was lost is retried with its request id this many times
REFUSED = (StaleContext, Fenced, LeaseExpired, NotFound)


@dataclass(slots=True)
class Worker:
    """What a worker process knows: its store, its number, its role and its history."""

    store: Store
    process: int
    slot: int  # a stable place (restarted processes take the slot of the one they replace)
    role: str
    rng: random.Random
    rec: Recorder
    deadline: float  # wall-clock seconds
    lease_s: float
    signals: Path  # a directory the runner writes signal files into

    def running(self) -> bool:
        return time.time() < self.deadline

    def rid(self, i: int) -> str:
        return f"p{self.process}.{i}"


def attempt(
    w: Worker, f: str, value: Any, fn: Callable[[], Any], *, retry: bool = True, shown: Callable[[Any], Any] = lambda r: r
) -> tuple[str, Any]:
    """Invoke ``fn``, record its outcome (``shown(result)`` in the history); a lost answer is
    retried (the op carries a request id, so a retry returns the recorded outcome) until
    answered, else it stays ``info``."""
    i = w.rec.invoke(f, value)
    last = ""
    for _ in range(RETRIES if retry else 1):
        try:
            result = fn()
        except REFUSED as e:
            w.rec.complete(i, "fail", None, type(e).__name__)
            return "fail", e
        except Unavailable as e:
            last = f"Unavailable: {e.message[:120]}"
            time.sleep(0.02)
            continue
        except ComityError as e:  # Invalid: a bug in the workload or the store; say so
            w.rec.complete(i, "fail", None, f"{type(e).__name__}: {e.message[:200]}")
            return "fail", e
        w.rec.complete(i, "ok", shown(result))
        return "ok", result
    w.rec.complete(i, "info", None, last)
    return "info", None


def steady(fn: Callable[[], T]) -> T:
    """``fn()`` retried while the store is unavailable (a process's set-up and wind-down,
    which are not operations of the history)."""
    for attempt in range(200):
        try:
            return fn()
        except Unavailable:
            if attempt == 199:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


@dataclass(slots=True)
class Final:
    """What the checker reads from the store after every process stopped."""

    log: list[dict[str, Any]]  # every event, with values
    values: dict[str, list[Any]] = field(default_factory=dict)  # key -> live values
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Workload:
    name: str
    summary: str
    worker: Callable[[Worker], None]
    check: Callable[[list[Op], Final], dict[str, Any]]
    keys: Callable[[], list[str]] = lambda: []  # keys whose final values the checker needs
    setup: Callable[[Store, int], None] | None = None
    roles: Callable[[int], list[str]] = lambda n: ["worker"] * n
    kill_roles: tuple[str, ...] = ("worker",)  # whose processes the nemesis may SIGKILL
    exactly_once: bool = True


def _pairs(history: list[Op], f: str) -> list[tuple[Op, Op]]:
    return [(i, c) for i, c in completed(history) if i.f == f]


def _result(anomalies: list[str], **stats: Any) -> dict[str, Any]:
    return {"valid": not anomalies, "anomalies": anomalies[:20], "anomaly_count": len(anomalies), **stats}


def _by_key(log: list[dict[str, Any]], prefix: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in log:
        if e["key"].startswith(prefix):
            out.setdefault(e["key"], []).append(e)
    return out


# ------------------------------------------------------------------ register


REGISTERS = [f"jepsen/r{k}" for k in range(3)]


def register_worker(w: Worker) -> None:
    s = steady(lambda: w.store.session(f"p{w.process}"))
    while w.running():
        key = w.rng.choice(REGISTERS)
        outcome, v = attempt(w, "read", {"key": key}, lambda: s.get(key), shown=lambda v: (v.values or [0])[0])
        if outcome != "ok":
            continue
        current = (v.values or [0])[0]
        rid = w.rid(w.rec.next_index)
        cas = {"key": key, "from": current, "to": current + 1, "rid": rid}
        attempt(w, "cas", cas, lambda: s.put(key, current + 1, context=v.context, request_id=rid).pos)


def _read_values(history: list[Op]) -> list[tuple[Op, Op]]:
    return [(i, c) for i, c in _pairs(history, "read") if c.type == "ok"]


def register_check(history: list[Op], final: Final) -> dict[str, Any]:
    anomalies: list[str] = []
    events = _by_key(final.log, "jepsen/r")
    cas = _pairs(history, "cas")
    by_rid = {e["request_id"]: e for es in events.values() for e in es}
    for key, es in events.items():
        # Every write was a compare-and-set over the value read: the log must count 1, 2, 3, …
        values = [e.get("value") for e in es]
        if values != list(range(1, len(values) + 1)):
            anomalies.append(f"{key}: the log's values are not consecutive (lost update or duplicate): {values[:12]}…")
        live = final.values.get(key, [])
        if live != ([len(values)] if values else []):
            anomalies.append(f"{key}: final value {live} but the log holds {len(values)} writes")
    for inv, c in cas:
        e = by_rid.get(inv.value["rid"])
        if c.type == "ok" and (e is None or e.get("value") != inv.value["to"]):
            anomalies.append(f"acknowledged cas {inv.value} is not in the log as written")
        if c.type == "fail" and e is not None:
            anomalies.append(f"refused cas {inv.value} is in the log at {e['pos']}")
    # Real time: a read that began after a cas was acknowledged sees its value or a later one.
    acked: dict[str, list[tuple[int, int]]] = {}
    for inv, c in cas:
        if c.type == "ok":
            acked.setdefault(inv.value["key"], []).append((c.time, inv.value["to"]))
    for inv, c in _read_values(history):
        got = c.value
        must = max((to for t, to in acked.get(inv.value["key"], []) if t < inv.time), default=0)
        if got < must:
            anomalies.append(f"stale read of {inv.value['key']}: {got} after {must} was acknowledged")
    kinds = Counter(c.type for _, c in cas)
    return _result(anomalies, cas_ok=kinds["ok"], cas_fail=kinds["fail"], cas_info=kinds["info"], writes=sum(map(len, events.values())))


# ------------------------------------------------------------------- create


def create_worker(w: Worker) -> None:
    s = steady(lambda: w.store.session(f"p{w.process}"))
    done = -1
    while w.running():
        slot = int(time.time() * 20)  # every process races for one key per 50 ms
        if slot == done:
            time.sleep(0.002)
            continue
        done = slot
        key = f"jepsen/c/{slot}"
        rid = w.rid(w.rec.next_index)
        attempt(w, "create", {"key": key, "rid": rid, "by": w.process}, lambda: s.create(key, w.process, request_id=rid).pos)


def create_check(history: list[Op], final: Final) -> dict[str, Any]:
    anomalies: list[str] = []
    creates = _pairs(history, "create")
    events = _by_key(final.log, "jepsen/c/")
    oks: dict[str, list[int]] = {}
    for inv, c in creates:
        if c.type == "ok":
            oks.setdefault(inv.value["key"], []).append(inv.value["by"])
        if c.type == "fail" and c.error != "StaleContext":
            anomalies.append(f"create of {inv.value['key']} failed with {c.error}, not StaleContext")
    for key, who in oks.items():
        if len(who) > 1:
            anomalies.append(f"{key}: {len(who)} creates acknowledged ({who})")
        if final.values.get(key) != [who[0]]:
            anomalies.append(f"{key}: holds {final.values.get(key)} but {who[0]}'s create was acknowledged")
    for key, es in events.items():
        if len(es) != 1:
            anomalies.append(f"{key}: {len(es)} creates in the log")
    races = Counter(inv.value["key"] for inv, _ in creates)
    return _result(anomalies, keys=len(races), contested=sum(1 for n in races.values() if n > 1),
                   acknowledged=sum(map(len, oks.values())))  # fmt: skip


# ----------------------------------------------------------------- sequence


def sequence_worker(w: Worker) -> None:
    s = steady(lambda: w.store.session(f"p{w.process}"))
    while w.running():
        attempt(w, "next", None, lambda: next_number(s, "jepsen"), retry=False)


def sequence_check(history: list[Op], final: Final) -> dict[str, Any]:
    anomalies: list[str] = []
    issued = [e for e in final.log if e["key"] == "@seq/jepsen"]
    values = [e.get("value") for e in issued]
    if values != list(range(1, len(values) + 1)):
        anomalies.append(f"the log's sequence is not 1, 2, 3, …: {values[:12]}")
    got = [c.value for _, c in _pairs(history, "next") if c.type == "ok"]
    dup = [v for v, n in Counter(got).items() if n > 1]
    if dup:
        anomalies.append(f"numbers handed out twice: {dup[:10]}")
    missing = sorted(set(got) - set(values))
    if missing:
        anomalies.append(f"numbers acknowledged but not in the log: {missing[:10]}")
    per: dict[int, list[int]] = {}
    for inv, c in _pairs(history, "next"):
        if c.type == "ok":
            per.setdefault(inv.process, []).append(c.value)
    for p, vs in per.items():
        if vs != sorted(vs):
            anomalies.append(f"process {p} got decreasing numbers: {vs[:10]}")
    return _result(anomalies, acknowledged=len(got), issued=len(values))


# -------------------------------------------------------------------- board


def board_setup(store: Store, tasks: int) -> None:
    b = Board(store.session("triage"))
    for k in range(tasks):
        b.add(f"job {k}")


def board_worker(w: Worker) -> None:
    b = Board(steady(lambda: w.store.session(f"p{w.process}")))
    while w.running():
        outcome, c = attempt(w, "claim", None, lambda: b.claim_next(ttl=w.lease_s), retry=False,
                             shown=lambda c: {"task": c.task["id"], "token": c.token})  # fmt: skip
        if outcome != "ok":
            time.sleep(0.02)
            continue
        tid, token = c.task["id"], c.token
        time.sleep(w.rng.uniform(0, w.lease_s * 0.8))  # work (a SIGSTOP here outlives the lease)
        attempt(w, "done", {"task": tid, "token": token}, lambda: b.done(tid, token, result=f"p{w.process}")["state"])


def board_check(history: list[Op], final: Final) -> dict[str, Any]:
    anomalies: list[str] = []
    done_events: dict[str, list[dict[str, Any]]] = {}
    leases: dict[str, list[dict[str, Any]]] = {}
    current: dict[str, int] = {}  # task -> token of its latest grant, as the log is replayed
    for e in final.log:
        key = e["key"]
        if key.startswith("@lease/@task/"):
            tid = key.removeprefix("@lease/@task/")
            if e["op"] in ("acquire", "steal"):
                leases.setdefault(tid, []).append(e)
                current[tid] = e["token"]
        elif key.startswith("@task/") and e["op"] == "task.done":
            tid = key.removeprefix("@task/")
            done_events.setdefault(tid, []).append(e)
            tok = (e.get("value") or {}).get("done_token")
            if tok is not None and current.get(tid) != tok:
                anomalies.append(f"{tid}: completion at {e['pos']} under token {tok} while token {current.get(tid)} was current")
    for tid, es in done_events.items():
        if len(es) > 1:
            anomalies.append(f"{tid}: completed {len(es)} times ({[x['agent'] for x in es]})")
    for tid, es in leases.items():
        tokens = [x["token"] for x in es]
        if tokens != sorted(set(tokens)):
            anomalies.append(f"{tid}: fencing tokens not strictly increasing: {tokens}")
    oks = [(inv, c) for inv, c in _pairs(history, "done") if c.type == "ok"]
    for inv, _ in oks:
        rec = final.tasks.get(inv.value["task"], {})
        if rec.get("done_token") != inv.value["token"] or rec.get("completed_by") != f"p{inv.process}":
            anomalies.append(f"{inv.value['task']}: p{inv.process}'s done with token {inv.value['token']} was acknowledged,"
                             f" but the task says {rec.get('completed_by')} with {rec.get('done_token')}")  # fmt: skip
    kinds = Counter((c.type, c.error) for _, c in _pairs(history, "done"))
    return _result(
        anomalies,
        completed=len(done_events),
        done_ok=sum(n for (t, _), n in kinds.items() if t == "ok"),
        done_fenced=kinds[("fail", "Fenced")],
        done_expired=kinds[("fail", "LeaseExpired")],
        done_info=sum(n for (t, _), n in kinds.items() if t == "info"),
        claims=sum(len(x) for x in leases.values()),
    )


# --------------------------------------------------------------------- crdt


def crdt_worker(w: Worker) -> None:
    s = steady(lambda: w.store.session(f"p{w.process}"))
    n = 0
    while w.running():
        pick = w.rng.random()
        if pick < 0.4:
            rid = w.rid(w.rec.next_index)
            attempt(w, "inc", {"rid": rid}, lambda: s.update("jepsen/count", "inc", 1, type="pncounter", request_id=rid).pos)
        elif pick < 0.8:
            rid = w.rid(w.rec.next_index)
            item = f"p{w.process}-{n}"
            n += 1
            attempt(w, "add", {"rid": rid, "item": item}, lambda: s.update("jepsen/set", "add", item, type="orset", request_id=rid).pos)
        else:
            attempt(w, "read", None, lambda: (s.get("jepsen/count").values or [0])[0])


def crdt_check(history: list[Op], final: Final) -> dict[str, Any]:
    anomalies: list[str] = []
    inc = Counter(c.type for _, c in _pairs(history, "inc"))
    count = (final.values.get("jepsen/count") or [0])[0]
    if not inc["ok"] <= count <= inc["ok"] + inc["info"]:
        anomalies.append(f"counter is {count}: {inc['ok']} increments acknowledged, {inc['info']} unknown")
    adds = _pairs(history, "add")
    members = set((final.values.get("jepsen/set") or [[]])[0])
    lost = [inv.value["item"] for inv, c in adds if c.type == "ok" and inv.value["item"] not in members]
    if lost:
        anomalies.append(f"acknowledged adds missing from the set: {lost[:10]}")
    tried = {inv.value["item"] for inv, _ in adds}
    phantom = sorted(members - tried)
    if phantom:
        anomalies.append(f"set members nobody added: {phantom[:10]}")
    refused = [c for _, c in adds if c.type == "fail"] + [c for _, c in _pairs(history, "inc") if c.type == "fail"]
    if refused:
        anomalies.append(f"{len(refused)} CRDT updates refused (they never should be): {refused[0].error}")
    # A read that began after k increments were acknowledged sees at least k.
    acks = sorted(c.time for _, c in _pairs(history, "inc") if c.type == "ok")
    for inv, c in _pairs(history, "read"):
        if c.type == "ok":
            k = sum(1 for t in acks if t < inv.time)
            if c.value < k:
                anomalies.append(f"a read saw {c.value} after {k} increments were acknowledged")
                break
    return _result(anomalies, increments_ok=inc["ok"], increments_info=inc["info"], count=count, members=len(members))


# --------------------------------------------------------------------- news

SHARED = [f"jepsen/n/shared{k}" for k in range(4)]


def news_roles(n: int) -> list[str]:
    observers = max(1, n // 2)
    return ["observer"] * observers + ["writer"] * (n - observers)


def news_worker(w: Worker) -> None:
    if w.role == "writer":
        s = steady(lambda: w.store.session(f"w{w.process}"))
        k = 0
        while w.running():
            rid = w.rid(w.rec.next_index)
            if w.rng.random() < 0.5:
                key = w.rng.choice(SHARED)
                attempt(w, "write", {"key": key, "rid": rid}, lambda: s.put(key, k, keep_both=True, request_id=rid).pos)
            else:  # a key nobody else touches: news() must carry it, and only once
                key = f"jepsen/n/p{w.process}/{k}"
                attempt(w, "write", {"key": key, "rid": rid}, lambda: s.create(key, k, request_id=rid).pos)
            k += 1
        return
    name = f"obs{w.slot}"
    s = steady(lambda: w.store.session(f"o{w.slot}", name=name))
    w.rec.note("start", {"session": name, "position": s.position, "process": w.process})
    own = f"jepsen/n/own{w.slot}"

    def delivered(news: list[dict[str, Any]], truncated: bool = False) -> dict[str, Any]:
        return {"session": name, "news": [e["pos"] for e in news if e["session"] != name], "truncated": truncated}

    while w.running():
        pick = w.rng.random()
        if pick < 0.4:
            key = w.rng.choice(SHARED)
            attempt(w, "read", {"session": name}, lambda: delivered(s.get(key).news), retry=False)
        elif pick < 0.6:
            rid = w.rid(w.rec.next_index)
            attempt(w, "write", {"session": name, "rid": rid}, lambda: delivered(s.put(own, 1, keep_both=True, request_id=rid).news))
        # the agent that calls news() after every operation
        limit = w.rng.choice([1, 5, 50])
        attempt(w, "news", {"session": name}, lambda: _news(s, limit, delivered), retry=False)
    # Drain once the writers have stopped: everything up to the head, then say where that was.
    while not (w.signals / "writers-done").exists():
        time.sleep(0.01)
    for _ in range(10_000):
        outcome, got = attempt(w, "news", {"session": name}, lambda: _news(s, 1000, delivered), retry=False)
        if outcome == "ok" and not got["news"] and not got["truncated"]:
            break
    w.rec.note("end", {"session": name, "head": s.position})  # everything up to here was delivered
    steady(s.close)


def _news(s: Session, limit: int, delivered: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    n = s.news(limit=limit)
    return delivered(n.events, n.truncated)


def news_check(history: list[Op], final: Final, *, exactly_once: bool = True) -> dict[str, Any]:
    anomalies: list[str] = []
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    got: dict[str, list[int]] = {}
    for inv, c in completed(history):
        if c.type != "ok" or not isinstance(c.value, dict) or "session" not in c.value:
            continue
        name = c.value["session"]
        if inv.f == "start":
            starts.setdefault(name, c.value["position"])  # a restarted process resumes; the first start counts
        elif inv.f == "end":
            ends[name] = c.value["head"]
        elif "news" in c.value:
            ps = c.value["news"]
            if ps != sorted(ps):
                anomalies.append(f"{name}: an answer's news is out of log order: {ps[:10]}")
            got.setdefault(name, []).extend(ps)
    duplicates = skipped = 0
    for name, start in starts.items():
        end = ends.get(name)
        if end is None:
            anomalies.append(f"{name}: never drained (its process did not finish)")
            continue
        expected = [e["pos"] for e in final.log if start < e["pos"] <= end and e["session"] != name]
        seen = Counter(p for p in got.get(name, []) if p <= end)
        dup = sorted(p for p, n in seen.items() if n > 1)
        miss = sorted(set(expected) - set(seen))
        extra = sorted(set(seen) - set(expected))
        duplicates += len(dup)
        skipped += len(miss)
        if miss:
            anomalies.append(f"{name}: {len(miss)} events never delivered, e.g. {miss[:8]}")
        if extra:
            anomalies.append(f"{name}: delivered events it should not have: {extra[:8]}")
        if dup and exactly_once:
            anomalies.append(f"{name}: {len(dup)} events delivered more than once, e.g. {dup[:8]}")
    delivered_total = sum(len(v) for v in got.values())
    return _result(anomalies, sessions=len(starts), delivered=delivered_total, skipped=skipped, duplicates=duplicates)


def news_restart_check(history: list[Op], final: Final) -> dict[str, Any]:
    return news_check(history, final, exactly_once=False)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("register", "read-modify-write of 3 registers by compare-and-set", register_worker, register_check,
                 keys=lambda: list(REGISTERS)),
        Workload("create", "every process creates the same key, one key per 50 ms", create_worker, create_check),
        Workload("sequence", "numbers from one sequence", sequence_worker, sequence_check),
        Workload("board", "claim the next task, work, complete it; leases expire under SIGSTOP", board_worker, board_check,
                 setup=board_setup),
        Workload("crdt", "counter increments and set additions, with reads", crdt_worker, crdt_check,
                 keys=lambda: ["jepsen/count", "jepsen/set"]),
        Workload("news", "observers read, write and call news() after every operation while writers touch"
                 " shared keys and keys nobody else reads; each event exactly once", news_worker, news_check,
                 roles=news_roles, kill_roles=("writer",)),
        Workload("news-restart", "as news, and the observers are killed too: a restarted observer resumes its"
                 " named session from the store, repeating some news and skipping none", news_worker, news_restart_check,
                 roles=news_roles, kill_roles=("writer", "observer"), exactly_once=False),
    ]
}  # fmt: skip
