"""Drive the real `fathom` entry point in a subprocess against a scripted OpenAI server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ENTRY = Path(sys.executable).with_name("fathom")
Runner = Callable[..., subprocess.CompletedProcess[str]]


def command() -> list[str]:
    """The installed console script when there is one, else the module."""
    return [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "fathom.cli"]


def cli_env(base_url: str | None = None, **extra: str) -> dict[str, str]:
    """A clean environment: no real keys, the scripted server as the OpenAI endpoint."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "FATHOM_"))}
    if base_url is not None:
        env["OPENAI_BASE_URL"] = base_url
        env["OPENAI_API_KEY"] = "sk-test"
    env.update(extra)
    return env


def script(root: list[str], sub: Callable[[str], str] | None = None) -> Callable[..., str]:
    """A server responder: root turns by number of assistant messages; sub-calls by prompt."""

    def respond(messages: list[dict[str, Any]]) -> str:
        if len(messages) == 1 and messages[0].get("role") == "user":
            prompt = str(messages[0].get("content", ""))
            return sub(prompt) if sub else f"echo: {prompt[:40]}"
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if turn >= len(root):
            raise LookupError("the root script is over")
        return root[turn]

    return respond


@pytest.fixture
def fathom_cli(tmp_path: Path) -> Runner:
    """Run `fathom ARGS...` in tmp_path; returns the CompletedProcess (text mode)."""

    def run(
        *args: str, base_url: str | None = None, stdin: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command(), *args], input=stdin if stdin is not None else "", capture_output=True,
            text=True, cwd=tmp_path, env=env or cli_env(base_url), timeout=timeout,
        )

    return run
