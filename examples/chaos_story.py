"""`make demo`, part two: the chaos harness tells what each strategy let happen.

For each failure of docs/design.md's table, the same agents (with the faults of LLM agents)
run under each coordination strategy; for each baseline, the first seed on which the
failure shows, what the checker saw, and how to replay it; then comity on that very
seed.  Then the table over a few seeds, in 80 columns (the README's is taken with
`comity chaos report`).
"""

from __future__ import annotations

import sys

from collections.abc import Callable

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from comity.chaos import SCENARIOS, run
from comity.chaos.report import FAULT_FREE, FAULTED, REPORT_COMMAND, margins, report
from comity.chaos.strategies import BASELINES

con = Console(highlight=False, width=min(Console().width, 80))
SEEDS_FOR_TABLE = int(sys.argv[1]) if len(sys.argv) > 1 and __name__ == "__main__" else 10


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


def said(markup: str, indent: int) -> None:
    """A line of the story, wrapped under its own indentation."""
    con.print(Padding(Text.from_markup(markup), (0, 0, 0, indent)))


def story() -> None:
    con.rule(f"[bold]the chaos harness: the same agents, the same faults, {len(BASELINES) + 1} ways to coordinate")
    for name, sc in SCENARIOS.items():
        if not sc.small:
            continue
        con.print(f"\n[bold]{name}[/]: {sc.failure}")
        said(f"[dim]{sc.story}[/]", 2)
        shown_seed = 0
        for strategy in BASELINES:
            for seed in range(40):
                with con.status(f"{name} under {strategy}: seed {seed}…"):
                    r = run(name, strategy, seed)
                hits = [a for c in sc.about for a in r.anomalies if a.checker == c]
                if hits:
                    # The telling one: a commit or completion that should not have counted, if any.
                    a = next((h for h in hits if r.history[h.ops[-1]].f in ("commit", "complete")), hits[0]) if hits[0].ops else hits[0]
                    if strategy == "none":
                        shown_seed = seed
                    said(f"[yellow]{strategy}[/], seed {seed}: [yellow]{a.checker}[/]", 2)
                    said(escape(a.explanation), 6)
                    said(f"[dim]replay: comity chaos replay {seed} --scenario {name} --strategy {strategy}[/]", 6)
                    break
            else:
                said(f"{strategy}: no {', '.join(sc.about)} in 40 seeds", 2)
        r = run(name, "comity", shown_seed)
        verdict = "no anomaly" if not r.anomalies else f"[red]{len(r.anomalies)} anomalies[/]"
        said(f"[green]comity[/], seed {shown_seed}: {verdict}; it refused {refusals(r.history)}, the agents re-read and"
             f" carried on, and {100 * r.completion:.0f}% of the work got done", 2)  # fmt: skip


def table(seeds: int = SEEDS_FOR_TABLE, only: list[str] | None = None) -> None:
    """The table over a few seeds (``only``: these scenarios), scenarios down and strategies
    across, in 80 columns."""
    shown = [*BASELINES, "comity"]  # comity-embedded is comity on its own clocks: see the README
    long_seeds = max(1, seeds // 5)
    con.print()
    with Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con, transient=True) as bar:  # fmt: skip
        job = bar.add_task("each scenario × strategy × seed, fault-free and faulted", total=None)
        rows = report(only, strategies=shown, seeds=range(seeds), long_seeds=range(long_seeds),
                      progress=lambda done, total: bar.update(job, completed=done, total=total))  # fmt: skip
    by = {(r.scenario, r.strategy, r.faults): r for r in rows}
    scenarios = list(dict.fromkeys(r.scenario for r in rows))
    head = {"naive-locks": "naive\nlocks", "careful-locks": "careful\nlocks"}

    def grid(title: str, cell: Callable[[str, str], str]) -> Table:
        t = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
        t.add_column("scenario", no_wrap=True)
        for st in shown:
            t.add_column(head.get(st, st), justify="right", no_wrap=True, style="bold green" if st == "comity" else None)
        for sc in scenarios:
            t.add_row(sc, *[cell(sc, st) for st in shown])
        return t

    def anomalies(sc: str, st: str) -> str:
        f, q = by[(sc, st, FAULTED)], by[(sc, st, FAULT_FREE)]
        return f"{f.any_anomaly or '·'} ({q.any_anomaly or '·'})"

    def done(sc: str, st: str) -> str:
        f = by[(sc, st, FAULTED)]
        return "–" if f.completion_tight is None else f"{100 * f.completion_tight:.0f}%"

    n = f"{seeds} seed{'s' if seeds != 1 else ''}" + (f", busy_afternoon {long_seeds}" if "busy_afternoon" in scenarios else "")
    con.print(grid(f"runs with an anomaly: faulted (fault-free); {n}", anomalies))
    con.print(grid("work done by twice the fault-free run's time, faulted", done))
    con.print(grid("steps wasted per faulted run (refused, discarded, done twice)",
                   lambda sc, st: f"{by[(sc, st, FAULTED)].wasted_steps:.1f}"))  # fmt: skip
    t = Table(title="comity against the best baseline of each scenario, faulted runs with an anomaly", box=box.SIMPLE_HEAD,
              title_justify="left")  # fmt: skip
    for col in ("scenario", "best baseline", "its runs", "comity's"):
        t.add_column(col, justify="left" if col in ("scenario", "best baseline") else "right", no_wrap=True)
    for m in margins(rows):
        if m["faults"] == FAULTED and m["strategy"] == "comity":
            t.add_row(m["scenario"], m["best_baseline"], f"{m['baseline_runs_with_anomaly']}/{m['runs']}", f"{m['comity_runs_with_anomaly']}/{m['runs']}")
    con.print(t)
    con.print(f"[dim]every checker, cost and margin: {REPORT_COMMAND}[/]")


if __name__ == "__main__":
    story()
    table()
