"""`fathom mcp`: an MCP server (official `mcp` SDK) with one tool, `ask`.

`ask(question, paths=None, text=None)` runs an RLM over the files under an allowed
directory, or over the text, and returns the answer with its stop reason and cost.
Progress (iterations, code being run, sub-call counts) goes out as MCP progress
notifications. A cancelled call cancels its run and frees its sandbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

import fathom
from fathom.server.app import run_result
from fathom.server.config import ServerConfig
from fathom.server.errors import APIError
from fathom.server.paths import resolve_paths
from fathom.server.runs import Runs, stop

logger = logging.getLogger("fathom.server")

INSTRUCTIONS = (
    "fathom answers questions about inputs far larger than a context window (whole folders, "
    "long logs, books) with a Recursive Language Model. Call `ask` with the question and "
    "either `paths` (files, folders or globs under the directories this server allows) or "
    "`text`."
)


class Answer(BaseModel):
    """What `ask` returns."""

    answer: str = Field(description="The answer.")
    stop_reason: str = Field(description="final, max_iterations or budget.")
    iterations: int = Field(description="Root iterations the run took.")
    usd: float = Field(description="Dollars the run spent on models.")
    trace_id: str = Field(description="The run's id, as in its trace.")


def build_server(config: ServerConfig, runs: Runs | None = None) -> MCPServer:
    """The MCP server for `config`, with the tool `ask`."""
    runs = runs or Runs(config)
    server = MCPServer(name="fathom", instructions=INSTRUCTIONS, version=fathom.__version__,
                       log_level="WARNING")
    folders = ", ".join(str(d) for d in config.allow_dirs) or "none: pass `text`"

    @server.tool(description=f"Answer `question` about files or text with a Recursive "
                             f"Language Model. `paths`: files, folders or globs under the "
                             f"allowed directories ({folders}); or `text`: the input itself.")
    async def ask(question: str, ctx: Context, paths: list[str] | None = None,
                  text: str | None = None) -> Answer:
        started = time.monotonic()
        line: dict[str, Any] = {"tool": "ask", "outcome": "cancelled"}
        try:
            answer = await _ask(runs, question, paths, text, ctx)
            line.update(outcome=answer.stop_reason, run_id=answer.trace_id)
            return answer
        except APIError as exc:
            line.update(outcome="error", status=exc.status, error=exc.message)
            raise ToolError(exc.message) from exc
        except ToolError as exc:
            line.update(outcome="error", error=str(exc))
            raise
        finally:
            # One JSON line per call, as `fathom serve` writes per request (on stderr).
            line["ms"] = round((time.monotonic() - started) * 1000, 1)
            logger.info(json.dumps(line))

    return server


async def _ask(runs: Runs, question: str, paths: list[str] | None, text: str | None,
               ctx: Context) -> Answer:
    if not question.strip():
        raise ToolError("`question` is empty: pass the question to answer.")
    if (paths is None) == (text is None):
        raise ToolError("Pass exactly one of `paths` (files under an allowed directory) and "
                        "`text`.")
    found = resolve_paths(paths, runs.config.allow_dirs) if paths is not None else None
    lines: asyncio.Queue[str] = asyncio.Queue()
    task = runs.start(question, text, found, runs.config.budget, lines.put_nowait)
    forward = asyncio.create_task(_report(lines, ctx))
    try:
        await asyncio.wait({task})
    finally:
        forward.cancel()
        if not task.done():
            with anyio.CancelScope(shield=True):
                await stop(task)
    result = run_result(task)
    return Answer(answer=result.answer, stop_reason=result.stop_reason,
                  iterations=result.iterations, usd=round(result.total_usage.usd, 8),
                  trace_id=result.run_id)


async def _report(lines: asyncio.Queue[str], ctx: Context[Any, Any]) -> None:
    """Send each progress line as a progress notification (a no-op without a token)."""
    count = 0
    while True:
        line = await lines.get()
        count += 1
        await ctx.report_progress(count, None, line.rstrip("\n"))
