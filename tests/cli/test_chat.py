"""`fathom chat` in a real pseudo-terminal: questions at a prompt, Ctrl-C, Ctrl-D, save/resume.

The model is the scripted OpenAI-compatible server; each question's reply is chosen by
the question in its first user turn, so the script does not depend on call order.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest

from fathom.trace import read
from tests.cli.conftest import cli_env, command
from tests.fake_servers import ScriptedOpenAIServer

pytestmark = pytest.mark.slow

PROMPT = "fathom> "


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def by_question(replies: dict[str, list[str]]) -> Callable[[list[dict[str, Any]]], str]:
    """Root replies per question (matched in the first user turn), in order within it."""

    def respond(messages: list[dict[str, Any]]) -> str:
        first = next(str(m.get("content", "")) for m in messages if m.get("role") == "user")
        question = re.search(r"Query: (.*)", first)
        script = replies[question.group(1).strip() if question else ""]
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        return script[min(turn, len(script) - 1)]

    return respond


def spawn(args: list[str], server: ScriptedOpenAIServer, cwd: Path) -> pexpect.spawn:
    argv = [*command(), "chat", *args, "--model", "openai:x"]
    env = cli_env(server.base_url, TERM="xterm", COLUMNS="100")
    return pexpect.spawn(argv[0], argv[1:], cwd=str(cwd), env=env, encoding="utf-8",
                         codec_errors="replace",  # two threads share the terminal
                         timeout=60, dimensions=(40, 100))


def test_two_questions_a_cancelled_one_then_ctrl_d(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Marta moved to Lisbon in 2019.\n")
    replies = {
        "Where did Marta move?": [repl("city = context.split()[3].rstrip('.')\nFINAL(city)")],
        "Spin forever": [repl("import time\nwhile True:\n    time.sleep(0.1)")],
        "Which city again?": [repl("FINAL(f'{city} (asked {len(history)} before)')")],
    }
    with ScriptedOpenAIServer(by_question(replies)) as server:
        chat = spawn(["notes.txt", "--trace", "run.jsonl"], server, tmp_path)
        chat.expect_exact(PROMPT)
        chat.sendline("Where did Marta move?")
        chat.expect_exact("final after 1 iteration")  # the run's summary, then the answer
        chat.expect_exact("Lisbon")
        chat.expect_exact(PROMPT)
        chat.sendline("Spin forever")
        chat.expect_exact("while")  # the live panel shows the block being run
        chat.sendintr()
        chat.expect_exact("question cancelled")
        chat.expect_exact(PROMPT)
        # The session survived: its variables are still there.
        chat.sendline("Which city again?")
        chat.expect_exact("Lisbon (asked 1 before)")
        chat.expect_exact(PROMPT)
        chat.sendeof()
        chat.expect_exact("2 question(s) answered in this chat: 3 model calls")  # the totals
        chat.expect(pexpect.EOF)
        chat.close()
    assert chat.exitstatus == 0, chat.before
    assert read(tmp_path / "run.2.jsonl")[-1].type == "run_end"  # the cancelled one, closed
    assert [e.type for e in read(tmp_path / "run.3.jsonl")][-1] == "run_end"


def test_save_then_resume(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Marta moved to Lisbon in 2019.\n")
    replies = {
        "Index it": [repl("words = context.split()\nFINAL(len(words))")],
        "Last word?": [repl("FINAL(words[-1] + ' / ' + history[0]['question'])")],
    }
    with ScriptedOpenAIServer(by_question(replies)) as server:
        chat = spawn(["notes.txt", "--save", "s.fathom"], server, tmp_path)
        chat.expect_exact(PROMPT)
        chat.sendline("Index it")
        chat.expect_exact("6")
        chat.expect_exact(PROMPT)
        chat.sendeof()
        chat.expect(pexpect.EOF)
        chat.close()
        assert chat.exitstatus == 0
        again = spawn(["notes.txt", "--resume", "s.fathom"], server, tmp_path)
        again.expect_exact("resumed a session of 1 question(s)")
        again.expect_exact(PROMPT)
        again.sendline("Last word?")
        again.expect_exact("2019. / Index it")
        again.expect_exact(PROMPT)
        again.sendeof()
        again.expect(pexpect.EOF)
        again.close()
        assert again.exitstatus == 0
        (tmp_path / "notes.txt").write_text("Something else entirely.\n")
        changed = spawn(["notes.txt", "--resume", "s.fathom"], server, tmp_path)
        changed.expect_exact("not the one the session")
        changed.expect(pexpect.EOF)
        changed.close()
        assert changed.exitstatus == 2



def test_questions_from_a_pipe_and_no_stdin_input(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Marta moved to Lisbon in 2019.\n")
    replies = {"First?": [repl("first = context.split()[0]\nFINAL(first)")],
               "Again?": [repl("FINAL(first + '!')")]}
    with ScriptedOpenAIServer(by_question(replies)) as server:
        done = subprocess.run([*command(), "chat", "notes.txt", "--model", "openai:x", "--quiet"],
                              input="First?\n\nAgain?\n", capture_output=True, text=True,
                              cwd=tmp_path, env=cli_env(server.base_url), timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["Marta", "Marta!"]  # no prompt when not on a terminal
        assert done.stderr == ""
        refused = subprocess.run([*command(), "chat", "-", "--model", "openai:x"], input="x\n",
                                 capture_output=True, text=True, cwd=tmp_path,
                                 env=cli_env(server.base_url), timeout=60)
    assert refused.returncode == 2 and "not '-'" in refused.stderr
