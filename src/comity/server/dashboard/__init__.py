"""The dashboard: a live, read-only web page of the board, the agents and the causal history.

Mounted onto the HTTP app by :func:`mount` (``comity serve`` serves it at ``/``;
``comity dashboard`` opens one over the embedded store).  Pages are rendered on the
server with Jinja2 from what the Python API answers (``comity.work``, ``comity.coord``,
``comity.repo``, ``comity.chaos``); a small script keeps them live over server-sent
events.  Viewing needs a token, entered once in a sign-in form that sets a session
cookie.  Nothing on the page changes the store.
"""

from __future__ import annotations

from .app import Dashboard, mount

__all__ = ["Dashboard", "mount"]
