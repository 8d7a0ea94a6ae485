"""Verification through the real ``comity`` command in a real repository with the hooks
installed: a change whose claimed check fails on re-execution is refuted, a change built
on it before that was known is tainted with news to its author, the pre-commit hook and
``doctor`` flag commits built on it; attestations signed by the CLI are checked offline
with only the public keys."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from test_repo_support import commit, git, make_repo, ok, run

Env = dict[str, str]


def sha(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def as_(agent: str, keys: Path) -> Env:
    return {"COMITY_AGENT": agent, "COMITY_KEYS": str(keys / agent), "COMITY_SESSION": f"{agent}-s"}


def test_refuted_on_reexecution_taints_what_was_built_on_it_through_the_cli(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    keys = tmp_path / "keys"
    alice, bob, carol = (as_(n, keys) for n in ("alice", "bob", "carol"))
    t1 = ok(run(repo, "task", "add", "parser", **alice)).stdout.strip()
    t2 = ok(run(repo, "task", "add", "lexer", **alice)).stdout.strip()
    ok(run(repo, "task", "claim", t1, **alice))
    ok(run(repo, "task", "claim", t2, **bob))
    (repo / "parser.py").write_text("def parse(s):\n    return None  # wrong\n")
    assert commit(repo, "parser", **alice).returncode == 0
    # alice claims her check passes; it does not.
    c1 = json.loads(ok(run(repo, "change", "submit", "--task", t1, "--check", "grep -q 'return s' parser.py", "--json", **alice)).stdout)
    assert c1 == {**c1, "id": "C-1", "state": "submitted", "commit": sha(repo), "paths": ["parser.py"]}
    ok(run(repo, "news", **bob))  # bob has seen everything so far
    (repo / "lexer.py").write_text("from parser import parse\n")
    assert commit(repo, "lexer on the parser", **bob).returncode == 0
    c2 = json.loads(ok(run(repo, "change", "submit", "--task", t2, "--check", "true", "--on", "C-1", "--json", **bob)).stdout)
    assert c2["state"] == "submitted" and c2["built_on"]["changes"] == ["C-1"]
    v = run(repo, "verify", "C-1", "--json", "--request-id", "carol-verify-1", **carol)
    assert v.returncode == 3, v.stderr
    body = json.loads(v.stdout)
    assert (body["id"], body["outcome"], body["state"]) == ("C-1", "failed", "refuted")
    # The same command again (its answer was lost): the recorded outcome, the checks not run again.
    again = run(repo, "verify", "C-1", "--json", "--request-id", "carol-verify-1", **carol)
    assert again.returncode == 3 and json.loads(again.stdout)["verification"] == body["verification"]
    assert len(json.loads(ok(run(repo, "change", "show", "C-1", "--json")).stdout)["verifications"]) == 1
    shown = json.loads(ok(run(repo, "change", "show", "C-2", "--json")).stdout)
    assert shown["state"] == "tainted" and shown["tainted_by"] == ["C-1"]
    # bob's next command carries the news (stderr), and his news lists it.
    news = ok(run(repo, "news", "--json", **bob))
    events = json.loads(news.stdout)["events"]
    assert any(e["key"] == "@inbox/bob" and e["op"] == "change.news" for e in events)
    # The pre-commit hook refuses a commit built on refuted work; doctor flags the branch.
    (repo / "more.py").write_text("x = 1\n")
    p = commit(repo, "more", **bob)
    assert p.returncode != 0 and "built on commit" in p.stderr and "C-1" in p.stderr and "refuted" in p.stderr
    d = run(repo, "doctor", "--json")
    assert d.returncode == 3
    kinds = [x["kind"] for x in json.loads(d.stdout)["problems"]]
    assert kinds.count("built-on-refuted") == 2  # main holds C-1's commit and C-2's
    why = json.loads(ok(run(repo, "why", "C-2", "--json")).stdout)
    assert why["state"] == "tainted" and any("C-1" in x for x in why["explanations"])
    # refute by reason, and the list by state.
    ok(run(repo, "refute", "C-2", "--reason", "builds on a broken parser", **carol))
    listed = json.loads(ok(run(repo, "change", "list", "--state", "refuted", "--json")).stdout)
    assert [c["id"] for c in listed] == ["C-1", "C-2"]


def test_attest_signs_and_attest_verify_checks_offline(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hooks=False)
    keys = tmp_path / "keys"
    alice, bob, carol = (as_(n, keys) for n in ("alice", "bob", "carol"))
    ok(run(repo, "policy", "set", "default", "--attestations", "1", "--no-reexecute", **alice))
    t = ok(run(repo, "task", "add", "login", **alice)).stdout.strip()
    tok = json.loads(ok(run(repo, "task", "claim", t, "--json", **alice)).stdout)["token"]
    (repo / "login.py").write_text("ok\n")
    commit(repo, "login", **alice)
    c = json.loads(ok(run(repo, "change", "submit", "--task", t, "--check", "true", "--json", **alice)).stdout)
    done = json.loads(ok(run(repo, "task", "done", t, "--token", str(tok), "--json", **alice)).stdout)
    assert done["state"] == "submitted"
    assert ok(run(repo, "task", "list", "--state", "submitted", **alice)).stdout.startswith(t)
    own = run(repo, "attest", c["id"], **alice)
    assert own.returncode == 2 and "self-issued" in own.stderr
    signed = json.loads(ok(run(repo, "attest", c["id"], "--json", **bob)).stdout)
    assert signed["state"] == "accepted" and [a["attester"] for a in signed["attestations"]] == ["bob"]
    assert (keys / "bob" / "bob.key").stat().st_mode & 0o777 == 0o600
    assert json.loads(ok(run(repo, "task", "show", t, "--json")).stdout)["state"] == "done"
    # Offline: the envelope and the public keys, nothing else.
    pub = tmp_path / "pub"
    ok(run(repo, "attest", "keys", str(pub)))
    assert sorted(p.name for p in pub.iterdir()) == ["alice.pub", "bob.pub"]  # alice registered hers trying to approve her own
    env_file = tmp_path / "att.json"
    env_file.write_text(json.dumps(signed["attestations"][0]["envelope"]))
    checked = run(tmp_path, "attest", "verify", str(env_file), "--keys", str(pub), "--json")
    assert checked.returncode == 0, checked.stderr
    r = json.loads(checked.stdout)["results"][0]
    assert (r["ok"], r["attester"], r["change"], r["subject"]) == (True, "bob", c["id"], {"gitCommit": c["commit"]})
    env = json.loads(env_file.read_text())
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["subject"][0]["digest"]["gitCommit"] = "0" * 40
    env["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    env_file.write_text(json.dumps(env))
    bad = run(tmp_path, "attest", "verify", str(env_file), "--keys", str(pub))
    assert bad.returncode == 3 and "refused" in bad.stdout and "altered" in bad.stdout
    # A second reviewer signs with --out, and the file checks offline too.
    out = tmp_path / "carol.json"
    ok(run(repo, "attest", c["id"], "--out", str(out), **carol))
    ok(run(repo, "attest", "keys", str(pub)))
    assert ok(run(tmp_path, "attest", "verify", str(out), "--keys", str(pub), "--commit", c["commit"])).stdout.startswith("ok: carol")
