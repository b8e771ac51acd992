"""`fathom ask` input: empty input, folders' ignored parts, encodings and binary files."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.conftest import Runner, cli_env, command, script
from tests.fake_servers import ScriptedOpenAIServer

ASK = ["--model", "openai:x", "--sandbox", "inprocess"]
SHOW = ["```repl\nFINAL(repr(context))\n```"]


@pytest.mark.parametrize(("args", "said"), [
    (["-"], "Standard input is empty"),
    (["empty.md"], "empty.md is empty"),
    (["blank"], "No text files found in directory blank"),
    (["blank/*.md"], "matched no files"),
    (["venv-only"], "skipped by default"),
])
def test_empty_input_is_a_usage_error_before_any_model_call(
    fathom_cli: Runner, tmp_path: Path, args: list[str], said: str
) -> None:
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "blank").mkdir()
    (tmp_path / "venv-only" / ".venv").mkdir(parents=True)
    (tmp_path / "venv-only" / ".venv" / "site.py").write_text("x")
    with ScriptedOpenAIServer(script(SHOW)) as server:
        out = fathom_cli("ask", *args, "-q", "Summarise", *ASK, base_url=server.base_url)
        assert server.requests == []
    assert out.returncode == 2, out.stderr
    assert said in out.stderr and out.stdout == ""


def test_dash_on_a_terminal_says_it_waits_for_standard_input(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([*command(), "ask", "-", "-q", "Summarise", *ASK], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env=cli_env("http://127.0.0.1:9"))
    os.close(slave)
    time.sleep(0.5)
    os.write(master, b"\x04")  # Ctrl-D on an empty line: end of input
    _, err = proc.communicate(timeout=60)
    os.close(master)
    assert "reading standard input; end it with Ctrl-D" in err.decode()
    assert proc.returncode == 2 and "Standard input is empty" in err.decode()


def test_a_project_folder_skips_its_venv_and_gitignored_files(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / ".venv" / "lib").mkdir(parents=True)
    for n in range(50):
        (project / ".venv" / "lib" / f"m{n}.py").write_text("x")
    (project / "main.py").write_text("print(1)")
    (project / "app.log").write_text("noise")
    (project / ".gitignore").write_text("*.log\n")
    root = ["```repl\nFINAL(' '.join(sorted(context)))\n```"]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "project", "-q", "Which files?", *ASK, base_url=server.base_url)
        wide = fathom_cli("ask", "project", "-q", "Which files?", "--include-ignored", *ASK,
                          base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ".gitignore main.py\n"
    assert ("skipped 1 folder(s): .venv/ (skipped by default, 50 files); --include-ignored "
            "reads them") in out.stderr
    assert "skipped 1 file(s): app.log (ignored by .gitignore)" in out.stderr
    assert wide.returncode == 0, wide.stderr
    assert len(wide.stdout.split()) == 53 and "skipped" not in wide.stderr


def test_encodings_from_a_bom_or_named_and_the_advice_for_bad_bytes(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "wide.txt").write_bytes("Ça va\n".encode("utf-16"))
    (tmp_path / "old.txt").write_bytes("Ça va\n".encode("latin-1"))
    with ScriptedOpenAIServer(script(SHOW)) as server:
        wide = fathom_cli("ask", "wide.txt", "-q", "What?", *ASK, base_url=server.base_url)
        in_worker = fathom_cli("ask", "wide.txt", "-q", "What?", "--model", "openai:x",
                               base_url=server.base_url)  # the subprocess sandbox decodes it
        refused = fathom_cli("ask", "old.txt", "-q", "What?", *ASK, base_url=server.base_url)
        named = fathom_cli("ask", "old.txt", "-q", "What?", "--encoding", "latin-1", *ASK,
                           base_url=server.base_url)
        replaced = fathom_cli("ask", "old.txt", "-q", "What?", "--encoding-errors", "replace",
                              *ASK, base_url=server.base_url)
        unknown = fathom_cli("ask", "old.txt", "-q", "What?", "--encoding", "nope", *ASK,
                             base_url=server.base_url)
    assert wide.returncode == 0 and wide.stdout == "'Ça va\\n'\n", wide.stderr
    assert in_worker.returncode == 0 and in_worker.stdout == wide.stdout, in_worker.stderr
    assert refused.returncode == 2
    assert "--encoding latin-1" in refused.stderr and "--encoding-errors replace" in (
        refused.stderr)
    assert named.returncode == 0 and named.stdout == "'Ça va\\n'\n", named.stderr
    assert replaced.returncode == 0 and replaced.stdout == "'\ufffda va\\n'\n"
    assert unknown.returncode == 2 and "Unknown encoding 'nope'" in unknown.stderr


def test_a_sparse_file_of_nuls_is_refused_as_binary_at_once(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    with open(tmp_path / "disk.img", "wb") as handle:
        handle.truncate(2 * 2**30)
    started = time.monotonic()
    out = fathom_cli("ask", "disk.img", "-q", "What?", *ASK)
    assert time.monotonic() - started < 10
    assert out.returncode == 2 and "disk.img is binary" in out.stderr
