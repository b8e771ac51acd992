"""Serve the app in-process on a real port (uvicorn in a thread), and find sandbox workers."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from fathom.lm import ScriptedLM
from fathom.server.app import create_app
from fathom.server.config import ServerConfig

# Root turns: find the code in the context with real code in the real sandbox, then answer.
FIND_CODE = ("Let me look.\n```repl\nimport re\nfound = re.search(r'code is (\\d+)', "
             "str(context))\nanswer = found.group(1) if found else 'none'\nprint(answer)\n```")
SLEEP = "Thinking.\n```repl\nimport time\ntime.sleep(60)\n```"


def root_script(first: str = FIND_CODE, then: str = "FINAL_VAR(answer)") -> Callable[..., str]:
    """A root model: `first` on its first turn, `then` afterwards."""

    def respond(messages: list[dict[str, Any]]) -> str:
        return first if not any(m["role"] == "assistant" for m in messages) else then

    return respond


def scripted(first: str = FIND_CODE, latency: float = 0.0) -> ScriptedLM:
    """A ScriptedLM that finds the code, usable by many runs at once."""
    return ScriptedLM(root_script(first), latency=latency, name="scripted")


@contextmanager
def serving(config: ServerConfig) -> Iterator[str]:
    """Run the app of `config` on a free loopback port; yields its base URL (no /v1)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def workers(parent: int | None = None) -> list[int]:
    """Live sandbox workers started by `parent` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[1]) == parent and b"fathom.sandbox.worker" in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
