"""Serve an RLM as a model: an OpenAI-compatible HTTP app and an MCP server.

`fathom.server.app.create_app(ServerConfig(...))` builds the Starlette app behind
`fathom serve`; `fathom.server.mcp.build_server` the MCP server behind `fathom mcp`.
Both run each request as one `RLM.arun` within the operator's limits, and cancel it,
freeing its sandbox, when the caller goes away.
"""

from __future__ import annotations

from fathom.server.config import ServerConfig

__all__ = ["ServerConfig"]
