"""What `fathom ask` prints on stdout and how it exits, for every way a run can end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fathom.trace import RunStart, read
from tests.cli.conftest import Runner, script
from tests.fake_servers import ScriptedOpenAIServer

EXPLORE = "Let me look.\n```repl\nprint('printed, not an answer')\n```"
ASK = ["--model", "openai:x", "--sandbox", "inprocess"]


def test_a_forced_answer_at_max_iterations_exits_4_and_says_so(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(script([EXPLORE, "Probably seven."])) as server:
        args = ("ask", "a.txt", "-q", "How many?", "--max-iterations", "1", *ASK)
        out = fathom_cli(*args, "--quiet", base_url=server.base_url)
        as_json = fathom_cli(*args, "--json", base_url=server.base_url)
    assert out.returncode == 4, out.stderr
    assert out.stdout == "Probably seven.\n"
    assert "forced last reply" in out.stderr  # said even with --quiet
    data = json.loads(as_json.stdout)
    assert as_json.returncode == 4
    assert (data["answer_source"], data["stop_reason"]) == ("forced", "max_iterations")


def test_an_unresolved_final_var_at_max_iterations_is_no_answer(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(script([EXPLORE, "FINAL_VAR(result)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "How many?", "--max-iterations", "1", *ASK,
                         base_url=server.base_url)
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    assert "without an answer" in out.stderr and "--max-iterations" in out.stderr


def test_a_final_answer_exits_0_and_json_says_final(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(script(["FINAL(seven)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "How many?", "--json", *ASK,
                         base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["answer_source"] == "final"


def test_a_failed_run_prints_nothing_on_stdout(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer([EXPLORE]) as server:  # then the script is over: errors
        out = fathom_cli("ask", "a.txt", "-q", "What?", *ASK, base_url=server.base_url)
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    assert "fathom: error:" in out.stderr


def test_max_usd_on_an_unpriced_model_is_refused_with_how_to_price_it(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(script(["FINAL(free)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", "--max-usd", "1", "--quiet", *ASK,
                         base_url=server.base_url)
        assert server.requests == []
    assert out.returncode == 2
    assert "--price openai:x=IN,OUT" in out.stderr
    assert "Warning" not in out.stderr and "asyncio" not in out.stderr


def test_price_makes_max_usd_a_real_limit(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 400)
    with ScriptedOpenAIServer(script([EXPLORE, EXPLORE, "FINAL(late)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", "--max-usd", "0.001",
                         "--price", "openai:x=1000,1000", "--json", *ASK,
                         base_url=server.base_url)
        assert len(server.requests) == 1  # the first call spent it all
    assert out.returncode == 3, out.stderr
    data = json.loads(out.stdout)
    assert data["budget_limit"] == "usd" and data["total_usage"]["usd"] > 0.001


@pytest.mark.parametrize("bad", ["openai:x", "openai:x=1", "=1,2", "openai:x=a,b", "x=-1,2"])
def test_a_malformed_price_is_a_usage_error(fathom_cli: Runner, tmp_path: Path, bad: str) -> None:
    (tmp_path / "a.txt").write_text("x")
    out = fathom_cli("ask", "a.txt", "-q", "What?", "--price", bad, *ASK)
    assert out.returncode == 2
    assert "MODEL=IN,OUT" in out.stderr


def test_max_concurrency_reaches_the_run(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(script(["FINAL(ok)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", "--max-concurrency", "3",
                         "--trace", "run.jsonl", *ASK, base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    start = next(e for e in read(tmp_path / "run.jsonl") if isinstance(e, RunStart))
    assert start.config["max_concurrency"] == 3


@pytest.mark.parametrize(("path", "why"), [("/dev/full", "No space left on device"),
                                           ("/proc/version", "")])
def test_a_trace_that_cannot_be_written_is_reported_once_and_the_answer_still_comes(
    fathom_cli: Runner, tmp_path: Path, path: str, why: str
) -> None:
    if not Path(path).exists():
        pytest.skip(f"no {path} here")
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(script([EXPLORE, "FINAL(the answer)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", "--trace", path, *ASK,
                         base_url=server.base_url)
        as_json = fathom_cli("ask", "a.txt", "-q", "What?", "--trace", path, "--json", *ASK,
                             base_url=server.base_url)
    if out.returncode == 2:  # not even openable here (not root): refused before the run
        assert f"Cannot write the trace {path}" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    assert out.stdout == "the answer\n"
    assert out.stderr.count(f"Cannot write the trace {path}: {why}") == 1
    assert "Traceback" not in out.stderr and " object at 0x" not in out.stderr
    assert f"fathom view {path}" not in out.stderr
    assert json.loads(as_json.stdout)["trace_path"] is None
