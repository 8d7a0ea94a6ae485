"""Pictures drawn as inline SVG: the causal history of a task or key, a run's timeline, charts.

Each function turns what the library answered into shapes with coordinates; the
templates only draw them.  Hand-written because the shapes are few and fixed (lanes,
boxes, arrows, bars): a graph-layout library (dagre, elkjs, graphviz) would lay out a
general graph, where here every node's place is already known (its author's lane, its
position in the log or its time), and it would bring a JavaScript or binary dependency
for what is a few lines of arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["causal_picture", "timeline_picture", "bar_chart", "sparkline"]

LANE_H = 86
NODE_W = 124
NODE_H = 38
STEP = 168
LEFT = 128
TOP = 34
MAX_NODES = 80


def _name(op: str) -> str:
    return op.split(".", 1)[1] if op.startswith("task.") else op


@dataclass
class Node:
    id: str
    agent: str
    ops: list[str]
    positions: list[int]
    seen: int | None
    hlc: str
    x: float = 0.0
    y: float = 0.0
    refused: bool = False
    concurrent: bool = False
    missed: list[int] = field(default_factory=list)
    label: str = ""
    title: str = ""

    @property
    def pos(self) -> int:
        return self.positions[0]


def causal_picture(why: dict[str, Any]) -> dict[str, Any]:
    """Lanes (one per agent), nodes (one per transaction, left to right in log order), an
    arrow from each event an author had seen (the latest per other agent) to its action, a
    dashed pair between actions that were concurrent, and the refused actions with what
    they missed."""
    history = why.get("history", [])
    nodes: list[Node] = []
    by_request: dict[str, Node] = {}
    for e in history:
        rid = str(e.get("request_id") or e["pos"])
        seen = e.get("had_seen_up_to", e.get("seen"))
        n = by_request.get(rid)
        if n is None:
            n = by_request[rid] = Node(rid, e["agent"], [], [], seen, str(e.get("hlc", "")))
            nodes.append(n)
        n.ops.append(_name(e["op"]))
        n.positions.append(e["pos"])
        if seen is not None:
            n.seen = seen if n.seen is None else max(n.seen, seen)
        if e["op"].endswith("refused") or e["op"].endswith("fenced"):
            n.refused = True
        n.missed += [p for p in e.get("did_not_see", []) if p not in n.missed]
        n.missed += [p for p in e.get("missed", []) if isinstance(p, int) and p not in n.missed]
    total = len(nodes)
    nodes = nodes[-MAX_NODES:]
    lanes = list(dict.fromkeys(n.agent for n in nodes))
    at: dict[int, Node] = {}
    for i, n in enumerate(nodes):
        n.x = LEFT + i * STEP
        n.y = TOP + lanes.index(n.agent) * LANE_H
        for p in n.positions:
            at[p] = n
        ops = [o for o in n.ops if not o.startswith("@")]
        n.label = " + ".join(dict.fromkeys(ops))[:22]
        n.title = f"{n.agent}: {' + '.join(n.ops)} at pos {', '.join(map(str, n.positions))}" + (
            f"; had seen up to pos {n.seen}" if n.seen is not None else ""
        )
    arrows: list[dict[str, Node]] = []
    pairs: list[dict[str, Any]] = []
    for i, n in enumerate(nodes):
        if n.seen is not None:
            latest: dict[str, Node] = {}
            for m in nodes[:i]:
                if m.agent != n.agent and max(m.positions) <= n.seen:
                    latest[m.agent] = m
            for m in latest.values():
                arrows.append({"from": m, "to": n})
        for p in n.missed:
            other = at.get(p)
            if other is not None and other is not n and (other, n) not in [(a["a"], a["b"]) for a in pairs]:
                other.concurrent = n.concurrent = True
                # A curve below both boxes, so it crosses neither the boxes nor the arrows.
                ax, ay = other.x + NODE_W / 2, other.y + NODE_H
                bx, by = n.x + NODE_W / 2, n.y + NODE_H
                cx, cy = (ax + bx) / 2, max(ay, by) + 22 + 8 * len(pairs)
                pairs.append({"a": other, "b": n, "refused": n.refused, "path": f"M {ax} {ay} Q {cx} {cy} {bx} {by}",
                              "lx": cx, "ly": (max(ay, by) + cy) / 2 + 10})
    for n in nodes:
        if n.refused and n.missed:
            what = [f"{at[p].agent}'s {at[p].label} (pos {p})" if p in at else f"pos {p}" for p in n.missed]
            n.title += "; refused: it had not seen " + ", ".join(what)
    width = LEFT + max(1, len(nodes)) * STEP
    height = TOP + max(1, len(lanes)) * LANE_H + 24 + 8 * len(pairs)
    return {
        "nodes": nodes,
        "lanes": [{"agent": a, "y": TOP + i * LANE_H} for i, a in enumerate(lanes)],
        "arrows": arrows,
        "pairs": pairs,
        "width": width,
        "height": height,
        "node_w": NODE_W,
        "node_h": NODE_H,
        "shown": len(nodes),
        "total": total,
    }


def timeline_picture(history: list[dict[str, Any]], faults: list[dict[str, Any]], anomalous: set[int], *, width: int = 1100) -> dict[str, Any]:
    """A Jepsen-style timeline: one lane per process, a bar from each invocation to its
    completion (ok, fail, info), the nemesis's faults on their own lane and as lines across."""
    procs = list(dict.fromkeys(o["process"] for o in history if o["process"] != "nemesis"))
    procs.sort(key=lambda p: (p.split("#")[0], p))
    lanes = procs + ["nemesis"]
    times = [o["time"] for o in history] or [0.0]
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1e-9)
    left, lane_h, top = 150, 22, 24
    inner = width - left - 20

    def x(t: float) -> float:
        return round(float(left + (t - t0) / span * inner), 1)

    bars = []
    marks = []
    done: set[int] = set()
    by_index = {o["index"]: o for o in history}
    for o in history:
        if o["process"] == "nemesis":
            marks.append({"x": x(o["time"]), "f": o["f"], "title": f"t={o['time'] - t0:.1f}s {o['f']} {o.get('value', '')}"[:200]})
            continue
        if o["type"] == "invoke":
            continue
        inv = by_index.get(o.get("invoke", -1))
        start = inv["time"] if inv else o["time"]
        y = top + lanes.index(o["process"]) * lane_h
        x0, x1 = x(start), x(o["time"])
        done.add(o.get("invoke", -1))
        bars.append({
            "x": x0, "y": y + 3, "w": max(3.0, round(x1 - x0, 1)), "h": lane_h - 6, "type": o["type"], "f": o["f"],
            "bad": o["index"] in anomalous or o.get("invoke") in anomalous,
            "title": f"{o['process']} {o['f']} {o['type']} t={start - t0:.1f}–{o['time'] - t0:.1f}s {o.get('value', '')}"[:240],
        })  # fmt: skip
    for o in history:  # invocations that never completed: open bars to the end
        if o["type"] == "invoke" and o["index"] not in done and o["process"] != "nemesis":
            y = top + lanes.index(o["process"]) * lane_h
            bars.append({"x": x(o["time"]), "y": y + 3, "w": max(3.0, round(x(t1) - x(o["time"]), 1)), "h": lane_h - 6,
                         "type": "open", "f": o["f"], "bad": o["index"] in anomalous,
                         "title": f"{o['process']} {o['f']} invoked t={o['time'] - t0:.1f}s, never completed"})  # fmt: skip
    ticks = [{"x": x(t0 + span * k / 10), "label": f"{span * k / 10:.0f}s"} for k in range(11)]
    return {
        "lanes": [{"name": p, "y": top + i * lane_h} for i, p in enumerate(lanes)],
        "bars": bars,
        "marks": marks,
        "faults": faults,
        "ticks": ticks,
        "width": width,
        "height": top + len(lanes) * lane_h + 24,
        "lane_h": lane_h,
        "left": left,
    }


