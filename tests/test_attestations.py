"""DSSE envelopes and in-toto Statements, checked offline with public keys only."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from comity import Invalid
from comity.work.attestations import (
    PAYLOAD_TYPE,
    Keyring,
    PublicKey,
    check_statement,
    load_public_keys,
    open_envelope,
    pae,
    sign_envelope,
    statement,
    verify_file,
)
from comity.work.changes import provenance_digest

CHANGE = {"id": "C-4", "task": "T-12", "token": 7, "author": "alice", "commit": "3f2a1c" + "0" * 34, "diff": None,
          "checks": ["pytest -q tests/test_login.py"], "paths": [], "built_on": {"changes": ["C-1"], "commits": [], "keys": []},
          "submitted_at": 1.0, "note": ""}


def test_pae_matches_the_dsse_specification_vector() -> None:
    # protocol.md, "Test Vectors" (secure-systems-lab/dsse v1.0.2).
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_a_statement_is_in_toto_v1_in_a_dsse_envelope(tmp_path: Path) -> None:
    bob = Keyring(tmp_path).create("bob", b"\x01" * 32)
    env = sign_envelope(statement(CHANGE, "S1", "bob", provenance_digest(CHANGE)), bob)
    assert env["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    body = json.loads(base64.b64decode(env["payload"]))
    assert body["_type"] == "https://in-toto.io/Statement/v1"
    assert body["subject"] == [{"name": "comity:S1/C-4", "digest": {"gitCommit": CHANGE["commit"]}}]
    assert body["predicate"]["attester"] == "bob" and body["predicate"]["author"] == "alice"
    got, signer = open_envelope(env, [PublicKey.of("bob", bob.public_key())])
    assert got == body and signer.agent == "bob"
    check_statement(got, signer, change=CHANGE, store_id="S1", digest=provenance_digest(CHANGE))
    # The provenance it vouches for is pinned: a change record edited afterwards does not match.
    with pytest.raises(Invalid, match="provenance"):
        check_statement(got, signer, change={**CHANGE, "checks": ["true"]}, store_id="S1",
                        digest=provenance_digest({**CHANGE, "checks": ["true"]}))


def test_the_payload_type_is_signed_too(tmp_path: Path) -> None:
    bob = Keyring(tmp_path).create("bob", b"\x01" * 32)
    env = sign_envelope(statement(CHANGE, "S1", "bob", "d"), bob)
    with pytest.raises(Invalid, match="payloadType"):
        open_envelope({**env, "payloadType": "application/json"}, [PublicKey.of("bob", bob.public_key())])


def test_attest_verify_offline_with_only_the_public_keys(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "private")
    bob, alice, mallory = (ring.create(n, bytes([i]) * 32) for i, n in enumerate(("bob", "alice", "mallory"), 1))
    pub = tmp_path / "pub"
    pub.mkdir()
    for n in ("bob", "alice"):  # mallory's key is not among the trusted ones
        (pub / f"{n}.pub").write_text((tmp_path / "private" / f"{n}.pub").read_text())
    good = sign_envelope(statement(CHANGE, "S1", "bob", "d"), bob)
    self_issued = sign_envelope(statement(CHANGE, "S1", "alice", "d"), alice)
    forged = sign_envelope(statement(CHANGE, "S1", "bob", "d"), mallory)
    body = json.loads(base64.b64decode(good["payload"]))
    body["subject"][0]["digest"]["gitCommit"] = "f" * 40
    altered = {**good, "payload": base64.b64encode(json.dumps(body).encode()).decode()}
    f = tmp_path / "attestations.json"
    f.write_text(json.dumps([good, self_issued, forged, altered]))
    keys = load_public_keys(pub)
    assert sorted(k.agent for k in keys) == ["alice", "bob"]
    results = verify_file(f, keys)
    assert results[0] == {"ok": True, "change": "C-4", "store": "S1", "attester": "bob", "keyid": keys[1].keyid,
                          "author": "alice", "subject": {"gitCommit": CHANGE["commit"]}}
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert "self-issued" in results[1]["reason"]
    assert "no registered key" in results[2]["reason"]
    assert "altered" in results[3]["reason"]
    assert verify_file(f, keys, commit="e" * 40)[0]["ok"] is False
    # JSON lines work too, and so does an attestation as `change show` lists it.
    f.write_text(json.dumps({"attester": "bob", "envelope": good}) + "\n" + json.dumps(good) + "\n")
    assert [r["ok"] for r in verify_file(f, keys)] == [True, True]


def test_keys_are_private_and_never_overwritten(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "k")
    ring.create("bob", b"\x01" * 32)
    with pytest.raises(Invalid, match="already exists"):
        ring.create("bob", b"\x02" * 32)
    (tmp_path / "k" / "bob.key").chmod(0o644)
    with pytest.raises(Invalid, match="chmod 600"):
        ring.load("bob")
