"""`fathom ask --max-concurrency auto|N` and `--max-concurrency-cap N` reach the run."""

from __future__ import annotations

from pathlib import Path

from fathom.trace import RunStart, read
from tests.cli.conftest import Runner, script
from tests.fake_servers import ScriptedOpenAIServer

ASK = ["--model", "openai:x", "--sandbox", "inprocess"]


def test_auto_is_the_default_and_the_cap_reaches_the_run(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("x")
    with ScriptedOpenAIServer(script(["FINAL(ok)"])) as server:
        out = fathom_cli("ask", "a.txt", "-q", "What?", "--max-concurrency-cap", "64",
                         "--trace", "run.jsonl", *ASK, base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    start = next(e for e in read(tmp_path / "run.jsonl") if isinstance(e, RunStart))
    assert (start.config["max_concurrency"], start.config["max_concurrency_cap"]) == ("auto", 64)


def test_a_bad_concurrency_is_a_usage_error(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    out = fathom_cli("ask", "a.txt", "-q", "What?", "--max-concurrency", "fast", *ASK)
    assert out.returncode == 2
    assert "neither 'auto' nor a whole number" in out.stderr
