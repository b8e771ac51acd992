"""`fathom mcp` over stdio, driven by the official mcp client against a scripted model."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.cli.conftest import cli_env, command
from tests.fake_servers import ScriptedOpenAIServer
from tests.server.conftest import root_script

SECRET = "Ledger, page 12: the code is 4217."


def test_ask_answers_about_text_and_allowed_paths_with_progress(tmp_path: Path) -> None:
    allowed = tmp_path / "docs"
    allowed.mkdir()
    (allowed / "ledger.txt").write_text(SECRET)
    (tmp_path / "private.txt").write_text("the code is 9999")
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async def session(base_url: str) -> tuple[object, ...]:
        params = StdioServerParameters(
            command=command()[0], args=[*command()[1:], "mcp", "--model", "openai:x",
                                        "--allow-dir", str(allowed)],
            env=cli_env(base_url), cwd=str(tmp_path))
        async with Client(params, read_timeout_seconds=60) as client:
            tools = await client.list_tools()
            text = await client.call_tool("ask", {"question": "What is the code?",
                                                  "text": SECRET},
                                          progress_callback=on_progress)
            paths = await client.call_tool("ask", {"question": "What is the code?",
                                                   "paths": ["ledger.txt"]})
            outside = await client.call_tool("ask", {"question": "What is the code?",
                                                     "paths": [str(tmp_path / "private.txt")]})
            both = await client.call_tool("ask", {"question": "q", "text": "t", "paths": ["a"]})
            return tools, text, paths, outside, both

    with ScriptedOpenAIServer(root_script()) as server:
        tools, text, paths, outside, both = asyncio.run(session(server.base_url))
    assert [t.name for t in tools.tools] == ["ask"]  # type: ignore[attr-defined]
    for result in (text, paths):
        assert not result.is_error, result  # type: ignore[attr-defined]
        answer = result.structured_content  # type: ignore[attr-defined]
        assert answer["answer"] == "4217" and answer["stop_reason"] == "final"
        assert answer["iterations"] == 2 and "usd" in answer
    assert outside.is_error  # type: ignore[attr-defined]
    assert "allow-dir" in outside.content[0].text  # type: ignore[attr-defined]
    assert both.is_error  # type: ignore[attr-defined]
    assert any("iteration 1" in line for line in progress)
    assert any("running:" in line for line in progress)


