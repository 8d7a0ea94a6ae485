"""Validation of keys and values, and the opaque key-context token.

A key context is the version vector of what a reader saw of one key, bound to
the store and the key and sealed with an HMAC under the store's secret, so a
context that was altered, or that belongs to another store or key, is refused
as :class:`Invalid` instead of being trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any

from ..causal import VersionVector
from ..errors import Invalid

KEY_MAX_BYTES = 512
DEFAULT_MAX_VALUE_BYTES = 1 << 20
# A context is a version vector (one entry per replica), a key and a position, sealed: a few
# hundred bytes.  The cap leaves room for thousands of replicas and refuses a forged token
# before any of it is decoded.
CONTEXT_MAX_CHARS = 64 * 1024
_KEY_RE = re.compile(r"[A-Za-z0-9_.\-][A-Za-z0-9_.\-/:+=@,~]*")
_MAC_BYTES = 12
_BLOCK = 64  # SHA-256's block size, in bytes

# System keys whose values are secrets (token hashes): written by comity's own layers, read
# only by them (``secrets=True``), never shown by a verb: not by a read, a listing or the log.
AUTH_PREFIX = "@auth/"
SECRET_PREFIXES = (AUTH_PREFIX,)


def is_secret(key: str) -> bool:
    return key.startswith(SECRET_PREFIXES)


# One encoder, built once: json.dumps with options builds a new encoder on every call, and
# JSONEncoder.encode builds a new C encoder on every call.  Without circular-reference markers
# (a value read from JSON cannot hold a cycle; one built in Python is "nested too deeply").
_encode = c_make_encoder(  # json's C accelerator, built with CPython
    None, json.JSONEncoder().default, encode_basestring, None, ":", ",", False, False, False
)


def compact_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is, NaN and infinities refused (ValueError)."""
    return "".join(_encode(value, 0))


_scan = c_make_scanner(json.JSONDecoder())


