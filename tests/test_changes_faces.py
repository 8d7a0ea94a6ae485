"""Verification through every face (Python, HTTP, MCP over stdio and over streamable
HTTP; the CLI in test_changes_cli.py): a change whose claimed check fails on
re-execution is refuted, a change built on it before that was known is tainted and its
author's next answer carries the news; forged, altered and self-issued attestations are
refused with the reason, and a real one counts."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from faces_support import open_face

import comity
from comity.work.attestations import Keyring, public_pem, sign_envelope, statement
from comity.work.changes import Changes, provenance_digest

FACES = ["python", "http", "mcp_stdio", "mcp_http"]


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", name)
    return git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("face", FACES)
def test_refutation_taint_news_and_forged_attestations_through_every_face(face: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "README", "hello\n")
    monkeypatch.chdir(repo)  # where every face's process re-executes checks
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    location = str(tmp_path / "s.db")
    keys = tmp_path / "keys"
    with comity.open(location) as store:
        alice = Changes(store.session("alice"))
        from comity.work import Agent

        lead = Agent(store.session("lead"))
        t1, t2 = lead.task_add("parser")["id"], lead.task_add("lexer")["id"]
        lead.task_claim(t1)
        c1 = alice.submit(t1, commit=commit(repo, "parser.py", "broken\n"), checks=["grep -q working parser.py"])["id"]
        for name in ("bob", "dave", "mallory"):
            Changes(store.session(name)).register_key(public_pem(Keyring(keys / name).create(name, bytes([len(name)]) * 32).public_key()))
        lexer = commit(repo, "lexer.py", "ok\n")
    with open_face(face, location, tmp_path, "bob") as bob, open_face(face, location, tmp_path, "carol") as carol:
        if face == "http":  # a request that names no session remembers nothing: name one, as an agent would
            post = bob.post  # type: ignore[attr-defined]
            bob.post = lambda path, data, headers=None: post(path, data, {**(headers or {}), "Comity-Session": "bob-1"})  # type: ignore[attr-defined]
        assert bob.call("task_claim", {"id": t2}).ok
        submit = {"task": t2, "commit": lexer, "checks": ["true"], "on": [c1], "request_id": f"{face}-submit"}
        r = bob.call("change_submit", submit)
        assert r.ok, r
        c2 = r.body["id"]
        retried = bob.call("change_submit", submit)  # the answer was lost: the same call again
        assert retried.ok and retried.body["id"] == c2 and retried.body["replayed"] is True, retried
        assert r.body["state"] == "submitted"
        assert bob.call("news", {}).ok  # bob has seen everything so far
        v = carol.call("verify", {"id": c1})
        assert v.ok, v
        assert (v.body["outcome"], v.body["state"]) == ("failed", "refuted")
        shown = bob.call("change_show", {"id": c2})
        assert shown.ok and shown.body["state"] == "tainted" and shown.body["tainted_by"] == [c1]
        assert any(n["key"] == "@inbox/bob" for n in shown.body["news"]), shown.body["news"]
        with comity.open(location) as store:  # on every face the news is in bob's inbox, which all his sessions follow
            [event] = [e for e in store.session().log("@inbox/bob") if e["op"] == "change.news"]
            assert event["value"]["news"] == [{"change": c2, "task": t2, "state": "tainted", "was": "submitted", "tainted_by": [c1]}]
        # Attestations: forged (mallory's key, says dave), altered after signing, self-issued (bob's own change).
        with comity.open(location) as store:
            rec = Changes(store.session()).record(c2)
            sid = store.store_id
        ring = {n: Keyring(keys / n).load(n) for n in ("bob", "dave", "mallory")}
        real = sign_envelope(statement(rec, sid, "dave", provenance_digest(rec)), ring["dave"])
        forged = sign_envelope(statement(rec, sid, "dave", provenance_digest(rec)), ring["mallory"])
        payload = json.loads(base64.b64decode(real["payload"]))
        payload["subject"][0]["digest"]["gitCommit"] = "0" * 40
        altered = {**real, "payload": base64.b64encode(json.dumps(payload).encode()).decode()}
        own = sign_envelope(statement(rec, sid, "bob", provenance_digest(rec)), ring["bob"])
        for env, reason in ((forged, "says it is by 'dave'"), (altered, "altered"), (own, "self-issued")):
            out = carol.call("attest", {"id": c2, "envelope": env})
            assert out.code == "invalid" and reason in out.message, (face, reason, out)
            assert out.field in ("envelope", None) or face.startswith("mcp")
        ok = carol.call("attest", {"id": c2, "envelope": real})
        assert ok.ok, ok
        assert [a["attester"] for a in bob.call("change_show", {"id": c2}).body["attestations"]] == ["dave"]


def test_mcp_http_delivers_news_between_calls(tmp_path: Path) -> None:
    location = str(tmp_path / "s.db")
    with comity.open(location) as store:
        store.session("x").put("k", 1)
    with open_face("mcp_http", location, tmp_path, "bob") as bob:
        assert bob.call("read", {"key": "k"}).ok
        with comity.open(location) as store:
            s = store.session("carol")
            s.put("k", 2, context=s.get("k").context)
        assert [n["key"] for n in bob.call("task_list", {}).body["news"]] == ["k"]


def test_over_http_only_an_admin_sets_policies(tmp_path: Path) -> None:
    from faces_support import HttpFace, serve, token

    location = str(tmp_path / "s.db")
    agent, admin = token(location, "byz"), token(location, "ops", admin=True)
    server = serve(location, tmp_path)
    try:
        refused = HttpFace(server.url, agent).call("policy_set", {"scope": "default", "attestations": 0, "reexecute": False})
        assert refused.code == "forbidden" and "admin" in refused.message
        assert HttpFace(server.url, agent).call("policy_list", {}).body["policies"] == {}
        ok = HttpFace(server.url, admin).call("policy_set", {"scope": "default", "attestations": 2})
        assert ok.ok and ok.body["policies"] == {"default": {"attestations": 2, "reexecute": True}}
    finally:
        server.stop()
