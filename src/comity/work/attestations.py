"""Signed attestations: Ed25519 keys, in-toto Statements (v1) in DSSE envelopes.

An attestation says "agent X vouches for change C at commit S".  It is an in-toto
Statement (https://github.com/in-toto/attestation, spec/v1/statement.md) whose subject
is the change's commit (``{"gitCommit": SHA}``, or ``{"sha256": DIFF_HASH}``), signed
inside a DSSE envelope (https://github.com/secure-systems-lab/dsse, protocol.md): the
signature covers ``PAE(payloadType, payload)``, so the payload type is authenticated
too.  Anyone holding the public keys can check an envelope offline.

DSSE's pre-authentication encoding is five lines, and the envelope three fields; a
library for them would bring a protobuf or a key-management stack along, so they are
written here against the specification's own test vector (``tests/test_attestations.py``).
Ed25519 is the ``cryptography`` package's.

Private keys live in the agent's key directory (``$COMITY_KEYS``, else
``$XDG_CONFIG_HOME/comity/keys``, else ``~/.config/comity/keys``), one PEM file per
agent (``NAME.key``, mode 0600, in a 0700 directory) beside its public key
(``NAME.pub``); never in the store.  The store holds only public keys
(``@pubkey/NAME``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import Invalid
from ._keys import Keyring, key_dir

__all__ = [
    "PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "pae",
    "keyid",
    "key_dir",
    "Keyring",
    "PublicKey",
    "sign_envelope",
    "open_envelope",
    "statement",
    "check_statement",
    "load_public_keys",
    "verify_file",
    "sign_view",
    "public_pem",
    "parse_public",
]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "urn:comity:attestation:change-review:v1"
_ENVELOPE_MAX = 64 * 1024


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def keyid(public_raw: bytes) -> str:
    """A key's id: the hex SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def parse_public(text: str, field: str = "public_key") -> Ed25519PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or base64 of its 32 raw bytes."""
    if not isinstance(text, str) or not text.strip():
        raise Invalid(field, "must be an Ed25519 public key: PEM, or base64 of its 32 bytes")
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise Invalid(field, f"is a {type(key).__name__}, not an Ed25519 key")
            return key
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except Invalid:
        raise
    except (ValueError, binascii.Error) as e:
        raise Invalid(field, f"is not an Ed25519 public key ({e}); give PEM or base64 of 32 bytes") from None


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A registered public key: whose it is, and its id."""

    agent: str
    keyid: str
    key: Ed25519PublicKey

    @classmethod
    def of(cls, agent: str, key: Ed25519PublicKey) -> PublicKey:
        return cls(agent, keyid(_raw(key)), key)

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "keyid": self.keyid, "public_key": base64.b64encode(_raw(self.key)).decode()}


# ------------------------------------------------------------------ envelopes


def _b64d(text: object, field: str) -> bytes:
    if not isinstance(text, str):
        raise Invalid(field, "must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        try:  # DSSE allows either alphabet
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, binascii.Error):
            raise Invalid(field, "is not base64") from None


def sign_envelope(statement_body: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """A DSSE envelope over the JSON of ``statement_body``, signed with ``private``."""
    payload = json.dumps(statement_body, sort_keys=True, separators=(",", ":")).encode()
    sig = private.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid(_raw(private.public_key())), "sig": base64.b64encode(sig).decode()}],
    }


def open_envelope(envelope: object, keys: list[PublicKey]) -> tuple[dict[str, Any], PublicKey]:
    """Check an envelope's signature against ``keys``; the Statement it carries and its signer.

    Refused (Invalid, field ``envelope``) with the reason: malformed, a payload type that
    is not in-toto's, no signature by a known key, or a signature that does not verify
    (the payload or its type were altered, or the key is not the signer's)."""
    if not isinstance(envelope, dict):
        raise Invalid("envelope", "must be a DSSE envelope: {payloadType, payload, signatures}")
    if len(json.dumps(envelope)) > _ENVELOPE_MAX:
        raise Invalid("envelope", f"is over {_ENVELOPE_MAX} bytes")
    ptype = envelope.get("payloadType")
    if ptype != PAYLOAD_TYPE:
        raise Invalid("envelope", f"payloadType is {ptype!r}; an in-toto attestation is {PAYLOAD_TYPE!r}")
    payload = _b64d(envelope.get("payload"), "envelope")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise Invalid("envelope", "has no signatures")
    pre = pae(PAYLOAD_TYPE, payload)
    by_id = {k.keyid: k for k in keys}
    tried: list[str] = []
    for s in sigs:
        if not isinstance(s, dict):
            raise Invalid("envelope", "each signature is {keyid, sig}")
        raw_sig = _b64d(s.get("sig"), "envelope")
        kid = s.get("keyid")
        # The keyid is only a hint (DSSE): without one, or with an unknown one, try every key.
        candidates = [by_id[kid]] if isinstance(kid, str) and kid in by_id else list(keys)
        for k in candidates:
            try:
                k.key.verify(raw_sig, pre)
            except InvalidSignature:
                tried.append(k.agent)
                continue
            try:
                body = json.loads(payload)
            except ValueError:
                raise Invalid("envelope", "its payload is not JSON") from None
            if not isinstance(body, dict):
                raise Invalid("envelope", "its payload is not a Statement object")
            return body, k
    if not keys:
        raise Invalid("envelope", "no public key is registered to check it against")
    known = isinstance(sigs[0], dict) and sigs[0].get("keyid") in by_id
    if known:
        owner = by_id[sigs[0]["keyid"]].agent
        raise Invalid("envelope", f"the signature does not verify with {owner}'s key: the statement was altered after signing, or forged")
    raise Invalid("envelope", "signed by no registered key (a forged signature, or a key nobody registered)")


def statement(change: dict[str, Any], store_id: str, attester: str, digest: str) -> dict[str, Any]:
    """The in-toto Statement an attester signs for ``change``."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"comity:{store_id}/{change['id']}", "digest": subject_digest(change)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "change": change["id"],
            "store": store_id,
            "task": change.get("task"),
            "author": change["author"],
            "attester": attester,
            "checks": list(change.get("checks", [])),
            "built_on": list(change.get("built_on", {}).get("changes", [])),
            "provenance": digest,
            "verdict": "approve",
        },
    }


def subject_digest(change: dict[str, Any]) -> dict[str, str]:
    if change.get("commit"):
        return {"gitCommit": str(change["commit"])}
    return {"sha256": str(change.get("diff"))}


def check_statement(body: dict[str, Any], signer: PublicKey, *, change: dict[str, Any] | None = None,
                    store_id: str | None = None, digest: str | None = None, author: str | None = None) -> dict[str, Any]:
    """What a signed Statement says, refused (Invalid, field ``envelope``) when it is not an
    approval of ``change`` by its signer, or when the signer is the change's author."""
    if body.get("_type") != STATEMENT_TYPE:
        raise Invalid("envelope", f"is not an in-toto Statement v1 (_type {body.get('_type')!r})")
    if body.get("predicateType") != PREDICATE_TYPE:
        raise Invalid("envelope", f"predicateType is {body.get('predicateType')!r}, not a comity change review")
    pred = body.get("predicate")
    subjects = body.get("subject")
    if not isinstance(pred, dict) or not isinstance(subjects, list) or not subjects:
        raise Invalid("envelope", "the Statement has no subject or predicate")
    if pred.get("attester") != signer.agent:
        raise Invalid("envelope", f"says it is by {pred.get('attester')!r} but is signed with {signer.agent}'s key")
    said_author = pred.get("author")
    if signer.agent == (author if author is not None else said_author):
        raise Invalid("envelope", f"is self-issued: {signer.agent} is the change's author; an attestation counts only from another agent")
    if change is not None:
        if pred.get("change") != change["id"] or (store_id is not None and pred.get("store") != store_id):
            raise Invalid("envelope", f"is about change {pred.get('change')!r} of store {pred.get('store')!r}, not {change['id']}")
        want = subject_digest(change)
        got = subjects[0].get("digest") if isinstance(subjects[0], dict) else None
        if got != want:
            raise Invalid("envelope", f"its subject {got} is not the change's commit {want}: the subject was altered")
        if digest is not None and pred.get("provenance") != digest:
            raise Invalid("envelope", "its provenance digest does not match the change's record: the change it vouches for was altered")
    return pred


def sign_view(view: dict[str, Any], store_id: str, agent: str, keyring: Keyring, seed: bytes) -> tuple[dict[str, Any], str]:
    """Sign an approval of a change as ``change_show`` answered it, with ``agent``'s key from
    ``keyring`` (created from ``seed`` if it has none): the envelope, and the public key
    (PEM) to register.  For clients of a server, which sign where the key is."""
    key = keyring.load(agent) if keyring.has(agent) else keyring.create(agent, seed)
    return sign_envelope(statement(view, store_id, agent, view["provenance"]), key), public_pem(key.public_key())


def load_public_keys(directory: str | os.PathLike[str]) -> list[PublicKey]:
    """Every ``NAME.pub`` (PEM) in ``directory``: the key of agent NAME."""
    d = Path(directory)
    if not d.is_dir():
        raise Invalid("keys", f"{d} is not a directory of NAME.pub public keys")
    out = []
    for p in sorted(d.glob("*.pub")):
        out.append(PublicKey.of(p.stem, parse_public(p.read_text(), "keys")))
    if not out:
        raise Invalid("keys", f"{d} holds no NAME.pub files; export the registered public keys there first")
    return out


def verify_file(path: str | os.PathLike[str], keys: list[PublicKey], *, commit: str | None = None) -> list[dict[str, Any]]:
    """Check every envelope in a file (one envelope, a JSON list, or JSON lines) offline.

    Each result is ``{"ok": True, "change", "attester", "subject", …}`` or
    ``{"ok": False, "reason"}``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise Invalid("file", f"cannot read {p}: {e.strerror}") from None
    try:
        doc = json.loads(text)
        envelopes = doc if isinstance(doc, list) else [doc]
    except ValueError:
        try:
            envelopes = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            raise Invalid("file", f"{p} is not JSON: give a DSSE envelope, a list of them, or JSON lines") from None
    results = []
    for env in envelopes:
        if isinstance(env, dict) and "envelope" in env and "payload" not in env:
            env = env["envelope"]  # an attestation as `change show` lists it
        try:
            body, signer = open_envelope(env, keys)
            pred = check_statement(body, signer)
            subject = body["subject"][0].get("digest")
            if commit is not None and (not isinstance(subject, dict) or commit not in subject.values()):
                raise Invalid("envelope", f"its subject {subject} is not commit {commit}")
            results.append({"ok": True, "change": pred.get("change"), "store": pred.get("store"), "attester": signer.agent,
                            "keyid": signer.keyid, "author": pred.get("author"), "subject": subject})
        except Invalid as e:
            results.append({"ok": False, "reason": e.message.removeprefix("envelope: ")})
    return results
