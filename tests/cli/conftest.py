"""Drive the real `fathom` entry point in a subprocess against a scripted OpenAI server."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PtyRun:
    """What a command did on pseudo-terminals: its exit code, stdout, and what stderr drew."""

    code: int
    stdout: str
    terminal: str


def run_on_pty(args: list[str], env: dict[str, str], cwd: Path, *,
               stdout_tty: bool = False) -> PtyRun:
    """Run with stderr on a pseudo-terminal, and stdout on a second one when `stdout_tty`
    (else on a pipe). The terminals are raw: the bytes read are the bytes written."""
    err_master, err_slave = pty.openpty()
    out_master, out_slave = pty.openpty() if stdout_tty else (-1, -1)
    slaves = [fd for fd in (err_slave, out_slave) if fd >= 0]
    for fd in slaves:
        tty.setraw(fd)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                            stdout=out_slave if stdout_tty else subprocess.PIPE,
                            stderr=err_slave, cwd=cwd, env=env)
    for fd in slaves:
        os.close(fd)
    readers = [_Drain(fd) for fd in (err_master, out_master) if fd >= 0]
    piped = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=60)
    for reader in readers:
        reader.join(timeout=10)
        os.close(reader.fd)
    stdout = readers[1].text() if stdout_tty else piped
    return PtyRun(code, stdout, readers[0].text())


class _Drain(threading.Thread):
    """Reads a pty's master side until the child side is closed."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.chunks: list[bytes] = []
        self.start()

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO once the child side is closed
                return
            if not data:
                return
            self.chunks.append(data)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


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
