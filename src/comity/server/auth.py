"""Per-agent bearer tokens: issued from the store's RNG, kept only as a sha256 hash.

A token reads ``<agent>.<64 hex digits>``: the agent's name says which record to check,
so a request costs one key read, not a scan.  The record is the system key
``@auth/<agent>`` (``{"agent", "sha256", "admin", "issued_by"}``), written through the
guarded transaction like everything else, so every server over one store (and every
restart) accepts the same tokens, and a token is never stored in the clear.  An
*admin* token may also issue tokens over HTTP (``comity agent add``); the first admin
token is issued on the store itself, e.g. ``comity --store PATH agent add ops --admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import Invalid, StaleContext
from ..store import AUTH_PREFIX, Create, Put, Session, Store
from ..store._api import check_agent
from ..store._codec import check_key

__all__ = ["AUTH_PREFIX", "Identity", "Authenticator", "issue_token", "token_hash"]

_SECRET_BYTES = 32
_TOKEN_MAX = 128 + 1 + 2 * _SECRET_BYTES


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a valid token speaks for."""

    agent: str
    admin: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, name: str, *, admin: bool = False, rotate: bool = False) -> dict[str, Any]:
    """A new token for agent ``name``, written (hashed) by ``session``'s agent.

    Refused as StaleContext if ``name`` already has one, unless ``rotate``: then the
    new token replaces it and the old one stops working."""
    check_agent(name, "name")
    key = check_key(AUTH_PREFIX + name, "name", system=True)  # a name a key can hold (ASCII)
    token = f"{name}.{session.store.rng.token_bytes(_SECRET_BYTES).hex()}"
    record = {"agent": name, "sha256": token_hash(token), "admin": bool(admin), "issued_by": session.agent}
    if rotate:
        current = session.get(key, secrets=True)
        session.txn(ops=[Put(key, record, context=current.context)], system=True)
    else:
        try:
            session.txn(ops=[Create(key, record)], system=True)
        except StaleContext as e:
            raise StaleContext(
                f"agent {name} already has a token; `comity agent add {name} --rotate` replaces it",
                key=key,
                news=e.news,
            ) from None
    return {"agent": name, "auth_token": token, "admin": bool(admin)}


class Authenticator:
    """Checks bearer tokens against the store, remembering a good one for ``ttl`` seconds
    (so a rotated token stops working on every server within ``ttl``)."""

    def __init__(self, store: Store, *, ttl: float = 5.0) -> None:
        self.store = store
        self.ttl = ttl
        self._session = store.session()  # reads need no agent
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[Identity, float]] = {}

    def identify(self, token: str) -> Identity | None:
        """The identity ``token`` proves, or None if it is missing, malformed or forged."""
        if not token or len(token) > _TOKEN_MAX or "." not in token:
            return None
        name, secret = token.rsplit(".", 1)
        if len(secret) != 2 * _SECRET_BYTES:
            return None
        try:
            check_agent(name, "name")
            check_key(AUTH_PREFIX + name, "name", system=True)
        except Invalid:
            return None
        digest = token_hash(token)
        now = self.store.clock.monotonic()
        with self._lock:
            hit = self._seen.get(digest)
            if hit is not None and now - hit[1] < self.ttl:
                return hit[0]
            values = self._session.get(AUTH_PREFIX + name, secrets=True).values
            record = values[0] if len(values) == 1 and isinstance(values[0], dict) else None
            if record is None or not hmac.compare_digest(str(record.get("sha256", "")), digest):
                self._seen.pop(digest, None)
                return None
            ident = Identity(name, bool(record.get("admin")))
            self._seen[digest] = (ident, now)
            return ident

    def forget(self, agent: str) -> None:
        """Drop what is remembered of ``agent``'s tokens (after a rotation here)."""
        with self._lock:
            for digest in [d for d, (ident, _) in self._seen.items() if ident.agent == agent]:
                del self._seen[digest]
