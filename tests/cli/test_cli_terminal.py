"""Progress on a real pseudo-terminal: drawn live on a TTY, plain lines everywhere else."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading
from pathlib import Path

from tests.cli.conftest import cli_env, command, script
from tests.fake_servers import ScriptedOpenAIServer

ROOT = [
    "Exploring.\n```repl\nparts = context.split()\nprint(len(parts))\n```",
    "```repl\nanswers = llm_query_batched([f'What is {p}?' for p in parts])\nprint(answers)\n```",
    "FINAL(three words)",
]


def _run_on_pty(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run with stderr on a pty (stdout piped); return (exit code, stdout, terminal output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            cwd=cwd, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child side is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=60)
    reader.join(timeout=10)
    os.close(master)
    return code, stdout, b"".join(chunks).decode("utf-8", "replace")


def test_progress_is_drawn_live_on_a_tty(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("alpha beta gamma")
    # Slow replies so the live panel refreshes several times during the run.
    with ScriptedOpenAIServer(script(ROOT, lambda p: p.split()[-1]), delay=0.25) as server:
        env = cli_env(server.base_url, TERM="xterm-256color", COLUMNS="110", LINES="40")
        code, stdout, terminal = _run_on_pty(
            [*command(), "ask", "words.txt", "-q", "What are the words?", "--model", "openai:x",
             "--sandbox", "inprocess"], env, tmp_path)
    assert code == 0, terminal
    assert stdout == "three words\n"  # the answer is not mixed with the drawing
    assert "\x1b[" in terminal  # cursor movement and colours: drawn live
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal)
    assert "fathom · openai:x" in plain  # the live panel's title
    assert "iteration" in plain and "sub-calls" in plain and "elapsed" in plain
    assert "llm_query_batched" in plain  # the running code is shown
    assert "tokens in" in plain  # the summary table at the end


def test_no_escape_codes_when_stderr_is_not_a_tty(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("alpha beta gamma")
    with ScriptedOpenAIServer(script(ROOT, lambda p: p.split()[-1])) as server:
        out = subprocess.run(
            [*command(), "ask", "words.txt", "-q", "What are the words?", "--model", "openai:x",
             "--sandbox", "inprocess"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
            env=cli_env(server.base_url, TERM="xterm-256color"),
        )
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stderr
    lines = out.stderr.splitlines()
    assert any("iteration 2" in line for line in lines)
    assert any("code ran in" in line and "3 done, 0 failed" in line for line in lines)
    assert all(line.startswith("[fathom") for line in lines)
