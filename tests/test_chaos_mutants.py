"""Mutation testing as a gate: every named mutant of comity is caught by some checker,
on a small budget (the full hunt is `comity chaos mutants --seeds 200`).  A mutant is
applied only while its runs execute."""

from __future__ import annotations

import json
from collections.abc import Callable
from subprocess import CompletedProcess

from comity.chaos import run
from comity.chaos.mutants import MUTANTS, applied
from comity.store._txn import Executor
from comity.work.tasks import Board

Cli = Callable[..., CompletedProcess[str]]

# What each mutant breaks, and the checkers that may be the ones to see it.
EXPECTED = {
    "done-ignores-token": {"fencing_violation", "duplicate_work"},
    "renew-does-not-extend": {"lease_renewal", "lease_overlap"},
    "expired-takeover-keeps-token": {"token_order", "durability"},
    "acquire-takes-live-lease": {"lease_overlap", "fencing_violation", "duplicate_work"},
    "sequence-reissues-after-restart": {"sequence", "durability", "orphaned_task", "allocation"},
    "context-check-skipped": {"lost_update", "elle_cycle"},
    "stale-write-overwrites": {"lost_update", "elle_cycle"},
    "claim-ignores-context": {"stale_action"},
    "fencing-ignores-superseded-token": {"fencing_violation", "duplicate_work"},
    "acknowledged-before-durable": {"durability", "lost_update", "fencing_violation", "duplicate_work", "token_order", "sequence"},
    "allocation-ignores-unit": {"allocation"},
}


def test_every_mutant_is_killed_on_a_small_budget(comity_cli: Cli) -> None:
    r = comity_cli("chaos", "mutants", "--seeds", "12", "--until-killed", "--jobs", "1", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["all_killed"] is True
    assert [m["mutant"] for m in got["mutants"]] == list(MUTANTS) == list(EXPECTED)
    for m in got["mutants"]:
        assert m["killed"] and m["runs"] >= 1 and m["first_kill"] is not None, m
        assert set(m["killed_by"]) & EXPECTED[m["mutant"]], m
        assert "comity chaos mutants --mutant" in m["first_kill"]["replay"]


def test_a_mutant_is_undone_after_its_runs_and_the_kill_is_its_doing() -> None:
    mutant = MUTANTS["fencing-ignores-superseded-token"]
    before = (Executor._check_holds, Board.done)
    killed = None
    for seed in range(12):
        with applied(mutant):
            if run("zombie_commit", "comity", seed).failed("fencing_violation"):
                killed = seed
                break
    assert killed is not None
    assert (Executor._check_holds, Board.done) == before
    assert run("zombie_commit", "comity", killed).anomalies == []  # the same seed, unmutated


def test_a_surviving_mutant_fails_the_command(comity_cli: Cli) -> None:
    # One seed of one scenario that never meets a migration: the allocator's mutant survives.
    r = comity_cli("chaos", "mutants", "--mutant", "allocation-ignores-unit", "--scenario", "stale_context", "--seeds", "1", "--jobs", "1")
    assert r.returncode == 1 and "survived: allocation-ignores-unit" in r.stderr
    md = comity_cli("chaos", "mutants", "--mutant", "done-ignores-token", "--scenario", "zombie_commit", "--seeds", "4", "--until-killed",
                    "--jobs", "1", "--markdown")  # fmt: skip
    assert md.returncode == 0 and "| `done-ignores-token` | a completion does not check" in md.stdout and "fencing violation" in md.stdout
    listed = comity_cli("chaos", "mutants", "--list", "--json")
    assert [m["mutant"] for m in json.loads(listed.stdout)] == list(MUTANTS)
