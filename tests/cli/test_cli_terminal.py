"""Progress on a real pseudo-terminal: drawn live on a TTY, plain lines everywhere else."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.cli.conftest import cli_env, command, run_on_pty, script
from tests.fake_servers import ScriptedOpenAIServer

ROOT = [
    "Exploring.\n```repl\nparts = context.split()\nprint(len(parts))\n```",
    "```repl\nanswers = llm_query_batched([f'What is {p}?' for p in parts])\nprint(answers)\n```",
    "FINAL(three words)",
]


def test_progress_is_drawn_live_on_a_tty(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("alpha beta gamma")
    # Slow replies so the live panel refreshes several times during the run.
    with ScriptedOpenAIServer(script(ROOT, lambda p: p.split()[-1]), delay=0.25) as server:
        env = cli_env(server.base_url, TERM="xterm-256color", COLUMNS="110", LINES="40")
        run = run_on_pty(
            [*command(), "ask", "words.txt", "-q", "What are the words?", "--model", "openai:x",
             "--sandbox", "inprocess"], env, tmp_path)
    terminal = run.terminal
    assert run.code == 0, terminal
    assert run.stdout == "three words\n"  # the answer is not mixed with the drawing
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


def test_sandbox_text_in_the_live_panel_is_text_and_the_answer_is_printed(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    hostile = "[bold red]x[/] [link=http://evil.example]click[/link] \x1b]52;c;cHduZWQ=\x07 \x9b2J"
    root = [
        f"```repl\n# {hostile}\nraise ValueError({hostile!r})\n```",
        # Its error message made rich raise MarkupError, last of all when the panel stopped:
        # exit 1 with a traceback and no answer.
        "```repl\nopen('[/tmp]')\n```",
        "FINAL(done)",
    ]
    with ScriptedOpenAIServer(script(root), delay=0.3) as server:  # frames of every state
        env = cli_env(server.base_url, TERM="xterm-256color", COLUMNS="140", LINES="40")
        run = run_on_pty([*command(), "ask", "a.txt", "-q", "What?", "--model", "openai:x",
                          "--sandbox", "inprocess"], env, tmp_path)
    assert run.code == 0, run.terminal
    assert run.stdout == "done\n"
    assert "Traceback" not in run.terminal and "display failed" not in run.terminal
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", run.terminal)
    assert "No such file or directory: '[/tmp]'" in plain  # the error, as text
    assert "ValueError: [bold red]x[/] [link=http://evil.example]click[/link]" in plain
    assert "\\x1b]52;c;cHduZWQ=\\x07 \\x9b2J" in plain  # escapes shown, not obeyed
    assert "\x1b]" not in run.terminal and "\x9b" not in run.terminal  # no OSC: no link either
