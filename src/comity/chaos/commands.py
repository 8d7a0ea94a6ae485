"""``comity chaos …``: the harness's face (``comity bench chaos`` is in :mod:`comity.bench`).

Results on stdout (JSON with ``--json``), progress and messages on stderr.  This
module registers itself with the CLI (``register``) rather than being imported by
it, so the harness stays below the faces.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..clikit import err, out
from ..clikit import print_json as _json
from .checkers import CHECKERS
from .explore import random_search, shrink, systematic
from .nemesis import Schedule
from .report import FAULT_FREE, FAULTED, margins, markdown_costs, markdown_margins, markdown_table, report
from .runner import RunResult, run
from .scenarios import SCENARIOS
from .strategies import STRATEGIES

__all__ = ["register", "chaos_group"]


_scenario = click.Choice(sorted(SCENARIOS))
_strategy = click.Choice(list(STRATEGIES))


@contextmanager
def _progress(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, when stderr is a terminal (never mixed into stdout)."""
    if not enabled or not err.is_terminal:
        yield lambda done, total: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    )  # fmt: skip
    with bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _counts_line(counts: dict[str, int]) -> str:
    found = {k: v for k, v in counts.items() if v}
    return ", ".join(f"{k} {v}" for k, v in found.items()) if found else "none"


def _explain(r: RunResult, limit: int = 5) -> None:
    """Each anomaly, with the operations that show it."""
    shown: set[str] = set()
    for a in r.anomalies:
        if a.checker in shown and limit <= 1:
            continue
        shown.add(a.checker)
        out.print(f"  [{a.checker}] {a.explanation}", markup=False)
        for i in a.ops[:4]:
            out.print(f"      {r.history[i].line()}", markup=False)
        limit -= 1
        if limit <= 0:
            more = len(r.anomalies) - len(shown)
            if more > 0:
                out.print(f"  … {len(r.anomalies)} anomalies in all; --json lists them", markup=False)
            break


def _print_run(r: RunResult, as_json: bool, history: bool) -> None:
    if as_json:
        _json(r.to_json(history=history))
        return
    out.print(f"{r.scenario} under {r.strategy}, seed {r.seed}", markup=False)
    out.print(f"  history   {r.history_hash}  ({sum(1 for o in r.history if o.type == 'invoke')} operations, {len(r.schedule.faults)} faults)", markup=False)
    out.print(f"  anomalies {_counts_line(r.counts())}", markup=False)
    out.print(f"  completion {100 * r.completion:.1f}% ({r.units_done}/{r.units} units of work done correctly)", markup=False)
    if r.anomalies:
        _explain(r)
    if history:
        for o in r.history:
            out.print(o.line(), markup=False)


@click.group("chaos")
def chaos_group() -> None:
    """The chaos harness: scenarios × strategies under a nemesis, judged by checkers."""


@chaos_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the scenario names as a JSON list.")
def list_cmd(as_json: bool) -> None:
    """The scenarios, the failure each reproduces, and the strategies."""
    if as_json:
        _json(list(SCENARIOS))
        return
    for s in SCENARIOS.values():
        out.print(f"{s.name:<20} {s.failure}", markup=False)
        out.print(f"{'':<20} checks: {', '.join(s.about)}", markup=False)
    out.print("strategies: " + ", ".join(f"{k} ({v.summary})" for k, v in STRATEGIES.items()), markup=False)


@chaos_group.command("run")
@click.argument("scenario", type=_scenario)
@click.option("--strategy", type=_strategy, default="comity", show_default=True, help="The coordination strategy.")
@click.option("--seed", type=int, default=0, show_default=True, help="The seed: the same seed gives the same history.")
@click.option("--quiet", "no_faults", is_flag=True, help="No faults: the scenario's fault-free run.")
@click.option("--history", is_flag=True, help="Print the whole history.")
@click.option("--save-schedule", type=click.Path(dir_okay=False), help="Write the run's schedule (its faults) to this JSON file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (history_hash, anomalies, completion, …).")
def run_cmd(scenario: str, strategy: str, seed: int, no_faults: bool, history: bool, save_schedule: str | None, as_json: bool) -> None:
    """Run SCENARIO once: prints the history hash, the anomalies and the completion."""
    r = run(scenario, strategy, seed, quiet=no_faults)
    if save_schedule:
        r.schedule.save(save_schedule)
        err.print(f"schedule written to {save_schedule}: `comity chaos replay {save_schedule}` reproduces this run", markup=False)
    _print_run(r, as_json, history)


