"""`comity chaos …` and `comity bench chaos` through the real binary: machine output
shapes, replay from a seed and from a saved schedule, and errors as one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from comity.chaos import CHECKERS, SCENARIOS

Cli = Callable[..., CompletedProcess[str]]


def _json(r: CompletedProcess[str]) -> object:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_list_json_is_the_scenario_names(comity_cli: Cli) -> None:
    assert _json(comity_cli("chaos", "list", "--json")) == list(SCENARIOS)
    text = comity_cli("chaos", "list")
    assert "migration_collision" in text.stdout and "comity" in text.stdout


def test_run_json_has_the_history_hash_and_anomalies_by_checker(comity_cli: Cli, tmp_path: Path) -> None:
    r = _json(comity_cli("chaos", "run", "triage_race", "--strategy", "none", "--seed", "3", "--json"))
    assert isinstance(r, dict)
    assert len(r["history_hash"]) == 64
    assert set(r["anomalies"]) == set(CHECKERS) and sum(r["anomalies"].values()) > 0
    assert 0 <= r["completion"] <= 1
    saved = tmp_path / "schedule.json"
    again = _json(comity_cli("chaos", "run", "triage_race", "--strategy", "none", "--seed", "3", "--json", "--save-schedule", str(saved)))
    assert isinstance(again, dict) and again["history_hash"] == r["history_hash"]
    replayed = _json(comity_cli("chaos", "replay", str(saved), "--json"))
    assert isinstance(replayed, dict) and replayed["history_hash"] == r["history_hash"]
    by_seed = _json(comity_cli("chaos", "replay", "3", "--scenario", "triage_race", "--strategy", "none", "--json"))
    assert isinstance(by_seed, dict) and by_seed["history_hash"] == r["history_hash"]
    human = comity_cli("chaos", "run", "triage_race", "--strategy", "none", "--seed", "3")
    assert r["history_hash"] in human.stdout and "stale_action" in human.stdout


def test_report_json_rows(comity_cli: Cli) -> None:
    r = _json(comity_cli("chaos", "report", "--seeds", "3", "--scenario", "zombie_commit", "--json", "--jobs", "1"))
    assert isinstance(r, dict)
    rows = r["rows"]
    strategies = ["none", "naive-locks", "pool", "careful-locks", "cas", "comity", "comity-embedded"]
    assert [(row["strategy"], row["faults"]) for row in rows] == [(s, f) for f in ("none", "nemesis") for s in strategies]
    for row in rows:
        assert row["runs"] == 3 and set(row["anomalies"]) == set(CHECKERS) and row["scenario"] == "zombie_commit"
        assert 0 <= row["completion"] <= 1 and row["distinct_histories"] == 3
        assert set(row["costs"]) == {"claims_per_task", "wasted_steps", "refusals_per_agent", "finished_runs", "time_to_finish_s"}
        assert (row["completion_tight"] is None) == (row["faults"] == "none")
        assert row["baseline"] == (not row["strategy"].startswith("comity"))
    comity = [row for row in rows if row["strategy"] == "comity"]
    assert all(not any(row["anomalies"].values()) and row["runs_with_anomaly"] == 0 for row in comity)
    margins = r["margins"]
    assert [(m["scenario"], m["faults"], m["strategy"]) for m in margins] == [
        ("zombie_commit", f, s) for f in ("none", "nemesis") for s in ("comity", "comity-embedded")]
    assert all(m["best_baseline"] in strategies[:-2] for m in margins)
    assert all(m["margin_runs"] == m["baseline_runs_with_anomaly"] for m in margins if m["strategy"] == "comity")
    md = comity_cli("chaos", "report", "--seeds", "2", "--scenario", "zombie_commit", "--strategy", "comity", "--markdown", "--jobs", "1")
    assert md.returncode == 0 and "| zombie_commit | **comity** | 2 |" in md.stdout and "wasted steps" in md.stdout


def test_explore_reports_coverage_and_a_shrunk_replayable_failure(comity_cli: Cli, tmp_path: Path) -> None:
    saved = tmp_path / "shrunk.json"
    r = _json(comity_cli("chaos", "explore", "migration_collision", "--strategy", "naive-locks", "--seeds", "0",
                         "--budget", "60", "--no-pairs", "--save", str(saved), "--json"))  # fmt: skip
    assert isinstance(r, dict)
    s = r["systematic"]
    assert s["fault_points"] > 0 and s["singles_run"] == 60 and s["failures"] >= 1
    assert r["shrunk"] is not None and 1 <= r["shrunk"]["to_faults"] <= 3
    replayed = _json(comity_cli("chaos", "replay", str(saved), "--json"))
    assert isinstance(replayed, dict) and replayed["history_hash"] == r["shrunk"]["history_hash"]
    assert sum(replayed["anomalies"].values()) > 0


def test_bad_input_is_one_line_and_exit_2(comity_cli: Cli, tmp_path: Path) -> None:
    r = comity_cli("chaos", "replay", "7")
    assert r.returncode == 2 and "needs --scenario and --strategy" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = comity_cli("chaos", "replay", str(bad))
    assert r.returncode == 2 and "not a chaos schedule" in r.stderr
    r = comity_cli("chaos", "run", "no_such_scenario")
    assert r.returncode == 2


def test_bench_chaos_json(comity_cli: Cli) -> None:
    r = _json(comity_cli("bench", "chaos", "--seeds", "1", "--json", timeout=300))
    assert isinstance(r, dict)
    assert r["schedules_s"] > 0 and r["baseline_schedules_s"] > 0 and r["ratio"] > 0
    assert "none" in r["baseline"]
