"""The Byzantine scenarios: comity accepts no tainted work and completes the correct work;
every baseline accepts tainted work; the checker catches a comity that skips re-execution;
runs replay from their seed."""

from __future__ import annotations

import pytest

from comity.chaos import byzantine
from comity.chaos.byzantine import BYZANTINE_SCENARIOS, run_byzantine

COMITY_SEEDS = range(3)
BASELINE_SEEDS = range(40)


@pytest.mark.parametrize("scenario", sorted(BYZANTINE_SCENARIOS))
def test_comity_accepts_no_tainted_work_and_completes_the_correct_work(scenario: str) -> None:
    results = [run_byzantine(scenario, "comity", s) for s in COMITY_SEEDS]
    assert [r.anomalies for r in results] == [[] for _ in results]
    assert sum(r.completion for r in results) / len(results) >= 0.9
    assert all(r.verification_steps > 0 for r in results)  # verification is not free, and is counted
    if scenario == "forged_approval":
        assert sum(r.refused_attestations for r in results) > 0


@pytest.mark.parametrize("strategy", ["trust", "review", "pool"])
@pytest.mark.parametrize("scenario", sorted(BYZANTINE_SCENARIOS))
def test_every_baseline_accepts_tainted_work(scenario: str, strategy: str) -> None:
    if (scenario, strategy) == ("byzantine_builders", "review"):
        seeds = range(200)  # one honest reviewer catches most of it: it misses one plausible wrong change in five
    else:
        seeds = BASELINE_SEEDS
    hit = next((r for r in (run_byzantine(scenario, strategy, s) for s in seeds) if r.anomalies), None)
    assert hit is not None, f"{strategy} never accepted tainted work in {scenario}"
    assert hit.anomalies[0].checker == "tainted_work_accepted"


def test_the_checker_catches_a_comity_that_skips_reexecution(monkeypatch: pytest.MonkeyPatch) -> None:
    class Lenient(byzantine._Runner):
        def run(self, change, timeout):  # type: ignore[no-untyped-def]
            from comity.work.checks import Outcome

            return Outcome("passed", [])

    monkeypatch.setattr(byzantine, "_Runner", Lenient)
    assert any(run_byzantine("rubber_stamp", "comity", s).anomalies for s in range(3))


def test_a_run_replays_from_its_seed() -> None:
    a, b = run_byzantine("forged_approval", "comity", 1), run_byzantine("forged_approval", "comity", 1)
    assert a.history.hash() == b.history.hash() and a.to_json() == b.to_json()


# ------------------------------------------------------------------ under the nemesis


@pytest.mark.parametrize("scenario", sorted(BYZANTINE_SCENARIOS))
def test_under_the_nemesis_comity_still_accepts_no_tainted_work(scenario: str) -> None:
    """Crashes after a claim, stalls past the lease (the zombie submits anyway), lost answers
    (every call sent again): comity's retries are answered from their recorded outcomes, the
    zombie cannot complete a task taken over, and no wrong work is accepted."""
    results = [run_byzantine(scenario, "comity", s, faults=True) for s in COMITY_SEEDS]
    assert [r.anomalies for r in results] == [[] for _ in results]
    assert sum(r.completion for r in results) / len(results) >= 0.9
    injected: dict[str, int] = {}
    for r in results:
        for kind, n in (r.injected or {}).items():
            injected[kind] = injected.get(kind, 0) + n
    assert injected.get("lost-answer", 0) > 0 and injected.get("crash", 0) + injected.get("pause", 0) > 0, injected
    for r in results:  # every call sent again was answered from its recorded outcome: none acted twice
        lost = [op for op in r.history.ops if op.process == "nemesis" and op.f == "lost-answer" and op.value["f"] != "forge"]
        assert r.replayed == len(lost) > 0 or not lost, (r.replayed, [op.value for op in lost])
    assert sum(r.replayed for r in results) > 0


def test_the_nemesis_injects_every_kind_of_fault_and_baselines_still_accept_tainted_work() -> None:
    runs = [run_byzantine("byzantine_builders", strategy, s, faults=True) for strategy in ("trust", "pool") for s in range(12)]
    kinds = {k for r in runs for k in (r.injected or {})}
    assert kinds == {"crash", "pause", "lost-answer"}
    assert any(r.anomalies for r in runs if r.strategy == "trust") and any(r.anomalies for r in runs if r.strategy == "pool")
    assert any(op.value.get("zombie") for r in runs for op in r.history.completed("work"))


def test_a_faulted_run_replays_from_its_seed_and_a_fault_free_one_is_unchanged() -> None:
    a, b = run_byzantine("byzantine_builders", "comity", 2, faults=True), run_byzantine("byzantine_builders", "comity", 2, faults=True)
    assert a.history.hash() == b.history.hash() and a.to_json() == b.to_json()
    assert not any(op.process == "nemesis" for op in run_byzantine("byzantine_builders", "comity", 2).history.ops)
