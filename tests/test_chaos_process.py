"""Process mode: the migration collision played by real OS processes through comity's
faces (the CLI, MCP over stdio, HTTP with auth), in real git worktrees with the hooks,
while the parent kills one agent (SIGKILL), freezes another holding a task past its
lease (SIGSTOP, SIGCONT) and kills and restarts `comity serve`; the same checkers
judge the merged history.  comity shows no anomaly; shared files without coordination
lose a migration, as the simulator says they do on the same seed.  The zombie commit and
the triage race, played the same way through `comity chaos process`, agree with the
simulator too."""

from __future__ import annotations

import json
from collections.abc import Callable
from subprocess import CompletedProcess

import pytest

from comity.chaos import CHECKERS, run
from comity.chaos.process import play

Cli = Callable[..., CompletedProcess[str]]

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


def test_the_zombie_and_the_triage_race_in_real_processes_agree_with_the_simulator(comity_cli: Cli) -> None:
    # Through the command a skeptic runs: comity shows no anomaly and shared files do, in real
    # processes as in the simulator, on the same seed.
    r = comity_cli("chaos", "process", "zombie_commit", "triage_race", "--seeds", "1", "--scale", "0.02", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [(a["scenario"], a["strategy"]) for a in got["agreement"]] == [
        ("zombie_commit", "comity"), ("zombie_commit", "none"), ("triage_race", "comity"), ("triage_race", "none")]
    assert all(a["agree"] for a in got["agreement"]), got["agreement"]
    for run_ in got["runs"]:  # safety first: what each run did is judged whether or not it finished
        assert run_["mode"] == "process", run_
        found = {k: v for k, v in run_["anomalies"].items() if v}
        if run_["strategy"] == "comity":
            assert found == {} and run_["simulated"]["anomalies"] == {}, run_
            assert {"cli", "mcp", "http"} <= set(run_["faces"].values())
        else:
            assert found and run_["simulated"]["anomalies"], run_
            assert set(found) & {"duplicate_work", "fencing_violation", "stale_action", "lost_update"}
    zombie = next(x for x in got["runs"] if x["scenario"] == "zombie_commit" and x["strategy"] == "comity")
    assert any(f["f"] == "pause" for f in zombie["faults"]), zombie["faults"]  # a SIGSTOP past the lease: a zombie
    # Liveness: every run settles and comity finishes all its work.  Known bug, open: on a quiet
    # machine the triage race under comity has twice ended unsettled (a task assigned to an
    # implementer stays open until the wall-clock limit; under load it settles).  Until it is
    # found, that one case is reported as an expected failure, with what the run says.
    unsettled = [r for r in got["runs"] if not r["settled"] or (r["strategy"] == "comity" and r["completion"] != 1.0)]
    if unsettled:
        known = all(r["scenario"] == "triage_race" and r["strategy"] == "comity" for r in unsettled)
        assert known, unsettled
        pytest.xfail(f"known liveness bug: triage_race under comity did not settle: {[{k: r.get(k) for k in ('completion', 'died', 'faults')} for r in unsettled]}")


def test_an_answer_cut_off_by_a_server_restart_is_unknown_not_the_agents_death() -> None:
    # `comity serve` SIGKILLed mid-answer leaves a body cut short (http.client.IncompleteRead,
    # not an OSError); the server's limits answer 408 in plain text.  Either escaped HttpFace
    # and killed the agent's process with exit 1, which the parent did not start again: the
    # tasks triage had assigned it waited for ever (triage_race never settled).
    import socket
    import threading

    import pytest

    from comity.chaos.process import FaceDown, HttpFace

    replies = [
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"tasks": [',
        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 15\r\n\r\nRequest Timeout",
    ]
    for reply in replies:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)

            def answer(sock: socket.socket = s, body: bytes = reply) -> None:
                c, _ = sock.accept()
                with c:
                    c.recv(65536)
                    c.sendall(body)

            t = threading.Thread(target=answer)
            t.start()
            with pytest.raises(FaceDown):
                HttpFace(f"http://127.0.0.1:{s.getsockname()[1]}", "token", lambda: None).verb("task_ready", {})
            t.join()
