"""The public RLM API: argument checks and what a run refuses to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fathom
from fathom.lm import ScriptedLM
from fathom.trace import FinalEvent, read


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": 123}, "is not a model"),
        ({"budget": {"usd": 1}}, "fathom.Budget"),
        ({"max_iterations": "3"}, "max_iterations"),
        ({"sandbox": "bogus"}, "Unknown sandbox"),
        ({"allowed_models": "openai:x"}, "list of model specs"),
        ({"memory_mb": 10}, "at least 64"),
        ({"budget_usd_nan": True}, "number >= 0"),
    ],
)
def test_bad_arguments_raise_config_errors_that_say_what_to_pass(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(fathom.ConfigError, match=message):
        if kwargs.pop("budget_usd_nan", False):
            fathom.Budget(usd=float("nan"))
        fathom.RLM(**kwargs)  # type: ignore[arg-type]


def test_a_trace_path_that_is_an_input_file_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("important input")
    rlm = fathom.RLM(ScriptedLM([repl("FINAL(1)")]), sandbox="inprocess", trace=source)
    with pytest.raises(fathom.ConfigError, match="one of the input files"):
        rlm.run("q", source)
    assert source.read_text() == "important input"


def test_an_unwritable_trace_path_is_a_config_error(tmp_path: Path) -> None:
    rlm = fathom.RLM(ScriptedLM([repl("FINAL(1)")]), sandbox="inprocess", trace=tmp_path)
    with pytest.raises(fathom.ConfigError, match="Cannot write the trace"):
        rlm.run("q", "c")


def test_lone_surrogates_do_not_break_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    root = ScriptedLM([repl("print('x\\udcff')"), repl("FINAL('bad \\udcff end')")])
    result = fathom.RLM(root, sandbox="inprocess", trace=trace).run("q", "ab\udcffcd")
    assert result.answer == "bad \udcff end"
    finals = [e for e in read(trace) if isinstance(e, FinalEvent)]
    assert finals[0].answer == "bad \udcff end"
    for line in trace.read_text(encoding="utf-8").splitlines():
        json.loads(line)


def test_stdin_can_be_named_only_once() -> None:
    with pytest.raises(fathom.ContextError, match="only once"):
        fathom.Context.from_paths(["-", "-"])
