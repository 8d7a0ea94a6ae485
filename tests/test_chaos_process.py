"""Process mode: the migration collision played by real OS processes through comity's
faces (the CLI, MCP over stdio, HTTP with auth), in real git worktrees with the hooks,
while the parent kills one agent (SIGKILL), freezes another holding a task past its
lease (SIGSTOP, SIGCONT) and kills and restarts `comity serve`; the same checkers
judge the merged history.  comity shows no anomaly; shared files without coordination
lose a migration, as the simulator says they do on the same seed."""

from __future__ import annotations

from comity.chaos import CHECKERS, run
from comity.chaos.process import play

FAULTS = [
    {"at": 100.0, "kind": "pause", "agent": "impl-2", "arg": 500.0},  # frozen while it holds its task: a zombie
    {"at": 150.0, "kind": "crash", "agent": "impl-1", "arg": 60.0},  # killed, back after a minute with nothing
    {"at": 200.0, "kind": "restart_store"},  # comity serve killed and started again
]


def test_comity_through_its_faces_in_real_processes_shows_no_anomaly() -> None:
    r = play("migration_collision", "comity", 0, faults=FAULTS, scale=0.03)
    assert set(r.faces.values()) == {"cli", "mcp", "http"}
    kinds = {f["f"] for f in r.faults}
    assert {"pause", "crash", "restart_store"} <= kinds, r.faults
    assert any(o.process == "store" and o.f == "restart" for o in r.history)
    assert set(r.counts()) == set(CHECKERS)
    assert r.anomalies == [], [a.explanation for a in r.anomalies]
    assert r.settled and r.completion == 1.0
    agents = {o.agent for o in r.history if o.type == "invoke"}
    assert {"impl-1", "impl-2", "impl-3"} <= agents
    assert any(o.process == "impl-1#2" for o in r.history), "the killed agent came back as a new process"
    assert run("migration_collision", "comity", 0).anomalies == []  # the simulator agrees


def test_shared_files_in_real_processes_lose_a_migration_as_the_simulator_says() -> None:
    r = play("migration_collision", "none", 0, faults=False, scale=0.03)
    assert r.anomalies
    assert r.counts()["lost_update"] or r.counts()["sequence"]
    assert run("migration_collision", "none", 0, quiet=True).anomalies  # the simulator agrees
