"""SIGTERM and SIGHUP end `fathom ask` the way Ctrl-C does: cancelled, cleaned up, traced."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from fathom.trace import read
from tests.cli.conftest import cli_env, command, script
from tests.fake_servers import ScriptedOpenAIServer

EXPLORE = "Let me look.\n```repl\nprint(len(context))\n```"


def _wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_cancels_the_run_cleans_up_and_ends_the_trace(
    tmp_path: Path, signum: signal.Signals
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    trace = tmp_path / "run.jsonl"
    # Each model reply takes 10 s: the signal arrives while the root call waits.
    with ScriptedOpenAIServer(script([EXPLORE, "FINAL(done)"]), delay=10) as server:
        proc = subprocess.Popen(
            [*command(), "ask", "-", "-q", "How long?", "--model", "openai:x", "--trace",
             str(trace)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tmp_path, env=cli_env(server.base_url, TMPDIR=str(private_tmp)),
        )
        assert proc.stdin is not None
        proc.stdin.write("a line of input\n" * 1000)
        proc.stdin.close()
        _wait_for(lambda: trace.exists() and "lm_call_start" in trace.read_text())
        assert any(private_tmp.iterdir())  # the spooled stdin (and the sandbox) exist mid-run
        proc.send_signal(signum)
        proc.wait(timeout=30)
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 128 + signum, stderr
    assert stdout == ""
    assert f"stopped by {signum.name}" in stderr and "Traceback" not in stderr
    assert list(private_tmp.iterdir()) == []  # no fathom-stdin-*.txt, no sandbox directory
    assert read(trace)[-1].type == "run_end"
