"""`fathom mcp` over stdio, driven by the official mcp client against a scripted model."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.cli.conftest import cli_env, command
from tests.fake_servers import ScriptedOpenAIServer
from tests.server.conftest import FIND_CODE, SLEEP, root_script, wait_for

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




def _slow_or_find(messages: list[dict[str, Any]]) -> str:
    if any(m["role"] == "assistant" for m in messages):
        return "FINAL_VAR(answer)"
    return SLEEP if "slow" in str(messages[-1]["content"]) else FIND_CODE


def _workers_in(folder: Path) -> list[int]:
    """Sandbox workers whose scratch directory (their cwd) lies in `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (b"fathom.sandbox.worker" in (entry / "cmdline").read_bytes()
                    and Path(os.readlink(entry / "cwd")).is_relative_to(folder)):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def test_a_cancelled_call_cancels_its_run_and_frees_its_sandbox(tmp_path: Path) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()

    async def session(base_url: str) -> object:
        params = StdioServerParameters(
            command=command()[0], args=[*command()[1:], "mcp", "--model", "openai:x"],
            env=cli_env(base_url, TMPDIR=str(private_tmp)), cwd=str(tmp_path))
        running = asyncio.Event()

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            if "running:" in (message or ""):
                running.set()

        async with Client(params, read_timeout_seconds=60) as client:
            call = asyncio.create_task(client.call_tool(
                "ask", {"question": "Take it slow", "text": SECRET},
                progress_callback=on_progress))
            await asyncio.wait_for(running.wait(), 30)
            await asyncio.to_thread(wait_for, lambda: _workers_in(private_tmp))
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            await asyncio.to_thread(wait_for, lambda: not _workers_in(private_tmp), 10)
            # The server goes on: the next call is answered.
            return await client.call_tool("ask", {"question": "What is the code?",
                                                  "text": SECRET})

    with ScriptedOpenAIServer(_slow_or_find) as server:
        after = asyncio.run(session(server.base_url))
    assert after.structured_content["answer"] == "4217"  # type: ignore[attr-defined]
    # Nothing of the sandbox is left, not even its empty scratch directory.
    assert list(private_tmp.rglob("*")) == []


def test_ask_over_streamable_http(tmp_path: Path) -> None:
    import socket
    import subprocess

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def session() -> object:
        async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=60) as client:
            return await client.call_tool("ask", {"question": "What is the code?",
                                                  "text": SECRET})

    def listening() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
        except httpx.HTTPError:
            return False
        return True

    with ScriptedOpenAIServer(root_script()) as server:
        proc = subprocess.Popen(
            [*command(), "mcp", "--transport", "http", "--port", str(port), "--model",
             "openai:x"], env=cli_env(server.base_url), cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(listening)
            result = asyncio.run(session())
        finally:
            proc.terminate()
            proc.wait(15)
    assert result.structured_content["answer"] == "4217"  # type: ignore[attr-defined]
