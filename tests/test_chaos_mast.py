"""MAST's failure modes as agent faults: the rates are the paper's, each mode maps to a
harness fault (or says it is not modelled), and measured alone, comity refuses what the
modes it claims to address do."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from comity.chaos import SCENARIOS, run
from comity.chaos.mast import MODES, defaults, isolated
from comity.chaos.nemesis import KINDS

Cli = Callable[..., CompletedProcess[str]]


def test_the_rates_are_the_papers_figure_and_every_mode_is_accounted_for() -> None:
    assert [m.code for m in MODES] == [f"FM-{c}.{i}" for c, n in ((1, 5), (2, 6), (3, 3)) for i in range(1, n + 1)]
    by_category = {c: 100 * sum(m.share for m in MODES if m.code.startswith(f"FM-{c}.")) for c in (1, 2, 3)}
    for c, published in {1: 44.2, 2: 32.3, 3: 23.5}.items():  # Figure 1's three categories (rounded there)
        assert abs(by_category[c] - published) <= 0.06, (c, by_category[c])
    assert all(m.kind is None or m.kind in KINDS for m in MODES)
    assert {m.addressed for m in MODES} == {"yes", "partly", "no"}
    assert defaults()["retry"] == 0.157 and "None" not in map(str, defaults())
    # A scenario's agents take these rates unless the scenario raises one for its story.
    assert SCENARIOS["triage_race"].profile.per_agent["retry"] == 0.157
    assert "ignore_refusal" not in SCENARIOS["zombie_commit"].profile.per_agent


def test_a_mode_in_every_agent_strikes_once_per_agent() -> None:
    mode = next(m for m in MODES if m.kind == "retry")
    r = run("crash_mid_task", "comity", 3, profile=isolated(mode, SCENARIOS["crash_mid_task"].profile))
    struck = [f for f in r.schedule.faults if f.kind == "retry"]
    agents = [f.point.split(":")[1].split("#")[0] for f in struck]
    assert 1 <= len(struck) == len(set(agents)) <= 3  # at most once per agent (each strikes at one of its chances)
    assert not r.anomalies


def test_mast_json_maps_and_measures(comity_cli: Cli) -> None:
    mapping = json.loads(comity_cli("chaos", "mast", "--seeds", "0", "--json").stdout)
    assert "arXiv:2503.13657" in mapping["source"] and len(mapping["modes"]) == 14
    r = comity_cli("chaos", "mast", "--seeds", "1", "--scenario", "zombie_commit", "--strategy", "comity", "--strategy", "cas", "--json", "--jobs", "1", timeout=300)
    got = json.loads(r.stdout)
    assert got["modes"][0]["code"] == "none"  # the control: the machinery's faults and no agent fault
    for m in got["modes"]:
        for x in m["measured"]:
            if x["strategy"] == "comity" and m["addressed"] == "yes":
                assert x["runs_with_anomaly"] == 0, m
    # The README's table: every mode with the paper's share, comity's answer and the verdict.
    md = comity_cli("chaos", "mast", "--seeds", "0", "--markdown").stdout
    rows = [line for line in md.splitlines() if line.startswith("| FM-")]
    assert len(rows) == 14 and "| FM-1.3 Step repetition | 15.7% | retry |" in md and "| no |" in md
    assert "arXiv:2503.13657" in md


def test_annotated_traces_replay_as_each_agents_modes(comity_cli: Cli, tmp_path: Path) -> None:
    # Three made-up records in the MAD dataset's shape (the dataset itself is not in the repository).
    records = [{"mas_name": "made-up", "mast_annotation": {"1.3": 1, "2.6": 1}}, {"mas_name": "made-up", "mast_annotation": {"1.3": 1}}]
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(records))
    r = comity_cli("chaos", "mast", "--traces", str(path), "--seeds", "2", "--scenario", "crash_mid_task", "--strategy", "comity", "--json")
    got = json.loads(r.stdout)
    assert got["traces"] == 2
    [row] = got["replayed"]
    assert row["strategy"] == "comity" and row["runs"] == 2 and row["runs_with_anomaly"] == 0
    assert set(row["struck"]) <= {"retry", "steal"} and row["struck"].get("retry")  # only the modes the traces show
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"no": "annotation"}]))
    r = comity_cli("chaos", "mast", "--traces", str(bad))
    assert r.returncode == 2 and "mast_annotation" in r.stderr
