"""The real `fathom serve` process: answers through the openai SDK, logs, and on SIGTERM
cancels the run in progress within --grace and exits leaving no worker behind."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from fathom.trace import read
from tests.cli.conftest import cli_env, command
from tests.fake_servers import ScriptedOpenAIServer
from tests.server.conftest import FIND_CODE, SLEEP, wait_for, workers

SECRET = "Ledger, page 12: the code is 4217."


def respond(messages: list[dict[str, Any]]) -> str:
    """Find the code; a question asking to take it slow runs a 60 s block instead."""
    if any(m["role"] == "assistant" for m in messages):
        return "FINAL_VAR(answer)"
    return SLEEP if "slow" in str(messages[-1]["content"]) else FIND_CODE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_then_sigterm_cancels_the_run_within_grace(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with ScriptedOpenAIServer(respond) as model, log.open("wb") as err:
        proc = subprocess.Popen(
            [*command(), "serve", "--model", "openai:x", "--port", str(port), "--grace", "2",
             "--trace-dir", str(tmp_path / "traces")],
            stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path, env=cli_env(model.base_url))
        try:
            wait_for(lambda: _healthy(base))
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
            reply = client.chat.completions.create(
                model="fathom", messages=[{"role": "user", "content": "What is the code?"}],
                extra_body={"context": SECRET})
            assert reply.choices[0].message.content == "4217"

            slow = threading.Thread(target=_post_quietly, args=(base,), daemon=True)
            slow.start()
            plain: list[httpx.Response] = []
            waiting = threading.Thread(target=lambda: plain.append(httpx.post(
                f"{base}/v1/chat/completions", timeout=30, json={
                    "messages": [{"role": "user", "content": "Take it slow"}],
                    "context": SECRET})), daemon=True)
            waiting.start()
            wait_for(lambda: len(workers(proc.pid)) == 2)
            running = workers(proc.pid)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            took = time.monotonic() - started
            waiting.join(5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert took < 2 + 3, took  # the grace time, and the cleanup of the cancelled run
    assert proc.returncode == -signal.SIGTERM  # uvicorn ends by the signal it was sent
    assert all(not Path(f"/proc/{pid}").exists() for pid in running)
    assert plain[0].status_code == 503  # a reply not begun says why, in the OpenAI format
    assert plain[0].json()["error"]["code"] == "shutting_down"
    text = log.read_text()
    assert "Traceback" not in text, text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    done = [x for x in lines if x["path"] == "/v1/chat/completions" and x["status"] == 200]
    assert done and done[0]["outcome"] == "final" and done[0]["run_id"]
    assert any(x.get("outcome") == "cancelled" for x in lines)
    traces = list((tmp_path / "traces").glob("*.jsonl"))
    assert len(traces) == 3  # a trace per run, the cancelled ones ended too
    assert all(read(trace)[-1].type == "run_end" for trace in traces)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _post_quietly(base: str) -> None:
    try:
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=30, json={
                "messages": [{"role": "user", "content": "Take it slow"}], "context": SECRET,
                "stream": True}) as response:
            for _ in response.iter_lines():
                pass
    except httpx.HTTPError:
        pass
