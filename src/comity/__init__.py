"""comity: coordination for teams of AI agents.

Layering (imports point down only; each package's ``__init__`` names its surface):

    faces         comity.cli · comity.server · comity.mcp · comity.integrations
    harness       comity.chaos
    services      comity.work
    coordination  comity.coord
    replication   comity.sync
    store         comity.store    Store API over one primitive, the guarded transaction
    kernel        comity.causal   Dot · VersionVector · DVVSet · HLC    comity.crdt
    seams         comity.runtime  Clock · Rng · Transport, real and simulated

Errors (``comity.errors``) sit beside the seams: every layer may raise them.
"""

from __future__ import annotations

from .errors import ComityError, Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Unavailable
from .store import News, Session, Store, TxnResult, Versioned, Written, open

__version__ = "0.1.0"

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