@chaos_group.command("explore")
@click.argument("scenario", type=_scenario)
@click.option("--strategy", type=_strategy, default="comity", show_default=True, help="The coordination strategy.")
@click.option("--seeds", type=click.IntRange(0, 1_000_000), default=100, show_default=True, help="Random seeds to try first.")
@click.option("--seed", type=int, default=0, show_default=True, help="The seed of the systematic search's fault-free run.")
@click.option("--budget", type=click.IntRange(0, 10_000_000), default=1000, show_default=True, help="Runs the systematic search may spend.")
@click.option("--pairs/--no-pairs", default=None, help="Inject pairs of faults (default: on the small scenarios).")
@click.option("--save", type=click.Path(dir_okay=False), help="Write the shrunk failing schedule to this JSON file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def explore_cmd(scenario: str, strategy: str, seeds: int, seed: int, budget: int, pairs: bool | None, save: str | None, as_json: bool) -> None:
    """Random seeds, then a systematic search over fault points (each alone, then pairs);
    shrinks the first failure to a short schedule and says how to replay it."""
    with _progress(f"{scenario}/{strategy}: {seeds} random seeds") as tick:
        rand = random_search(scenario, strategy, range(seeds), progress=tick, total=seeds)
    use_pairs = SCENARIOS[scenario].small if pairs is None else pairs
    with _progress(f"{scenario}/{strategy}: systematic search") as tick:
        sysr = systematic(scenario, strategy, seed, budget=budget, pairs=use_pairs, progress=tick)
    found = rand.first.schedule if rand.first is not None else None
    if found is None and sysr.failures:
        found = Schedule(scenario, strategy, seed, sysr.failures[0].faults)
    shrunk = None
    if found is not None:
        with _progress("shrinking the failing schedule") as tick:
            tick(0, 1)
            shrunk = shrink(scenario, strategy, found.seed, found.faults)
        small = Schedule(scenario, strategy, found.seed, shrunk.faults)
        if save:
            small.save(save)
    result = {
        "scenario": scenario, "strategy": strategy, "random": rand.to_json(), "systematic": sysr.to_json(),
        "shrunk": None if shrunk is None or found is None else {**shrunk.to_json(), "seed": found.seed},
    }  # fmt: skip
    if as_json:
        _json(result)
        return
    r = rand.to_json()
    out.print(f"random: {r['seeds']} seeds, {r['failing_seeds']} failing ({_counts_line(r['by_checker'])})", markup=False)
    s = sysr.to_json()
    out.print(
        f"systematic: {s['fault_points']} fault points, {s['combinations']} (point, fault) combinations;"
        f" {s['pruned_repeats']} pruned as repeats, {s['singles_run']} run alone ({s['singles_no_effect']} changed nothing,"
        f" {s['representatives']} distinct behaviours); {s['pairs_considered']} pairs, {s['pairs_unreachable']} unreachable,"
        f" {s['pairs_run']} run{' (budget exhausted)' if s['budget_exhausted'] else ''}; {s['failures']} failing",
        markup=False,
    )
    if shrunk is None or found is None:
        out.print("no anomaly found", markup=False)
        return
    out.print(f"shrunk a failing schedule from {len(shrunk.original)} faults to {len(shrunk.faults)} ({shrunk.runs} runs), seed {found.seed}:", markup=False)
    for f in shrunk.faults:
        out.print(f"  {f.describe()}", markup=False)
    out.print(f"  anomalies {_counts_line(shrunk.result.counts())}", markup=False)
    _explain(shrunk.result, limit=2)
    where = save or "schedule.json"
    out.print(f"replay: comity chaos replay {where}" + ("" if save else f"   (save it with --save {where})"), markup=False)


@chaos_group.command("replay")
@click.argument("source", metavar="SEED_OR_SCHEDULE")
@click.option("--scenario", type=_scenario, help="With a SEED: the scenario (a schedule file names its own).")
@click.option("--strategy", type=_strategy, help="With a SEED: the strategy (a schedule file names its own).")
@click.option("--history", is_flag=True, help="Print the whole history.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replay_cmd(source: str, scenario: str | None, strategy: str | None, history: bool, as_json: bool) -> None:
    """Reproduce a run from its SEED (with --scenario and --strategy) or from a saved
    schedule (a JSON file from `comity chaos run --save-schedule` or `explore --save`)."""
    if source.isdigit() or (source.startswith("-") and source[1:].isdigit()):
        if scenario is None or strategy is None:
            raise click.UsageError("a SEED needs --scenario and --strategy (a schedule file names its own)")
        r = run(scenario, strategy, int(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise click.UsageError(f"{source!r} is neither a seed nor a schedule file")
        try:
            sched = Schedule.load(path)
        except (ValueError, json.JSONDecodeError) as e:
            raise click.UsageError(f"{source}: {e}") from None
        if sched.scenario not in SCENARIOS or sched.strategy not in STRATEGIES:
            raise click.UsageError(f"{source}: unknown scenario {sched.scenario!r} or strategy {sched.strategy!r}")
        r = run(scenario or sched.scenario, strategy or sched.strategy, sched.seed, faults=sched.faults)
    _print_run(r, as_json, history)


@chaos_group.command("byzantine")
@click.option("--seeds", type=click.IntRange(1, 1_000_000), default=100, show_default=True, help="Seeds per scenario × strategy.")
@click.option("--scenario", "scenarios", multiple=True, help="Only this Byzantine scenario (repeatable).")
@click.option("--strategy", "strategies", multiple=True, help="Only this verification strategy: trust, review, pool, comity (repeatable).")
@click.option("--jobs", type=click.IntRange(1, 512), default=None, help="Worker processes (default: one per CPU).")
@click.option("--nemesis", is_flag=True, help="Run each seed under the nemesis: crashes, stalls past the lease, lost answers.")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
@click.option("--json", "as_json", is_flag=True, help="Print {rows: [...]}.")
def byzantine_cmd(seeds: int, scenarios: tuple[str, ...], strategies: tuple[str, ...], jobs: int | None, nemesis: bool, markdown: bool,
                  as_json: bool) -> None:  # fmt: skip
    """Byzantine agents (wrong work reported done, forged approvals, rubber stamps) under trust,
    one reviewer, a message pool and comity: in how many runs tainted work was accepted, how much
    correct work got done, and what verification cost in agent steps and time."""
    import os

    from .byzantine import BYZANTINE_SCENARIOS, VERIFIERS, byzantine_report, markdown_byzantine

    for sc in scenarios:
        if sc not in BYZANTINE_SCENARIOS:
            raise click.BadParameter(f"{sc!r}; choose from {', '.join(BYZANTINE_SCENARIOS)}", param_hint="--scenario")
    for st in strategies:
        if st not in VERIFIERS:
            raise click.BadParameter(f"{st!r}; choose from {', '.join(VERIFIERS)}", param_hint="--strategy")
    with _progress(f"Byzantine: {seeds} seeds") as tick:
        rows = byzantine_report(list(scenarios) or None, list(strategies) or None, range(seeds), jobs=jobs or os.cpu_count() or 1, progress=tick,
                                faults=nemesis)  # fmt: skip
    if as_json:
        flag = " --nemesis" if nemesis else ""
        _json({"seeds": seeds, "faults": nemesis, "command": f"comity chaos byzantine --seeds {seeds}{flag} --json", "rows": [r.to_json() for r in rows]})
        return
    if markdown:
        out.print(markdown_byzantine(rows), markup=False)
        return
    for r in rows:
        out.print(f"{r.scenario:<20} {r.strategy:<8} tainted accepted in {r.tainted_runs}/{r.runs} runs,"
                  f" completion {100 * r.completion:.1f}%, verification {r.verification_steps:.2f} steps/task", markup=False)


@chaos_group.command("report")
@click.option("--seeds", type=click.IntRange(1, 1_000_000), default=100, show_default=True, help="Seeds per scenario × strategy.")
@click.option("--long-seeds", type=click.IntRange(1, 1_000_000), default=None, help="Seeds for the long scenario (the busy afternoon); default: --seeds.")
@click.option("--scenario", "scenarios", type=_scenario, multiple=True, help="Only this scenario (repeatable).")
@click.option("--strategy", "strategies", type=_strategy, multiple=True, help="Only this strategy (repeatable).")
@click.option("--jobs", type=click.IntRange(1, 512), default=None, help="Worker processes (default: one per CPU).")
@click.option("--markdown", is_flag=True, help="Print the tables as Markdown (as in docs/evidence.md).")
@click.option("--json", "as_json", is_flag=True, help="Print {rows: [...], margins: [...]}: fault-free and faulted rows with costs.")
def report_cmd(seeds: int, long_seeds: int | None, scenarios: tuple[str, ...], strategies: tuple[str, ...], jobs: int | None, markdown: bool,
               as_json: bool) -> None:  # fmt: skip
    """Every scenario under every strategy over --seeds seeds, each seed without faults and
    with them: in how many runs each checker found an anomaly, how much of the work got done
    (by the horizon, and by twice the fault-free run's time), what coordination cost, and
    comity's margin over the best baseline."""
    total_runs = seeds * (len(scenarios) or len(SCENARIOS)) * (len(strategies) or len(STRATEGIES))
    with _progress(f"{total_runs} seeds × 2 runs") as tick:
        rows = report(list(scenarios) or None, list(strategies) or None, range(seeds), long_seeds=None if long_seeds is None else range(long_seeds),
                      jobs=jobs, progress=tick)  # fmt: skip
    ms = margins(rows)
    byz: list[Any] = []
    if not scenarios and not strategies:  # the full report: the Byzantine rows too
        from .byzantine import byzantine_report

        with _progress(f"Byzantine: {seeds} seeds") as tick:
            byz = byzantine_report(seeds=range(seeds), jobs=jobs or 1, progress=tick)
        with _progress(f"Byzantine under the nemesis: {seeds} seeds") as tick:
            byz += byzantine_report(seeds=range(seeds), jobs=jobs or 1, progress=tick, faults=True)
    if as_json:
        _json({
            "seeds": seeds, "long_seeds": long_seeds or seeds, "checkers": list(CHECKERS),
            "command": f"comity chaos report --seeds {seeds}" + (f" --long-seeds {long_seeds}" if long_seeds else "") + " --json",
            "rows": [r.to_json() for r in rows], "margins": ms, "byzantine": [r.to_json() for r in byz],
        })  # fmt: skip
        return
    if markdown:
        out.print("Faulted runs (the scenario's random nemesis):\n", markup=False)
        out.print(markdown_table(rows, FAULTED), markup=False)
        out.print("\nFault-free runs:\n", markup=False)
        out.print(markdown_table(rows, FAULT_FREE), markup=False)
        out.print("\nThe cost of coordination (faulted runs):\n", markup=False)
        out.print(markdown_costs(rows), markup=False)
        if ms:
            out.print("\ncomity against the best baseline:\n", markup=False)
            out.print(markdown_margins(ms), markup=False)
        if byz:
            from .byzantine import markdown_byzantine

            out.print("\nByzantine agents (tainted work accepted, and the cost of verification):\n", markup=False)
            out.print(markdown_byzantine([r for r in byz if not r.faults]), markup=False)
            out.print("\nByzantine agents under the nemesis (crashes, stalls past the lease, lost answers):\n", markup=False)
            out.print(markdown_byzantine([r for r in byz if r.faults]), markup=False)
        out.print(f"\nRegenerate: `comity chaos report --seeds {seeds}" + (f" --long-seeds {long_seeds}" if long_seeds else "") + " --markdown`", markup=False)
        return
    from rich.table import Table

    short = {c: "".join(w[0] for w in c.split("_")) for c in CHECKERS}
    table = Table(title=f"comity chaos report: {seeds} seeds per row (runs with at least one anomaly, per checker)", caption=
                  "checkers: " + ", ".join(f"{v}={k}" for k, v in short.items()))  # fmt: skip
    for col in ["scenario", "strategy", "faults", "any", *short.values(), "done", "2×", "waste", "refusals"]:
        table.add_column(col, justify="left" if col in ("scenario", "strategy", "faults") else "right")
    for r in rows:
        cells = [str(r.anomalies[c]) if r.anomalies[c] else "·" for c in CHECKERS]
        style = "bold green" if not STRATEGIES[r.strategy].baseline and not r.any_anomaly else None
        tight = "" if r.completion_tight is None else f"{100 * r.completion_tight:.0f}%"
        table.add_row(r.scenario, r.strategy, r.faults, str(r.any_anomaly or "·"), *cells, f"{100 * r.completion:.1f}%", tight,
                      f"{r.wasted_steps:.1f}", f"{r.refusals_per_agent:.1f}", style=style)  # fmt: skip
    out.print(table)
    for m in ms:
        out.print(
            f"{m['scenario']} ({m['faults']}): best baseline {m['best_baseline']} {m['baseline_runs_with_anomaly']}/{m['runs']} runs with an anomaly,"
            f" comity {m['comity_runs_with_anomaly']}/{m['runs']}",
            markup=False,
        )


@chaos_group.command("mutants")
@click.option("--seeds", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Seeds per scenario (the budget).")
@click.option("--seed", "first_seed", type=int, default=0, show_default=True, help="The first seed.")
@click.option("--mutant", "names", multiple=True, help="Only this mutant (repeatable); see the list with --list.")
@click.option("--scenario", "scenarios", type=_scenario, multiple=True, help="Only this scenario (repeatable; default: every small one).")
@click.option("--until-killed", is_flag=True, help="Stop each mutant at its first kill (a gate; the counts are then partial).")
@click.option("--jobs", type=click.IntRange(1, 512), default=None, help="Worker processes (default: one per CPU).")
@click.option("--list", "list_only", is_flag=True, help="List the mutants and what each breaks.")
@click.option("--explain", is_flag=True, help="Print the anomalies of each killing run (for replaying one kill).")
@click.option("--json", "as_json", is_flag=True, help="Print {mutants: [{mutant, killed, runs, killed_by, first_kill}], all_killed}.")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (as in the README).")
def mutants_cmd(seeds: int, first_seed: int, names: tuple[str, ...], scenarios: tuple[str, ...], until_killed: bool, jobs: int | None,
                list_only: bool, explain: bool, as_json: bool, markdown: bool) -> None:  # fmt: skip
    """Run named mutants of comity (bugs put in on purpose) against the scenarios and report
    which checker killed each in how many runs.  Exits 1 if any mutant survives: a checker
    is trusted only once it has caught a bug."""
    from .mutants import DEFAULT_SCENARIOS, MUTANTS, applied, hunt, markdown_mutants

    if list_only:
        if as_json:
            _json([{"mutant": m.name, "what": m.what} for m in MUTANTS.values()])
            return
        for m in MUTANTS.values():
            out.print(f"{m.name:<34} {m.what}", markup=False)
        return
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise click.UsageError(f"unknown mutant {unknown[0]!r}; `comity chaos mutants --list` lists them")
    seed_range = range(first_seed, first_seed + seeds)
    if explain:
        for name in names or list(MUTANTS):
            for sc in scenarios or DEFAULT_SCENARIOS:
                for seed in seed_range:
                    with applied(MUTANTS[name]):
                        mutated = run(sc, "comity", seed)
                    if mutated.anomalies:
                        out.print(f"{name} on {sc}, seed {seed}: {_counts_line(mutated.counts())}", markup=False)
                        _explain(mutated, limit=3)
        return
    total = len(names or MUTANTS) * len(scenarios or DEFAULT_SCENARIOS) * seeds
    with _progress(f"{total} mutant runs") as tick:
        results = hunt(list(names) or None, list(scenarios) or None, seed_range, until_killed=until_killed, jobs=jobs, progress=tick)
    survivors = [r.name for r in results if not r.killed]
    if as_json:
        _json({"seeds": seeds, "first_seed": first_seed, "scenarios": list(scenarios or DEFAULT_SCENARIOS), "until_killed": until_killed,
               "mutants": [r.to_json() for r in results], "all_killed": not survivors})  # fmt: skip
    elif markdown:
        out.print(markdown_mutants(results), markup=False)
        scs = list(scenarios or DEFAULT_SCENARIOS)
        out.print(f"\n{seeds} seeds from {first_seed} on each of {len(scs)} scenarios ({', '.join(scs)}) per mutant."
                  + (" Each mutant stopped at its first kill." if until_killed else ""), markup=False)  # fmt: skip
    else:
        for res in results:
            by = ", ".join(f"{c} {n}" for c, n in sorted(res.killed_by.items(), key=lambda x: -x[1])) or "nothing"
            mark = "killed" if res.killed else "SURVIVED"
            out.print(f"{res.name:<34} {mark:<8} {res.killing_runs}/{res.runs} runs  by {by}", markup=False)
    if survivors:
        err.print(f"{len(survivors)} mutant(s) survived: {', '.join(survivors)}; a checker or a scenario misses what they break", markup=False)
        sys.exit(1)


@chaos_group.command("process")
@click.argument("scenarios", nargs=-1, type=_scenario)
@click.option("--strategy", "strategies", type=click.Choice(["comity", "none"]), multiple=True, help="comity (through its faces) or none (shared files); default both.")
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True, help="Seeds per scenario and strategy.")
@click.option("--seed", "first_seed", type=int, default=0, show_default=True, help="The first seed.")
@click.option("--scale", type=click.FloatRange(0.005, 1.0), default=None, help="Real seconds per simulated second (default 0.05: a 300 s lease is 15 s).")
@click.option("--no-faults", is_flag=True, help="No SIGKILL, SIGSTOP or server restart (the agents' own faults stay).")
@click.option("--json", "as_json", is_flag=True, help="Print {runs: [...], agreement: [...]}, each run beside the simulator's on the same seed.")
def process_cmd(scenarios: tuple[str, ...], strategies: tuple[str, ...], seeds: int, first_seed: int, scale: float | None, no_faults: bool,
                as_json: bool) -> None:  # fmt: skip
    """Play scenarios with real OS processes through comity's faces (CLI, MCP over stdio, HTTP
    with auth), real git worktrees and hooks, SIGKILL, SIGSTOP and server restarts; judge the
    merged history with the same checkers, beside the simulator's run of the same seed."""
    from .process import SCALE, SCENARIOS_PLAYED, STRATEGIES as PLAYED, play

    runs, agreement = [], []
    for sc in scenarios or SCENARIOS_PLAYED:
        if sc not in SCENARIOS_PLAYED:
            raise click.UsageError(f"process mode plays {', '.join(SCENARIOS_PLAYED)}; not {sc}")
        for st in strategies or PLAYED:
            real_any = sim_any = 0
            for seed in range(first_seed, first_seed + seeds):
                err.print(f"{sc} under {st}, seed {seed}: playing with real processes…", markup=False)
                r = play(sc, st, seed, scale=scale or SCALE, faults=not no_faults)
                sim = run(sc, st, seed)
                row = {**r.to_json(), "simulated": {"anomalies": {k: v for k, v in sim.counts().items() if v}, "completion": round(sim.completion, 4)}}
                runs.append(row)
                real_any += bool(r.anomalies)
                sim_any += bool(sim.anomalies)
                if not as_json:
                    out.print(f"{sc} {st} seed {seed}: {_counts_line(r.counts())}; completion {100 * r.completion:.0f}%"
                              f" ({r.seconds:.0f} s, faces {', '.join(sorted(set(r.faces.values())))}, {len(r.faults)} faults);"
                              f" simulated: {_counts_line(sim.counts())}", markup=False)  # fmt: skip
            agreement.append({"scenario": sc, "strategy": st, "seeds": seeds, "process_runs_with_anomaly": real_any,
                              "simulated_runs_with_anomaly": sim_any, "agree": (real_any == 0) == (sim_any == 0)})  # fmt: skip
    if as_json:
        _json({"runs": runs, "agreement": agreement})
        return
    for a in agreement:
        verdict = "agree" if a["agree"] else "DISAGREE"
        out.print(f"{a['scenario']} {a['strategy']}: runs with an anomaly {a['process_runs_with_anomaly']}/{a['seeds']} in real processes,"
                  f" {a['simulated_runs_with_anomaly']}/{a['seeds']} simulated: {verdict}", markup=False)  # fmt: skip


@chaos_group.command("mast")
@click.option("--seeds", type=click.IntRange(0, 100_000), default=20, show_default=True, help="Seeds per scenario, strategy and mode (0: the mapping only).")
@click.option("--strategy", "strategies", type=_strategy, multiple=True, help="Strategies to measure (default: careful-locks, cas, comity).")
@click.option("--scenario", "scenarios", type=_scenario, multiple=True, help="Only this scenario (repeatable; default: every small one).")
@click.option("--jobs", type=click.IntRange(1, 512), default=None, help="Worker processes (default: one per CPU).")
@click.option("--traces", type=click.Path(exists=True, dir_okay=False), help="MAST's annotated traces (MAD_full_dataset.json): each agent shows one trace's modes.")
@click.option("--json", "as_json", is_flag=True, help="Print [{code, name, share, kind, comity, addressed, measured: [...]}].")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (as in the README).")
def mast_cmd(seeds: int, strategies: tuple[str, ...], scenarios: tuple[str, ...], jobs: int | None, traces: str | None, as_json: bool,
             markdown: bool) -> None:  # fmt: skip
    """MAST's failure modes of multi-agent LLM systems (Cemri et al. 2025): the share of each,
    the harness fault that models it, whether comity's mechanisms address it, and, measured,
    each mode alone in every agent under comity and the careful baselines."""
    from .mast import MODES, PAPER, load_traces, markdown_mast, measure, replay

    if traces:
        try:
            loaded = load_traces(traces)
        except (ValueError, json.JSONDecodeError) as e:
            raise click.UsageError(str(e)) from None
        with _progress("replaying traces") as tick:
            tick(0, 1)
            rows = replay(loaded, list(strategies) or ("careful-locks", "cas", "comity"), list(scenarios) or None, range(seeds or 1))
        if as_json:
            _json({"source": traces, "traces": len(loaded), "seeds": seeds, "replayed": rows})
            return
        for row in rows:
            out.print(f"{row['strategy']:<14} {row['runs_with_anomaly']}/{row['runs']} runs with an anomaly {row['anomalies']};"
                      f" done {100 * row['completion']:.0f}%; modes struck {row['struck']}", markup=False)  # fmt: skip
        return
    if seeds:
        total = len([m for m in MODES if m.kind]) * seeds * (len(scenarios) or 6) * (len(strategies) or 3)
        with _progress(f"{total} runs") as tick:
            result = measure(list(strategies) or ("careful-locks", "cas", "comity"), list(scenarios) or None, range(seeds), jobs=jobs, progress=tick)
    else:
        result = [{"code": m.code, "name": m.name, "share": m.share, "kind": m.kind, "models": m.models, "comity": m.comity,
                   "addressed": m.addressed, "measured": []} for m in MODES]  # fmt: skip
    if as_json:
        _json({"source": PAPER, "seeds": seeds, "modes": result})
        return
    if markdown:
        out.print(markdown_mast(result), markup=False)
        out.print(f"\nShares: {PAPER}." + (f" Measured: {seeds} seeds of each small scenario per mode and strategy, the mode in every agent."
                                              if seeds else ""), markup=False)  # fmt: skip
        return
    out.print(f"rates: {PAPER} (share of failure annotations; used as each agent's chance per run)", markup=False)
    for m in result:
        measured = "; ".join(f"{x['strategy']} {x['runs_with_anomaly']}/{x['runs']} ({x['struck']} struck, done {100 * x['completion']:.0f}%)"
                             for x in m["measured"])  # fmt: skip
        out.print(f"{m['code']:<6} {m['name'][:36]:<36} {100 * m['share']:>5.2f}%  {str(m['kind']):<15} {m['addressed']:<7} {measured}", markup=False)


def register(cli: click.Group) -> None:
    """Add ``comity chaos …`` to the CLI."""
    cli.add_command(chaos_group)