def load_json(text: str) -> Any:
    """``json.loads`` of text comity wrote itself (a key's clock, an event's detail), without
    the decoder's Python layers; anything the scanner does not take whole goes to ``json.loads``,
    which raises what it always raises."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def check_key(key: object, field: str = "key", *, system: bool = False) -> str:
    """A valid key.  Keys starting with '@' belong to comity's own layers (tasks, sequences,
    reservations): readable by anyone, written only through those layers (``system``)."""
    if system and isinstance(key, str) and key.startswith("@"):
        key = key[1:]
        check_key(key, field)
        return "@" + key
    if not isinstance(key, str):
        raise Invalid(field, f"must be a string, got {type(key).__name__}")
    if not key:
        raise Invalid(field, "must not be empty; use a path-like name such as 'files/db/0267.sql'")
    if key.startswith("@"):
        raise Invalid(field, f"{key[:80]!r}: keys starting with '@' are comity's own (tasks, sequences); use the task, seq or reserve commands")
    if len(key) > KEY_MAX_BYTES:
        raise Invalid(field, f"is {len(key)} characters; keys are at most {KEY_MAX_BYTES}")
    # The pattern admits ASCII only, so a key that passes is as many bytes as characters.
    if _KEY_RE.fullmatch(key) is None or "//" in key or key.endswith("/"):
        raise Invalid(
            field,
            f"{key[:80]!r} has characters keys may not use; use letters, digits and "
            "_ . - / : + = @ , ~ (no spaces, no leading '/', no empty path segment)",
        )
    return key


def dump_value(value: Any, max_bytes: int, field: str = "value") -> str:
    """Canonical JSON of a value, refusing what JSON cannot carry or what is too big."""
    try:
        text = compact_json(value)
        # ASCII (the usual case) is as many bytes as characters; anything else is encoded,
        # which also refuses a lone surrogate.
        size = len(text) if text.isascii() else len(text.encode())
    except (TypeError, ValueError) as e:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise Invalid(field, f"must be JSON (strings, numbers, booleans, null, lists, objects): {e}") from None
    except RecursionError:
        raise Invalid(field, "is nested too deeply to store; flatten it") from None
    if size > max_bytes:
        raise Invalid(
            field,
            f"is {size} bytes of JSON; the cap is {max_bytes} bytes "
            "(store a path or a digest instead, or raise max_value_bytes)",
        )
    return text


def parse_json(text: str, field: str) -> Any:
    """Parse JSON typed by a person or an agent, with an error that says how to quote it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise Invalid(field, "is nested too deeply; flatten it") from None
    except (TypeError, ValueError) as e:
        raise Invalid(
            field,
            f"is not valid JSON ({e}); quote strings twice, e.g. '\"hello\"', or pass numbers, "
            "objects and lists as JSON",
        ) from None


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(b: bytes) -> str:
    """URL-safe base64 without padding (``base64.urlsafe_b64encode`` without its two calls)."""
    return binascii.b2a_base64(b, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@dataclass(frozen=True, slots=True)
class KeyContext:
    """A decoded context: what the reader had seen of ``key`` and the log position of the read."""

    key: str
    seen: VersionVector
    pos: int


class ContextCodec:
    """Seals and opens key contexts for one store."""

    _CACHE = 4096

    def __init__(self, store_id: str, secret: bytes) -> None:
        self.store_id = store_id
        self._secret = secret
        key = (hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret).ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        # Contexts this process sealed, so a writer passing back its own last context
        # (the common loop) is not re-verified.  Bounded; oldest dropped first.
        self._sealed: dict[str, KeyContext] = {}

    def _mac(self, payload: bytes) -> bytes:
        """HMAC-SHA256 (RFC 2104) of ``payload``, from the two padded keys hashed once:
        ``hmac.digest`` sets up the digest from its name on every call, at twice the cost."""
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_BYTES]

    def seal(self, key: str, seen: VersionVector, pos: int) -> str:
        payload = compact_json([self.store_id, key, seen.to_json(), pos]).encode()
        token = _b64(payload) + "." + _b64(self._mac(payload))
        if len(self._sealed) >= self._CACHE:
            del self._sealed[next(iter(self._sealed))]
        self._sealed[token] = KeyContext(key, seen, pos)
        return token

    def open(self, token: object, key: str, field: str = "context") -> KeyContext:
        known = self._sealed.get(token) if isinstance(token, str) else None
        if known is not None and known.key == key:
            return known
        fix = "read the key again and pass the context it returns"
        if not isinstance(token, str):
            raise Invalid(field, f"must be a context string from a read, got {type(token).__name__}")
        if len(token) > CONTEXT_MAX_CHARS:
            raise Invalid(field, f"is {len(token)} characters; a context is at most {CONTEXT_MAX_CHARS}; {fix}")
        try:
            body, mac = token.split(".")
            payload = _unb64(body)
            good = hmac.compare_digest(_unb64(mac), self._mac(payload))
        except (ValueError, TypeError):
            raise Invalid(field, f"is not a comity context (garbled or truncated); {fix}") from None
        if not good:
            # The seal is checked before the payload is parsed: nothing a forger wrote is decoded,
            # except to say, when it is a context at all, which store it came from.
            other = _store_of(payload)
            if other is not None and other != self.store_id:
                raise Invalid(field, f"belongs to another store ({other[:40]}), not this one ({self.store_id}); {fix}")
            raise Invalid(field, f"was altered: its seal does not match; {fix}")
        try:
            store_id, ctx_key, seen, pos = json.loads(payload)
            vv = VersionVector.from_json(seen)
            position = int(pos)
        except (ValueError, TypeError, RecursionError):  # sealed by this store, so never in practice
            raise Invalid(field, f"is not a comity context (garbled or truncated); {fix}") from None
        if ctx_key != key:
            raise Invalid(field, f"is the context of key {ctx_key!r}, not of {key!r}; {fix}")
        return KeyContext(key, vv, position)


def _store_of(payload: bytes) -> str | None:
    """The store id a context's payload names, read without decoding the rest of it."""
    m = _STORE_ID.match(payload)
    return m.group(1).decode() if m else None


_STORE_ID = re.compile(rb'\["(s[0-9a-f]{1,64})",')
