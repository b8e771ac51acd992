"""Citations: cite(start, end, source=None) records a span of the context as evidence, checked
and read in the parent, and Result.citations lists them per run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import fathom
from fathom.answers import MAX_CITATION_CHARS, Citation, Citer
from fathom.errors import CallRefused
from fathom.lm import ScriptedLM
from fathom.lm.base import Message
from fathom.trace import CitationEvent, ExecEvent, read

TEXT = "line one\nMarta moved to Lisbon.\nline three\n"


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def last_user(messages: list[Message]) -> str:
    return [m for m in messages if m["role"] == "user"][-1]["content"]


# --- the Citer, in the parent ----------------------------------------------------------------
def test_a_span_of_a_str_has_its_exact_text_and_one_based_lines() -> None:
    citer = Citer(fathom.Context(TEXT))
    start = TEXT.index("Lisbon")
    assert citer.cite(start, start + 6) == Citation(None, start, start + 6, 2, 2, "Lisbon")
    whole = citer.cite(0, len(TEXT))
    assert (whole.line_start, whole.line_end, whole.text) == (1, 3, TEXT)
    # A span ending on a newline still ends on that line.
    assert citer.cite(0, TEXT.index("\n") + 1).line_end == 1
    assert citer.cite(start, start + 6).location() == "context:2"
    assert whole.location("notes.txt") == "notes.txt:1-3"


def test_list_and_dict_items_are_named_by_source() -> None:
    items = Citer(fathom.Context(["zero", "one\ntwo"]))
    cited = items.cite(4, 7, 1)
    assert (cited.text, cited.line_start, cited.location()) == ("two", 2, "context[1]:2")
    files = Citer(fathom.Context({"src/a.py": "x = 1\ny = 2\n", "b.md": "# B"}))
    cited = files.cite(6, 11, "src/a.py")
    assert (cited.text, cited.source, cited.location()) == ("y = 2", "src/a.py", "src/a.py:2")


@pytest.mark.parametrize(
    ("context", "args", "why"),
    [
        (TEXT, (0, len(TEXT) + 1), "outside context, which has 43 characters"),
        (TEXT, (5, 5), "outside context"),
        (TEXT, (-1, 3), "outside context"),
        (TEXT, (0, 2, "a"), "context is a str"),
        (TEXT, (0.0, 2), "start must be a whole number"),
        (TEXT, (True, 2), "start must be a whole number"),
        (["a", {"k": 1}], (0, 1), "pass source=the index"),
        (["a", {"k": 1}], (0, 1, -1), "pass source=the index"),
        (["a", {"k": 1}], (0, 1, 5), "no item 5 in context, a list of 2 items"),
        (["a", {"k": 1}], (0, 1, 1), "context[1] is a dict, not text"),
        ({"a.txt": "abc"}, (0, 1), "pass source=the key"),
        ({"a.txt": "abc"}, (0, 1, "b.txt"), "no key 'b.txt' in context"),
        ({"a.txt": "abc"}, (0, 4, "a.txt"), "outside context['a.txt']"),
    ],
)
def test_spans_not_in_the_context_are_refused(context: Any, args: tuple[Any, ...],
                                              why: str) -> None:
    with pytest.raises(CallRefused, match=re.escape(why)):
        Citer(fathom.Context(context)).cite(*args)


def test_a_too_long_span_is_refused() -> None:
    text = "x" * (MAX_CITATION_CHARS + 1)
    with pytest.raises(CallRefused, match="over the limit"):
        Citer(fathom.Context(text)).cite(0, len(text))


def test_a_directory_is_cited_by_file_path_reading_only_that_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("alpha\nbeta\n")
    (tmp_path / "b.md").write_text("gamma")
    context = fathom.Context.from_path(tmp_path)
    cited = Citer(context).cite(6, 10, "docs/a.md")
    assert (cited.text, cited.location()) == ("beta", "docs/a.md:2")
    single = Citer(fathom.Context.from_path(tmp_path / "b.md")).cite(1, 3)
    assert single.text == "am"


# --- runs through the subprocess sandbox ----------------------------------------------------
@pytest.mark.slow
def test_cited_spans_are_in_the_result_the_trace_and_the_repl(tmp_path: Path) -> None:
    root = ScriptedLM([
        repl("i = context.find('Lisbon')\nprint(cite(i, i + len('Lisbon')))"),
        repl("j = context.find('Marta')\nquote = cite(j, context.find('.', j) + 1)\n"
             "FINAL('Lisbon')"),
    ])
    trace = tmp_path / "run.jsonl"
    result = fathom.RLM(root, trace=trace).run("Where did Marta move?", TEXT)
    assert result.answer == "Lisbon"
    assert [(c.text, c.line_start, c.source) for c in result.citations] == [
        ("Lisbon", 2, None), ("Marta moved to Lisbon.", 2, None)]
    assert "Lisbon" in last_user(root.calls[1])  # cite() returned the text to the REPL
    assert result.to_dict()["citations"][0] == {
        "source": None, "start": 24, "end": 30, "line_start": 2, "line_end": 2,
        "text": "Lisbon"}
    events = read(trace)
    cites = [i for i, e in enumerate(events) if isinstance(e, CitationEvent)]
    assert len(cites) == 2
    # The exec event after a citation is the block whose code made it.
    block = next(e for e in events[cites[0]:] if isinstance(e, ExecEvent))
    assert "print(cite(i" in block.code
    assert "cite(start, end)" in root.calls[0][0]["content"]  # the system prompt asks for it


@pytest.mark.slow
def test_an_out_of_range_span_is_refused_in_the_repl_and_the_run_goes_on() -> None:
    root = ScriptedLM([
        repl("try:\n    cite(0, 10_000, 'a.txt')\nexcept ValueError as exc:\n"
             "    print('refused:', exc)"),
        repl("cite(0, 10_000)"),
        repl("FINAL(cite(0, 4, source='a.txt'))"),
    ])
    result = fathom.RLM(root).run("q", {"a.txt": "abcdef", "b.txt": "x"})
    assert "refused: cite: the span 0:10000 is outside context['a.txt']" in last_user(root.calls[1])
    assert "CallRefused" in last_user(root.calls[2]) and "pass source=the key" in last_user(
        root.calls[2])
    assert result.answer == "abcd"
    assert [(c.source, c.text) for c in result.citations] == [("a.txt", "abcd")]


@pytest.mark.slow
def test_a_child_runs_citations_stay_on_the_child() -> None:
    def reply(messages: list[Message]) -> str:
        query = next(m for m in messages if m["role"] == "user")["content"]
        if "Query: child" in query:
            return repl("FINAL(cite(0, 3))")  # into the child's own context
        if len(messages) == 2:
            return repl("print(cite(0, 5, 1))\nanswer = rlm_query('child', context[0])")
        return repl("FINAL_VAR('answer')")

    result = fathom.RLM(ScriptedLM(reply)).run("q", ["abcdef", "ghijkl"])
    assert result.answer == "abc"
    assert [(c.source, c.text) for c in result.citations] == [(1, "ghijk")]


@pytest.mark.slow
def test_a_sessions_citations_are_per_question() -> None:
    root = ScriptedLM([
        repl("FINAL(cite(0, 4))"),
        repl("FINAL(cite(9, 14))"),
    ])
    with fathom.RLM(root).session(TEXT) as session:
        first, second = session.ask("first?"), session.ask("second?")
    assert [c.text for c in first.citations] == ["line"]
    assert [c.text for c in second.citations] == ["Marta"]
