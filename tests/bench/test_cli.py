"""`fathom bench list | run | report` through the real command group."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from fathom.bench.results import RESULTS, read_rows
from fathom.bench.tasks import families
from fathom.cli import main
from tests.bench.fakes import install, respond
from tests.cli.conftest import cli_env, command, run_on_pty
from tests.fake_servers import ScriptedOpenAIServer


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch)


def bench(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["bench", *args])
    crash = result.exc_info if result.exception and not isinstance(result.exception, SystemExit) \
        else None
    if crash is not None:  # show the traceback in the assertion that fails on it
        return result.exit_code, result.stdout, "".join(traceback.format_exception(*crash))
    return result.exit_code, result.stdout, result.stderr


def test_list_names_every_family_and_method() -> None:
    code, out, _ = bench("list")
    assert code == 0
    for family in families():
        assert f"{family.name} " in out and family.description in out
    for method in ("direct", "bm25", "summarize", "repl", "rlm", "rlm2", "oracle", "random"):
        assert method in out


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--tasks", "nope"], "niah, vartrack"), (["--methods", "magic"], "direct, bm25"),
     (["--sizes", "huge"], "32k"), (["--executor", "dask"], "local"),
     (["--ray-address", "ray://x:1"], "--executor ray"),
     (["--max-usd", "1", "--model", "openai:unheard-of"], "--price openai:unheard-of=IN,OUT"),
     (["--price", "openai:x=cheap"], "write MODEL=IN,OUT")],
)
def test_bad_arguments_exit_2_naming_the_valid_values(tmp_path: Path, args: list[str],
                                                     named: str) -> None:
    base = {"--tasks": "secret", "--model": "benchfake:m", "-o": str(tmp_path)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    code, _, err = bench("run", *[part for pair in base.items() for part in pair])
    assert code == 2 and named in err, err


def test_run_resume_and_report(tmp_path: Path) -> None:
    args = ["run", "--tasks", "secret", "--sizes", "2k,4k", "--seeds", "2", "--methods",
            "direct,repl", "--model", "benchfake:m", "--sandbox", "inprocess", "-o", str(tmp_path)]
    code, _, err = bench(*args)
    assert code == 0, err
    assert "secret 2k seed 0 direct: score 1.00" in err and "8 rows run" in err
    rows = read_rows(tmp_path / RESULTS)
    assert len(rows) == 8 and {r["score"] for r in rows} == {1.0}
    code, _, err = bench(*args)
    assert code == 0 and "8 of 8 rows already done" in err and "0 rows run" in err
    code, out, err = bench("report", str(tmp_path), "--json")
    assert code == 0, err
    cells = json.loads(out)
    assert len(cells) == 4 and all(c["score"] == 1.0 for c in cells)
    assert (tmp_path / "report.md").exists() and (tmp_path / "score_vs_size.png").exists()


def test_oracle_scores_1_through_the_runner(tmp_path: Path) -> None:
    pytest.importorskip("fathom.bench.policies")
    code, _, err = bench("run", "--tasks", ",".join(f.name for f in families()
                                                   if f.name != "secret"),
                         "--sizes", "8k,32k", "--methods", "rlm", "--model", "oracle",
                         "--sandbox", "inprocess", "--concurrency", "2", "-o", str(tmp_path))
    assert code == 0, err
    rows = read_rows(tmp_path / RESULTS)
    assert len(rows) == 2 * 6
    assert all(row["score"] == 1.0 for row in rows), [r for r in rows if r["score"] != 1.0]


def test_a_real_provider_over_http_gives_real_usage_and_takes_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ScriptedOpenAIServer(respond) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code, _, err = bench("run", "--tasks", "secret", "--sizes", "2k", "--seeds", "2",
                             "--methods", "direct,rlm", "--model", "openai:gpt-5-mini",
                             "--max-usd", "1", "--max-output-tokens", "64",
                             "--context-window", "16000", "--sandbox", "inprocess",
                             "-o", str(tmp_path))
        assert code == 0, err
        sent = [request.get("max_completion_tokens") for request in server.requests]
    rows = read_rows(tmp_path / RESULTS)
    assert len(rows) == 4 and all(row["score"] == 1.0 for row in rows)
    assert all(row["usd"] > 0 and row["prompt_tokens"] > 0 for row in rows)  # priced, metered
    assert sent and set(sent) == {64}  # --max-output-tokens reached every request


def test_progress_on_a_terminal_with_the_in_process_sandbox(tmp_path: Path) -> None:
    # The live bar must not write through the streams the in-process REPL swaps in (it hung).
    run = run_on_pty(
        [*command(), "bench", "run", "--tasks", "niah,oolong", "--sizes", "8k", "--seeds", "2",
         "--methods", "rlm", "--model", "oracle", "--sandbox", "inprocess", "-o", str(tmp_path)],
        cli_env(TERM="xterm-256color", COLUMNS="100"), tmp_path)
    assert run.code == 0, run.terminal
    assert "\x1b[" in run.terminal and "4 rows run" in run.terminal
    assert len(read_rows(tmp_path / RESULTS)) == 4
