"""comity's MCP face: the agent verbs as MCP tools (``comity mcp``), over stdio or streamable HTTP.

Needs the ``mcp`` extra (``pip install 'comity[mcp]'``).  One connection is one
session: one :class:`comity.work.Agent` in memory, with its news position and the
contexts of what it read.  The SDK is imported on first use, so the CLI starts
without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONTRACT", "build_server", "McpSession", "refusal_text"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