PALETTE = ["#8c8c8c", "#d9822b", "#b07cc6", "#4c9a8a", "#c9a227", "#2f6fd1", "#d1495b", "#5a9e3a"]


def bar_chart(groups: list[str], series: list[str], value: dict[tuple[str, str], float], *, unit: str = "%", width: int = 900, height: int = 260) -> dict[str, Any]:
    """Grouped bars: one group per ``groups`` item, one bar per ``series`` item."""
    left, bottom, top = 44, 56, 16
    inner_w, inner_h = width - left - 10, height - bottom - top
    top_value = max([v for v in value.values()] + [1.0])
    gw = inner_w / max(1, len(groups))
    bw = max(2.0, (gw - 10) / max(1, len(series)))
    bars = []
    for gi, g in enumerate(groups):
        for si, s in enumerate(series):
            v = value.get((g, s))
            if v is None:
                continue
            h = inner_h * v / top_value
            bars.append({"x": round(left + gi * gw + 5 + si * bw, 1), "y": round(top + inner_h - h, 1), "w": round(bw - 1, 1),
                         "h": round(h, 1), "color": PALETTE[si % len(PALETTE)], "title": f"{g} · {s}: {v:g}{unit}"})  # fmt: skip
    labels = [{"x": round(left + gi * gw + gw / 2, 1), "text": g} for gi, g in enumerate(groups)]
    axis = [{"y": round(top + inner_h - inner_h * k / 4, 1), "text": f"{top_value * k / 4:.0f}{unit}"} for k in range(5)]
    legend = [{"name": s, "color": PALETTE[i % len(PALETTE)]} for i, s in enumerate(series)]
    return {"bars": bars, "labels": labels, "axis": axis, "legend": legend, "width": width, "height": height,
            "base": top + inner_h, "left": left}  # fmt: skip


def sparkline(points: list[tuple[float, float]], *, threshold: float, width: int = 160, height: int = 32, cap: float = 16.0) -> dict[str, Any]:
    """φ over time as a polyline, clipped at ``cap``, with the suspicion threshold drawn."""
    if len(points) < 2:
        return {"points": "", "width": width, "height": height, "threshold_y": 0, "last": 0.0}
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1e-9)

    def y(v: float) -> float:
        return round(height - 2 - (height - 4) * min(v, cap) / cap, 1)

    pts = " ".join(f"{round((t - t0) / span * (width - 2) + 1, 1)},{y(v)}" for t, v in points)
    return {"points": pts, "width": width, "height": height, "threshold_y": y(threshold), "last": points[-1][1]}
