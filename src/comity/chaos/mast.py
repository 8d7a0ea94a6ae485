"""Agent faults from a measurement: MAST's failure modes, mapped onto the harness.

Cemri, Pan, Yang, Agrawal, Chopra, Tiwari, Keutzer, Parameswaran, Klein, Ramchandran,
Zaharia, Gonzalez and Stoica, "Why Do Multi-Agent LLM Systems Fail?" (arXiv:2503.13657,
NeurIPS 2025 Datasets and Benchmarks) annotated 1,642 traces of seven multi-agent
frameworks (ChatDev, MetaGPT, HyperAgent, AppWorld, AG2, Magentic-One, OpenManus)
with 14 failure modes.  ``share`` below is each mode's share of all failure
annotations, from the paper's Figure 1 (the three categories: 44.2%, 32.3%, 23.5%).

The harness uses each share as the chance that one agent shows the mode in one run
(a run of an agent stands for one trace); an agent that shows it does so once, at one
of its opportunities.  This is conservative: the shares are of annotations, and a
failed trace carries several modes (about 2.5 per trace in the released annotations,
by an independent count), so per-trace prevalences are higher.  A scenario may raise
a mode for its story (a zombie that will not take no for an answer); the rest of its
agents' faults take these defaults.

Each mode names the harness fault that models it, what comity does about it, and a
verdict (``yes``: its mechanisms refuse or recover what the mode does; ``partly``;
``no``: nothing in comity's coordination addresses it).  ``comity chaos mast``
measures the verdicts: each mode alone, every agent showing it, under comity and the
careful baselines.

MAST's released traces (``MAD_full_dataset.json``: one record per trace, with a 0/1
``mast_annotation`` per mode) are conversations, not operations on shared state, so
they cannot be replayed step by step; what can be replayed is which modes each trace
shows together.  ``comity chaos mast --traces FILE`` does that: each agent of a run
takes one annotated trace and shows exactly its modes.  (The authors' repository was
too large to fetch here, 693 MB; point ``--traces`` at a copy of the dataset.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .nemesis import Profile

__all__ = ["Mode", "MODES", "PAPER", "CONTROL", "defaults", "isolated", "measure", "load_traces", "replay", "markdown_mast"]

PAPER = 'Cemri et al., "Why Do Multi-Agent LLM Systems Fail?", arXiv:2503.13657 (NeurIPS 2025), Figure 1'


@dataclass(frozen=True, slots=True)
class Mode:
    code: str
    name: str
    share: float  # of all failure annotations (Figure 1)
    kind: str | None  # the harness fault that models it (None: not a coordination failure the harness models)
    models: str  # what the fault does in the harness
    comity: str  # what comity does about it
    addressed: str  # yes, partly, no


MODES: list[Mode] = [
    Mode("FM-1.1", "Disobey task specification", 0.118, "ignore_refusal",
         "told its write or completion is refused (fenced, stale), it carries on and reports done",
         "every later fenced action under the superseded token is refused again; nothing it does counts", "yes"),
    Mode("FM-1.2", "Disobey role specification", 0.015, "impersonate",
         "claims and works under the name of the agent the task belongs to",
         "with auth on, a connection acts only as its token's agent: refused", "yes"),
    Mode("FM-1.3", "Step repetition", 0.157, "retry",
         "does an action twice (a second claim, write or append)",
         "writes carry request ids (a resend is answered from the record), a second append is stale, a second claim is refused", "yes"),
    Mode("FM-1.4", "Loss of conversation history", 0.028, "lost_context",
         "acts on the oldest snapshot it holds instead of its last read",
         "the action carries that read's context and is refused with the news of what it missed", "yes"),
    Mode("FM-1.5", "Unaware of termination conditions", 0.124, "overrun",
         "after completing its task, writes its work product once more",
         "the write is fenced by the task's token, released by the completion: refused", "yes"),
    Mode("FM-2.1", "Conversation reset", 0.022, "reset",
         "restarts with nothing, not even its transcript: forgets the task it holds",
         "its lease expires and the task is handed over with its last checkpoint", "yes"),
    Mode("FM-2.2", "Fail to ask for clarification", 0.068, None,
         "(not modelled: a question about the task, not about shared state)", "nothing", "no"),
    Mode("FM-2.3", "Task derailment", 0.074, "derail",
         "spends a long while on something else in the middle of its task",
         "its lease lapses and the task is taken over; back on track, its writes are fenced", "yes"),
    Mode("FM-2.4", "Information withholding", 0.0085, "withhold",
         "skips a checkpoint: its progress is not recorded for a successor",
         "a successor gets only what was checkpointed and redoes the rest (cost, not safety)", "partly"),
    Mode("FM-2.5", "Ignored other agent's input", 0.019, "blind_retry",
         "after a refused claim, claims again ignoring what the refusal said",
         "the claim is still checked against the task as it is: done, assigned elsewhere or held, it is refused", "yes"),
    Mode("FM-2.6", "Reasoning-action mismatch", 0.132, "steal",
         "reasons that the task is another agent's, then takes it anyway (--steal)",
         "a steal is allowed only from an agent suspected dead, and fences the old holder", "yes"),
    Mode("FM-3.1", "Premature termination", 0.062, "quit",
         "drops its task half-done, claimed and unreleased",
         "the lease expires and the task is taken over with the last checkpoint", "yes"),
    Mode("FM-3.2", "No or incomplete verification", 0.082, "hallucinate",
         "reports wrong work as done without checking it",
         "nothing in the board: a completion is accepted whatever the work (verification of changes is comity's other layer, not exercised here)", "no"),
    Mode("FM-3.3", "Incorrect verification", 0.091, "bad_review",
         "a reviewer passes wrong work",
         "nothing: comity does not judge the work itself", "no"),
]  # fmt: skip


def defaults() -> dict[str, float]:
    """Per agent and run, the chance of each harness fault that models a MAST mode."""
    out: dict[str, float] = {}
    for m in MODES:
        if m.kind is not None:
            out[m.kind] = round(1 - (1 - out.get(m.kind, 0.0)) * (1 - m.share), 6)
    return out


AGENT_KINDS = frozenset(k for m in MODES if m.kind is not None for k in (m.kind,))
CONTROL = "none"  # the machinery's faults and no agent fault: what each strategy shows without the mode


def isolated(mode: Mode | None, base: Profile) -> Profile:
    """The scenario's machinery faults (network, store, processes: what gives a refusal to
    disobey) and only this mode, in every agent; no agent fault at all for ``None``."""
    p = {k: v for k, v in base.p.items() if k not in AGENT_KINDS}
    if mode is None:
        return Profile(p, base.ranges, base.limits)
    assert mode.kind is not None
    return Profile(p, base.ranges, {**base.limits, mode.kind: 100}, per_agent={mode.kind: 1.0})


def load_traces(path: str) -> tuple[frozenset[str], ...]:
    """The harness faults each annotated trace shows, from MAST's dataset (JSON list or JSONL)."""
    import json
    from pathlib import Path

    text = Path(path).read_text()
    records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    kind_of = {m.code.removeprefix("FM-"): m.kind for m in MODES}
    out = []
    for rec in records:
        ann = rec.get("mast_annotation") if isinstance(rec, dict) else None
        if not isinstance(ann, dict):
            raise ValueError(f"{path}: a record without mast_annotation; expected MAST's MAD format")
        out.append(frozenset(k for code, on in ann.items() if on and (k := kind_of.get(str(code))) is not None))
    if not out:
        raise ValueError(f"{path}: no traces")
    return tuple(out)


