"""Where an agent's private keys are (no cryptography is loaded until a key is used)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Invalid, NotFound
from ..store._api import check_agent

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["Keyring", "key_dir"]


def key_dir() -> Path:
    """Where this user's private keys are: ``$COMITY_KEYS``, else the XDG config directory."""
    given = os.environ.get("COMITY_KEYS")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "comity" / "keys"


class Keyring:
    """Private keys on disk, one per agent (``NAME.key`` PEM, mode 0600) with ``NAME.pub``."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory) if directory is not None else key_dir()

    def path(self, agent: str) -> Path:
        return self.dir / f"{check_agent(agent)}.key"

    def has(self, agent: str) -> bool:
        return self.path(agent).exists()

    def load(self, agent: str) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        p = self.path(agent)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no private key for {agent} in {self.dir}", field="key", agent=agent) from None
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise Invalid("key", f"{p} is readable by others (mode {mode:o}); chmod 600 it")
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise Invalid("key", f"{p} is not an Ed25519 private key")
        return key

    def create(self, agent: str, seed: bytes) -> Ed25519PrivateKey:
        """Write a new key pair for ``agent`` from 32 random bytes (refused if one exists)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from .attestations import public_pem

        p = self.path(agent)
        if len(seed) != 32:
            raise Invalid("seed", "an Ed25519 seed is 32 bytes")
        key = Ed25519PrivateKey.from_private_bytes(seed)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        # O_EXCL: two processes creating the same agent's key never overwrite each other's.
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise Invalid("key", f"{p} already exists; it is {agent}'s key") from None
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        (self.dir / f"{agent}.pub").write_text(public_pem(key.public_key()))
        return key


