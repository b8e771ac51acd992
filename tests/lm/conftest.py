"""Fixtures for model tests: a real llama.cpp server serving the bundled model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

SERVER_ALIAS = "smollm2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bundled_weights() -> Path:
    """The bundled GGUF, or skip (fail in CI) when llama.cpp or the weights are missing."""
    try:
        import llama_cpp  # noqa: F401

        from fathom.lm.local import default_weights

        return default_weights()
    except Exception as exc:
        skip_or_fail(f"the embedded model is unavailable: {exc}")
        raise  # unreachable: skip_or_fail raises


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (ending in /v1) of `python -m llama_cpp.server` on a loopback port."""
    weights = bundled_weights()
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"llama_cpp.server is not installed ({exc}): pip install 'fathom[server]'")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llamacpp") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(weights), "--model_alias", SERVER_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "8192", "--n_threads", str(os.cpu_count() or 1), "--verbose", "False",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(proc, base_url, log_path)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_up(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            text = log_path.read_text(errors="replace")[-2000:]
            skip_or_fail(f"llama_cpp.server exited with {proc.returncode}: {text}")
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            skip_or_fail("llama_cpp.server did not start within 90 s")
        time.sleep(0.25)