def replay(traces: tuple[frozenset[str], ...], strategies: Iterable[str], scenarios: Iterable[str] | None = None,
           seeds: Iterable[int] = range(20)) -> list[dict[str, Any]]:  # fmt: skip
    """Each agent of each run shows the modes of one trace drawn from ``traces``."""
    from .runner import run
    from .scenarios import SCENARIOS

    rows = []
    for st in strategies:
        row: dict[str, Any] = {"strategy": st, "runs": 0, "runs_with_anomaly": 0, "anomalies": {}, "struck": {}, "completion": 0.0}
        for sc in scenarios or [n for n, s in SCENARIOS.items() if s.small]:
            base = isolated(None, SCENARIOS[sc].profile)
            profile = Profile(base.p, base.ranges, {**base.limits, **{k: 100 for k in AGENT_KINDS}},
                              per_agent={k: 1.0 for k in AGENT_KINDS}, traces=traces)  # fmt: skip
            for seed in seeds:
                r = run(sc, st, seed, profile=profile)
                row["runs"] += 1
                row["runs_with_anomaly"] += bool(r.anomalies)
                row["completion"] += r.completion
                for c, n in r.counts().items():
                    if n:
                        row["anomalies"][c] = row["anomalies"].get(c, 0) + 1
                for f in r.schedule.faults:
                    if f.kind in AGENT_KINDS:
                        row["struck"][f.kind] = row["struck"].get(f.kind, 0) + 1
        row["completion"] = round(row["completion"] / max(1, row["runs"]), 4)
        rows.append(row)
    return rows


