"""The HTTP face: ``comity serve`` (FastAPI + uvicorn), one endpoint per agent verb,
per-agent bearer tokens stored hashed in the store.  Needs the ``server`` extra
(``pip install 'comity[server]'``); the remote client (:mod:`comity.remote`) does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .auth import AUTH_PREFIX, Authenticator, Identity, issue_token

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app", "issue_token", "Authenticator", "Identity", "AUTH_PREFIX"]


def __getattr__(name: str) -> object:
    # The app needs fastapi; issuing tokens on an embedded store does not.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
