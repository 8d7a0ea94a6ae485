"""A stock server of the official MCP SDK with one no-op tool, over the SDK's own stdio
transport: ``comity bench mcp``'s baseline that no code of comity's touches (its ``noop``
runs in ``comity mcp``, whose transport is comity's: ``*_over_sdk_noop_p50`` compares
across comity versions, ``*_over_noop_p50`` within one).  Run as
``python -m comity.bench._sdk_noop``."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent


def build() -> MCPServer:
    app = MCPServer("sdk-noop", log_level="WARNING")

    @app.tool()
    def noop() -> CallToolResult:
        """Does nothing. Example: noop()"""
        return CallToolResult(content=[TextContent(type="text", text="{}")], structured_content={})

    return app


if __name__ == "__main__":
    build().run("stdio")