def _job(job: tuple[str, str, str, int]) -> tuple[str, str, str, int, dict[str, int], float, int]:
    from .runner import run
    from .scenarios import SCENARIOS

    code, scenario, strategy, seed = job
    mode = next((m for m in MODES if m.code == code), None)
    r = run(scenario, strategy, seed, profile=isolated(mode, SCENARIOS[scenario].profile))
    struck = sum(1 for f in r.schedule.faults if mode is not None and f.kind == mode.kind)
    return code, scenario, strategy, seed, {c: n for c, n in r.counts().items() if n}, r.completion, struck


def measure(
    strategies: Iterable[str] = ("careful-locks", "cas", "comity"),
    scenarios: Iterable[str] | None = None,
    seeds: Iterable[int] = range(20),
    *,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Each modelled mode alone, in every agent, under each strategy: runs in which the mode
    struck, runs with an anomaly (by checker), completion."""
    import multiprocessing
    import os

    from .scenarios import SCENARIOS

    scs = list(scenarios or [n for n, s in SCENARIOS.items() if s.small])
    sts = list(strategies)
    seed_list = list(seeds)
    codes = [CONTROL] + [m.code for m in MODES if m.kind is not None]
    work = [(code, sc, st, seed) for code in codes for st in sts for sc in scs for seed in seed_list]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for code in [CONTROL] + [m.code for m in MODES]:
        for st in sts:
            rows[(code, st)] = {"mode": code, "strategy": st, "runs": 0, "struck": 0, "runs_with_anomaly": 0, "anomalies": {},
                                "completion": 0.0}  # fmt: skip
    jobs = jobs or os.cpu_count() or 1
    done = 0

    def add(out: tuple[str, str, str, int, dict[str, int], float, int]) -> None:
        nonlocal done
        code, _, st, _, found, completion, struck = out
        row = rows[(code, st)]
        row["runs"] += 1
        row["struck"] += bool(struck)
        row["runs_with_anomaly"] += bool(found)
        for c in found:
            row["anomalies"][c] = row["anomalies"].get(c, 0) + 1
        row["completion"] += completion
        done += 1
        if progress:
            progress(done, len(work))

    if jobs <= 1:
        for job in work:
            add(_job(job))
    else:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(jobs) as pool:
            for out in pool.imap_unordered(_job, work, chunksize=4):
                add(out)
    result = []
    control = Mode(CONTROL, "no agent fault (the machinery's faults only: the control)", 0.0, None, "", "", "")
    for m in [control, *MODES]:
        entry: dict[str, Any] = {"code": m.code, "name": m.name, "share": m.share, "kind": m.kind, "models": m.models,
                                 "comity": m.comity, "addressed": m.addressed, "measured": []}  # fmt: skip
        for st in sts:
            row = rows[(m.code, st)]
            if row["runs"]:
                row["completion"] = round(row["completion"] / row["runs"], 4)
                entry["measured"].append({k: v for k, v in row.items() if k != "mode"})
        result.append(entry)
    return result


def markdown_mast(result: list[dict[str, Any]]) -> str:
    """One row per mode (the control first, when measured): its share in the paper, the
    harness fault that models it, what comity does, the verdict, and, measured, the runs
    with an anomaly and the work done under each strategy."""
    strategies = list(dict.fromkeys(x["strategy"] for m in result for x in m["measured"]))
    head = ["mode", "share", "harness fault", "what comity does", "addressed", *[f"{st}: anomalous runs, done" for st in strategies]]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|---|---|" + "---:|" * len(strategies)]
    for m in result:
        if m["code"] == CONTROL and not m["measured"]:
            continue
        by = {x["strategy"]: x for x in m["measured"]}
        cells = [f"{x['runs_with_anomaly']}/{x['runs']}, {100 * x['completion']:.0f}%" if (x := by.get(st)) and x["runs"] else "–"
                 for st in strategies]  # fmt: skip
        share = "–" if m["code"] == CONTROL else f"{100 * m['share']:.1f}%"
        name = m["name"] if m["code"] == CONTROL else f"{m['code']} {m['name']}"
        row = [name, share, m["kind"] or ("–" if m["code"] == CONTROL else "(not modelled)"), m["comity"] or "–", m["addressed"] or "–", *cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
