"""The partition scenario: an offline sandbox agent and a second site, cut off from hq, healed.

comity (replicas of hq's store) ends with every site holding what hq holds, nothing lost,
and the work done; every baseline, run across sites as a team would run it, shows
divergence or loss.
"""

from __future__ import annotations

import pytest

from comity.chaos import SCENARIOS, STRATEGIES, run
from comity.chaos.checkers import CHECKERS
from comity.chaos.partition import HQ, divergence

SEEDS = range(4)
BASELINE_SEEDS = range(3)
LOSS = ("divergence", "lost_update", "duplicate_work", "fencing_violation")


def test_the_scenario_and_its_checker_are_registered() -> None:
    assert "partition" in SCENARIOS and CHECKERS["divergence"] is divergence
    plan = SCENARIOS["partition"].build(__import__("comity.runtime", fromlist=["SeededRng"]).SeededRng(1)).plan
    assert set(plan.sites) == {"sandbox", "site-b"}


@pytest.mark.parametrize("strategy", [name for name, s in STRATEGIES.items() if not s.baseline])
def test_comity_converges_loses_nothing_and_gets_the_work_done(strategy: str) -> None:
    quiet = run("partition", strategy, 0, quiet=True)
    assert quiet.anomalies == [], [a.to_json() for a in quiet.anomalies]
    assert quiet.completion == 1.0
    assert set(quiet.final.sites) == {HQ, "sandbox", "site-b"}
    completions = []
    for seed in SEEDS:
        r = run("partition", strategy, seed)
        assert r.anomalies == [], (seed, [a.to_json() for a in r.anomalies])
        assert len({str(s) for s in r.final.sites.values()}) == 1, seed
        completions.append(r.completion)
    assert sum(completions) / len(completions) >= 0.9, completions


def test_the_same_seed_gives_the_same_history() -> None:
    a, b = run("partition", "comity", 3), run("partition", "comity", 3)
    assert a.history_hash == b.history_hash


@pytest.mark.parametrize("strategy", [name for name, s in STRATEGIES.items() if s.baseline])
def test_every_baseline_shows_divergence_or_loss(strategy: str) -> None:
    found: dict[str, int] = {}
    for seed in BASELINE_SEEDS:
        r = run("partition", strategy, seed)
        for checker, n in r.counts().items():
            if n and checker in LOSS:
                found[checker] = found.get(checker, 0) + 1
    assert found, f"{strategy} showed no divergence or loss in {len(BASELINE_SEEDS)} seeds"
