"""Changes through the Python API, on each backend: provenance, re-execution in a real git
worktree, acceptance by policy, refutation and transitive taint with news, the board's
``submitted`` state, signed attestations (forged, altered, self-issued refused), ``why``.

Time is a virtual clock; checks are real shell commands in real ``git worktree``s.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import comity
from comity import Fenced, Invalid, NotFound, StaleContext
from comity.runtime import VirtualClock
from comity.work import Agent, Board, why
from comity.work.attestations import Keyring, sign_envelope, statement
from comity.work.changes import Changes, provenance_digest
from comity.work.checks import GitChecks


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "app.py").write_text("print('v1')\n")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "v1")
    return r


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def st(make_store: Callable[..., comity.Store]) -> comity.Store:
    return make_store(clock=VirtualClock())


class Team:
    """Agents over one store, each with its own key directory and a runner over ``repo``."""

    def __init__(self, store: comity.Store, repo: Path, keys: Path) -> None:
        self.store, self.repo, self.keys = store, repo, keys

    def agent(self, name: str) -> Agent:
        a = Agent(self.store.session(name), runner=GitChecks(self.repo, clock=self.store.clock))
        a.changes.keyring = Keyring(self.keys / name)
        return a


@pytest.fixture
def team(st: comity.Store, repo: Path, tmp_path: Path) -> Team:
    return Team(st, repo, tmp_path / "keys")


def claimed(a: Agent, title: str, **kw: Any) -> tuple[str, int]:
    t = a.task_add(title, **kw)["id"]
    return t, a.task_claim(t)["token"]


# ----------------------------------------------------------------- provenance


def test_submit_records_provenance_through_the_guarded_transaction(team: Team) -> None:
    alice = team.agent("alice")
    alice.write("notes/api", "v1 of the api")
    seen = alice.read("notes/api")["context"]
    alice.session.store.session("bob").put("notes/api", "v2", context=seen)  # moves on after alice read it
    t, _ = claimed(alice, "login")
    base = commit(team.repo, "base.txt", "x\n")
    sha = commit(team.repo, "ok.txt", "ok\n")
    c1 = alice.change_submit(t, commit=base, checks=["true"])
    c2 = alice.change_submit(t, commit=sha, checks=["test -f ok.txt"], on=[c1["id"]], commits=[base])
    assert c2["state"] == "submitted" and c2["author"] == "alice" and c2["token"] == 1
    assert c2["built_on"]["changes"] == [c1["id"]] and c2["built_on"]["commits"] == [base]
    # The key it read is recorded at the context (and log position) it read, not the newer one.
    [k] = c2["built_on"]["keys"]
    assert k["key"] == "notes/api" and k["context"] == seen
    assert k["pos"] < alice.session.head()
    events = alice.log("@change/" + c2["id"])["events"]
    assert [e["op"] for e in events][0] == "change.submit" and events[0]["agent"] == "alice"
    assert alice.change_show(c1["id"])["dependents"] == [c2["id"]]
    w = why(alice.session, c2["id"])
    assert [x["id"] for x in w["built_on"]] == [c1["id"]]
    assert w["history"][0]["op"] == "change.submit"
    assert [x["id"] for x in why(alice.session, c1["id"])["built_upon_by"]] == [c2["id"]]


def test_bad_input_names_the_field(team: Team) -> None:
    a = team.agent("alice")
    t = a.task_add("x")["id"]
    for field, call in [
        ("commit", lambda: a.change_submit(t, commit="not-a-sha", checks=["true"])),
        ("commit", lambda: a.change_submit(t, checks=["true"])),
        ("task", lambda: a.change_submit("nope", commit="a" * 40)),
        ("on", lambda: a.change_submit(t, commit="a" * 40, on=["C-99"])),
        ("checks", lambda: a.change_submit(t, commit="a" * 40, checks=[""])),
        ("reason", lambda: a.refute("C-1", "")),
        ("scope", lambda: a.policy_set("everything", attestations=1)),
        ("attestations", lambda: a.policy_set("default", attestations=-1)),
    ]:
        with pytest.raises((Invalid, NotFound)) as ei:
            call()
        assert ei.value.details.get("field") == field, (field, ei.value)


def test_a_retry_with_the_same_request_id_returns_the_recorded_outcome(team: Team, tmp_path: Path) -> None:
    """A client that lost the answer sends the call again: each mutating verb of the
    verification layer answers from the recorded outcome instead of acting twice."""
    alice, bob, carol = team.agent("alice"), team.agent("bob"), team.agent("carol")
    t, _ = claimed(alice, "parser")
    runs = tmp_path / "runs"
    sha = commit(team.repo, "parser.py", "ok\n")
    args: dict[str, Any] = {"commit": sha, "checks": [f"echo run >> {runs}"], "request_id": "submit-1"}
    first = alice.change_submit(t, **args)
    again = alice.change_submit(t, **args)
    assert again["id"] == first["id"] and again["replayed"] is True and "replayed" not in first
    assert [c["id"] for c in alice.change_list(task=t)["changes"]] == [first["id"]]
    with pytest.raises(Invalid) as ei:
        alice.change_submit(t, **{**args, "checks": ["true"]})  # the id of another request
    assert ei.value.details.get("field") == "request_id"
    # verify: the checks run once; the retry answers with the recorded run.
    v = bob.verify(first["id"], request_id="verify-1")
    v2 = bob.verify(first["id"], request_id="verify-1")
    assert runs.read_text() == "run\n"
    assert v2["replayed"] is True and (v2["outcome"], v2["state"], v2["verification"]) == (v["outcome"], v["state"], v["verification"])
    assert len(alice.change_show(first["id"])["verifications"]) == 1
    # refute, attest and policy_set likewise record once.
    alice.policy_set("default", attestations=1, reexecute=False, request_id="policy-1")
    assert alice.policy_set("default", attestations=1, reexecute=False, request_id="policy-1") == {
        **alice.policy_set("default", attestations=1, reexecute=False), "replayed": True, "news": [], "stale": []}
    t2, _ = claimed(alice, "lexer")
    c2 = alice.change_submit(t2, commit=commit(team.repo, "lexer.py", "ok\n"), checks=["true"])["id"]
    a1 = carol.attest(c2, request_id="attest-1")
    a2 = carol.attest(c2, request_id="attest-1")
    assert a2["replayed"] is True and a1["state"] == a2["state"] == "accepted"
    assert [a["attester"] for a in carol.change_show(c2)["attestations"]] == ["carol"]
    events = len(carol.log(f"@change/{c2}")["events"])
    r1 = carol.refute(c2, "breaks login", request_id="refute-1")
    r2 = carol.refute(c2, "breaks login", request_id="refute-1")
    assert r1["state"] == r2["state"] == "refuted" and r2["replayed"] is True
    assert len(carol.log(f"@change/{c2}")["events"]) == events + 1
    assert r2["refuted"] == r1["refuted"]


# ------------------------------------------------------------- re-execution


def test_verify_reexecutes_in_a_clean_worktree_and_hashes_the_output(team: Team) -> None:
    alice, bob = team.agent("alice"), team.agent("bob")
    t, _ = claimed(alice, "t")
    good = commit(team.repo, "ok.txt", "ok\n")
    (team.repo / "untracked.txt").write_text("only in the main checkout\n")  # a clean worktree does not see it
    c = alice.change_submit(t, commit=good, checks=["test -f ok.txt && echo fine", "test ! -e untracked.txt"])
    r = bob.verify(c["id"])
    assert (r["outcome"], r["state"]) == ("passed", "accepted")
    v = r["verification"]
    assert v["by"] == "bob" and v["commit"] == good
    assert [x["exit_code"] for x in v["checks"]] == [0, 0]
    import hashlib

    assert v["checks"][0]["output_sha256"] == hashlib.sha256(b"fine\n").hexdigest()
    assert v["checks"][0]["tail"] == "fine\n"
    assert len(v["output_sha256"]) == 64
    # The worktree is gone afterwards.
    assert git(team.repo, "worktree", "list").count("\n") == 0


def test_a_failing_check_refutes_and_taints_what_was_built_on_it_with_news(team: Team) -> None:
    alice, bob, carol = team.agent("alice"), team.agent("bob"), team.agent("carol")
    t1, _ = claimed(alice, "parser")
    t2, _ = claimed(bob, "lexer")
    t3, _ = claimed(carol, "docs")
    bad = commit(team.repo, "parser.py", "broken\n")
    c1 = alice.change_submit(t1, commit=bad, checks=["grep -q working parser.py"])
    c2 = bob.change_submit(t2, commit=commit(team.repo, "lexer.py", "ok\n"), checks=["true"], on=[c1["id"]])
    c3 = carol.change_submit(t3, commit=commit(team.repo, "docs.md", "ok\n"), checks=["true"], on=[c2["id"]])
    bob.news()  # bob has seen everything so far
    r = carol.verify(c1["id"])
    assert (r["outcome"], r["state"]) == ("failed", "refuted")
    assert r["verification"]["checks"][0]["exit_code"] == 1
    s1 = alice.change_show(c1["id"])
    assert s1["refuted"]["source"] == "verify" and "grep -q working parser.py" in s1["refuted"]["reason"]
    for c in (c2, c3):
        s = alice.change_show(c["id"])
        assert s["state"] == "tainted" and s["tainted_by"] == [c1["id"]]
    # bob, whose change was built on it before the failure was known, gets the news in his next answer.
    answer = bob.task_list()
    inbox = [n for n in answer["news"] if n["key"] == "@inbox/bob"]
    assert inbox and inbox[0]["op"] == "change.news"
    full = bob.log("@inbox/bob")["events"][-1]["value"]
    assert full["news"] == [{"change": c2["id"], "task": t2, "state": "tainted", "was": "submitted", "tainted_by": [c1["id"]]}]
    # A tainted change is never accepted, whatever evidence it gets.
    assert alice.verify(c2["id"])["state"] == "tainted"
    # A change submitted on refuted work is tainted from the start.
    c4 = bob.change_submit(t2, commit=commit(team.repo, "more.py", "x\n"), checks=["true"], on=[c2["id"]])
    assert c4["state"] == "tainted" and c4["tainted_by"] == [c1["id"]]


def test_taint_clears_when_its_source_is_reverified(team: Team, tmp_path: Path) -> None:
    alice, bob = team.agent("alice"), team.agent("bob")
    flag = tmp_path / "service-up"  # the check depends on the world, which changes
    t1, _ = claimed(alice, "a")
    t2, _ = claimed(bob, "b")
    c1 = alice.change_submit(t1, commit=commit(team.repo, "a.py", "a\n"), checks=[f"test -f {flag}"])
    c2 = bob.change_submit(t2, commit=commit(team.repo, "b.py", "b\n"), checks=["true"], on=[c1["id"]])
    assert bob.verify(c2["id"])["state"] == "submitted"  # passed, but waits on what it is built on
    assert bob.change_show(c2["id"])["waiting_on"] == [c1["id"]]
    assert bob.verify(c1["id"])["state"] == "refuted"
    assert bob.change_show(c2["id"])["state"] == "tainted"
    flag.write_text("")
    r = bob.verify(c1["id"])
    assert (r["outcome"], r["state"]) == ("passed", "accepted")
    s2 = bob.change_show(c2["id"])
    assert s2["state"] == "accepted" and s2["tainted_by"] == [] and s2["waiting_on"] == []
    assert [e["op"] for e in bob.log("@change/" + c2["id"])["events"]][-2:] == ["change.clear", "change.accept"] or \
        bob.log("@change/" + c2["id"])["events"][-1]["op"] in ("change.clear", "change.accept")
    assert alice.change_show(c1["id"])["cleared"]["was"]["source"] == "verify"


def test_refute_by_reason_taints_transitively(team: Team) -> None:
    alice, bob = team.agent("alice"), team.agent("bob")
    t, _ = claimed(alice, "x")
    c1 = alice.change_submit(t, commit=commit(team.repo, "x", "1"), checks=["true"])
    assert c1["state"] == "submitted"
    alice.verify(c1["id"])
    assert alice.change_show(c1["id"])["state"] == "accepted"
    c2 = bob.change_submit(t, commit=commit(team.repo, "y", "2"), checks=["true"], on=[c1["id"]])
    assert bob.verify(c2["id"])["state"] == "accepted"
    r = bob.refute(c1["id"], "emails with a plus sign cannot log in")
    assert r["state"] == "refuted" and r["refuted"] == {"by": "bob", "at": r["refuted"]["at"], "source": "refute",
                                                        "reason": "emails with a plus sign cannot log in"}
    assert bob.change_show(c2["id"])["state"] == "tainted"  # accepted work built on refuted work is no longer accepted
    assert [c["id"] for c in bob.change_list(state="tainted")["changes"]] == [c2["id"]]
    summary = bob.changes.summary()  # what a dashboard reads
    assert summary["counts"] == {"submitted": 0, "accepted": 0, "refuted": 1, "tainted": 1}
    assert [c["id"] for c in summary["refuted_or_tainted"]] == [c1["id"], c2["id"]]


# ---------------------------------------------------------------- policies


def test_under_a_policy_a_task_is_submitted_until_its_change_is_accepted(team: Team) -> None:
    lead, alice, bob, carol = (team.agent(n) for n in ("lead", "alice", "bob", "carol"))
    lead.policy_set("label:backend", attestations=1, reexecute=True)
    t, tok = claimed(alice, "login", labels=["backend"])
    after = lead.task_add("deploy", deps=[t])["id"]
    with pytest.raises(NotFound) as ei:
        alice.task_complete(t, tok)
    assert ei.value.details["field"] == "change" and "submit its change" in ei.value.message
    c = alice.change_submit(t, commit=commit(team.repo, "login.py", "ok\n"), checks=["test -f login.py"])
    done = alice.task_complete(t, tok, result=c["id"])
    assert done["state"] == "submitted" and done["lease"] is None
    assert [x["id"] for x in lead.task_list(state="submitted")["tasks"]] == [t]
    assert after not in [x["id"] for x in bob.task_ready()["tasks"]]  # what waits on it still waits
    with pytest.raises(StaleContext):
        bob.task_claim(t)
    assert bob.verify(c["id"])["state"] == "submitted"  # re-executed, but the policy also wants an attestation
    assert lead.task_show(t)["state"] == "submitted"
    with pytest.raises(Invalid, match="self-issued"):
        alice.attest(c["id"])
    shown = carol.attest(c["id"])
    assert shown["state"] == "accepted" and [a["attester"] for a in shown["attestations"]] == ["carol"]
    assert lead.task_show(t)["state"] == "done"
    assert after in [x["id"] for x in bob.task_ready()["tasks"]]
    assert alice.task_complete(t, tok, result=c["id"])["replayed"] is True


def test_a_refuted_change_reopens_its_task(team: Team) -> None:
    lead, alice, bob = team.agent("lead"), team.agent("alice"), team.agent("bob")
    lead.policy_set("default", attestations=0, reexecute=True)
    t, tok = claimed(alice, "login")
    c = alice.change_submit(t, commit=commit(team.repo, "login.py", "x\n"), checks=["false"])
    assert alice.task_complete(t, tok)["state"] == "submitted"
    assert bob.verify(c["id"])["state"] == "refuted"
    task = lead.task_show(t)
    assert task["state"] == "open" and task["reopened"]["change"] == c["id"]
    w = why(lead.session, t)  # the task's history follows its changes
    assert [x["id"] for x in w["changes"]] == [c["id"]] and any("refuted" in x for x in w["explanations"])
    assert "task.reopen" in [h["op"] for h in w["history"]]
    assert t in [x["id"] for x in bob.task_ready()["tasks"]]
    # alice's next attempt: claim again (a greater token), submit a fixed change, complete.
    with pytest.raises(StaleContext, match="reopen"):
        alice.task_claim(t)  # she last read it before it was reopened: she is told why first
    assert "refuted" in alice.task_show(t)["reopened"]["why"]
    tok2 = alice.task_claim(t)["token"]
    assert tok2 > tok
    with pytest.raises(NotFound):
        alice.task_complete(t, tok2)  # the refuted change was under the old token: submit the fix first
    c2 = alice.change_submit(t, commit=commit(team.repo, "login.py", "fixed\n"), checks=["true"])
    assert alice.task_complete(t, tok2)["state"] == "submitted"
    assert bob.verify(c2["id"])["state"] == "accepted"
    assert lead.task_show(t)["state"] == "done"


def test_a_superseded_token_is_fenced_before_any_policy_refusal(team: Team, st: comity.Store) -> None:
    lead, alice, bob = team.agent("lead"), team.agent("alice"), team.agent("bob")
    lead.policy_set("default", attestations=0, reexecute=True)
    t = lead.task_add("x")["id"]
    old = alice.task_claim(t, ttl=10)["token"]
    assert isinstance(st.clock, VirtualClock)
    st.clock.advance(11)
    new = bob.task_claim(t)["token"]
    zombie = alice.change_submit(t, commit=commit(team.repo, "z", "z"), checks=["true"])
    assert zombie["token"] is None  # alice no longer holds the lease: her change completes nothing
    with pytest.raises(Fenced):
        alice.task_complete(t, old)
    c = bob.change_submit(t, commit=commit(team.repo, "b", "b"), checks=["true"])
    assert c["token"] == new
    alice.verify(zombie["id"])
    assert bob.task_show(t)["state"] == "claimed"  # the zombie's accepted change did not complete bob's task
    assert bob.task_complete(t, new)["state"] == "submitted"
    bob.verify(c["id"])
    assert bob.task_show(t)["state"] == "done"


def test_without_a_stored_policy_done_is_done(team: Team) -> None:
    alice = team.agent("alice")
    t, tok = claimed(alice, "x")
    assert alice.task_complete(t, tok)["state"] == "done"


def test_k_attestations_count_distinct_agents_other_than_the_author(team: Team) -> None:
    lead, alice, bob, carol, dave = (team.agent(n) for n in ("lead", "alice", "bob", "carol", "dave"))
    lead.policy_set("path:src/**", attestations=2, reexecute=False)
    t, tok = claimed(alice, "x")
    c = alice.change_submit(t, commit=commit(team.repo, "x", "1"), checks=["true"], paths=["src/app.py"])
    assert c["policy"]["attestations"] == 2 and c["policy"]["scopes"] == ["path:src/**"]
    assert alice.task_complete(t, tok)["state"] == "submitted"
    bob.attest(c["id"])
    assert bob.attest(c["id"])["state"] == "submitted"  # the same agent twice counts once
    assert carol.attest(c["id"])["state"] == "accepted"
    assert lead.task_show(t)["state"] == "done"
    assert len(dave.change_show(c["id"])["attestations"]) == 2


# ------------------------------------------------------------- attestations


def test_forged_altered_and_self_issued_attestations_are_refused_with_the_reason(team: Team, tmp_path: Path) -> None:
    alice, bob, mallory = team.agent("alice"), team.agent("bob"), team.agent("mallory")
    t, _ = claimed(alice, "x")
    c = alice.change_submit(t, commit=commit(team.repo, "x", "1"), checks=["true"])
    other = alice.change_submit(t, commit=commit(team.repo, "y", "2"), checks=["true"])
    rec = Changes(alice.session).record(c["id"])
    store_id = alice.session.store.store_id
    good = bob.changes.sign(c["id"])  # registers bob's key
    mallory.changes.sign(other["id"])  # registers mallory's
    # Wrong key: mallory signs a statement that says it is bob's.
    mkey = Keyring(team.keys / "mallory").load("mallory")
    forged = sign_envelope(statement(rec, store_id, "bob", provenance_digest(rec)), mkey)
    forged["signatures"][0]["keyid"] = good["signatures"][0]["keyid"]
    # A key nobody registered.
    stranger = Keyring(tmp_path / "stranger").create("stranger", b"\x07" * 32)
    unknown = sign_envelope(statement(rec, store_id, "bob", provenance_digest(rec)), stranger)
    # Altered after signing: bob's envelope with its payload edited.
    import base64
    import json

    body = json.loads(base64.b64decode(good["payload"]))
    body["subject"][0]["digest"]["gitCommit"] = "0" * 40
    altered = {**good, "payload": base64.b64encode(json.dumps(body).encode()).decode()}
    # Signed honestly, but for another change's commit (a subject that does not match).
    orec = Changes(alice.session).record(other["id"])
    wrong_subject = sign_envelope({**statement(rec, store_id, "bob", provenance_digest(rec)),
                                   "subject": statement(orec, store_id, "bob", "")["subject"]}, Keyring(team.keys / "bob").load("bob"))
    # Self-issued: the author's own approval.
    self_issued = alice.changes.sign(c["id"])
    for env, reason in [
        (forged, "does not verify with bob's key"),
        (unknown, "signed by no registered key"),
        (altered, "altered after signing"),
        (wrong_subject, "subject"),
        (self_issued, "self-issued"),
    ]:
        with pytest.raises(Invalid) as ei:
            mallory.attest(c["id"], env)
        assert ei.value.field == "envelope" and reason in ei.value.message, (reason, ei.value.message)
    assert alice.change_show(c["id"])["attestations"] == []
    shown = mallory.attest(c["id"], good)  # a real one counts, whoever relays it
    assert [a["attester"] for a in shown["attestations"]] == ["bob"]
    assert shown["attestations"][0]["envelope"] == good


def test_private_keys_live_in_the_key_directory_with_mode_0600(team: Team) -> None:
    bob = team.agent("bob")
    alice = team.agent("alice")
    t, _ = claimed(alice, "x")
    c = alice.change_submit(t, commit=commit(team.repo, "x", "1"), checks=["true"])
    bob.attest(c["id"])
    key = team.keys / "bob" / "bob.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (team.keys / "bob").stat().st_mode & 0o777 == 0o700
    # The store holds the public key only.
    dump = repr([bob.log(k)["events"] for k in bob.keys("@", limit=10_000)["keys"]])
    assert "PRIVATE" not in dump and key.read_text().splitlines()[1] not in dump


def test_board_lists_submitted(st: comity.Store, team: Team) -> None:
    lead, alice = team.agent("lead"), team.agent("alice")
    lead.policy_set("default", attestations=1, reexecute=False)
    t, tok = claimed(alice, "x")
    alice.change_submit(t, commit="a" * 40, checks=["true"])
    alice.task_complete(t, tok)
    assert [x["state"] for x in Board(st.session()).tasks()] == ["submitted"]
