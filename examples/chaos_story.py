"""`make demo`, part two: the chaos harness tells what each strategy let happen.

For each failure of DESIGN.md's table, the same agents (with the faults of LLM agents)
run under each coordination strategy; for each baseline, the first seed on which the
failure shows, what the checker saw, and how to replay it; then comity on that very
seed.  Then the table over a few seeds (`comity chaos report --seeds 1000` for the
README's).
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from comity.chaos import SCENARIOS, run
from comity.chaos.report import FAULTED, margins, report
from comity.chaos.strategies import BASELINES

con = Console(highlight=False)
SEEDS_FOR_TABLE = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def refusals(r_history: object) -> str:
    from comity.chaos.history import History

    assert isinstance(r_history, History)
    kinds: dict[str, int] = {}
    for o in r_history:
        if o.type == "fail":
            kinds[o.value.get("error", "?")] = kinds.get(o.value.get("error", "?"), 0) + 1
    names = {"stale_context": "stale contexts", "fenced": "superseded tokens", "lease_expired": "expired leases"}
    said = [f"{n} {names[k]}" for k, n in sorted(kinds.items()) if k in names]
    return ", ".join(said) if said else "nothing"


def story() -> None:
    con.rule(f"[bold]the chaos harness: the same agents, the same faults, {len(BASELINES) + 1} ways to coordinate")
    for name, sc in SCENARIOS.items():
        if not sc.small:
            continue
        con.print(f"\n[bold]{name}[/]: {sc.failure}")
        con.print(f"  [dim]{sc.story}[/]")
        shown_seed = 0
        for strategy in BASELINES:
            for seed in range(40):
                r = run(name, strategy, seed)
                hits = [a for c in sc.about for a in r.anomalies if a.checker == c]
                if hits:
                    # The telling one: a commit or completion that should not have counted, if any.
                    a = next((h for h in hits if r.history[h.ops[-1]].f in ("commit", "complete")), hits[0]) if hits[0].ops else hits[0]
                    if strategy == "none":
                        shown_seed = seed
                    con.print(f"  [yellow]{strategy:<13}[/] seed {seed}: [yellow]{a.checker}[/]: {a.explanation}", markup=True)
                    con.print(f"         [dim]comity chaos replay {seed} --scenario {name} --strategy {strategy}[/]")
                    break
            else:
                con.print(f"  {strategy:<13} no {', '.join(sc.about)} in 40 seeds")
        r = run(name, "comity", shown_seed)
        verdict = "no anomaly" if not r.anomalies else f"[red]{len(r.anomalies)} anomalies[/]"
        con.print(
            f"  [green]comity[/] seed {shown_seed}: {verdict}; it refused {refusals(r.history)}, the agents re-read and"
            f" carried on, and {100 * r.completion:.0f}% of the work got done"
        )


def table() -> None:
    con.print()
    with con.status(f"running every scenario under every strategy, {SEEDS_FOR_TABLE} seeds each, with and without faults…"):
        rows = report(seeds=range(SEEDS_FOR_TABLE))
    t = Table(title=f"faulted runs with an anomaly ({SEEDS_FOR_TABLE} seeds per row; docs/evidence.md has 1,000)")
    for col in ["scenario", "strategy", "outcomes", "primitives", "done", "by 2× time", "wasted steps"]:
        t.add_column(col, justify="left" if col in ("scenario", "strategy") else "right", no_wrap=True)
    for row in rows:
        if row.faults != FAULTED:
            continue
        style = "bold green" if row.strategy == "comity" else None
        tight = "–" if row.completion_tight is None else f"{100 * row.completion_tight:.0f}%"
        t.add_row(row.scenario, row.strategy, str(row.any_outcome or "·"), str(row.any_primitive or "·"), f"{100 * row.completion:.0f}%",
                  tight, f"{row.wasted_steps:.1f}", style=style)  # fmt: skip
    con.print(t)
    for m in margins(rows):
        if m["faults"] == FAULTED:
            con.print(f"  {m['scenario']}: the best baseline, {m['best_baseline']}, had an anomaly in {m['baseline_runs_with_anomaly']} of"
                      f" {m['runs']} runs; comity in {m['comity_runs_with_anomaly']}")
    con.print("[dim]regenerate the full tables: comity chaos report --seeds 1000 --markdown[/]")


if __name__ == "__main__":
    story()
    table()
