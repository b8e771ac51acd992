"""`fathom ask` end to end: real entry point, real engine, scripted OpenAI server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Runner, script
from tests.fake_servers import ScriptedOpenAIServer

EXPLORE = "Let me look.\n```repl\nprint(type(context).__name__, len(context))\n```"
ASK = ["--model", "openai:x", "--sandbox", "inprocess"]


def test_answers_a_file_on_stdout_with_plain_progress_on_stderr(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("Marta moved to Lisbon in June.")
    root = [EXPLORE, "```repl\nFINAL(llm_query('Where? ' + context))\n```"]
    with ScriptedOpenAIServer(script(root, lambda p: "Lisbon")) as server:
        out = fathom_cli("ask", "notes.txt", "-q", "Where did Marta move?", *ASK,
                         base_url=server.base_url)
        assert len(server.requests) == 3  # two root turns and one sub-call
        second_turn = server.requests[1]["messages"][-1]["content"]
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Lisbon\n"
    assert "str 30" in second_turn  # the code really ran on the file's text
    assert "iteration 2" in out.stderr and "run ended: final" in out.stderr
    assert "openai:x" in out.stderr  # the summary names the model
    assert "\x1b" not in out.stderr  # not a terminal: no escape codes


def test_json_output_parses_and_describes_the_result(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    with ScriptedOpenAIServer(script(["FINAL(alpha found)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What is there?", "--json", *ASK,
                         base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["answer"] == "alpha found"
    assert data["stop_reason"] == "final"
    assert data["iterations"] == 1
    assert data["usage"]["openai:x"]["calls"] == 1
    assert data["total_usage"]["prompt_tokens"] > 0


def test_reads_stdin_with_dash(fathom_cli: Runner) -> None:
    root = ["```repl\nFINAL(context.strip().upper())\n```"]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "-", "-q", "Shout it", "--quiet", *ASK,
                         base_url=server.base_url, stdin="quiet please\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "QUIET PLEASE\n"
    assert out.stderr == ""  # --quiet: nothing at all on stderr


def test_directory_becomes_a_dict_of_relative_paths(fathom_cli: Runner, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("first")
    (docs / "sub" / "b.md").write_text("second")
    (docs / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    root = ["```repl\nFINAL(', '.join(f'{k}={v}' for k, v in sorted(context.items())))\n```"]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "docs", "-q", "List the files", *ASK, base_url=server.base_url)
        first_prompt = server.requests[0]["messages"][1]["content"]
    assert out.returncode == 0, out.stderr
    assert out.stdout == "a.txt=first, sub/b.md=second\n"
    assert "logo.png" in first_prompt  # the binary file is skipped and listed for the model
    assert "skipped 1 file(s): logo.png" in out.stderr  # and the user is told too


def test_glob_and_several_paths(fathom_cli: Runner, tmp_path: Path) -> None:
    for name in ("x.log", "y.log", "z.txt"):
        (tmp_path / name).write_text(name.upper())
    root = ["```repl\nFINAL(' '.join(sorted(context)))\n```"]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "*.log", "z.txt", "-q", "Which files?", *ASK,
                         base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "x.log y.log z.txt\n"


def test_missing_path_is_a_usage_error_naming_it(fathom_cli: Runner) -> None:
    with ScriptedOpenAIServer(script(["FINAL(x)"])) as server:
        out = fathom_cli("ask", "nope.txt", "-q", "Anything?", *ASK, base_url=server.base_url)
        assert server.requests == []  # nothing was sent to a model
    assert out.returncode == 2
    assert "nope.txt" in out.stderr and out.stderr.startswith("fathom: error:")
    assert out.stdout == ""


def test_glob_matching_nothing_is_a_usage_error(fathom_cli: Runner) -> None:
    out = fathom_cli("ask", "missing/*.txt", "-q", "Anything?", *ASK)
    assert out.returncode == 2
    assert "matched no files" in out.stderr


def test_missing_question_and_bad_options_exit_2(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    no_question = fathom_cli("ask", "a.txt")
    assert no_question.returncode == 2 and "--question" in no_question.stderr
    bad_number = fathom_cli("ask", "a.txt", "-q", "x", "--max-iterations", "0")
    assert bad_number.returncode == 2 and "--max-iterations" in bad_number.stderr
    bad_model = fathom_cli("ask", "a.txt", "-q", "x", "--model", "nosuch:model")
    assert bad_model.returncode == 2 and "nosuch:model" in bad_model.stderr


def test_failed_run_exits_1_with_the_reason(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    # One exploring turn, then the server has no reply left and answers 400.
    with ScriptedOpenAIServer([EXPLORE]) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", *ASK, base_url=server.base_url)
    assert out.returncode == 1, out.stderr
    assert "fathom: error:" in out.stderr


def test_a_key_the_server_rejects_is_a_usage_error(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer([EXPLORE], api_key="the-right-key") as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", *ASK, base_url=server.base_url)
    assert out.returncode == 2, out.stderr
    assert "OPENAI_API_KEY" in out.stderr


def test_budget_stop_exits_3_and_prints_no_answer(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text " * 50)
    root = ["I think the answer is 42 but let me check.\n```repl\nprint(len(context))\n```",
            "FINAL(never reached)"]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", "--max-tokens", "20", *ASK,
                         base_url=server.base_url)
        assert len(server.requests) == 1  # the limit stopped the second call before it started
    assert out.returncode == 3, out.stderr
    assert out.stdout == ""  # stdout holds only an answer the model gave
    assert "budget" in out.stderr and "--json shows the best-effort text" in out.stderr


def test_json_on_budget_stop_still_parses(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 400)
    with ScriptedOpenAIServer(script([EXPLORE, "FINAL(no)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", "--max-usd", "0", "--json",
                         "--price", "openai:x=1,1", *ASK,
                         base_url=server.base_url)
    assert out.returncode == 3
    data = json.loads(out.stdout)
    assert (data["stop_reason"], data["answer_source"]) == ("budget", None)


def test_trace_view_and_replay_from_the_command_line(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Marta moved to Lisbon.")
    root = [EXPLORE, "```repl\nr = llm_query_batched(['city?', 'year?'])\nprint(r)\n```",
            "FINAL(Lisbon)"]
    with ScriptedOpenAIServer(script(root, lambda p: p.upper())) as server:
        out = fathom_cli("ask", "a.txt", "-q", "Where?", "--trace", "run.jsonl", *ASK,
                         base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    assert "fathom view run.jsonl" in out.stderr
    view = fathom_cli("view", "run.jsonl", "-o", "page.html")
    assert view.returncode == 0, view.stderr
    assert view.stdout.strip() == "page.html"
    page = (tmp_path / "page.html").read_text()
    assert "llm_query_batched" in page and "<script" in page
    # The replay needs no server: every reply comes from the trace.
    replayed = fathom_cli("replay", "run.jsonl", "--sandbox", "inprocess")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout.startswith("MATCH")


def test_default_subprocess_sandbox_hides_the_api_key(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("worker side")
    code = "import os\nFINAL(f\"{context}: key visible={'OPENAI_API_KEY' in os.environ}\")"
    root = [f"```repl\n{code}\n```"]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "a.txt", "-q", "Where does the code run?", "--model", "openai:x",
                         base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "worker side: key visible=False\n"  # the CLI's env has the key


def test_demo_runs_on_the_given_model(fathom_cli: Runner) -> None:
    with ScriptedOpenAIServer(script(["FINAL(open sesame)"])) as server:
        out = fathom_cli("demo", "--model", "openai:x", base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    assert "answer:      open sesame" in out.stdout


def test_missing_api_key_is_a_usage_error_saying_what_to_set(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("x")
    out = fathom_cli("ask", "a.txt", "-q", "What?", "--model", "openai:gpt-5-mini")
    assert out.returncode == 2
    assert "OPENAI_API_KEY" in out.stderr


def test_cache_makes_a_rerun_free(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("cached text")
    root = [EXPLORE, "FINAL(from the model)"]
    with ScriptedOpenAIServer(script(root)) as server:
        args = ("ask", "a.txt", "-q", "What?", "--cache", "replies.db", *ASK)
        first = fathom_cli(*args, base_url=server.base_url)
        sent = len(server.requests)
        second = fathom_cli(*args, base_url=server.base_url)
        assert len(server.requests) == sent  # every call of the rerun came from the cache
    assert first.returncode == second.returncode == 0, second.stderr
    assert first.stdout == second.stdout == "from the model\n"


def test_model_options_bound_each_request_and_a_hung_reply_is_retried(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    with ScriptedOpenAIServer(script(["FINAL(alpha)"]), delay=5, slow_first=1) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", *ASK, "--context-window", "6000",
                         "--max-output-tokens", "600", "--request-timeout", "0.5",
                         base_url=server.base_url)
        assert [r["max_tokens"] for r in server.requests] == [600, 600]
    assert out.returncode == 0, out.stderr
    assert out.stdout == "alpha\n"
    assert "failed (APITimeoutError" in out.stderr and "attempt 2/5" in out.stderr


def test_a_base_url_without_v1_is_named_as_the_likely_cause(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    with ScriptedOpenAIServer(script(["FINAL(alpha)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", *ASK,
                         base_url=server.base_url.removesuffix("/v1"))
    assert out.returncode != 0
    assert "probably lacks /v1" in out.stderr
