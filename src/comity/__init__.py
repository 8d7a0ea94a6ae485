"""comity: coordination for teams of AI agents.

Layering (imports point down only; each package's ``__init__`` names its surface;
docs/design.md):

    faces         comity.cli · comity.server · comity.mcp · comity.remote · comity.integrations
                  comity.repo · comity.bench
    harness       comity.chaos
    services      comity.work     the verb table (comity.work.verbs) and the agent facade
    coordination  comity.coord
    replication   comity.sync     (being built: anti-entropy between replicas)
    store         comity.store    Store API over one primitive, the guarded transaction
    kernel        comity.causal   Dot · VersionVector · DVVSet · HLC    comity.crdt
    seams         comity.runtime  Clock · Rng · Transport, real and simulated

Beside the seams, importable by every layer: ``comity.errors`` (the structured errors),
``comity.render`` (the words the faces share) and ``comity.clikit`` (the CLI kit).
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING, overload

from .errors import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Unavailable
from .runtime import Clock, Rng
from .store import News, Session, Store, TxnResult, Versioned, Written
from .store import open as _open_store
from . import sync as _sync  # noqa: F401 - replicas forward what only their authority decides

if TYPE_CHECKING:
    from .remote import RemoteStore

__version__ = "0.1.0"


@overload
def open(
    location: str | _os.PathLike[str] | None = None,
    *,
    auth: None = None,
    clock: Clock | None = None,
    rng: Rng | None = None,
    max_value_bytes: int | None = None,
    busy_timeout: float = 30.0,
    request_retention: float | None = None,
    create: bool = True,
) -> Store: ...
@overload
def open(location: str | None = None, *, auth: str, timeout: float = 60.0) -> RemoteStore: ...
def open(  # noqa: A001 - comity.open mirrors the builtin on purpose
    location: str | _os.PathLike[str] | None = None,
    *,
    auth: str | None = None,
    clock: Clock | None = None,
    rng: Rng | None = None,
    max_value_bytes: int | None = None,
    busy_timeout: float = 30.0,
    request_retention: float | None = None,
    timeout: float = 60.0,
    create: bool = True,
) -> Store | RemoteStore:
    """Open the store at ``location`` (see :func:`comity.store.open`), or, for
    ``http://host:port`` (several separated by commas, for failover), a comity server
    as a :class:`comity.remote.RemoteStore` acting with the agent token ``auth``."""
    where = location if location is not None else _os.environ.get("COMITY_STORE") or None
    if isinstance(where, str) and where.strip().lower().startswith(("http://", "https://")):
        from .remote import RemoteStore

        return RemoteStore(where, auth=auth, timeout=timeout)
    if auth is not None:
        raise Invalid("auth", "a token is for a comity server (http://…); a store path or postgresql:// URL takes none")
    return _open_store(
        location, clock=clock, rng=rng, max_value_bytes=max_value_bytes, busy_timeout=busy_timeout,
        request_retention=request_retention, create=create
    )


__all__ = [
    "open",
    "Store",
    "Session",
    "Versioned",
    "Written",
    "TxnResult",
    "News",
    "ComityError",
    "StaleContext",
    "Fenced",
    "LeaseExpired",
    "NotFound",
    "Invalid",
    "Unavailable",
    "__version__",
]
