"""Model and sandbox text reaches the user's terminal as text: no escape sequence, control
character or bidi override in it is obeyed, and no rich markup in it is parsed. An answer
written to a file and `--json` keep the exact text."""

from __future__ import annotations

import io
import json
import subprocess
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.errors import MarkupError

import fathom
from fathom.errors import LMError
from fathom.lm import ScriptedLM
from fathom.progress import Progress
from fathom.replay import ReplayReport
from fathom.terminal import safe_json, safe_text
from tests.cli.conftest import cli_env, command, run_on_pty, script
from tests.fake_servers import ScriptedOpenAIServer

# What a prompt-injected model, its code or a hostile provider could put in front of a user.
HOSTILE = {
    "osc52-clipboard": "\x1b]52;c;cHduZWQ=\x07",
    "osc0-title": "\x1b]0;pwned\x07",
    "osc8-hyperlink": "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    "csi-clear": "\x1b[2J\x1b[3J\x1b[H",
    "csi-cursor": "\x1b[5A\x1b[2K",
    "c1-csi": "\x9b2J",
    "c1-osc": "\x9d0;pwned\x9c",
    "del-nul-bell-backspace": "a\x7fb\x00c\x07d\x08",
    "lone-cr": "visible\rHIDDEN",
    "bidi-override": "invoice\u202efdp.exe",
    "bidi-isolate": "\u2067x\u2069",
}
MARKUP = ["[/tmp]", "[bold red]x[/]", "[link=http://evil.example]click[/link]", ":warning:"]
ANSWER = " | ".join([*HOSTILE.values(), *MARKUP])
# The sandbox builds the answer from escapes: the control characters are its output.
FINAL_ANSWER = f"```repl\nFINAL({ANSWER!r})\n```"
ASK = ["--model", "openai:x", "--sandbox", "inprocess"]
# Those Python accepts in a comment (not NUL, CR or bidi controls).
IN_CODE = " ".join([HOSTILE["osc52-clipboard"], HOSTILE["csi-clear"], HOSTILE["c1-csi"], *MARKUP])
BIDI_CONTROLS = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}


def obeyed(text: str) -> list[str]:
    """Characters in `text` a terminal would act on instead of showing."""
    return [c for c in text if (unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t")
            or unicodedata.bidirectional(c) in BIDI_CONTROLS]


# --- the escaping itself ------------------------------------------------------------------
@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_every_control_is_shown_visibly_and_none_is_left(payload: str) -> None:
    shown = safe_text(payload)
    assert obeyed(shown) == []
    controls = set(obeyed(payload))
    for c in controls:  # each shown as its escape, the rest of the text as it was
        shown = shown.replace(c.encode("unicode_escape").decode(), "")
    assert shown == "".join(c for c in payload if c not in controls)


def test_the_escapes_are_python_notation() -> None:
    assert safe_text(HOSTILE["osc0-title"]) == "\\x1b]0;pwned\\x07"
    assert safe_text("\x9b2J \x7f \x00") == "\\x9b2J \\x7f \\x00"
    assert safe_text("visible\rHIDDEN") == "visible\\rHIDDEN"
    assert safe_text("a\u202eb \ud800") == "a\\u202eb \\ud800"


def test_text_newlines_tabs_and_unicode_are_kept() -> None:
    text = "naïve 東京 👩‍💻 Ω\ttab\nnext line [not markup]"
    assert safe_text(text) == text
    assert safe_text("one\r\ntwo\r\n") == "one\ntwo\n"  # a CRLF line end is a line end
    assert safe_text(safe_text(ANSWER)) == safe_text(ANSWER)


def test_json_escaping_keeps_the_value() -> None:
    value = {"answer": ANSWER, "lone": "\ud800", "keys too \x9b": 1}
    dumped = safe_json(json.dumps(value, ensure_ascii=False))
    assert obeyed(dumped) == []
    assert json.loads(dumped) == value
    assert "東京" in safe_json(json.dumps("東京", ensure_ascii=False))  # readable stays readable


def test_replay_summary_escapes_the_recorded_text() -> None:
    report = ReplayReport(
        trace_path="run\x1b]0;t\x07.jsonl", matches=False, original_answer=ANSWER,
        replayed_answer=ANSWER, original_stop_reason="final", replayed_stop_reason="error",
        root_replies=2, sub_replies=1, unused_root_replies=0,
        unmatched_prompts=[f"prompt {ANSWER}"], error=f"ValueError: {ANSWER}",
    )
    summary = report.summary()
    assert obeyed(summary) == []
    assert "error: ValueError: \\x1b]52;c;cHduZWQ=\\x07" in summary
    assert summary.startswith("MISMATCH: replay of run\\x1b]0;t\\x07.jsonl")


# --- progress, in process ---------------------------------------------------------------
def _hostile_run(on_event: Callable[[Any], None]) -> fathom.Result:
    """A run whose model name, code, errors, child queries and answers carry HOSTILE text."""
    error = f"raise ValueError({ANSWER!r})"
    children = f"print(rlm_query({'child ' + ANSWER!r}))\nprint(rlm_query('second child'))"
    root = ScriptedLM([
        f"```repl\n{error}\n```",
        f"```repl\n{children}\n```",
        f"```repl\nFINAL({'kid ' + ANSWER!r})\n```",  # the first child answers
        LMError(f"provider said {ANSWER}"),  # the second child's model call fails
        f"```repl\n# {IN_CODE}\nopen('[/tmp]')\n```",  # raw controls in the code itself
        "FINAL(done)",
    ], name=f"root {ANSWER}")
    return fathom.RLM(model=root, sandbox="inprocess", max_depth=1,
                      on_event=on_event).run("q", "context")


def test_plain_progress_lines_escape_everything_from_the_model_and_sandbox() -> None:
    stream = io.StringIO()
    progress = Progress("plain", stream=stream)
    progress.summary(_hostile_run(progress))
    text = stream.getvalue()
    assert obeyed(text) == []
    assert all(line.startswith("[fathom") for line in text.splitlines())  # no forged lines
    assert "run started: model root \\x1b]52;c;cHduZWQ=\\x07" in text
    assert "error (ValueError: \\x1b]52" in text  # a sandbox error
    assert "child RLM started (depth 1): child \\x1b]52" in text  # an rlm_query prompt
    assert "child RLM ended: final, kid \\x1b]52" in text  # a child's answer
    assert "model call failed: LMError: provider said \\x1b]52" in text
    assert "FileNotFoundError: [Errno 2] No such file or directory: '[/tmp]'" in text


def test_live_panel_shows_markup_and_escapes_as_text() -> None:
    progress = Progress("live", stream=io.StringIO())
    _hostile_run(progress)
    console = Console(file=io.StringIO(), width=160, record=True, force_terminal=True,
                      color_system="truecolor")
    console.print(progress.render())  # MarkupError here before: "[/tmp]" closed no tag
    drawn = console.file.getvalue()  # type: ignore[attr-defined]
    for raw in ("\x1b]", "\x9b", "\x9d", "\x7f", "\x00", "\u202e", "\u2067", "visible\rHIDDEN"):
        assert raw not in drawn, raw
    panel = console.export_text()
    assert "fathom · root \\x1b]52;c;cHduZWQ=\\x07" in panel  # the model name, in the title
    assert "No such file or directory: '[/tmp]'" in panel  # the last error
    assert "# \\x1b]52;c;cHduZWQ=\\x07 \\x1b[2J\\x1b[3J\\x1b[H \\x9b2J [/tmp]" in panel  # code
    assert "open('[/tmp]')" in panel


def test_summary_table_shows_names_and_paths_as_text(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress("live", stream=stream)
    root = ScriptedLM(["FINAL(ok)"], name="[bold]model[/] \x1b]0;t\x07")
    trace = tmp_path / "run[/tmp].jsonl"
    progress.summary(fathom.RLM(model=root, sandbox="inprocess", trace=trace).run("q", "c"))
    drawn = stream.getvalue()
    assert "\x1b]" not in drawn
    # The table may wrap the name at the space; each part is shown as text, not markup.
    assert "[bold]model[/]" in drawn and "\\x1b]0;t\\x07" in drawn
    assert "run[/tmp].jsonl" in drawn and "--open" in drawn
    assert progress.failure is None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_display_that_breaks_loses_neither_the_run_nor_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_render(self: Progress) -> None:
        raise MarkupError("closing tag '[/tmp]' at position 0 doesn't match any open tag")

    monkeypatch.setattr(Progress, "render", broken_render)
    stream = _Terminal()
    progress = Progress("auto", stream=stream)
    assert progress.mode == "live"
    root = ScriptedLM(["```repl\nx = 6 * 7\n```", "```repl\nFINAL(x)\n```"], latency=0.2)
    with progress.running():
        result = fathom.RLM(model=root, sandbox="inprocess", on_event=progress).run("q", "c")
    assert result.answer == "42"
    told = "the progress display failed (MarkupError: closing tag '[/tmp]'"
    assert stream.getvalue().count(f"{told} at position 0 doesn't match any open tag); the run "
                                   "went on without it\n") == 1  # said once, after the run


def test_a_stream_that_fails_does_not_raise_from_the_summary() -> None:
    class Closed(_Terminal):
        def write(self, text: str) -> int:
            raise OSError("stderr is gone")

    progress = Progress("plain", stream=Closed())
    progress.summary(fathom.RLM(ScriptedLM(["FINAL(ok)"]), sandbox="inprocess").run("q", "c"))
    assert progress.failure == "OSError: stderr is gone"


# --- the command line ---------------------------------------------------------------------
def _ask(cwd: Path, root: list[str], *extra: str, stdout: Any = subprocess.PIPE,
         sub: Callable[[str], str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """`fathom ask a.txt` against a scripted server; bytes, so nothing is translated."""
    (cwd / "a.txt").write_text("some input")
    with ScriptedOpenAIServer(script(root, sub)) as server:
        return subprocess.run(
            [*command(), "ask", "a.txt", "-q", "What?", *ASK, *extra], stdout=stdout,
            stderr=subprocess.PIPE, cwd=cwd, env=cli_env(server.base_url), timeout=60,
        )


def test_an_answer_redirected_to_a_file_is_the_exact_text(tmp_path: Path) -> None:
    with (tmp_path / "out.txt").open("wb") as out:
        done = _ask(tmp_path, [FINAL_ANSWER], stdout=out)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.txt").read_bytes() == f"{ANSWER}\n".encode()
    assert obeyed(done.stderr.decode()) == []


def test_an_answer_on_a_terminal_is_shown_escaped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some input")
    with ScriptedOpenAIServer(script([FINAL_ANSWER])) as server:
        env = cli_env(server.base_url, TERM="xterm-256color", COLUMNS="120", LINES="40")
        run = run_on_pty([*command(), "ask", "a.txt", "-q", "What?", *ASK], env, tmp_path,
                         stdout_tty=True)
    assert run.code == 0, run.terminal
    assert run.stdout == safe_text(ANSWER) + "\n"
    assert obeyed(run.stdout) == []
    assert "\\x1b]52;c;cHduZWQ=\\x07" in run.stdout and "invoice\\u202efdp.exe" in run.stdout
    assert "[bold red]x[/] | [link=http://evil.example]click[/link] | :warning:" in run.stdout
    for raw in HOSTILE.values():
        assert raw not in run.terminal


def test_json_keeps_the_exact_answer_and_no_raw_controls(tmp_path: Path) -> None:
    done = _ask(tmp_path, [FINAL_ANSWER], "--json")
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert obeyed(text) == []
    assert json.loads(text)["answer"] == ANSWER


def test_lone_surrogates_never_lose_the_answer(tmp_path: Path) -> None:
    answer = "```repl\nFINAL('ok \\ud800 \\udcff end')\n```"
    to_file = _ask(tmp_path, [answer])
    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == b"ok \\ud800 \\udcff end\n"  # only what no encoding can write
    as_json = _ask(tmp_path, [answer], "--json")
    assert json.loads(as_json.stdout)["answer"] == "ok \ud800 \udcff end"


def test_error_messages_are_escaped(tmp_path: Path) -> None:
    def failing(messages: list[dict[str, Any]]) -> str:
        raise LookupError(f"provider says {ANSWER}")  # the fake server answers 400 with this

    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(failing) as server:
        done = subprocess.run([*command(), "ask", "a.txt", "-q", "What?", *ASK],
                              capture_output=True, cwd=tmp_path, env=cli_env(server.base_url),
                              timeout=60)
    stderr = done.stderr.decode()
    assert done.returncode != 0
    assert obeyed(stderr) == []
    error = next(line for line in stderr.splitlines() if line.startswith("fathom: error:"))
    assert "provider says \\x1b]52;c;cHduZWQ=\\x07" in error


def test_plain_progress_on_stderr_escapes_sandbox_errors(tmp_path: Path) -> None:
    root = [f"```repl\nraise ValueError({ANSWER!r})\n```", "```repl\nopen('[/tmp]')\n```",
            "FINAL(ok)"]
    done = _ask(tmp_path, root)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert obeyed(stderr) == []
    assert "ValueError: \\x1b]52;c;cHduZWQ=\\x07" in stderr
    assert "No such file or directory: '[/tmp]'" in stderr


def test_names_of_skipped_files_are_escaped(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("text")
    (docs / "evil\x1b]0;pwned\x07.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with ScriptedOpenAIServer(script(["FINAL(ok)"])) as server:
        done = subprocess.run([*command(), "ask", "docs", "-q", "What?", *ASK],
                              capture_output=True, cwd=tmp_path, env=cli_env(server.base_url),
                              timeout=60)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert obeyed(stderr) == []
    assert "skipped 1 file(s): evil\\x1b]0;pwned\\x07.png" in stderr


def test_replay_of_a_hostile_trace_prints_no_raw_controls(tmp_path: Path) -> None:
    recorded = _ask(tmp_path, [FINAL_ANSWER], "--trace", "run.jsonl")
    assert recorded.returncode == 0, recorded.stderr
    replayed = subprocess.run([*command(), "replay", "run.jsonl", "--sandbox", "inprocess"],
                              capture_output=True, cwd=tmp_path, env=cli_env(), timeout=60)
    out = replayed.stdout.decode()
    assert replayed.returncode == 0, out + replayed.stderr.decode()
    assert out.startswith("MATCH") and obeyed(out) == []
    assert "\\x1b]52;c;cHduZWQ=\\x07" in out


def test_the_demo_report_shows_a_hostile_answer_as_text(tmp_path: Path) -> None:
    from fathom.demo import run_demo

    hostile = "```repl\nFINAL('\\x1b]52;c;cGF3bmVk\\x07\\x1b[2Jdone')\n```"
    out = io.StringIO()
    result = run_demo(ScriptedLM([hostile]), chars=20_000, trace_dir=tmp_path, out=out,
                      sandbox="inprocess")
    assert result.answer.startswith("\x1b]52")
    report = out.getvalue()
    assert "\x1b" not in report and "\x07" not in report and "\\x1b]52" in report


def test_doctor_shows_environment_values_as_text(tmp_path: Path) -> None:
    from tests.cli.conftest import cli_env, command

    env = {**cli_env(None), "FATHOM_MODEL": "local\x1b]0;owned\x07\x1b[2J"}
    out = subprocess.run([*command(), "doctor"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert "local\\x1b]0;owned" in out.stdout
